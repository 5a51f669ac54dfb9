#!/usr/bin/env python
"""Paper Fig. 4 — logit lens of the base model and of unlearned models (§6.3).

For every layer's residual stream (and the embeddings) at the last prompt position, the
model's final norm and unembedding score the gold answer's first token against a random wrong
option's first token; accuracy per layer, chance 0.5 (:mod:`neuronscope.lens`). The paper
finds GD far *below* chance in later layers (over-unlearning) and SSIUU near chance.

Models: ``Default`` (the base model) plus one model per ``fig4.methods`` unlearned on the forget
split, or the already trained models of ``fig4.models`` (``{label: name or path}``).
Items: the forget split (``fig4.split``).

    python analyses/fig4.py --quick
    python analyses/fig4.py --quick --model tiny-llama --out runs/fig4-tiny
    python analyses/fig4.py --config analyses/configs/paper_llama32_faithun.json

Writes ``logit_lens.html`` and ``logit_lens.json`` in the run directory.
"""

from __future__ import annotations

import _common as C

QUICK = {"fig4": {"methods": ["gd", "ssiuu"], "models": None, "split": "forget", "batch_size": 8}}


def main(cfg: dict) -> dict:
    from pathlib import Path

    from neuronscope.lens import logit_lens, write_lens_report

    f = cfg["fig4"]
    base = C.load_base(cfg)
    sp = C.splits(cfg, base)
    items = getattr(sp, f.get("split", "forget"))
    seed = cfg["data"].get("seed", 0)
    kw = dict(seed=seed, batch_size=f.get("batch_size", 8), progress=cfg["progress"])
    results = {"Default": logit_lens(base, items, label="Default", **kw)}
    if f.get("models"):
        for label, path in f["models"].items():
            results[label] = logit_lens(C.load_base(cfg, path), items, label=label, **kw)
    else:
        del base
        for method in f.get("methods", []):
            model, _ = C.unlearned(cfg, method, sp)
            results[method.upper()] = logit_lens(model, items, label=method.upper(), **kw)
            del model
    paths = write_lens_report(results, Path(cfg["out"]), title="Logit lens (paper Fig. 4)")
    for label, r in results.items():
        C.log(f"{label}: " + " ".join(f"{a:.2f}" for a in r.accuracy))
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig4")

#!/usr/bin/env python
"""Paper Fig. 3b/3c — cumulative influence variations after unlearning (§4).

For each method: unlearn the forget split, attribute (Eq. 1) the base and the unlearned model
on the forget split, and compute D̃+ (positive influence removed) and D̃− (negative influence
added) per neuron (:mod:`neuronscope.influence`). Fig. 3b: cumulative sums of the top-m neurons
sorted by D̃+ (dotted) and D̃− (solid); Fig. 3c: the sums at m = 100. The paper finds D̃− ≫ D̃+
for every baseline: knowledge hidden by spurious unlearning neurons rather than erased.

    python analyses/fig3.py --quick
    python analyses/fig3.py --config analyses/configs/paper_llama32_faithun.json

Writes ``fig3b.html``, ``fig3c.html``, ``fig3.json`` and the influence files.
"""

from __future__ import annotations

import _common as C

QUICK = {"fig3": {"methods": ["gd", "ssiuu"], "m": 1000, "top": 100}}


def main(cfg: dict) -> dict:
    from pathlib import Path

    from neuronscope.influence import influence_variation
    from neuronscope.plots import cumulative_figure, top_m_bar_figure

    f, out = cfg["fig3"], Path(cfg["out"])
    base = C.load_base(cfg)
    sp = C.splits(cfg, base)
    before = C.attribution(cfg, "default", base, sp.forget)
    del base
    variations, info = {}, {}
    for method in f["methods"]:
        model, info[method] = C.unlearned(cfg, method, sp)
        after = C.attribution(cfg, method, model, sp.forget)
        del model
        var = influence_variation(before, after, label=method.upper())
        var.save(out / "influence" / f"{method}.safetensors")
        variations[method.upper()] = var
    summary = {k: {**v.summary(f["top"]), "unlearning": info[k.lower()]} for k, v in variations.items()}
    paths = C.save_figures(out, {"fig3b": cumulative_figure(variations, m=f["m"]),
                                 "fig3c": top_m_bar_figure(variations, m=f["top"])})
    paths["json"] = C.write_json(out / "fig3.json", summary)
    for k, v in summary.items():
        C.log(f"{k}: Σ top-{f['top']} D̃+ = {v['sum_top_d_plus']:.4g}, D̃− = {v['sum_top_d_minus']:.4g}")
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig3")

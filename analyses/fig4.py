#!/usr/bin/env python
"""Paper Fig. 4 — logit lens of the base and unlearned models on the forget set.

Per layer, the residual stream is projected through the final norm and the unembedding; the
accuracy is the fraction of items whose gold answer's first token outscores a random
distractor's (chance 0.5). The paper shows unlearned models recovering the answer in middle
layers and suppressing it near the output.

    python analyses/fig4.py --quick
    python analyses/fig4.py --config configs/llama-3.2-3b-faithun.json

Study stages: splits, unlearn, lens. ``figures.fig4.models`` (``{label: path}``) lenses saved
models instead of the study's methods. Writes ``logit_lens.html`` and ``logit_lens.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"figures": {"fig4": {"models": None}}}


def main(study, f: dict) -> dict:
    from neuronscope.lens import LogitLensResult, logit_lens, write_lens_report
    from neuronscope.models import load_model
    from neuronscope.study import METHOD_LABELS

    results = {"Default": LogitLensResult.from_dict(study.lens("default"))}
    if f.get("models"):
        c = study.config
        for label, path in f["models"].items():
            results[label] = logit_lens(load_model(path, dtype=c.dtype, device=c.device), study.splits().forget,
                                        seed=c.seed, label=label, progress=study.progress)
    else:
        for m in f.get("methods", study.config.methods):
            results[METHOD_LABELS[m]] = LogitLensResult.from_dict(study.lens(m))
    paths = write_lens_report(results, study.out, title="Logit lens (paper Fig. 4)")
    for label, r in results.items():
        C.log(f"{label}: " + " ".join(f"{a:.2f}" for a in r.accuracy))
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig4")

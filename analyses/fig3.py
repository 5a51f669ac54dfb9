#!/usr/bin/env python
"""Paper Fig. 3b/3c — cumulative influence variations after unlearning (§4).

For each method: unlearn the forget split, attribute (Eq. 1) the base and the unlearned model
on the forget split, and compute D̃+ (positive influence removed) and D̃− (negative influence
added) per neuron (:mod:`neuronscope.influence`). Fig. 3b: cumulative sums of the top-m neurons
sorted by D̃+ (dotted) and D̃− (solid); Fig. 3c: the sums at m = 100. The paper finds D̃− ≫ D̃+
for every baseline: knowledge hidden by spurious unlearning neurons rather than erased.

    python analyses/fig3.py --quick
    python analyses/fig3.py --config configs/llama-3.2-3b-faithun.json

Study stages: splits, unlearn, attribute, influence. Writes ``fig3b.html``, ``fig3c.html``,
``fig3.json`` and the influence files.
"""

from __future__ import annotations

import _common as C

QUICK = {"figures": {"fig3": {"m": 1000, "top": 100}}}


def main(study, f: dict) -> dict:
    from neuronscope.plots import cumulative_figure, top_m_bar_figure
    from neuronscope.study import METHOD_LABELS

    variations = {METHOD_LABELS[m]: study.influence(m) for m in f.get("methods", study.config.methods)}
    summary = {k: {**v.summary(f["top"]), "unlearning": {kk: vv for kk, vv in study.unlearning_info(k.lower()).items()
                                                         if kk != "history"}} for k, v in variations.items()}
    paths = C.save_figures(study.out, {"fig3b": cumulative_figure(variations, m=f["m"]),
                                       "fig3c": top_m_bar_figure(variations, m=f["top"])})
    paths["json"] = C.write_json(study.out / "fig3.json", summary)
    for k, v in summary.items():
        C.log(f"{k}: Σ top-{f['top']} D̃+ = {v['sum_top_d_plus']:.4g}, D̃− = {v['sum_top_d_minus']:.4g}")
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig3")

#!/usr/bin/env python
"""Paper Fig. 5 — where the influence variation sits: module × layer maps of D̃+ and D̃−.

For each method, the top-100 neurons by D̃+ and by D̃− are counted per module type
(q, k, v, o, gate, up, down) and layer. The paper finds the spurious (D̃−) neurons of GA/GD
concentrated in attention Q and K.

    python analyses/fig5.py --quick
    python analyses/fig5.py --config configs/llama-3.2-3b-faithun.json

Study stages: splits, unlearn, attribute, influence. Writes ``fig5.html`` and ``fig5.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"figures": {"fig5": {"top": 100}}}


def main(study, f: dict) -> dict:
    from neuronscope.plots import heatmap_grid_figure
    from neuronscope.study import METHOD_LABELS

    variations = {METHOD_LABELS[m]: study.influence(m) for m in f.get("methods", study.config.methods)}
    grids = {}
    for label, var in variations.items():
        for sign, name in (("+", "d_plus"), ("-", "d_minus")):
            grid, types, layers = var.module_layer_map(sign, top=f["top"])
            grids.setdefault(label, {})[name] = {"modules": types, "layers": layers, "grid": grid.tolist()}
    paths = C.save_figures(study.out, {"fig5": heatmap_grid_figure(variations, top=f["top"])})
    paths["json"] = C.write_json(study.out / "fig5.json", grids)
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig5")

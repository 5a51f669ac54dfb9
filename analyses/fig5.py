#!/usr/bin/env python
"""Paper Fig. 5 — influence variation per module and layer, GD vs SSIUU (§6.4).

Each cell is the mean of the top-100 D̃+ (left) or D̃− (right) neurons of one (module, layer);
one row of maps per method, colour scales shared across methods. The paper finds GD's D̃− large
(spurious neurons, mostly attention q/k) and SSIUU's suppressed, with D̃+ spread over modules.

    python analyses/fig5.py --quick
    python analyses/fig5.py --config analyses/configs/paper_llama32_faithun.json

Writes ``fig5.html`` and ``fig5.json`` (the grids).
"""

from __future__ import annotations

import _common as C

QUICK = {"fig5": {"methods": ["gd", "ssiuu"], "top": 100}}


def main(cfg: dict) -> dict:
    from pathlib import Path

    from neuronscope.influence import influence_variation
    from neuronscope.plots import heatmap_grid_figure

    f, out = cfg["fig5"], Path(cfg["out"])
    base = C.load_base(cfg)
    sp = C.splits(cfg, base)
    before = C.attribution(cfg, "default", base, sp.forget)
    del base
    variations = {}
    for method in f["methods"]:
        model, _ = C.unlearned(cfg, method, sp)
        variations[method.upper()] = influence_variation(before, C.attribution(cfg, method, model, sp.forget),
                                                         label=method.upper())
        del model
    grids = {}
    for label, var in variations.items():
        for sign, name in (("+", "d_plus"), ("-", "d_minus")):
            grid, types, layers = var.module_layer_map(sign, top=f["top"])
            grids.setdefault(label, {})[name] = {"modules": types, "layers": layers, "grid": grid.tolist()}
    paths = C.save_figures(out, {"fig5": heatmap_grid_figure(variations, top=f["top"])})
    paths["json"] = C.write_json(out / "fig5.json", grids)
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig5")

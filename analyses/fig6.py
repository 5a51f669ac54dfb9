#!/usr/bin/env python
"""Paper Fig. 6 — attribution distributions and their correlation before/after an attack (§6.5).

For each method: unlearn the forget split, run the harmful relearning attack (paper: p = 0.1),
and attribute (Eq. 1) the base, unlearned and attacked models on the forget split. Fig. 6a:
distributions of per-neuron attributions (mean over samples of the max and min over tokens);
Fig. 6b: Pearson/Spearman correlation of the unlearned vs. attacked model's per-neuron
attributions (:mod:`neuronscope.correlation`). The paper finds SSIUU's attribution space stable
under attack (ρ = 0.99) and GA's reshuffled (ρ = 0.73).

    python analyses/fig6.py --quick
    python analyses/fig6.py --config analyses/configs/paper_llama32_faithun.json

Writes ``fig6a.html``, ``fig6b-<method>.html``, ``fig6.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"fig6": {"methods": ["gd", "ssiuu"], "p": 0.3, "lr": 1e-5, "max_points": 20000}}


def main(cfg: dict) -> dict:
    from pathlib import Path

    from neuronscope.correlation import attribution_correlation, neuron_means
    from neuronscope.plots import attribution_distribution_figure

    f, out = cfg["fig6"], Path(cfg["out"])
    base = C.load_base(cfg)
    sp = C.splits(cfg, base)
    attrs = {"Default": C.attribution(cfg, "default", base, sp.forget)}
    del base
    figs, summary = {}, {}
    for method in f["methods"]:
        label = method.upper()
        model, info = C.unlearned(cfg, method, sp)
        attrs[label] = C.attribution(cfg, method, model, sp.forget)
        res, attacked = C.attack(cfg, f"{method}-harmful", out / "models" / method, model, sp.forget,
                                 kind="harmful", keep_model=True, p=f["p"], lrs=[f["lr"]], seeds=[cfg["data"]["seed"]])
        del model
        attrs[f"{label}+attack"] = C.attribution(cfg, f"{method}-attacked", attacked, sp.forget)
        del attacked
        corr = attribution_correlation(attrs[label], attrs[f"{label}+attack"], label_a=label, label_b=f"{label}+attack")
        summary[label] = {**corr.to_dict(), "attack_score": res.score, "unlearning": info}
        figs[f"fig6b-{method}"] = corr.plot_scatter("both", max_points=f["max_points"])
        C.log(f"{label}: Pearson r = {corr.pearson:.3f}, Spearman ρ = {corr.spearman:.3f}, "
              f"attack max FS = {res.score:.2f}")
    values = {k: {"max": neuron_means(a, "max"), "min": neuron_means(a, "min")} for k, a in attrs.items()}
    figs["fig6a"] = attribution_distribution_figure(values, max_points=f["max_points"],
                                                    title="Attribution distributions (paper Fig. 6a)")
    paths = C.save_figures(out, figs)
    paths["json"] = C.write_json(out / "fig6.json", summary)
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig6")

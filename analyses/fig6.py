#!/usr/bin/env python
"""Paper Fig. 6 — attribution distributions and their correlation before/after an attack (§6.5).

For each method: unlearn the forget split, run the harmful relearning attack (paper: p = 0.1),
and attribute (Eq. 1) the base, unlearned and attacked models on the forget split. Fig. 6a:
distributions of per-neuron attributions (mean over samples of the max and min over tokens);
Fig. 6b: Pearson/Spearman correlation of the unlearned vs. attacked model's per-neuron
attributions (:mod:`neuronscope.correlation`). The paper finds SSIUU's attribution space stable
under attack (ρ = 0.99) and GA's reshuffled (ρ = 0.73).

    python analyses/fig6.py --quick
    python analyses/fig6.py --config configs/llama-3.2-3b-faithun.json

Study stages: splits, unlearn, attribute, attack (with correlation). Writes ``fig6a.html``,
``fig6b-<method>.html``, ``fig6.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"figures": {"fig6": {"p": 0.3, "lr": 1e-5, "max_points": 20000}}}


def main(study, f: dict) -> dict:
    from neuronscope.attribution import NeuronAttribution
    from neuronscope.correlation import attribution_correlation, neuron_means
    from neuronscope.plots import attribution_distribution_figure
    from neuronscope.study import METHOD_LABELS

    attrs = {"Default": study.attribution("default")}
    figs, summary = {}, {}
    for method in f.get("methods", study.config.methods):
        label = METHOD_LABELS[method]
        attrs[label] = study.attribution(method)
        acfg = C.attack_config(study, "harmful", p=f["p"], lrs=[f["lr"]], seeds=[study.config.seed])
        res = study.attack(method, acfg, correlate=True, tag="fig6")
        if res.get("correlation") is None:
            C.fail(f"{method}: the harmful attack did not run ({res.get('error', 'finished runs reused without the model')})")
        attrs[f"{label}+attack"] = NeuronAttribution.load(study.out / "attributions" / f"{method}-attacked-fig6.safetensors")
        corr = attribution_correlation(attrs[label], attrs[f"{label}+attack"], label_a=label, label_b=f"{label}+attack")
        summary[label] = {**corr.to_dict(), "attack_score": res["score"],
                          "unlearning": {k: v for k, v in study.unlearning_info(method).items() if k != "history"}}
        figs[f"fig6b-{method}"] = corr.plot_scatter("both", max_points=f["max_points"])
        C.log(f"{label}: Pearson r = {corr.pearson:.3f}, Spearman ρ = {corr.spearman:.3f}, "
              f"attack max FS = {res['score']:.2f}")
    values = {k: {"max": neuron_means(a, "max"), "min": neuron_means(a, "min")} for k, a in attrs.items()}
    figs["fig6a"] = attribution_distribution_figure(values, max_points=f["max_points"],
                                                    title="Attribution distributions (paper Fig. 6a)")
    paths = C.save_figures(study.out, figs)
    paths["json"] = C.write_json(study.out / "fig6.json", summary)
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig6")

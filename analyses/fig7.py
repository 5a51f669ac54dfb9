#!/usr/bin/env python
"""Paper Fig. 7 — SSIUU λ sweep (7a, App. C.1) and attack learning rates (7b/c, App. C.2).

7a: unlearn with SSIUU for each λ; accuracy on the retain and test sets, and the harmful-attack
score (max FS during retraining) for each ``figures.fig7.attack_ps``
(:func:`neuronscope.unlearning.lambda_sweep`). 7b/c: for each of ``figures.fig7.lr_methods``
(paper: GA, GD), the harmful (p = 0.1) and benign attack scores over a grid of attack learning rates.

    python analyses/fig7.py --quick
    python analyses/fig7.py --config configs/llama-3.2-3b-faithun.json

Study stages: splits, unlearn, attack. Writes ``fig7a.html``, ``fig7bc.html`` and ``fig7.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"figures": {"fig7": {"lams": [1e-4, 1e-3, 1e-2, 1.0], "attack_ps": [0.3], "lr_methods": ["ga", "gd"],
                              "harmful_lrs": [1e-4, 1e-5, 1e-6], "benign_lrs": [1e-5, 1e-6, 1e-7], "harmful_p": 0.3}},
         "methods": {"ga": {"lr": 5e-5}, "gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5}}}


def main(study, f: dict) -> dict:
    import json

    from neuronscope.attacks import AttackResult, run_attack
    from neuronscope.models import clone_model
    from neuronscope.plots import attack_lr_figure, lambda_sweep_figure
    from neuronscope.study import METHOD_LABELS
    from neuronscope.unlearning import lambda_sweep

    out, sp = study.out, study.splits()

    # 7a: λ sweep, with harmful attacks on each SSIUU model
    def attacks(model, res):
        tag = f"ssiuu-lam{res.config.lam:g}"
        return {f"harmful p={p:g}": run_attack(model, sp.forget, C.attack_config(study, "harmful", p=p),
                                               run_dir=out / "attacks" / tag / f"harmful-p{p:g}",
                                               progress=study.progress).score
                for p in f["attack_ps"]}

    sweep_path = out / "lambda_sweep.json"
    if sweep_path.exists():
        rows = json.loads(sweep_path.read_text())
    else:
        C.log(f"λ sweep {f['lams']}")
        rows = lambda_sweep(lambda: clone_model(study.base), sp.forget, sp.retain,
                            study.config.unlearning_config("ssiuu"), lams=f["lams"], lrs=study.config.lrs("ssiuu"),
                            test_items=sp.test, extra_fn=attacks, run_dir=out / "sweep", progress=study.progress)
        C.write_json(sweep_path, rows)

    # 7b/c: attack learning rates on GA and GD models
    panels = {}
    for method in f["lr_methods"]:
        h = study.attack(method, C.attack_config(study, "harmful", p=f["harmful_p"], lrs=f["harmful_lrs"]), tag="lrs")
        b = study.attack(method, C.attack_config(study, "benign", lrs=f["benign_lrs"]), tag="lrs")
        panels[METHOD_LABELS[method]] = {f"harmful p={f['harmful_p']:g}": AttackResult.from_dict(h["result"]),
                                         "benign": AttackResult.from_dict(b["result"])}
    paths = C.save_figures(out, {
        "fig7a": lambda_sweep_figure(rows, metrics=["RS_retain", "RS_test", *(f"harmful p={p:g}" for p in f["attack_ps"])],
                                     title="SSIUU regularisation weight λ (paper Fig. 7a)"),
        "fig7bc": attack_lr_figure(panels, title="Attack learning rates (paper Fig. 7b/c)"),
    })
    paths["json"] = C.write_json(out / "fig7.json", {
        "lambda_sweep": rows,
        "attack_lr": {m: {k: {f"{lr:g}": v for lr, v in r.per_lr().items()} for k, r in d.items()}
                      for m, d in panels.items()},
    })
    return paths


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "fig7")

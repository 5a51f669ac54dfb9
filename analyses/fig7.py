#!/usr/bin/env python
"""Paper Fig. 7 — SSIUU λ sweep (7a, App. C.1) and attack learning rates (7b/c, App. C.2).

7a: unlearn with SSIUU for each λ; accuracy on the retain and test sets, and the harmful-attack
score (max FS during retraining) for each ``fig7.attack_ps``
(:func:`neuronscope.unlearning.lambda_sweep`). 7b/c: for each of ``fig7.lr_methods`` (paper:
GA, GD), the harmful (p = 0.1) and benign attack scores over a grid of attack learning rates.

    python analyses/fig7.py --quick
    python analyses/fig7.py --config analyses/configs/paper_llama32_faithun.json

Writes ``fig7a.html``, ``fig7bc.html`` and ``fig7.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"fig7": {"lams": [1e-4, 1e-3, 1e-2, 1.0], "attack_ps": [0.3], "lr_methods": ["ga", "gd"],
                  "harmful_lrs": [1e-4, 1e-5, 1e-6], "benign_lrs": [1e-5, 1e-6, 1e-7], "harmful_p": 0.3},
         "methods": {"ga": {"lr": 5e-5}, "gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5}}}


def main(cfg: dict) -> dict:
    from pathlib import Path

    from neuronscope.plots import attack_lr_figure, lambda_sweep_figure
    from neuronscope.unlearning import lambda_sweep

    f, out = cfg["fig7"], Path(cfg["out"])
    base = C.load_base(cfg)
    sp = C.splits(cfg, base)
    del base

    # 7a: λ sweep, with harmful attacks on each SSIUU model
    def attacks(model, res):
        tag = f"ssiuu-lam{res.config.lam:g}"
        mdir = out / "models" / tag
        model.save(mdir)
        return {f"harmful p={p:g}": C.attack(cfg, f"{tag}-p{p:g}", mdir, model, sp.forget, p=p)[0].score
                for p in f["attack_ps"]}

    sweep_path = out / "lambda_sweep.json"
    if sweep_path.exists():
        import json

        rows = json.loads(sweep_path.read_text())
    else:
        C.log(f"λ sweep {f['lams']}")
        rows = lambda_sweep(C.model_factory(cfg), sp.forget, sp.retain, C.unlearning_config(cfg, "ssiuu"),
                            lams=f["lams"], lrs=cfg["methods"].get("ssiuu", {}).get("lrs"), test_items=sp.test,
                            extra_fn=attacks, run_dir=out / "sweep", progress=cfg["progress"])
        C.write_json(sweep_path, rows)

    # 7b/c: attack learning rates on GA and GD models
    panels = {}
    for method in f["lr_methods"]:
        model, _ = C.unlearned(cfg, method, sp)
        mdir = out / "models" / method
        harmful, _ = C.attack(cfg, f"{method}-harmful-lrs", mdir, model, sp.forget, p=f["harmful_p"],
                              lrs=f["harmful_lrs"])
        benign, _ = C.attack(cfg, f"{method}-benign-lrs", mdir, model, sp.forget, kind="benign", lrs=f["benign_lrs"])
        panels[method.upper()] = {f"harmful p={f['harmful_p']:g}": harmful, "benign": benign}
        del model
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

#!/usr/bin/env python
"""Paper Table 1 — FS, RS, US and the harmful/benign attack scores of every method (§6.3).

For the base model (Default) and each method: FS = forget accuracy, RS = test-set accuracy,
US = utility (shipped general-knowledge set, or lm-eval tasks with ``utility.tasks``), harmful
attack scores at p = 0.1 and 0.3, and the benign attack score (mean over seeds of the max FS
during retraining, :mod:`neuronscope.attacks`). Rendered by :mod:`neuronscope.tables`.

    python analyses/table1.py --quick
    python analyses/table1.py --config analyses/configs/paper_llama32_faithun.json

Writes ``table1.csv``, ``table1.md``, ``table1.html`` and ``table1.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"table1": {"methods": ["ga", "gd", "ssiuu"], "harmful_ps": [0.1, 0.3], "benign": True,
                    "model_label": None, "note": "quick run: embedded SmolLM2, small splits, 1 seed on CPU"},
         "methods": {"ga": {"lr": 5e-5}, "gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5, "lam": 1e-3}}}


def main(cfg: dict) -> dict:
    from pathlib import Path

    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.tables import table_from_rows
    from neuronscope.utility import utility_score

    f, out = cfg["table1"], Path(cfg["out"])
    label = f.get("model_label") or Path(cfg["model"]).name
    u = cfg["utility"]

    def scores(model) -> dict:
        return {
            "fs": mcqa_evaluate(model, sp.forget).accuracy,
            "rs": mcqa_evaluate(model, sp.test).accuracy if sp.test else None,
            "us": utility_score(model, tasks=u.get("tasks"), limit=u.get("limit", 500)).score,
        }

    base = C.load_base(cfg)
    sp = C.splits(cfg, base)
    rows = [{"model": label, "method": "Default", **scores(base)}]
    del base
    for method in f["methods"]:
        model, _ = C.unlearned(cfg, method, sp)
        mdir = out / "models" / method
        row = {"model": label, "method": method.upper(), **scores(model)}
        for p in f["harmful_ps"]:
            key = {0.1: "harmful_p01", 0.3: "harmful_p03"}.get(p)
            if key:
                row[key] = C.attack(cfg, f"{method}-harmful-p{p:g}", mdir, model, sp.forget, p=p)[0].score
        if f.get("benign"):
            row["benign"] = C.attack(cfg, f"{method}-benign", mdir, model, sp.forget, kind="benign")[0].score
        rows.append(row)
        C.log(f"{method.upper()}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float)))
        del model
    table = table_from_rows(rows, title=f"Experimental results ({cfg['data'].get('file') or 'embedded FaithUn-format facts'})",
                            note=f.get("note", ""))
    print(table.to_markdown())
    return table.save(out, stem="table1")


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "table1")

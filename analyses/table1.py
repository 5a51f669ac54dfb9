#!/usr/bin/env python
"""Paper Table 1 — FS, RS, US and the harmful/benign attack scores of every method (§6.3).

For the base model (Default) and each method: FS = forget accuracy, RS = test-set accuracy,
US = utility (shipped general-knowledge set, or lm-eval tasks with ``evaluation.utility_tasks``),
harmful attack scores for each p of ``attacks.harmful.ps`` (paper 0.1 and 0.3), and the benign
attack score (mean over seeds of the max FS during retraining, :mod:`neuronscope.attacks`).

    python analyses/table1.py --quick
    python analyses/table1.py --config configs/llama-3.2-3b-faithun.json

Study stages: splits, unlearn, evaluate, attack, table (= ``neuronscope study`` without
attribution and lens). Writes ``table1.csv``, ``table1.md``, ``table1.html`` and ``table1.json``.
"""

from __future__ import annotations

import _common as C

QUICK = {"methods": {"ga": {"lr": 5e-5}, "gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5, "lam": 1e-3}},
         "attacks": {"harmful": {"ps": [0.1, 0.3]}},
         "title": "Experimental results (embedded FaithUn-format facts)",
         "note": "quick run: embedded SmolLM2, small splits, 1 seed on CPU"}


def main(study, f: dict) -> dict:
    from neuronscope.study import Study

    cfg = study.config.merged({"stages": ["evaluate", "attack"], "lens": False})
    Study(cfg, study.out, progress=study.progress).run()
    from neuronscope.study import table_from_run

    table = table_from_run(study.out)
    print(table.to_markdown())
    return table.save(study.out, stem="table1")


if __name__ == "__main__":
    C.run(main, __doc__, QUICK, "table1")

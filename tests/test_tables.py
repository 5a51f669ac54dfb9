"""Results table rendering (paper Tables 1/2 layout): exact text for a two-row example."""

from __future__ import annotations

import csv
import io

import pytest

from neuronscope.errors import NeuronscopeError
from neuronscope.tables import ResultsTable, TableRow, format_score, table_from_rows


@pytest.fixture
def two_rows() -> ResultsTable:
    return table_from_rows(
        [
            dict(model="SmolLM2", method="Default", fs=0.9192, rs=0.8922, us=0.574),
            dict(model="SmolLM2", method="GA", fs=0.0, rs=0.5841, us=0.5401, harmful_p01=0.6842, harmful_p03=0.7333, benign=0.1671),
        ],
        title="Table 1",
        note="1 seed on CPU",
    )


def test_format_score() -> None:
    assert format_score(None) == "-"
    assert format_score(0.0) == "0.00"
    assert format_score(1.0) == "100.00"
    assert format_score(0.33333) == "33.33"
    assert format_score(0.12344) == "12.34"
    assert format_score(0.12346) == "12.35"
    assert format_score(2 / 3) == "66.67"


def test_csv_exact(two_rows: ResultsTable) -> None:
    assert two_rows.to_csv() == (
        "Model,Method,FS (↓),RS (↑),US (↑),Harmful Attack p=0.1 (↓),Harmful Attack p=0.3 (↓),Benign Attack (↓)\n"
        "SmolLM2,Default,91.92,89.22,57.40,-,-,-\n"
        "SmolLM2,GA,0.00,58.41,54.01,68.42,73.33,16.71\n"
    )
    parsed = list(csv.reader(io.StringIO(two_rows.to_csv())))
    assert len(parsed) == 3 and all(len(r) == 8 for r in parsed)


def test_markdown_exact(two_rows: ResultsTable) -> None:
    assert two_rows.to_markdown() == (
        "| Model | Method | FS (↓) | RS (↑) | US (↑) | Harmful Attack p=0.1 (↓) | Harmful Attack p=0.3 (↓) | Benign Attack (↓) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| SmolLM2 | Default | 91.92 | 89.22 | 57.40 | - | - | - |\n"
        "|  | GA | 0.00 | 58.41 | 54.01 | 68.42 | 73.33 | 16.71 |\n"
        "\n"
        "Table: Table 1. Note: 1 seed on CPU\n"
    )


def test_html_exact(two_rows: ResultsTable) -> None:
    assert two_rows.to_html() == (
        '<table class="neuronscope-results">\n'
        "  <caption>Table 1. Note: 1 seed on CPU</caption>\n"
        "  <thead>\n"
        '    <tr><th rowspan="2">Model</th><th rowspan="2">Method</th><th rowspan="2">FS (↓)</th>'
        '<th rowspan="2">RS (↑)</th><th rowspan="2">US (↑)</th><th colspan="2">Harmful Attack (↓)</th>'
        '<th rowspan="2">Benign Attack (↓)</th></tr>\n'
        "    <tr><th>p = 0.1</th><th>p = 0.3</th></tr>\n"
        "  </thead>\n"
        "  <tbody>\n"
        '    <tr><th rowspan="2">SmolLM2</th><td>Default</td><td>91.92</td><td>89.22</td><td>57.40</td>'
        "<td>-</td><td>-</td><td>-</td></tr>\n"
        "    <tr><td>GA</td><td>0.00</td><td>58.41</td><td>54.01</td><td>68.42</td><td>73.33</td><td>16.71</td></tr>\n"
        "  </tbody>\n"
        "</table>\n"
    )


def test_html_escapes_and_groups() -> None:
    t = table_from_rows([dict(model="A<b>", method="x&y", fs=0.5), dict(model="B", method="GD", fs=0.25)])
    h = t.to_html()
    assert "<th>A&lt;b&gt;</th><td>x&amp;y</td><td>50.00</td>" in h
    assert "<th>B</th><td>GD</td><td>25.00</td>" in h
    md = t.to_markdown()
    assert "| A<b> | x&y | 50.00 |" in md and "| B | GD | 25.00 |" in md  # new group names its model


def test_save_and_load_roundtrip(tmp_path, two_rows: ResultsTable) -> None:
    paths = two_rows.save(tmp_path)
    assert sorted(paths) == ["csv", "html", "json", "md"]
    assert paths["csv"].read_text(encoding="utf-8") == two_rows.to_csv()
    back = ResultsTable.load(paths["json"])
    assert back.to_markdown() == two_rows.to_markdown()
    assert back.rows[1].harmful_p03 == pytest.approx(0.7333)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "0.3"])
def test_row_rejects_non_fractions(bad) -> None:
    with pytest.raises(NeuronscopeError, match="field 'fs'"):
        TableRow(model="m", method="GA", fs=bad)


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(NeuronscopeError, match="no such results table"):
        ResultsTable.load(tmp_path / "nope.json")


# ---------------------------------------------------------------- US column: the utility score
def test_utility_default_is_mcqa_accuracy_on_the_shipped_set(tiny_llama) -> None:
    from neuronscope.data import load_utility
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.utility import utility_score

    items = load_utility()
    res = utility_score(tiny_llama)
    expected = mcqa_evaluate(tiny_llama, items).accuracy
    assert res.source == "shipped" and res.n_items == {"shipped": len(items)}
    assert res.score == pytest.approx(expected) and res.per_task == {"shipped": pytest.approx(expected)}
    sub = utility_score(tiny_llama, items=items[:12])
    assert sub.score == pytest.approx(mcqa_evaluate(tiny_llama, items[:12]).accuracy)


def test_utility_lm_eval_missing_is_a_clear_error(tiny_llama, monkeypatch) -> None:
    import sys

    from neuronscope.utility import utility_score

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError, installed or not
    with pytest.raises(NeuronscopeError, match=r"lm-eval is not installed.*pip install 'neuronscope\[lm-eval\]'"):
        utility_score(tiny_llama, tasks=["paper"])


def test_utility_from_lm_eval_results_reads_each_task_metric() -> None:
    from neuronscope.utility import LM_EVAL_TASKS, utility_from_lm_eval

    results = {
        "mmlu": {"acc,none": 0.5, "acc_stderr,none": 0.01},
        "gsm8k": {"exact_match,strict-match": 0.2, "exact_match,flexible-extract": 0.3},
        "hellaswag": {"acc,none": 0.4, "acc_norm,none": 0.6},
        "arc_challenge": {"acc,none": 0.3, "acc_norm,none": 0.35},
        "winogrande": {"acc,none": 0.55},
    }
    res = utility_from_lm_eval(results, list(LM_EVAL_TASKS), limit=500)
    assert res.per_task == {"mmlu": 0.5, "gsm8k": 0.2, "hellaswag": 0.6, "arc_challenge": 0.35, "winogrande": 0.55}
    assert res.score == pytest.approx((0.5 + 0.2 + 0.6 + 0.35 + 0.55) / 5)
    assert res.source == "lm-eval" and res.n_items["mmlu"] == 500
    with pytest.raises(NeuronscopeError, match="task 'gsm8k' has no metric 'exact_match,strict-match'"):
        utility_from_lm_eval({"gsm8k": {"acc,none": 1.0}}, ["gsm8k"])


def test_plain_hf_copy_has_the_same_logits(tiny_llama) -> None:
    import torch

    from neuronscope.utility import plain_hf_copy

    copy = plain_hf_copy(tiny_llama)
    ids = torch.tensor([[1, 50, 900, 7, 3000]])
    with torch.no_grad():
        assert torch.allclose(copy(ids).logits, tiny_llama.bridge(ids), atol=1e-10)
    assert type(copy.model.layers[0].self_attn).__name__ == "LlamaAttention"  # plain HF modules again


# ---------------------------------------------------------------- the table of a study run
def _write_run(run_dir) -> None:
    """A study run folder whose table comes from hand-made stage results (no model needed)."""
    from neuronscope.study import Study, StudyConfig

    cfg = StudyConfig.table1_cpu(methods={"ga": {}, "ssiuu": {}}, model_label="SmolLM2-135M")
    study = Study(cfg, run_dir, progress=False)
    study.unlearning_info = lambda m: {"reached": True, "steps": 8}
    evals = {"default": {"forget": 1.0, "test": 0.6, "utility": 0.5}, "ga": {"forget": 0.3125, "test": 0.45, "utility": 0.48},
             "ssiuu": {"forget": 0.25, "test": 0.58, "utility": 0.5}}
    attacks = {"ga": {"harmful-p0.1": {"score": 0.5}, "harmful-p0.3": {"score": 0.6818181818}, "benign": {"score": 0.40625}},
               "ssiuu": {"harmful-p0.1": {"score": 0.2}, "harmful-p0.3": {"score": None, "error": "p=0.3: too big"},
                         "benign": {"score": 0.25}}}
    study.table(evals, attacks).save(run_dir)


def test_table_of_a_study_run(tmp_path) -> None:
    from neuronscope.study import table_from_run

    _write_run(tmp_path)
    t = table_from_run(tmp_path)
    md = t.to_markdown().splitlines()
    assert md[2:5] == [
        "| SmolLM2-135M | Default | 100.00 | 60.00 | 50.00 | - | - | - |",
        "|  | GA | 31.25 | 45.00 | 48.00 | 50.00 | 68.18 | 40.62 |",
        "|  | SSIUU | 25.00 | 58.00 | 50.00 | 20.00 | - | 25.00 |",
    ]
    assert "1 seed per attack" in t.note and "200 Alpaca-format items" in t.note
    assert "SSIUU harmful-p0.3 (p=0.3: too big)" in t.note


def test_report_command_tabulates_saved_results(tmp_path) -> None:
    from typer.testing import CliRunner

    from neuronscope.cli import app

    _write_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["report", "--runs", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "|  | GA | 31.25 | 45.00 | 48.00 | 50.00 | 68.18 | 40.62 |" in result.output
    assert (tmp_path / "out" / "table.csv").read_text().splitlines()[2] == "SmolLM2-135M,GA,31.25,45.00,48.00,50.00,68.18,40.62"
    assert (tmp_path / "out" / "table.html").exists()


def test_report_without_results_is_an_error(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "neuronscope.cli", "report", "--runs", str(tmp_path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path}: not a study run folder (table.json missing)"
    assert not (tmp_path / "o").exists()


def test_study_end_to_end_resume_and_partial_recompute(tmp_path, tiny_llama, monkeypatch) -> None:
    """Table 1 stages on the tiny model; a rerun loads nothing, a changed input recomputes only its dependants."""
    import json

    import neuronscope.models
    import neuronscope.unlearning
    from neuronscope.data import load_faithun
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.study import Study, StudyConfig

    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps(it.to_dict()) + "\n" for it in load_faithun()[:80]))
    cfg = StudyConfig.from_dict({
        "model": "tiny-llama", "data": {"file": str(data)}, "methods": {"ga": {}},
        "unlearning": {"lr": 1e-3, "max_epochs": 2, "batch_size": 4},
        "evaluation": {"test_limit": 10, "utility_limit": 10},
        "attacks": {"harmful": {"ps": [0.3], "lrs": [1e-3], "seeds": [0], "epochs": 1},
                    "benign": {"lrs": [1e-3], "seeds": [0], "n_alpaca": 4, "eval_every": 1}},
        "stages": ["evaluate", "attack"]})
    run = tmp_path / "run"
    summary = Study(cfg, run, progress=False, base=tiny_llama).run()
    from neuronscope.study import table_from_run

    table = table_from_run(run)
    assert [r.method for r in table.rows] == ["Default", "GA"]
    default, ga_row = table.rows
    assert default.harmful_p03 is None and default.benign is None
    splits = json.loads((run / "splits.json").read_text())["splits"]
    assert len(splits["forget"]) == 4  # 5 % of 80
    assert default.fs == 1.0
    forget = [it for it in load_faithun()[:80] if it.id in set(splits["forget"])]
    assert ga_row.fs == pytest.approx(mcqa_evaluate(neuronscope.models.load_model(str(run / "models" / "ga")), forget).accuracy)
    atk = json.loads((run / "stages" / "attack_ga_harmful-p0.3.json").read_text())["value"]
    assert ga_row.harmful_p03 == atk["score"]
    if atk["score"] is None:  # the tiny model's pool can be empty: recorded, not fatal
        assert summary["attacks"]["ga"]["not_run"]["harmful-p0.3"] == atk["error"]
    else:
        assert atk["score"] == pytest.approx(summary["attacks"]["ga"]["harmful"]["harmful-p0.3"]["max_fs"]["mean"])
    assert ga_row.fs == summary["accuracy"]["ga"]["forget"]["value"]
    assert set(summary["verdict"]["ga"]) >= {"label", "rule", "reasons", "evidence"}
    assert json.loads((run / "verdict.json").read_text())
    assert (run / "table.md").read_text() == table.to_markdown()

    # Resuming with every stage present neither loads a model nor trains.
    def boom(*a, **k):
        raise AssertionError("model loaded or trained on resume")

    monkeypatch.setattr(neuronscope.models, "load_model", boom)
    monkeypatch.setattr(neuronscope.unlearning, "unlearn", boom)
    again = Study(cfg, run, progress=False).run()
    assert again["table"] == summary["table"] and again["accuracy"] == summary["accuracy"]
    # A changed evaluation input re-scores (reloading the saved model) but does not retrain.
    monkeypatch.undo()
    monkeypatch.setattr(neuronscope.unlearning, "unlearn", boom)
    other = cfg.merged({"evaluation": {"test_limit": 5}, "attacks": {"harmful": None, "benign": None}})
    changed = Study(other, run, progress=False).run()
    assert changed["unlearning"]["ga"]["steps"] == summary["unlearning"]["ga"]["steps"]
    assert changed["accuracy"]["ga"]["forget"] == summary["accuracy"]["ga"]["forget"]
    assert json.loads((run / "study.json").read_text())["evaluation"]["test_limit"] == 5

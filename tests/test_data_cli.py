"""Real-format data through the real CLI (issue 13 deliverable 2): ``--data`` of every command
goes through :func:`neuronscope.pipeline.load_items`; run configs honour their ``data`` block;
a run's ``splits.json`` made on a user's file is reloaded by ``attack`` without the embedded set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neuronscope import data as d
from neuronscope.cli import app
from tests.test_data_releases import tofu_rows, write_release, write_table

REPO = Path(__file__).resolve().parents[1]


def _invoke(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_tofu_run_config_without_data_is_refused_before_any_output(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = _invoke(["unlearn", "--method", "gd", "--config", REPO / "configs" / "llama-3.2-3b-tofu.json", "--model", "tiny-llama", "--out", out])
    assert r.exit_code != 0 and not out.exists()
    assert "field 'data': dataset 'tofu' names no data" in str(r.exception or r.output)


def test_run_config_data_block_names_the_file(tmp_path: Path) -> None:
    write_table(tmp_path / "mine.csv", [{"prompt": "x"}])
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data": {"dataset": "tofu", "file": "mine.csv"}, "methods": {"gd": {"lr": 1e-4}}}))
    r = _invoke(["unlearn", "--method", "gd", "--config", cfg, "--model", "tiny-llama", "--out", tmp_path / "run"])
    # The relative file is found beside the config and read: its missing column is the error.
    assert r.exit_code != 0
    assert str(r.exception).startswith("mine.csv: column 'question' is missing")


@pytest.mark.slow
def test_release_and_tofu_through_attribute_unlearn_attack(tmp_path: Path) -> None:
    release = write_release(tmp_path / "dataset").parent
    rows = [r | {"author": f"author {i // 2}"} for i, r in enumerate(tofu_rows(perturbed=False, authors=2, per=2))]
    tofu = write_table(tmp_path / "forget01.parquet", rows)  # small blocks: name the author (default: 20 per author)
    for name, src, n_forget in (("release", release, 2), ("tofu", tofu, 2)):
        if name == "release":
            r = _invoke(["attribute", "--model", "tiny-llama", "--data", f"{src}:forget", "--out", tmp_path / f"{name}.safetensors"])
            assert r.exit_code == 0, r.output
            assert f"wrote {tmp_path / f'{name}.safetensors'} ({n_forget} samples" in r.output
        run = tmp_path / f"{name}-run"
        r = _invoke(["unlearn", "--method", "gd", "--model", "tiny-llama", "--data", src, "--max-steps", "1", "--lr", "1e-4",
                     "--threshold=-1", "--eval-splits", "forget", "--out", run])
        assert r.exit_code == 0, r.output
        saved = json.loads((run / "splits.json").read_text())["splits"]
        assert saved["source"]["location"] == str((release / "FaithUnBench.json" if name == "release" else tofu).resolve())
        summary = json.loads((run / "summary.json").read_text())
        assert summary["stop_metric"] == ("accuracy" if name == "release" else "rouge")
        assert summary["splits"]["forget"] == n_forget
        if name == "release":  # the published split: clusters 1 and 6
            assert saved["forget"] == ["Q76-hop1-1", "Q1339-hop1-0"]
        r = _invoke(["attack", "--model", run / "model", "--data", run / "splits.json", "--p", "0.5", "--seeds", "1",
                     "--epochs", "1", "--lr", "1e-4", "--out", tmp_path / f"{name}-attack"])
        assert r.exit_code == 0, r.output
        res = json.loads((tmp_path / f"{name}-attack" / "attack.json").read_text())
        assert res["config"]["metric"] == ("accuracy" if name == "release" else "rouge")
        assert ("attack score (mcqa)" if name == "release" else "attack score (ROUGE-L recall)") in r.output
        assert res["n_forget"] == n_forget

"""Learning-rate search (lowest lr reaching the threshold wins), the λ sweep, run configs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuronscope.errors import ConfigError
from neuronscope.models import clone_model
from neuronscope.unlearning import UnlearningConfig, UnlearningResult, lambda_sweep, load_run_config, lr_search
from neuronscope.unlearning import search as search_mod
from neuronscope.unlearning.run import resolve_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _fake_unlearn(reach_from: float, calls: list):
    def fake(model, forget, retain, cfg, **kw):
        calls.append(cfg.lr)
        return UnlearningResult(cfg.lr >= reach_from, 3, 1, [], 0.1, cfg)

    return fake


def test_lr_search_returns_lowest_reaching_lr(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(search_mod, "unlearn", _fake_unlearn(1e-5, calls))
    made = []
    best, res = lr_search(lambda: made.append(object()) or made[-1], [1], [2], UnlearningConfig(), [1e-6, 5e-6, 1e-5, 5e-5])
    assert best == 1e-5 and res.reached and res.config.lr == 1e-5
    assert calls == [1e-6, 5e-6, 1e-5]  # ascending, stops at the first success
    assert len(made) == 3 and res.model is made[-1]  # a fresh model per try; the winner is returned


def test_lr_search_none_reached_and_bad_grid(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(search_mod, "unlearn", _fake_unlearn(1.0, calls))
    best, res = lr_search(object, [1], [2], UnlearningConfig(), [1e-6, 1e-5])
    assert best is None and not res.reached and res.config.lr == 1e-5
    for grid in ([1e-5, 1e-6], [], [0.0, 1e-5]):
        with pytest.raises(ConfigError, match="lrs"):
            lr_search(object, [1], [2], UnlearningConfig(), grid)


def test_lr_search_on_tiny_model(tiny_llama, forget, retain):
    cfg = UnlearningConfig(method="ga", batch_size=5, max_epochs=1, threshold=0.0)
    best, res = lr_search(lambda: clone_model(tiny_llama), forget[:2], retain, cfg, [1e-6, 1e-3], progress=False)
    assert res.config.lr in (1e-6, 1e-3) and res.model is not None
    assert (best is None) == (not res.reached)


def test_lambda_sweep_rows(tiny_llama, forget, retain, tmp_path):
    cfg = UnlearningConfig(method="gd", lr=1e-4, batch_size=5, max_steps=1, threshold=-1.0, ssiuu_grad="first_order")
    rows = lambda_sweep(lambda: clone_model(tiny_llama), forget, retain, cfg, lams=(1e-4, 1.0), test_items=retain[:2],
                        extra_fn=lambda m, r: {"steps_again": r.steps}, run_dir=tmp_path, progress=False)
    assert [r["lam"] for r in rows] == [1e-4, 1.0]
    for r in rows:
        assert r["lr"] == 1e-4 and r["steps"] == 1 and r["steps_again"] == 1
        assert 0 <= r["FS"] <= 1 and 0 <= r["RS_retain"] <= 1 and 0 <= r["RS_test"] <= 1
    assert json.loads((tmp_path / "lambda_sweep.json").read_text()) == rows
    assert (tmp_path / "lam-0.0001" / "result.json").exists()
    assert json.loads((tmp_path / "lam-1" / "config.json").read_text())["method"] == "ssiuu"


# ----------------------------------------------------------------------------- run configs


@pytest.mark.parametrize("name", ["llama-3.2-3b-faithun.json", "qwen2.5-3b-faithun.json", "llama-3.2-3b-tofu.json"])
def test_paper_run_configs_resolve_every_method(name):
    raw = json.loads((CONFIGS / name).read_text())
    tofu = "tofu" in name
    for method in raw["methods"]:
        rc = load_run_config(CONFIGS / name, method)
        assert rc.config.method == method and rc.lrs == sorted(rc.lrs) and rc.lrs
        assert rc.config.threshold == (0.1971 if tofu else 0.33)
        assert rc.config.stop_metric == ("rouge" if tofu else "accuracy")
        assert rc.runtime == {"dtype": "bfloat16", "device": "cuda"}
    assert load_run_config(CONFIGS / name, "ssiuu").config.lam == (1e-4 if tofu else 1e-3)
    assert load_run_config(CONFIGS / name, "ssiuu").lams == [1e-4, 1e-3, 1e-2, 1.0]
    rmu = load_run_config(CONFIGS / name, "rmu").config
    assert (rmu.rmu_layer, rmu.rmu_c) == (7, 20.0)
    klue = load_run_config(CONFIGS / name, "klue").config
    assert (klue.klue_fraction, klue.klue_alpha, klue.klue_n) == (0.1, 10.0, 5)
    assert "npo" not in raw["methods"] if tofu else "npo" in raw["methods"]


def test_resolve_config_precedence(tmp_path):
    cfg, grid, model, runtime = resolve_config("ssiuu", CONFIGS / "llama-3.2-3b-faithun.json", overrides={"lam": 0.01, "max_epochs": None})
    assert cfg.lam == 0.01 and cfg.max_epochs == 10 and grid[0] == 1e-6 and model.startswith("meta-llama/")
    cfg, grid, _, _ = resolve_config("gd", CONFIGS / "llama-3.2-3b-faithun.json", lrs=[3e-5])
    assert cfg.lr == 3e-5 and grid == []
    cfg, grid, model, runtime = resolve_config("npo", None, lrs=[1e-6, 1e-5], overrides={"beta": 0.5})
    assert cfg.method == "npo" and cfg.beta == 0.5 and grid == [1e-6, 1e-5] and model is None and runtime == {}
    (tmp_path / "bad.json").write_text('{"unlearning": {"lr": 0}, "methods": {"gd": {}}}')
    with pytest.raises(ConfigError, match=r"lr: must be > 0"):
        resolve_config("gd", tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"defaults": {"lr": 1e-5}, "methods": {"gd": {}}}')
    with pytest.raises(ConfigError, match="field 'defaults' is the old run-config schema"):
        resolve_config("gd", tmp_path / "old.json")
    (tmp_path / "bad2.json").write_text('{"methods": {"gd": {"lrs": [1e-4, 1e-5]}}}')
    with pytest.raises(ConfigError, match="ascending"):
        resolve_config("gd", tmp_path / "bad2.json")
    with pytest.raises(ConfigError, match="method 'rmu' is not configured"):
        resolve_config("rmu", tmp_path / "bad2.json")


# ----------------------------------------------------------------------------- CLI


def test_cli_unlearn_writes_model_config_history(tmp_path):
    from typer.testing import CliRunner

    from neuronscope.cli import app
    from neuronscope.models import load_model

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["unlearn", "--method", "gd", "--model", "tiny-llama", "--out", str(out), "--lr", "1e-4",
                                 "--max-steps", "1", "--threshold=-1", "--eval-splits", "forget,retain"])
    assert r.exit_code == 0, r.output
    assert "gd lr 0.0001" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["splits"]["forget"] == 32 and 0 <= summary["FS"] <= 1
    assert set(summary) >= {"FS", "RS_retain", "initial_FS", "seconds_per_step", "reached"}
    assert UnlearningConfig.load(out / "config.json").lr == 1e-4
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert set(json.loads((out / "splits.json").read_text())["splits"]) >= {"forget", "retain", "test"}
    reloaded = load_model(str(out / "model"))
    base = load_model("tiny-llama")
    assert not all(torch.equal(a, b) for a, b in zip(reloaded.hf_model.parameters(), base.hf_model.parameters()))
    bad = CliRunner().invoke(app, ["unlearn", "--method", "gd", "--model", "tiny-llama", "--out", str(tmp_path / "x"), "--lr", "0"])
    assert bad.exit_code != 0


def test_cli_known_only_and_reused_splits(tmp_path):
    from typer.testing import CliRunner

    from neuronscope.cli import app

    common = ["unlearn", "--method", "ga", "--model", "tiny-llama", "--lr", "1e-4", "--max-steps", "1",
              "--threshold=-1", "--eval-splits", "forget"]
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a"), "--known-only", "--known-candidates", "15"])
    assert r.exit_code == 0, r.output
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    split_a = json.loads((tmp_path / "a" / "splits.json").read_text())["splits"]
    assert 0 < a["known_pool"] <= 15 and a["splits"]["forget"] == min(32, a["known_pool"])
    assert a["initial_FS"] == 1.0  # the forget split holds only facts the base model answers correctly
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--splits", str(tmp_path / "a" / "splits.json")])
    assert r.exit_code == 0, r.output
    split_b = json.loads((tmp_path / "b" / "splits.json").read_text())["splits"]
    assert split_b == split_a

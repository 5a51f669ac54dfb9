"""The figure/table scripts in analyses/ and the multi-method figure functions they call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuronscope.influence import InfluenceVariation
from neuronscope.plots import attack_lr_figure, heatmap_grid_figure, lambda_sweep_figure, top_m_bar_figure

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["fig3", "fig4", "fig5", "fig6", "fig7", "table1"]


def _run(args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, **kw)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    p = _run([f"analyses/{script}.py", "--help"])
    assert p.returncode == 0, p.stderr
    assert "--quick" in p.stdout and "--config" in p.stdout and "--model" in p.stdout


def test_paper_configs_carry_every_figure_block():
    """The analyses read the one study schema in configs/ (SPEC §17): each FaithUn run configures every figure."""
    from neuronscope.study import StudyConfig

    for path in (ROOT / "configs").glob("*faithun.json"):
        cfg = StudyConfig.load(path)
        assert set(cfg.figures) >= {"fig3", "fig4", "fig5", "fig6", "fig7"}, path.name


def test_bad_arguments_fail_with_one_line(tmp_path):
    p = _run(["analyses/fig4.py", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    assert p.returncode == 2 and p.stderr.strip() == f"error: {tmp_path / 'missing.json'}: config file not found"
    p = _run(["analyses/fig4.py"])  # neither --quick nor --config
    assert p.returncode == 2 and "--quick" in p.stderr


def test_fig4_quick_on_tiny_llama(tmp_path):
    """The cheapest analysis end to end: base + GD/SSIUU unlearning + logit lens (tiny model, tiny config)."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({
        "data": {"limit": 40, "forget": 0.1, "retain": 0.1, "test": 0.1, "known_only": True},
        "unlearning": {"max_epochs": 1, "batch_size": 4},
        "methods": {"gd": {"lr": 1e-3}, "ssiuu": {"lr": 1e-3, "ssiuu_grad": "first_order"}},
    }))
    out = tmp_path / "fig4"
    p = _run(["analyses/fig4.py", "--config", str(cfg), "--model", "tiny-llama", "--out", str(out),
              "--no-progress", "--threads", "1"], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    payload = json.loads((out / "logit_lens.json").read_text())
    assert list(payload["models"]) == ["Default", "GD", "SSIUU"]
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert len(splits["forget"]) == 4
    for r in payload["models"].values():
        assert len(r["accuracy"]) == 3 and r["final_layer_max_abs_diff"] < 1e-3
        assert r["n_items"] + len(r["skipped"]) == 4
        assert all(0 <= a <= 1 for a in r["accuracy"])
    assert (out / "logit_lens.html").exists()
    # The default model's numbers are the library's on the same items.
    from neuronscope.data import FaithUnSplits, load_faithun
    from neuronscope.lens import logit_lens
    from neuronscope.models import load_model

    items = FaithUnSplits.from_dict(splits, load_faithun()[:40]).forget
    ref = logit_lens(load_model("tiny-llama"), items)
    np.testing.assert_allclose(payload["models"]["Default"]["accuracy"], ref.accuracy)
    # the forget split holds facts the base model knows, so unlearning trained; models saved, and changed
    info = json.loads((out / "stages" / "unlearn_gd.json").read_text())["value"]
    assert info["initial_forget_score"] == 1.0 and info["steps"] >= 1
    assert (out / "models" / "gd" / "config.json").exists()
    assert payload["models"]["GD"]["logit_diff"] != payload["models"]["Default"]["logit_diff"]
    # rerun resumes from the cache (no training) and gives the same report
    p2 = _run(["analyses/fig4.py", "--config", str(cfg), "--model", "tiny-llama", "--out", str(out),
               "--no-progress", "--threads", "1"], timeout=600)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert "unlearning with" not in p2.stderr
    assert json.loads((out / "logit_lens.json").read_text())["models"]["GD"]["accuracy"] == payload["models"]["GD"]["accuracy"]


# ------------------------------------------------------------------ multi-method figures


def _var(scale: float) -> InfluenceVariation:
    g = torch.Generator().manual_seed(int(scale * 10))
    keys = [(t, layer) for layer in range(3) for t in ("q", "k", "up")]
    plus = {k: scale * torch.rand(150, generator=g) for k in keys}
    minus = {k: 2 * scale * torch.rand(150, generator=g) for k in keys}
    return InfluenceVariation(plus, minus, {"label": str(scale)})


def test_top_m_bar_and_heatmap_grid():
    vs = {"GD": _var(1.0), "SSIUU": _var(0.3)}
    fig = top_m_bar_figure(vs, m=100)
    plus, minus = fig.data
    assert list(plus.x) == ["GD", "SSIUU"]
    assert list(plus.y) == pytest.approx([vs["GD"].top_m_sum("+", 100), vs["SSIUU"].top_m_sum("+", 100)])
    assert list(minus.y) == pytest.approx([vs["GD"].top_m_sum("-", 100), vs["SSIUU"].top_m_sum("-", 100)])
    grid = heatmap_grid_figure(vs, top=100)
    assert len(grid.data) == 4  # 2 methods × (D̃+, D̃−)
    ref, types, layers = vs["SSIUU"].module_layer_map("-", top=100)
    np.testing.assert_allclose(np.array(grid.data[3].z, dtype=float), ref)
    assert list(grid.data[3].y) == types == ["q", "k", "up"]
    # shared colour scale per sign: zmax of D̃− is the largest cell over both methods
    assert grid.data[1].zmax == pytest.approx(max(np.nanmax(vs[k].module_layer_map("-", 100)[0]) for k in vs))


def test_lambda_sweep_and_attack_lr_figures():
    rows = [
        {"lam": 1e-4, "lr": 5e-5, "reached": True, "steps": 4, "FS": 0.3, "RS_retain": 0.8, "RS_test": 0.7,
         "harmful p=0.1": 0.6},
        {"lam": 1.0, "lr": 5e-5, "reached": False, "steps": 9, "FS": 0.5, "RS_retain": 0.4, "RS_test": 0.3,
         "harmful p=0.1": 0.2},
    ]
    fig = lambda_sweep_figure(rows)
    assert [t.name for t in fig.data] == ["FS", "RS_retain", "RS_test", "harmful p=0.1"]  # no lr/steps/reached
    assert list(fig.data[1].x) == [1e-4, 1.0] and list(fig.data[1].y) == [0.8, 0.4]
    assert fig.layout.xaxis.type == "log"

    from neuronscope.attacks import AttackConfig, AttackResult, AttackRun

    res = AttackResult(AttackConfig(kind="harmful", p=0.1, lrs=(1e-5, 1e-6), seeds=(0, 1)), runs=[
        AttackRun(0, 1e-5, [1, 2], [0.2, 0.6], 0.0), AttackRun(1, 1e-5, [1, 2], [0.4, 0.2], 0.0),
        AttackRun(0, 1e-6, [1, 2], [0.1, 0.1], 0.0), AttackRun(1, 1e-6, [1, 2], [0.0, 0.3], 0.0)])
    fig = attack_lr_figure({"GA": {"harmful p=0.1": res, "benign": {1e-5: 0.1, 1e-7: 0.05}},
                            "GD": {"harmful p=0.1": res.to_dict()}})
    ga_h = fig.data[0]
    assert list(ga_h.x) == [1e-6, 1e-5]
    assert list(ga_h.y) == pytest.approx([(0.1 + 0.3) / 2, (0.6 + 0.4) / 2])  # mean over seeds of max FS
    assert list(fig.data[2].y) == pytest.approx(list(ga_h.y))  # from to_dict()
    single = attack_lr_figure({"harmful": {1e-5: 0.5, 1e-6: 0.2}})
    assert list(single.data[0].y) == [0.2, 0.5]

"""Attribution correlation (paper Fig. 6, SPEC §8) against scipy and a hand-worked example."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from neuronscope.attribution import NeuronAttribution
from neuronscope.correlation import (
    CorrelationResult,
    attribution_correlation,
    correlation_report,
    neuron_means,
)
from neuronscope.errors import NeuronscopeError


def _attr(mx: dict, mn: dict, fp: str = "fp", model: str = "m") -> NeuronAttribution:
    n = next(iter(mx.values())).shape[0]
    return NeuronAttribution(max=mx, min=mn, target_value=torch.ones(n), meta={"data_fingerprint": fp, "model": model})


def test_hand_worked_example():
    # 2 samples; modules q.0 (2 neurons) and up.0 (2 neurons) -> 4 neurons.
    a = _attr(
        {("q", 0): torch.tensor([[1.0, 2.0], [3.0, 2.0]]), ("up", 0): torch.tensor([[0.0, 4.0], [2.0, 8.0]])},
        {("q", 0): torch.tensor([[-1.0, 0.0], [-1.0, -2.0]]), ("up", 0): torch.tensor([[-3.0, 0.0], [-1.0, 0.0]])},
    )
    b = _attr(
        {("q", 0): torch.tensor([[2.0, 2.0], [2.0, 4.0]]), ("up", 0): torch.tensor([[1.0, 5.0], [1.0, 5.0]])},
        {("q", 0): torch.tensor([[0.0, -1.0], [-2.0, -1.0]]), ("up", 0): torch.tensor([[-4.0, 0.0], [0.0, 0.0]])},
    )
    # mean over samples of max: a = [2, 2, 1, 6], b = [2, 3, 1, 5]
    np.testing.assert_allclose(neuron_means(a, "max"), [2, 2, 1, 6])
    np.testing.assert_allclose(neuron_means(b, "max"), [2, 3, 1, 5])
    # mean of min: a = [-1, -1, -2, 0], b = [-1, -1, -2, 0]
    np.testing.assert_allclose(neuron_means(a, "min"), [-1, -1, -2, 0])
    np.testing.assert_allclose(neuron_means(b, "min"), [-1, -1, -2, 0])
    res = attribution_correlation(a, b, label_a="unlearned", label_b="attacked")
    # Pearson by hand for max: x = [2,2,1,6] (mean 2.75), y = [2,3,1,5] (mean 2.75)
    # dx = [-.75,-.75,-1.75,3.25], dy = [-.75,.25,-1.75,2.25]
    # Σdxdy = .5625 - .1875 + 3.0625 + 7.3125 = 10.75; Σdx² = 14.75; Σdy² = 8.75
    assert res.stats["max"]["pearson"] == pytest.approx(10.75 / math.sqrt(14.75 * 8.75))
    # Spearman: ranks x = [2.5,2.5,1,4], y = [2,3,1,4] -> Pearson of ranks
    rx, ry = np.array([2.5, 2.5, 1, 4]), np.array([2, 3, 1, 4])
    assert res.stats["max"]["spearman"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    # min vectors are identical -> 1
    assert res.stats["min"]["pearson"] == pytest.approx(1.0)
    assert res.stats["min"]["spearman"] == pytest.approx(1.0)
    # headline = both = concatenation [max; min]
    x = np.array([2, 2, 1, 6, -1, -1, -2, 0.0])
    y = np.array([2, 3, 1, 5, -1, -1, -2, 0.0])
    assert res.pearson == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert res.to_dict()["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert res.n_neurons == 4 and res.n_samples == 2
    # per module type: q max x=[2,2], y=[2,3] -> x constant -> NaN; up max x=[1,6], y=[1,5] -> 1
    assert math.isnan(res.by_module["max"]["q"]["pearson"])
    assert res.by_module["max"]["up"]["pearson"] == pytest.approx(1.0)
    assert res.summary["unlearned"]["max"]["mean"] == pytest.approx(2.75)


def test_against_scipy_on_random_attributions():
    g = torch.Generator().manual_seed(0)
    keys = [("q", 0), ("k", 0), ("down", 0), ("q", 1), ("k", 1), ("down", 1)]
    sizes = {"q": 16, "k": 8, "down": 12}
    mx_a = {k: torch.rand(5, sizes[k[0]], generator=g, dtype=torch.float64) for k in keys}
    mn_a = {k: -torch.rand(5, sizes[k[0]], generator=g, dtype=torch.float64) for k in keys}
    mx_b = {k: v + 0.3 * torch.rand(v.shape, generator=g, dtype=torch.float64) for k, v in mx_a.items()}
    mn_b = {k: v ** 3 for k, v in mn_a.items()}
    a, b = _attr(mx_a, mn_a), _attr(mx_b, mn_b)
    res = attribution_correlation(a, b)
    for w, (sa, sb) in {"max": (mx_a, mx_b), "min": (mn_a, mn_b)}.items():
        x = torch.cat([sa[k].mean(0) for k in keys]).numpy()
        y = torch.cat([sb[k].mean(0) for k in keys]).numpy()
        pr, sr = stats.pearsonr(x, y), stats.spearmanr(x, y)
        assert res.stats[w]["pearson"] == pytest.approx(pr.statistic, rel=1e-12)
        assert res.stats[w]["pearson_p"] == pytest.approx(pr.pvalue, rel=1e-9)
        assert res.stats[w]["spearman"] == pytest.approx(sr.statistic, rel=1e-12)
        for t in ("q", "k", "down"):
            sel = torch.cat([torch.full((sizes[k[0]],), k[0] == t) for k in keys]).numpy()
            assert res.by_module[w][t]["spearman"] == pytest.approx(stats.spearmanr(x[sel], y[sel]).statistic)
    # identical models -> 1; a model against its negation -> -1 on max
    same = attribution_correlation(a, a)
    assert same.pearson == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    neg = attribution_correlation(a, _attr({k: -v for k, v in mx_a.items()}, mn_a))
    assert neg.stats["max"]["pearson"] == pytest.approx(-1.0)
    assert neg.stats["min"]["spearman"] == pytest.approx(1.0)


def test_mismatches_raise():
    mx = {("q", 0): torch.rand(3, 4)}
    mn = {("q", 0): -torch.rand(3, 4)}
    with pytest.raises(NeuronscopeError, match="different data"):
        attribution_correlation(_attr(mx, mn, fp="x"), _attr(mx, mn, fp="y"))
    with pytest.raises(NeuronscopeError, match="samples"):
        attribution_correlation(_attr(mx, mn), _attr({("q", 0): torch.rand(2, 4)}, {("q", 0): torch.rand(2, 4)}))
    with pytest.raises(NeuronscopeError, match="different modules"):
        attribution_correlation(_attr(mx, mn), _attr({("k", 0): mx[("q", 0)]}, {("k", 0): mn[("q", 0)]}))


def test_report_plots_and_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(1)
    mx = {("up", 0): torch.rand(4, 300, generator=g), ("up", 1): torch.rand(4, 300, generator=g)}
    mn = {k: -v for k, v in mx.items()}
    mx2 = {k: v + 0.1 * torch.rand(v.shape, generator=g) for k, v in mx.items()}
    res = attribution_correlation(_attr(mx, mn), _attr(mx2, mn), label_a="GD", label_b="GD+attack")
    fig = res.plot_scatter("max", max_points=100)
    assert len(fig.data[0].x) == 100  # downsampled for plotting
    assert f"{res.stats['max']['pearson']:.3f}" in fig.layout.title.text  # statistic (on all 600 neurons) shown
    vio = res.plot_distributions()
    assert {t.x[0] for t in vio.data} == {"GD", "GD+attack"}
    paths = correlation_report(res, tmp_path / "corr")
    d = json.loads(paths["json"].read_text())
    assert d["pearson"] == pytest.approx(res.pearson) and d["label_b"] == "GD+attack"
    assert "GD+attack" in paths["html"].read_text()
    back = CorrelationResult.load(paths["json"])
    assert back.stats["max"]["pearson"] == pytest.approx(res.stats["max"]["pearson"])
    assert back.n_neurons == 600 and not back.values


def test_on_real_attributions(tiny_llama):
    """Two real attribution runs of the same model on the same data correlate perfectly."""
    from neuronscope.attribution import AttributionConfig, attribute

    qs, ans = ["What is the capital of France?", "Who wrote Hamlet?"], ["Paris", "Shakespeare"]
    cfg = AttributionConfig(layers=(0,), module_types=("q", "up"))
    a1 = attribute(tiny_llama, qs, ans, cfg, progress=False)
    a2 = attribute(tiny_llama, qs, ans, cfg, progress=False)
    res = attribution_correlation(a1, a2)
    assert res.pearson == pytest.approx(1.0) and res.spearman == pytest.approx(1.0)
    assert res.n_neurons == tiny_llama.arch.n_neurons("q") + tiny_llama.arch.n_neurons("up")


def test_cli_correlate(tmp_path):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from neuronscope.cli import app

    g = torch.Generator().manual_seed(2)
    mx = {("q", 0): torch.rand(3, 50, generator=g), ("down", 0): torch.rand(3, 40, generator=g)}
    mn = {k: -torch.rand(3, v.shape[1], generator=g) for k, v in mx.items()}
    mx2 = {k: v * torch.rand(v.shape, generator=g) for k, v in mx.items()}
    a, b = _attr(mx, mn), _attr(mx2, mn)
    pa, pb = a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors")
    r = CliRunner().invoke(app, ["correlate", "--before-attr", str(pa), "--after-attr", str(pb),
                                 "--out", str(tmp_path / "c"), "--label-a", "GD", "--label-b", "GD+attack"])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "c" / "correlation.json").read_text())
    x = np.concatenate([torch.cat([mx[k].mean(0) for k in mx]).numpy(), torch.cat([mn[k].mean(0) for k in mn]).numpy()])
    y = np.concatenate([torch.cat([mx2[k].mean(0) for k in mx]).numpy(), torch.cat([mn[k].mean(0) for k in mn]).numpy()])
    assert d["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-6)
    assert d["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-6)
    # one file only: one clear line, exit code 2, nothing written
    p = subprocess.run([sys.executable, "-m", "neuronscope.cli", "correlate", "--before-attr", str(pa),
                        "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert p.returncode == 2 and "--after-attr" in p.stderr
    assert not (tmp_path / "bad").exists()
    p = subprocess.run([sys.executable, "-m", "neuronscope.cli", "correlate", "--before-attr", str(tmp_path / "nope"),
                        "--after-attr", str(pb), "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert p.returncode == 2 and "nope" in p.stderr and "Traceback" not in p.stderr

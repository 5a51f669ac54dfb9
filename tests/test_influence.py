"""D+/D− (paper Eq. 4–5, App. A) against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronscope.attribution import NeuronAttribution
from neuronscope.influence import InfluenceVariation, influence_variation, influence_variation_tensors


def test_hand_worked_example():
    # 2 samples, 3 neurons.
    max_b = torch.tensor([[0.5, 0.2, 0.0], [0.3, 0.4, 0.1]])
    max_a = torch.tensor([[0.1, -0.3, 0.2], [0.1, 0.6, 0.0]])
    min_b = torch.tensor([[-0.1, -0.2, 0.0], [-0.3, 0.0, -0.1]])
    min_a = torch.tensor([[-0.5, -0.1, 0.0], [-0.2, 0.1, -0.4]])
    dp, dm = influence_variation_tensors(max_b, min_b, max_a, min_a)
    # D+ neuron 0: ((0.5-0.1) + (0.3-0.1))/2 = 0.3
    # D+ neuron 1: ((0.2-max(-0.3,0)) + (0.4-0.6))/2 = (0.2 - 0.2)/2 = 0  (over-unlearning clipped)
    # D+ neuron 2: ((0.0-0.2) + (0.1-0.0))/2 = -0.05 -> clipped to 0 (contradictory)
    torch.testing.assert_close(dp, torch.tensor([0.3, 0.0, 0.0]))
    # D- neuron 0: ((-0.1+0.5) + (-0.3+0.2))/2 = (0.4 - 0.1)/2 = 0.15
    # D- neuron 1: ((-0.2+0.1) + (0.0-0.1))/2 = -0.1 -> 0
    # D- neuron 2: ((0-0) + (-0.1+0.4))/2 = 0.15
    torch.testing.assert_close(dm, torch.tensor([0.15, 0.0, 0.15]))


def _attr(mx, mn, fp="abc"):
    return NeuronAttribution(max=mx, min=mn, target_value=torch.ones(next(iter(mx.values())).shape[0]),
                             meta={"data_fingerprint": fp, "model": "m"})


def test_cumulative_top_m_and_module_layer_map():
    plus = {("q", 0): torch.tensor([0.1, 0.5, 0.0]), ("q", 1): torch.tensor([0.3, 0.2, 0.4]),
            ("down", 0): torch.tensor([0.05, 0.0, 0.0]), ("down", 1): torch.tensor([0.0, 0.0, 0.9])}
    minus = {k: v * 2 for k, v in plus.items()}
    var = InfluenceVariation(plus, minus)
    torch.testing.assert_close(var.cumulative("+", 3), torch.tensor([0.9, 1.4, 1.8]))
    assert var.top_m_sum("-", 2) == pytest.approx(2 * (0.9 + 0.5))
    grid, types, layers = var.module_layer_map("+", top=2)
    assert types == ["q", "down"] and layers == [0, 1]
    np.testing.assert_allclose(grid, [[0.3, 0.35], [0.025, 0.45]], rtol=1e-6)
    assert var.top_neurons("+", 2) == [("down", 1, 2, pytest.approx(0.9)), ("q", 0, 1, pytest.approx(0.5))]


def test_identical_models_give_zero_and_save_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    mx = {("up", 0): torch.rand(4, 5, generator=g), ("up", 1): torch.rand(4, 5, generator=g)}
    mn = {k: -v for k, v in mx.items()}
    var = influence_variation(_attr(mx, mn), _attr(mx, mn))
    assert all(float(v.abs().max()) == 0.0 for v in var.d_minus.values())
    # max_b - max(max_b, 0) = 0 for positive max
    assert all(float(v.abs().max()) == 0.0 for v in var.d_plus.values())
    var2 = InfluenceVariation.load(var.save(tmp_path / "inf.safetensors"))
    assert var2.keys == var.keys
    assert all(torch.equal(var2.d_plus[k], var.d_plus[k]) for k in var.keys)


def test_different_data_is_refused():
    mx = {("up", 0): torch.zeros(2, 3)}
    with pytest.raises(Exception, match="different data"):
        influence_variation(_attr(mx, mx, "a"), _attr(mx, mx, "b"))


def test_plots_build(tmp_path):
    plus = {("q", 0): torch.tensor([0.1, 0.5]), ("k", 0): torch.tensor([0.3, 0.2])}
    var = InfluenceVariation(plus, {k: v + 1 for k, v in plus.items()}, {"label": "GD"})
    fig = var.plot_heatmap(top=1)
    assert len(fig.data) == 2
    np.testing.assert_allclose(fig.data[1].z, [[1.5], [1.3]])
    cum = var.plot_cumulative(m=4)
    assert [tuple(np.round(t.y, 6)) for t in cum.data] == [(1.5, 2.8, 4.0, 5.1), (0.5, 0.8, 1.0, 1.1)]

"""Property-based tests (hypothesis) of the influence-variation maths and its aggregates (SPEC §6).

Checked on random attributions:

* ``influence_variation_tensors`` equals an independent numpy computation of paper Eq. 4–5 with
  the App. A clipping, has shape ``[neurons]``, is ≥ 0, and obeys the clipping bounds
  (D̃+ ≤ max(mean max_before, 0); identical models give D̃+ = D̃− = 0; a sample permutation
  changes nothing; more negative ``min_after`` never lowers D̃−, larger ``max_after`` never
  raises D̃+).
* ``InfluenceVariation.cumulative`` is non-decreasing, its last value is the sum of all D̃ and
  its m-th value is ``top_m_sum(m)``.
* ``module_layer_map`` cells lie between the cell's mean and its max (top = 1 gives the max,
  top ≥ cell size gives the mean); uncomputed cells are NaN.
* Seeded FaithUn splits are disjoint, deterministic and cover every item once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neuronscope.data import QAItem, split_faithun
from neuronscope.errors import NeuronscopeError
from neuronscope.influence import InfluenceVariation, influence_variation_tensors
from neuronscope.models import MODULE_TYPES

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def attributions(draw, n_min: int = 1, n_max: int = 6, k_max: int = 8):
    """Four ``[n, k]`` float64 tensors: max/min before and after (min ≤ max per model)."""
    n = draw(st.integers(n_min, n_max))
    k = draw(st.integers(1, k_max))
    shape = (n, k)
    a = draw(arrays(np.float64, shape, elements=_finite))
    b = draw(arrays(np.float64, shape, elements=_finite))
    c = draw(arrays(np.float64, shape, elements=_finite))
    d = draw(arrays(np.float64, shape, elements=_finite))
    max_b, min_b = np.maximum(a, b), np.minimum(a, b)
    max_a, min_a = np.maximum(c, d), np.minimum(c, d)
    return tuple(torch.from_numpy(x.copy()) for x in (max_b, min_b, max_a, min_a))


def _reference(max_b, min_b, max_a, min_a):
    """Paper Eq. 4–5 with App. A, written independently in numpy."""
    mb, nb, ma, na = (x.numpy() for x in (max_b, min_b, max_a, min_a))
    n = mb.shape[0]
    d_plus = np.zeros(mb.shape[1])
    d_minus = np.zeros(mb.shape[1])
    for s in range(n):
        d_plus += mb[s] - np.where(ma[s] > 0, ma[s], 0.0)
        d_minus += nb[s] - na[s]
    d_plus /= n
    d_minus /= n
    return np.where(d_plus > 0, d_plus, 0.0), np.where(d_minus > 0, d_minus, 0.0)


@SETTINGS
@given(attributions())
def test_d_pm_matches_independent_formula_and_is_clipped(t):
    max_b, min_b, max_a, min_a = t
    dp, dm = influence_variation_tensors(max_b, min_b, max_a, min_a)
    k = max_b.shape[1]
    assert dp.shape == (k,) and dm.shape == (k,)
    assert bool((dp >= 0).all()) and bool((dm >= 0).all())
    ref_p, ref_m = _reference(max_b, min_b, max_a, min_a)
    np.testing.assert_allclose(dp.numpy(), ref_p, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dm.numpy(), ref_m, rtol=1e-9, atol=1e-9)
    # Over-unlearning does not count: D̃+ ≤ max(mean_n max_before, 0) (max_after is clipped at 0).
    bound = max_b.mean(0).clamp(min=0)
    assert bool((dp <= bound + 1e-9).all())
    # Capping θ' at θ can only raise the variation:
    # D̃+ ≤ max(mean_n [max_before − min(max(max_after, 0), max(max_before, 0))], 0).
    capped = torch.minimum(max_a.clamp(min=0), max_b.clamp(min=0))
    assert bool((dp <= (max_b - capped).mean(0).clamp(min=0) + 1e-9).all())


@SETTINGS
@given(attributions())
def test_identical_models_give_zero_variation(t):
    max_b, min_b, _, _ = t
    dp, dm = influence_variation_tensors(max_b, min_b, max_b.clone(), min_b.clone())
    assert bool((dm == 0).all())
    assert bool((dp == 0).all())


@SETTINGS
@given(attributions(n_min=2), st.randoms(use_true_random=False))
def test_sample_order_does_not_matter(t, rnd):
    perm = list(range(t[0].shape[0]))
    rnd.shuffle(perm)
    p = torch.tensor(perm)
    dp, dm = influence_variation_tensors(*t)
    dp2, dm2 = influence_variation_tensors(*(x[p] for x in t))
    torch.testing.assert_close(dp, dp2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(dm, dm2, rtol=1e-12, atol=1e-9)


@SETTINGS
@given(attributions(), st.floats(min_value=0.0, max_value=100.0, allow_nan=False))
def test_monotone_in_the_unlearned_attributions(t, delta):
    max_b, min_b, max_a, min_a = t
    dp, dm = influence_variation_tensors(max_b, min_b, max_a, min_a)
    # More positive influence left after unlearning → D̃+ cannot grow.
    dp2, _ = influence_variation_tensors(max_b, min_b, max_a + delta, min_a)
    assert bool((dp2 <= dp + 1e-9).all())
    # More negative influence after unlearning → D̃− cannot shrink.
    _, dm2 = influence_variation_tensors(max_b, min_b, max_a, min_a - delta)
    assert bool((dm2 >= dm - 1e-9).all())


def test_shape_mismatch_and_no_samples_raise():
    a = torch.zeros(2, 3)
    with pytest.raises(NeuronscopeError, match="shapes differ"):
        influence_variation_tensors(a, a, a, torch.zeros(2, 4))
    e = torch.zeros(0, 3)
    with pytest.raises(NeuronscopeError, match="no samples"):
        influence_variation_tensors(e, e, e, e)


# ----------------------------------------------------------------------------- aggregates


@st.composite
def variations(draw):
    """An InfluenceVariation with random non-negative D̃ on a random subset of (module, layer) cells."""
    n_layers = draw(st.integers(1, 3))
    types = draw(st.lists(st.sampled_from(MODULE_TYPES), min_size=1, max_size=4, unique=True))
    keys = [(t, layer) for layer in range(n_layers) for t in types]
    # Drop some cells (never all) to exercise NaN cells of the map.
    keep = draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    keys = [k for k, kp in zip(keys, keep) if kp] or keys[:1]
    nonneg = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)
    plus, minus = {}, {}
    for k in keys:
        n = draw(st.integers(1, 12))
        plus[k] = torch.from_numpy(draw(arrays(np.float64, (n,), elements=nonneg)).copy())
        minus[k] = torch.from_numpy(draw(arrays(np.float64, (n,), elements=nonneg)).copy())
    return InfluenceVariation(plus, minus, {"label": "prop"})


@SETTINGS
@given(variations(), st.sampled_from(["+", "-"]))
def test_cumulative_is_non_decreasing_and_ends_at_the_total(var, sign):
    cum = var.cumulative(sign)
    flat = var.flat(sign)
    assert cum.shape == flat.shape
    assert bool((cum[1:] >= cum[:-1]).all())
    np.testing.assert_allclose(float(cum[-1]), float(flat.sum()), rtol=1e-12, atol=1e-9)
    # The curve is the running sum of the values in decreasing order: its increments decrease.
    inc = torch.diff(torch.cat([torch.zeros(1, dtype=cum.dtype), cum]))
    assert bool((inc[1:] <= inc[:-1] + 1e-9).all())


@SETTINGS
@given(variations(), st.sampled_from(["+", "-"]), st.integers(1, 60))
def test_top_m_sum_is_the_cumulative_value_at_m(var, sign, m):
    total = var.flat(sign).numel()
    cum = var.cumulative(sign, m)
    assert cum.numel() == min(m, total)
    np.testing.assert_allclose(var.top_m_sum(sign, m), float(cum[-1]), rtol=1e-12, atol=1e-9)
    if m > 1:
        assert var.top_m_sum(sign, m) >= var.top_m_sum(sign, m - 1) - 1e-12
    assert var.top_m_sum(sign, m) <= float(var.flat(sign).sum()) + 1e-9
    # top_neurons agrees with the m largest values.
    rows = var.top_neurons(sign, m)
    vals = [r[3] for r in rows]
    assert vals == sorted(vals, reverse=True)
    np.testing.assert_allclose(sum(vals), var.top_m_sum(sign, m), rtol=1e-9, atol=1e-9)
    for t, layer, i, v in rows:
        assert float(var._src(sign)[(t, layer)][i]) == v


@SETTINGS
@given(variations(), st.sampled_from(["+", "-"]), st.integers(1, 20))
def test_module_layer_map_cell_between_mean_and_max(var, sign, top):
    grid, types, layers = var.module_layer_map(sign, top=top)
    assert grid.shape == (len(types), len(layers))
    assert types == [t for t in MODULE_TYPES if t in types]
    assert layers == sorted(layers)
    src = var.d_plus if sign == "+" else var.d_minus
    for i, t in enumerate(types):
        for j, layer in enumerate(layers):
            cell = grid[i, j]
            if (t, layer) not in src:
                assert np.isnan(cell)
                continue
            v = src[(t, layer)]
            assert cell <= float(v.max()) + 1e-9
            assert cell >= float(v.mean()) - 1e-9
            if top == 1:
                assert cell == pytest.approx(float(v.max()))
            if top >= v.numel():
                assert cell == pytest.approx(float(v.mean()))


@SETTINGS
@given(variations())
def test_summary_ratio_is_valid(var):
    s = var.summary(100)
    assert s["n_neurons"] == var.flat("+").numel()
    if s["sum_top_d_plus"] > 0:
        assert s["minus_over_plus"] == pytest.approx(s["sum_top_d_minus"] / s["sum_top_d_plus"])
    else:
        assert s["minus_over_plus"] is None


# ----------------------------------------------------------------------------- splits


def _items(n: int) -> list[QAItem]:
    return [QAItem(f"q{i}", f"Question {i}?", f"A{i}", (f"B{i}", f"C{i}")) for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 300), st.integers(0, 2**31 - 1))
def test_splits_are_disjoint_deterministic_and_cover_all(n, seed):
    items = _items(n)
    s1 = split_faithun(items, seed=seed)
    s2 = split_faithun(list(items), seed=seed)
    assert s1.to_dict() == s2.to_dict()
    ids = [i for name in ("forget", "retain", "test", "held_out") for i in s1.to_dict()[name]]
    assert sorted(ids) == sorted(it.id for it in items)
    assert len(ids) == len(set(ids))
    assert len(s1.forget) >= 1

"""Statistics of SPEC §16 against hand computations, brute-force enumerations and slow loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from neuronscope.attacks import AttackConfig, AttackResult, AttackRun
from neuronscope.attribution import NeuronAttribution
from neuronscope.errors import NeuronscopeError
from neuronscope.influence import InfluenceCI, InfluenceTerms, influence_ci, influence_variation
from neuronscope.stats import (
    Interval,
    Proportion,
    accuracy_interval,
    attack_summary,
    compare_attacks,
    format_interval,
    paired_comparison,
    seed_summary,
    wilson,
)

# -- Wilson ------------------------------------------------------------------------------------


def _wilson_by_hand(k: int, n: int, z: float) -> tuple[float, float]:
    # Wilson (1927): (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(7, 10), (0, 30), (30, 30), (11, 30), (1, 3)])
def test_wilson_matches_hand_computation(k, n):
    z = 1.959963984540054  # Φ⁻¹(0.975)
    lo, hi = _wilson_by_hand(k, n, z)
    p = wilson(k, n)
    assert p.estimate == pytest.approx(k / n)
    assert p.low == pytest.approx(lo, abs=1e-12) and p.high == pytest.approx(hi, abs=1e-12)
    assert 0.0 <= p.low <= p.estimate <= p.high <= 1.0


def test_wilson_7_of_10_value_and_roundtrip():
    # Worked by hand: centre (0.7 + 0.19208)/(1.38415) = 0.64450, half 0.24771 → [0.3968, 0.8922]
    p = wilson(7, 10)
    assert (round(p.low, 4), round(p.high, 4)) == (0.3968, 0.8922)
    assert Proportion.from_dict(p.to_dict()) == p
    assert p.excludes(0.3) == 1 and p.excludes(0.95) == -1 and p.excludes(0.5) == 0
    assert format_interval(p) == "70.0 % [39.7, 89.2]"


def test_accuracy_interval_and_bad_input():
    p = accuracy_interval([True, False, True, True])
    assert (p.k, p.n) == (3, 4)
    with pytest.raises(NeuronscopeError, match="empty split"):
        accuracy_interval([])
    with pytest.raises(NeuronscopeError, match="n=0"):
        wilson(0, 0)
    with pytest.raises(NeuronscopeError, match="outside"):
        wilson(5, 4)


# -- seeds and attacks -------------------------------------------------------------------------


def test_seed_summary_mean_sd():
    s = seed_summary({2: 0.5, 0: 0.2, 1: 0.3})
    assert s.values == [0.2, 0.3, 0.5]
    assert s.mean == pytest.approx(1.0 / 3)
    # sample sd by hand: deviations −0.1333, −0.0333, 0.1667 → sqrt(0.04667/2)
    assert s.sd == pytest.approx(math.sqrt(((0.2 - 1 / 3) ** 2 + (0.3 - 1 / 3) ** 2 + (0.5 - 1 / 3) ** 2) / 2))
    assert seed_summary([0.4]).sd is None
    with pytest.raises(NeuronscopeError):
        seed_summary([])


def _attack(per_seed_lr: dict[tuple[int, float], tuple[float, list[float]]], p: float = 0.1) -> AttackResult:
    cfg = AttackConfig(kind="harmful", p=p, lrs=(1e-5, 1e-6), seeds=tuple(sorted({s for s, _ in per_seed_lr})))
    runs = [AttackRun(seed=s, lr=lr, steps=list(range(1, len(fs) + 1)), fs=fs, fs_before=before)
            for (s, lr), (before, fs) in per_seed_lr.items()]
    return AttackResult(cfg, runs, n_forget=30)


def test_attack_summary_per_seed_is_max_over_lrs():
    res = _attack({(0, 1e-5): (0.1, [0.2, 0.6]), (0, 1e-6): (0.1, [0.3]),
                   (1, 1e-5): (0.2, [0.4]), (1, 1e-6): (0.2, [0.5, 0.45]),
                   (2, 1e-5): (0.0, [0.1]), (2, 1e-6): (0.0, [0.05])})
    s = attack_summary(res)
    assert s["max_fs"]["per_seed"] == {"0": 0.6, "1": 0.5, "2": 0.1}
    assert s["max_fs"]["mean"] == pytest.approx(0.4)
    assert s["max_fs"]["sd"] == pytest.approx(float(np.std([0.6, 0.5, 0.1], ddof=1)))
    assert s["fs_before"]["values"] == [0.1, 0.2, 0.0]
    assert s["per_lr"]["1e-05"]["values"] == [0.6, 0.4, 0.1]
    assert s["p"] == 0.1 and s["label"] == "harmful-p0.1"
    assert attack_summary(res.to_dict()) == s


# -- paired permutation test -------------------------------------------------------------------


def _exact_sign_flip_p(d: np.ndarray, alternative: str) -> float:
    """All 2^n sign patterns of the paired differences, by brute force."""
    obs = d.mean()
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=d.size)))
    null = (signs * d).mean(1)
    eps = 1e-12 * max(1.0, abs(obs))
    if alternative == "greater":
        return float(np.mean(null >= obs - eps))
    if alternative == "less":
        return float(np.mean(null <= obs + eps))
    return float(min(1.0, 2 * min(np.mean(null >= obs - eps), np.mean(null <= obs + eps))))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_permutation_exact_matches_enumeration(alternative):
    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 0.1, 8)
    b = a - rng.normal(0.05, 0.05, 8)
    res = paired_comparison(a, b, alternative=alternative)
    assert res.n_resamples is None  # exact
    assert res.p_value == pytest.approx(_exact_sign_flip_p(a - b, alternative), abs=1e-12)
    d = a - b
    assert res.mean_diff.estimate == pytest.approx(d.mean())
    assert res.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert res.mean_diff.low <= d.mean() <= res.mean_diff.high


def test_paired_permutation_random_agrees_with_enumeration():
    # n = 16 > 13: random sign patterns; the exact p-value from all 65,536 patterns is the target.
    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, 16)
    b = a - rng.normal(0.7, 1.0, 16)
    res = paired_comparison(a, b, n_resamples=9999, seed=1)
    exact = _exact_sign_flip_p(a - b, "two-sided")
    assert res.n_resamples == 9999
    assert 0.001 < exact < 0.2  # a p-value worth estimating
    q = exact / 2  # two-sided p = 2 × a one-sided proportion of 9999 random patterns
    assert abs(res.p_value - exact) < 4 * 2 * math.sqrt(q * (1 - q) / 9999) + 2 / 9999
    # and the same scipy call made directly gives the same number
    direct = scipy.stats.permutation_test((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis),
                                          permutation_type="samples", vectorized=True, n_resamples=9999,
                                          rng=np.random.default_rng(1))
    assert res.p_value == pytest.approx(direct.pvalue)


def test_three_seeds_cannot_reach_005_and_compare_attacks():
    a = _attack({(s, 1e-5): (0.1, [v]) for s, v in enumerate([0.6, 0.7, 0.65])})
    b = _attack({(s, 1e-5): (0.1, [v]) for s, v in enumerate([0.3, 0.35, 0.2])})
    res = compare_attacks(a, b, label_a="GD", label_b="SSIUU", alternative="greater")
    assert res.n == 3 and res.a == [0.6, 0.7, 0.65]
    assert res.p_value == pytest.approx(1 / 8) and res.min_p_value == pytest.approx(1 / 8)
    assert res.mean_diff.estimate == pytest.approx(np.mean([0.3, 0.35, 0.45]))
    assert res.to_dict()["mean_diff"]["estimate"] == pytest.approx(res.mean_diff.estimate)
    with pytest.raises(NeuronscopeError, match="different attacks"):
        compare_attacks(a, _attack({(s, 1e-5): (0.1, [0.1]) for s in range(3)}, p=0.3))
    with pytest.raises(NeuronscopeError, match="2 pairs"):
        paired_comparison([1.0], [0.0])


def test_paired_equal_differences_is_degenerate_not_nan():
    res = paired_comparison([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert (res.mean_diff.low, res.mean_diff.high) == (0.5, 0.5)
    assert res.cohens_dz is None


# -- bootstrap CI of the influence variation ---------------------------------------------------


def _attrs(n: int, widths: dict, seed: int, heavy: bool = False):
    g = torch.Generator().manual_seed(seed)

    def one(scale_shift):
        mx, mn = {}, {}
        for layer in range(2):
            for t, w in widths.items():
                sc = torch.exp(2 * torch.randn(w, generator=g)) if heavy else torch.ones(w)
                mx[(t, layer)] = (torch.rand(n, w, generator=g) - scale_shift) * sc
                mn[(t, layer)] = (-torch.rand(n, w, generator=g) - scale_shift) * sc
        return NeuronAttribution(max=mx, min=mn, target_value=torch.ones(n), meta={"data_fingerprint": "f"})

    return one(0.0), one(0.3)


def test_vectorised_statistic_equals_slow_loop():
    before, after = _attrs(7, {"q": 5, "up": 9}, seed=0)
    terms = InfluenceTerms.from_attributions(before, after)
    idx = np.random.default_rng(0).integers(0, 7, size=(25, 7))
    fast = terms.top_sums_of_indices(idx, top=6)
    for b, row in enumerate(idx):
        sub = lambda a: NeuronAttribution(  # noqa: E731
            max={k: v[row] for k, v in a.max.items()}, min={k: v[row] for k, v in a.min.items()},
            target_value=a.target_value[row], meta=a.meta)
        s = influence_variation(sub(before), sub(after)).summary(m=6)
        assert fast[0, b] == pytest.approx(s["sum_top_d_plus"], rel=1e-6)
        assert fast[1, b] == pytest.approx(s["sum_top_d_minus"], rel=1e-6)
        assert fast[2, b] == pytest.approx(s["minus_over_plus"], rel=1e-5)


def test_pruning_is_exact_on_heavy_tailed_data(monkeypatch):
    import neuronscope.influence as inf

    monkeypatch.setattr(inf, "_PROBE", 40)  # probe fewer neurons than there are, so pruning is exercised
    before, after = _attrs(12, {"gate": 400, "down": 300}, seed=1, heavy=True)
    terms = InfluenceTerms.from_attributions(before, after)
    w = torch.distributions.Dirichlet(torch.ones(12, dtype=torch.float64)).sample((50,))
    n_kept = inf._candidates(terms.plus, w, 20).numel()
    assert 40 <= n_kept < terms.plus.shape[1] // 2  # the bound prunes most neurons here
    plus, minus = terms.top_sums(w, top=20)
    for got, t in ((plus, terms.plus), (minus, terms.minus)):
        brute = torch.topk((w @ t).clamp(min=0), 20, dim=1).values.sum(1)
        torch.testing.assert_close(got, brute, rtol=1e-12, atol=0)


def test_one_neuron_ci_equals_scipy_bootstrap_of_the_mean():
    # One neuron, every per-item term positive, top = 1: Σ top D̃± is the mean of the item terms,
    # so the CIs must be scipy's bootstrap CIs of the mean (same seed → same resamples), and the
    # ratio's CI scipy's paired bootstrap of the ratio of means.
    n = 15
    rng = np.random.default_rng(2)
    max_b = torch.tensor(rng.uniform(0.5, 1.0, (n, 1)))
    max_a = torch.tensor(rng.uniform(0.0, 0.4, (n, 1)))
    min_b = torch.tensor(rng.uniform(-0.5, 0.0, (n, 1)))
    min_a = torch.tensor(rng.uniform(-1.5, -0.6, (n, 1)))
    mk = lambda mx, mn: NeuronAttribution({("q", 0): mx}, {("q", 0): mn}, torch.ones(n), meta={})  # noqa: E731
    plus_terms = (max_b - max_a).squeeze(1).numpy()
    minus_terms = (min_b - min_a).squeeze(1).numpy()
    for method in ("percentile", "BCa"):
        ci = influence_ci(mk(max_b, min_b), mk(max_a, min_a), n_boot=500, seed=7, top=1, method=method)
        ref_p = scipy.stats.bootstrap((plus_terms,), np.mean, n_resamples=500, batch=500, method=method,
                                      rng=np.random.default_rng(7)).confidence_interval
        ref_m = scipy.stats.bootstrap((minus_terms,), np.mean, n_resamples=500, batch=500, method=method,
                                      rng=np.random.default_rng(7)).confidence_interval
        ref_r = scipy.stats.bootstrap((minus_terms, plus_terms), lambda m, p, axis=-1: m.mean(axis) / p.mean(axis),
                                      paired=True, n_resamples=500, batch=500, method=method,
                                      rng=np.random.default_rng(7)).confidence_interval
        assert ci.sum_top_d_plus.estimate == pytest.approx(plus_terms.mean())
        assert (ci.sum_top_d_plus.low, ci.sum_top_d_plus.high) == pytest.approx((ref_p.low, ref_p.high), rel=1e-9)
        assert (ci.sum_top_d_minus.low, ci.sum_top_d_minus.high) == pytest.approx((ref_m.low, ref_m.high), rel=1e-9)
        assert (ci.minus_over_plus.low, ci.minus_over_plus.high) == pytest.approx((ref_r.low, ref_r.high), rel=1e-9)
        assert ci.sum_top_d_plus.method == method


def test_influence_ci_reproducible_roundtrip_and_degenerate():
    before, after = _attrs(10, {"q": 8, "up": 16}, seed=3)
    a = influence_ci(before, after, n_boot=200, seed=4, top=5)
    b = influence_ci(InfluenceTerms.from_attributions(before, after), n_boot=200, seed=4, top=5)
    assert a.minus_over_plus == b.minus_over_plus
    s = influence_variation(before, after).summary(m=5)
    assert a.minus_over_plus.estimate == pytest.approx(s["minus_over_plus"], rel=1e-6)
    back = InfluenceCI.from_dict(a.to_dict())
    assert back.minus_over_plus == a.minus_over_plus and back.n_items == 10
    # all items identical → every resample equals the estimate
    same = lambda x: NeuronAttribution({k: v[:1].repeat(6, 1) for k, v in x.max.items()},  # noqa: E731
                                       {k: v[:1].repeat(6, 1) for k, v in x.min.items()}, torch.ones(6), meta={})
    c = influence_ci(same(before), same(after), n_boot=50, seed=0, top=5)
    assert c.sum_top_d_plus.low == c.sum_top_d_plus.high == pytest.approx(c.sum_top_d_plus.estimate, rel=1e-12)
    assert c.sum_top_d_plus.method.startswith("degenerate")
    one = NeuronAttribution({("q", 0): torch.ones(1, 3)}, {("q", 0): -torch.ones(1, 3)}, torch.ones(1), meta={})
    with pytest.raises(NeuronscopeError, match="at least 2"):
        influence_ci(one, one)
    with pytest.raises(NeuronscopeError, match="method"):
        influence_ci(before, after, method="basic")


def test_interval_format_and_dict():
    i = Interval(1.234, 1.1, 1.5, method="BCa")
    assert format_interval(i, percent=False) == "1.23 [1.1, 1.5]"
    assert Interval.from_dict(i.to_dict()) == i
    assert Interval(float("nan"), 0, 1).to_dict()["estimate"] is None

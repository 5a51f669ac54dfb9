"""Uncertainty on every headline number (SPEC §16): intervals, seed summaries, paired tests.

* **Accuracies** (FS, RS, US, logit-lens layers) are binomial proportions: :func:`wilson` gives
  the Wilson score interval (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``),
  which unlike the normal approximation stays inside [0, 1] and keeps its coverage at the small
  n and extreme proportions of unlearning (FS near 0, a 30-item forget split).
* **Attacks** over seeds (paper §6.2.2: "mean of 3 runs"): :func:`seed_summary` gives the
  per-seed values, their mean and sample standard deviation (``ddof=1``; ``None`` for one seed);
  :func:`attack_summary` reads them from an :class:`neuronscope.attacks.AttackResult`.
* **Paired comparison** of two methods on the same units (seeds, or (seed, item) pairs):
  :func:`paired_comparison`. The p-value is a paired permutation test
  (``scipy.stats.permutation_test(..., permutation_type="samples")``): under H0 "the two methods
  are exchangeable within each pair" the sign of every paired difference is random, so the null
  distribution of the mean difference is the set of its sign flips. It is exact (all 2^n sign
  patterns) for n ≤ 13 and needs no normality — the reason it is used rather than a paired t-test
  at the paper's three seeds. With n pairs the smallest attainable two-sided p-value is
  ``2 / 2^n`` (0.25 for three seeds): three seeds alone cannot reach p < 0.05, which is why the
  per-item pairing (more units) is offered. The effect size is the mean paired difference
  with a bootstrap CI over pairs (``scipy.stats.bootstrap``, BCa; percentile when BCa is
  undefined) and Cohen's ``d_z = mean(d) / sd(d)``.

Everything is seeded; nothing here reads files.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from neuronscope.errors import NeuronscopeError

__all__ = [
    "Proportion",
    "Interval",
    "SeedSummary",
    "PairedComparison",
    "wilson",
    "accuracy_interval",
    "seed_summary",
    "attack_summary",
    "paired_comparison",
    "compare_attacks",
    "format_interval",
]

#: Default confidence of every interval.
CONFIDENCE = 0.95


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


@dataclass(frozen=True)
class Proportion:
    """A binomial proportion k/n with its Wilson score interval.

    Attributes:
        k: Successes (e.g. items answered correctly).
        n: Trials (items).
        estimate: ``k / n``, in [0, 1].
        low: Lower end of the interval, in [0, 1].
        high: Upper end of the interval, in [0, 1].
        confidence: Confidence level of the interval (e.g. 0.95).
        method: ``"wilson"``.
    """

    k: int
    n: int
    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    method: str = "wilson"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (fields of the dataclass)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Proportion":
        """Inverse of :meth:`to_dict`.

        Raises:
            NeuronscopeError: A field is missing.
        """
        try:
            return cls(int(d["k"]), int(d["n"]), float(d["estimate"]), float(d["low"]), float(d["high"]),
                       float(d.get("confidence", CONFIDENCE)), str(d.get("method", "wilson")))
        except KeyError as exc:
            raise NeuronscopeError(f"proportion: field {exc.args[0]!r} missing") from None

    def excludes(self, value: float) -> int:
        """+1 if the whole interval lies above ``value``, −1 if below, 0 if it contains it."""
        if self.low > value:
            return 1
        if self.high < value:
            return -1
        return 0


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Proportion:
    """Wilson score interval of a binomial proportion (via ``scipy.stats.binomtest``).

    Args:
        k: Successes, ``0 ≤ k ≤ n``.
        n: Trials, ``n ≥ 1``.
        confidence: Confidence level in (0, 1).

    Returns:
        A :class:`Proportion`.

    Raises:
        NeuronscopeError: ``n < 1``, ``k`` outside ``0..n`` or confidence outside (0, 1).
    """
    from scipy.stats import binomtest

    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise NeuronscopeError(f"wilson: k and n must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise NeuronscopeError(f"wilson: need at least one trial, got n={n}")
    if not 0 <= k <= n:
        raise NeuronscopeError(f"wilson: k={k} outside 0..{n}")
    if not 0 < confidence < 1:
        raise NeuronscopeError(f"confidence: must be in (0, 1), got {confidence}")
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Proportion(k, n, k / n, float(ci.low), float(ci.high), confidence, "wilson")


def accuracy_interval(correct: Sequence[bool], confidence: float = CONFIDENCE) -> Proportion:
    """Accuracy of per-item correctness flags with its Wilson interval.

    Args:
        correct: One bool per item (e.g. ``MCQAResult.correct``).
        confidence: Confidence level.

    Raises:
        NeuronscopeError: No items.
    """
    flags = [bool(c) for c in correct]
    if not flags:
        raise NeuronscopeError("accuracy: no items (empty split)")
    return wilson(sum(flags), len(flags), confidence)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval (bootstrap or other).

    Attributes:
        estimate: The statistic on the full data.
        low: Lower end (NaN when undefined).
        high: Upper end (NaN when undefined).
        confidence: Confidence level.
        method: How the interval was made (e.g. ``"BCa"``, ``"percentile"``).
    """

    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    method: str = "percentile"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN/inf become ``None``."""
        return {"estimate": _none_if_nan(self.estimate), "low": _none_if_nan(self.low),
                "high": _none_if_nan(self.high), "confidence": self.confidence, "method": self.method}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Interval":
        """Inverse of :meth:`to_dict` (``None`` → NaN)."""
        def f(v):
            return float("nan") if v is None else float(v)

        return cls(f(d.get("estimate")), f(d.get("low")), f(d.get("high")),
                   float(d.get("confidence", CONFIDENCE)), str(d.get("method", "percentile")))


@dataclass(frozen=True)
class SeedSummary:
    """One score over several seeds (paper §6.2.2: mean of 3 runs).

    Attributes:
        per_seed: ``{seed: value}``.
        mean: Mean over seeds.
        sd: Sample standard deviation over seeds (``ddof=1``); ``None`` with one seed.
        n: Number of seeds.
    """

    per_seed: dict[int, float]
    mean: float
    sd: float | None
    n: int

    @property
    def values(self) -> list[float]:
        """Per-seed values in seed order."""
        return [self.per_seed[s] for s in sorted(self.per_seed)]

    def to_dict(self) -> dict[str, Any]:
        """``{"per_seed": {"0": v, ...}, "values": [...], "seeds": [...], "mean", "sd", "n"}``."""
        seeds = sorted(self.per_seed)
        return {"per_seed": {str(s): self.per_seed[s] for s in seeds}, "seeds": seeds, "values": self.values,
                "mean": self.mean, "sd": self.sd, "n": self.n}


def seed_summary(values: Mapping[int, float] | Sequence[float]) -> SeedSummary:
    """Mean ± sd over seeds, keeping the per-seed values.

    Args:
        values: ``{seed: value}`` or a sequence (seeds 0, 1, …).

    Raises:
        NeuronscopeError: No values or a non-finite value.
    """
    per_seed = dict(values) if isinstance(values, Mapping) else dict(enumerate(values))
    if not per_seed:
        raise NeuronscopeError("seed summary: no seeds")
    per_seed = {int(s): float(v) for s, v in per_seed.items()}
    arr = np.array([per_seed[s] for s in sorted(per_seed)], dtype=float)
    if not np.isfinite(arr).all():
        raise NeuronscopeError(f"seed summary: non-finite value among {arr.tolist()}")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else None
    return SeedSummary(per_seed, float(arr.mean()), sd, int(arr.size))


def attack_summary(result) -> dict[str, Any]:
    """Per-seed, mean and sd of an attack's score, plus each seed's FS before retraining.

    The score of a seed is the maximum over learning rates of the maximum FS during retraining
    (:meth:`neuronscope.attacks.AttackResult.per_seed`, paper §6.2.2).

    Args:
        result: An :class:`neuronscope.attacks.AttackResult` (or its ``to_dict()``).

    Returns:
        ``{"label", "kind", "p", "lrs", "max_fs": SeedSummary.to_dict(), "fs_before": {"per_seed",
        "mean", ...}, "per_lr": {lr: SeedSummary.to_dict()}}`` — FS as fractions in [0, 1].
        ``fs_before`` is the unlearned model's FS on the same evaluation items (the remainder for
        the harmful attack), so ``max_fs − fs_before`` is the recovery of each seed.

    Raises:
        NeuronscopeError: The result has no runs.
    """
    from neuronscope.attacks import AttackResult

    if isinstance(result, Mapping):
        result = AttackResult.from_dict(dict(result))
    if not result.runs:
        raise NeuronscopeError(f"{result.config.label}: no attack runs to summarise")
    before: dict[int, float] = {}
    per_lr: dict[float, dict[int, float]] = {}
    for r in result.runs:
        before.setdefault(r.seed, r.fs_before)
        per_lr.setdefault(r.lr, {})[r.seed] = r.max_fs
    cfg = result.config
    return {
        "label": cfg.label,
        "kind": cfg.kind,
        "p": cfg.p if cfg.kind == "harmful" else None,
        "lrs": list(cfg.lrs),
        "max_fs": seed_summary(result.per_seed()).to_dict(),
        "fs_before": seed_summary(before).to_dict(),
        "per_lr": {f"{lr:g}": seed_summary(v).to_dict() for lr, v in per_lr.items()},
    }


@dataclass(frozen=True)
class PairedComparison:
    """Two methods compared on the same units (seeds or items): ``d = a − b`` per unit.

    Attributes:
        label_a: Name of method a.
        label_b: Name of method b.
        unit: What a pair is (``"seed"``, ``"item"``, ``"(seed, item)"``).
        n: Number of pairs.
        a: Values of a, pair by pair.
        b: Values of b, pair by pair.
        mean_diff: Mean of ``a − b`` with its bootstrap CI over pairs (the effect size).
        cohens_dz: ``mean(d) / sd(d)`` (``ddof=1``); ``None`` when ``sd(d) = 0`` or n < 2.
        p_value: Paired permutation test (sign flips of d), ``alternative`` as given.
        alternative: ``"two-sided"``, ``"greater"`` (a > b) or ``"less"``.
        n_resamples: Permutations drawn (``None``: exact, all 2^n sign patterns).
        min_p_value: The smallest p-value attainable with n pairs (exact test).
        seed: RNG seed of the bootstrap / random permutations.
    """

    label_a: str
    label_b: str
    unit: str
    n: int
    a: list[float]
    b: list[float]
    mean_diff: Interval
    cohens_dz: float | None
    p_value: float
    alternative: str
    n_resamples: int | None
    min_p_value: float
    seed: int = 0
    test: str = "paired permutation (sign flip), scipy.stats.permutation_test"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["mean_diff"] = self.mean_diff.to_dict()
        return d


#: Above this many pairs the permutation test draws random sign patterns instead of all 2^n.
_EXACT_MAX_PAIRS = 13


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    label_a: str = "a",
    label_b: str = "b",
    unit: str = "seed",
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
    n_resamples: int = 9999,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedComparison:
    """Paired permutation test and effect size for two methods on the same units.

    Test statistic: the mean paired difference ``mean(a − b)``. Null distribution: every
    assignment of the labels within each pair (``permutation_type="samples"``), i.e. every sign
    pattern of the differences — exact when n ≤ 13 (``2^n ≤ 8192`` patterns), else
    ``n_resamples`` random ones. Effect size: ``mean(a − b)`` with a bootstrap CI over pairs
    (BCa, falling back to percentile when BCa is undefined, e.g. all differences equal), and
    Cohen's ``d_z``.

    Args:
        a: Values of method a per unit (e.g. GD's harmful-attack max FS per seed).
        b: Values of method b on the same units, in the same order.
        label_a: Name of a.
        label_b: Name of b.
        unit: What one pair is (stored with the result).
        alternative: ``"greater"`` tests a > b.
        n_resamples: Random permutations / bootstrap resamples when not exact.
        confidence: Confidence level of the CI.
        seed: RNG seed.

    Returns:
        A :class:`PairedComparison`.

    Raises:
        NeuronscopeError: Lengths differ, fewer than 2 pairs, or non-finite values.
    """
    from scipy import stats

    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise NeuronscopeError(f"paired comparison: need two equal-length 1-D sequences, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise NeuronscopeError(f"paired comparison: need at least 2 pairs, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise NeuronscopeError("paired comparison: non-finite values")
    if alternative not in ("two-sided", "greater", "less"):
        raise NeuronscopeError(f"alternative: expected 'two-sided', 'greater' or 'less', got {alternative!r}")
    n = int(x.size)
    d = x - y

    def mean_diff(u, v, axis=-1):
        return np.mean(u - v, axis=axis)

    exact = n <= _EXACT_MAX_PAIRS
    perm = stats.permutation_test(
        (x, y), mean_diff, permutation_type="samples", vectorized=True, alternative=alternative,
        n_resamples=np.inf if exact else n_resamples, rng=np.random.default_rng(seed),
    )
    mean = float(d.mean())
    if np.ptp(d) == 0:
        ci = Interval(mean, mean, mean, confidence, "degenerate (all differences equal)")
    else:
        ci = _bootstrap_mean(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    sd = float(d.std(ddof=1))
    dz = mean / sd if sd > 0 else None
    return PairedComparison(
        label_a=label_a, label_b=label_b, unit=unit, n=n, a=x.tolist(), b=y.tolist(), mean_diff=ci,
        cohens_dz=dz, p_value=float(perm.pvalue), alternative=alternative,
        n_resamples=None if exact else int(n_resamples),
        min_p_value=(2.0 if alternative == "two-sided" else 1.0) / 2**n if exact else 1.0 / (n_resamples + 1),
        seed=seed,
    )


def _bootstrap_mean(d: np.ndarray, *, confidence: float, n_resamples: int, seed: int) -> Interval:
    """BCa bootstrap CI of ``mean(d)``; percentile when BCa is undefined (scipy returns NaN)."""
    from scipy import stats

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((d,), np.mean, vectorized=True, n_resamples=n_resamples,
                                  confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return Interval(float(d.mean()), lo, hi, confidence, method)
    return Interval(float(d.mean()), float("nan"), float("nan"), confidence, "undefined")


def compare_attacks(result_a, result_b, *, label_a: str = "a", label_b: str = "b",
                    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
                    seed: int = 0) -> PairedComparison:
    """Paired comparison of two methods' attack scores (max FS during retraining) seed by seed.

    The seeds present in both results are paired (same attack seed: same draw of retraining
    items when the pools agree, same batch order). ``alternative="greater"`` tests
    "a recovers more than b" (e.g. a = GD, b = SSIUU: SSIUU is more robust).

    Args:
        result_a: :class:`neuronscope.attacks.AttackResult` (or its dict) of method a.
        result_b: The same attack on method b.
        label_a: Name of a.
        label_b: Name of b.
        alternative: See :func:`paired_comparison`.
        seed: RNG seed.

    Raises:
        NeuronscopeError: Different attacks (kind/p) or fewer than 2 common seeds.
    """
    from neuronscope.attacks import AttackResult

    ra = AttackResult.from_dict(dict(result_a)) if isinstance(result_a, Mapping) else result_a
    rb = AttackResult.from_dict(dict(result_b)) if isinstance(result_b, Mapping) else result_b
    if ra.config.label != rb.config.label:
        raise NeuronscopeError(f"compare attacks: different attacks ({ra.config.label} vs {rb.config.label})")
    sa, sb = ra.per_seed(), rb.per_seed()
    common = sorted(set(sa) & set(sb))
    if len(common) < 2:
        raise NeuronscopeError(f"compare attacks: need ≥ 2 common seeds, got {common}")
    return paired_comparison([sa[s] for s in common], [sb[s] for s in common], label_a=label_a,
                             label_b=label_b, unit=f"attack seed ({ra.config.label}; seeds {common})",
                             alternative=alternative, seed=seed)


def format_interval(x: Proportion | Interval | Mapping, *, percent: bool = True, digits: int = 1) -> str:
    """``"62.5 % [45.1, 77.3]"`` (percent) or ``"1.23 [0.98, 1.51]"``; ``"n/a"`` when undefined."""
    if isinstance(x, Mapping):
        x = Proportion.from_dict(x) if "k" in x else Interval.from_dict(x)
    est, lo, hi = x.estimate, x.low, x.high
    if est is None or not math.isfinite(est):
        return "n/a"
    s = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    f = f"{{:.{digits}f}}" if percent else f"{{:.{max(digits, 3)}g}}"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{f.format(s * est)}{unit} [n/a]"
    return f"{f.format(s * est)}{unit} [{f.format(s * lo)}, {f.format(s * hi)}]"


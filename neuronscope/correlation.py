"""Attribution correlation between two models on the same data (paper §6.5, Fig. 6; SPEC §8).

Typical use: the attributions of an unlearned model before and after a relearning attack. A
robustly unlearned model keeps its attribution space (high correlation, paper: ρ = 0.99 for
SSIUU vs. 0.73 for GA); a model whose unlearning was hidden by spurious neurons has it
reshuffled by the attack.

Per neuron i (every neuron of every attributed module and layer, in ``NeuronAttribution.keys``
order) the sample-averaged aggregated attribution (paper Eq. 1 and App. A)

* ``max``: ``(1/n) Σ_{(x,y)} max_k A[i, k]`` — positive influence,
* ``min``: ``(1/n) Σ_{(x,y)} min_k A[i, k]`` — negative influence,

is compared between model a and model b with ``scipy.stats.pearsonr`` and
``scipy.stats.spearmanr`` over all neurons. ``both`` correlates the concatenation
``[max; min]`` (every neuron twice: its positive and its negative side); it is the headline
number (``pearson`` / ``spearman`` at the top of :meth:`CorrelationResult.to_dict`), since
paper Fig. 6 concerns both directions of influence. Plots may downsample; statistics never do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
from jaxtyping import Float

from neuronscope.attribution import NeuronAttribution
from neuronscope.errors import NeuronscopeError, write_json_atomic, write_text_atomic

Aggregation = Literal["max", "min", "both"]
AGGREGATIONS: tuple[str, ...] = ("both", "max", "min")


def neuron_means(attr: NeuronAttribution, which: Aggregation = "max") -> Float[np.ndarray, " n_total_neurons"]:
    """Per-neuron mean over samples of the max (or min) attribution, all modules concatenated.

    ``which="both"`` returns ``[mean max; mean min]`` (length 2 × n_total_neurons). Float64,
    in the units of the attribution target.

    Raises:
        NeuronscopeError: Unknown ``which`` or no samples.
    """
    if which not in AGGREGATIONS:
        raise NeuronscopeError(f"which: expected one of {AGGREGATIONS}, got {which!r}")
    if attr.n_samples == 0:
        raise NeuronscopeError("correlation: attribution has no samples")
    if which == "both":
        return np.concatenate([neuron_means(attr, "max"), neuron_means(attr, "min")])
    return attr.flat(which).double().mean(0).numpy()


def _stats(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy import stats

    if x.size < 2:
        raise NeuronscopeError(f"correlation: need at least 2 neurons, got {x.size}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        # Correlation with a constant vector is undefined; scipy warns and returns NaN.
        return {"pearson": float("nan"), "pearson_p": float("nan"), "spearman": float("nan"), "spearman_p": float("nan")}
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    return {
        "pearson": float(pr.statistic),
        "pearson_p": float(pr.pvalue),
        "spearman": float(sr.statistic),
        "spearman_p": float(sr.pvalue),
    }


@dataclass
class CorrelationResult:
    """Pearson and Spearman correlations of per-neuron attributions of two models (Fig. 6b).

    Attributes:
        label_a: Name of the first model (e.g. "GD unlearned").
        label_b: Name of the second (e.g. "GD after attack").
        stats: ``aggregation -> {"pearson", "pearson_p", "spearman", "spearman_p"}`` for
            ``both``, ``max`` and ``min``.
        by_module: ``aggregation -> {module type: {"pearson", "spearman"}}`` over the neurons of
            that module type (all layers).
        summary: ``model label -> aggregation -> {"mean", "std", "q01", "q50", "q99", "min",
            "max"}`` of the per-neuron values (Fig. 6a in numbers).
        n_neurons: Neurons per aggregation (``max``/``min``; ``both`` has twice as many).
        n_samples: Samples averaged.
        meta: Data fingerprint, model names.
        values: ``{label: {"max": array, "min": array}}`` per-neuron means (kept in memory for
            plots; not serialised by :meth:`to_dict`).
    """

    label_a: str
    label_b: str
    stats: dict[str, dict[str, float]]
    by_module: dict[str, dict[str, dict[str, float]]]
    summary: dict[str, dict[str, dict[str, float]]]
    n_neurons: int
    n_samples: int
    meta: dict = field(default_factory=dict)
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def pearson(self) -> float:
        """Headline Pearson r (``both``)."""
        return self.stats["both"]["pearson"]

    @property
    def spearman(self) -> float:
        """Headline Spearman ρ (``both``)."""
        return self.stats["both"]["spearman"]

    def to_dict(self) -> dict:
        """JSON-ready dict; ``pearson``/``spearman`` at the top are the ``both`` statistics."""
        return {
            "kind": "attribution_correlation",
            "label_a": self.label_a,
            "label_b": self.label_b,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "stats": self.stats,
            "by_module": self.by_module,
            "summary": self.summary,
            "n_neurons": self.n_neurons,
            "n_samples": self.n_samples,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "CorrelationResult":
        try:
            return cls(d["label_a"], d["label_b"], d["stats"], d.get("by_module", {}), d.get("summary", {}),
                       int(d["n_neurons"]), int(d["n_samples"]), dict(d.get("meta", {})))
        except KeyError as exc:
            raise NeuronscopeError(f"correlation: field {exc.args[0]!r} missing") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CorrelationResult":
        path = Path(path)
        if not path.exists():
            raise NeuronscopeError(f"{path}: correlation file not found")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, NeuronscopeError) as exc:
            raise NeuronscopeError(f"{path}: not a correlation file ({exc})") from None

    # -- plots ------------------------------------------------------------------------------
    def plot_scatter(self, which: Aggregation = "both", max_points: int = 20000, seed: int = 0):
        """Scatter of model a vs model b per neuron (Fig. 6b); points downsampled, stats not."""
        from neuronscope.plots import correlation_scatter_figure

        x, y = self._vectors(which)
        st = self.stats[which]
        return correlation_scatter_figure(
            x, y, x_label=f"{self.label_a} ({which})", y_label=f"{self.label_b} ({which})",
            pearson=st["pearson"], spearman=st["spearman"], max_points=max_points, seed=seed,
            title=f"Attribution correlation, {which}",
        )

    def plot_distributions(self, kind: str = "violin", max_points: int = 20000, seed: int = 0):
        """Violin (or histogram) of per-neuron max and min attributions of both models (Fig. 6a)."""
        from neuronscope.plots import attribution_distribution_figure

        if not self.values:
            raise NeuronscopeError("correlation: per-neuron values not kept (result was loaded from JSON)")
        return attribution_distribution_figure(self.values, kind=kind, max_points=max_points, seed=seed)

    def _vectors(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        if not self.values:
            raise NeuronscopeError("correlation: per-neuron values not kept (result was loaded from JSON)")
        a, b = self.values[self.label_a], self.values[self.label_b]
        if which == "both":
            return np.concatenate([a["max"], a["min"]]), np.concatenate([b["max"], b["min"]])
        return a[which], b[which]


def _describe(v: np.ndarray) -> dict[str, float]:
    q = np.quantile(v, [0.01, 0.5, 0.99])
    return {"mean": float(v.mean()), "std": float(v.std()), "q01": float(q[0]), "q50": float(q[1]),
            "q99": float(q[2]), "min": float(v.min()), "max": float(v.max())}


def attribution_correlation(
    a: NeuronAttribution,
    b: NeuronAttribution,
    *,
    label_a: str = "before",
    label_b: str = "after",
) -> CorrelationResult:
    """Pearson / Spearman correlation of per-neuron attributions of two models (SPEC §8, Fig. 6b).

    Args:
        a: Attributions of the first model (e.g. unlearned, before the attack).
        b: Attributions of the second model on the same samples and modules.
        label_a: Name of ``a`` in results and plots.
        label_b: Name of ``b``.

    Returns:
        :class:`CorrelationResult` for ``both``, ``max`` and ``min`` (see the module docstring).

    Raises:
        NeuronscopeError: Different data (fingerprints or sample counts), different modules,
            or fewer than 2 neurons.
    """
    fa, fb = a.meta.get("data_fingerprint"), b.meta.get("data_fingerprint")
    if fa and fb and fa != fb:
        raise NeuronscopeError(f"correlation: attributions are on different data (fingerprints {fa} vs {fb})")
    if a.n_samples != b.n_samples:
        raise NeuronscopeError(f"correlation: {a.n_samples} vs {b.n_samples} samples; attribute the same data")
    if a.keys != b.keys:
        raise NeuronscopeError("correlation: attributions cover different modules/layers")
    for k in a.keys:
        if a.max[k].shape != b.max[k].shape:
            raise NeuronscopeError(f"correlation: module {k[0]}.{k[1]} has {a.max[k].shape[1]} vs {b.max[k].shape[1]} neurons")
    if label_a == label_b:
        label_b = f"{label_b} (b)"
    values = {label_a: {w: neuron_means(a, w) for w in ("max", "min")},
              label_b: {w: neuron_means(b, w) for w in ("max", "min")}}
    stats = {}
    for w in AGGREGATIONS:
        if w == "both":
            x = np.concatenate([values[label_a]["max"], values[label_a]["min"]])
            y = np.concatenate([values[label_b]["max"], values[label_b]["min"]])
        else:
            x, y = values[label_a][w], values[label_b][w]
        stats[w] = _stats(x, y)
    # per module type (all layers)
    sizes = [a.max[k].shape[1] for k in a.keys]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    by_module: dict[str, dict[str, dict[str, float]]] = {w: {} for w in ("max", "min")}
    for w in ("max", "min"):
        types = []
        for t, _ in a.keys:
            if t not in types:
                types.append(t)
        for t in types:
            sel = np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j, k in enumerate(a.keys) if k[0] == t])
            s = _stats(values[label_a][w][sel], values[label_b][w][sel]) if sel.size >= 2 else None
            if s is not None:
                by_module[w][t] = {"pearson": s["pearson"], "spearman": s["spearman"]}
    summary = {lab: {w: _describe(v[w]) for w in ("max", "min")} for lab, v in values.items()}
    meta = {"data_fingerprint": fa or fb, "model_a": a.meta.get("model"), "model_b": b.meta.get("model")}
    return CorrelationResult(label_a, label_b, stats, by_module, summary, int(offsets[-1]), a.n_samples, meta, values)


def correlation_report(
    result: CorrelationResult,
    out_dir: str | os.PathLike,
    *,
    max_points: int = 20000,
    seed: int = 0,
    title: str = "Attribution correlation (paper Fig. 6)",
) -> dict[str, Path]:
    """Write ``correlation.json`` and ``correlation.html`` (distributions + scatters), atomically.

    Returns:
        ``{"json": path, "html": path}``.
    """
    from neuronscope.report import HTMLReport

    rep = HTMLReport(title)
    rep.text(
        f"{result.label_a} vs {result.label_b}: per-neuron attributions (paper Eq. 1), aggregated per sample by "
        f"max/min over tokens and averaged over {result.n_samples} samples; {result.n_neurons} neurons. "
        "'both' correlates the concatenation of the max and min vectors. Statistics use all neurons; "
        f"plots show a random subsample of at most {max_points} points."
    )
    rep.table(["aggregation", "Pearson r", "Spearman ρ", "neurons"],
              [[w, result.stats[w]["pearson"], result.stats[w]["spearman"],
                result.n_neurons * (2 if w == "both" else 1)] for w in AGGREGATIONS])
    if result.by_module.get("max"):
        types = list(result.by_module["max"])
        rep.table(["module", "Pearson (max)", "Spearman (max)", "Pearson (min)", "Spearman (min)"],
                  [[t, result.by_module["max"][t]["pearson"], result.by_module["max"][t]["spearman"],
                    result.by_module["min"].get(t, {}).get("pearson"), result.by_module["min"].get(t, {}).get("spearman")]
                   for t in types], caption="per module type")
    if result.values:
        rep.figure(result.plot_distributions(max_points=max_points, seed=seed))
        for w in AGGREGATIONS:
            rep.figure(result.plot_scatter(w, max_points=max_points, seed=seed))
    page = rep.render()
    out = Path(out_dir)
    js = write_json_atomic(out / "correlation.json", result.to_dict())
    html_path = write_text_atomic(out / "correlation.html", page)
    return {"json": js, "html": html_path}


def correlations_between(
    attrs: Mapping[str, NeuronAttribution], pairs: Sequence[tuple[str, str]]
) -> dict[str, CorrelationResult]:
    """:func:`attribution_correlation` for several ``(label a, label b)`` pairs of ``attrs``.

    Returns:
        ``{"a → b": CorrelationResult}``.
    """
    return {f"{x} → {y}": attribution_correlation(attrs[x], attrs[y], label_a=x, label_b=y) for x, y in pairs}

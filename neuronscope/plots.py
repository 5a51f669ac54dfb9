"""Plotly figures shared by the statistics objects, the CLI and the HTML report.

Figures are interactive HTML by default; :func:`save_figure` also writes a PNG when a static
renderer (kaleido) is installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from neuronscope.errors import atomic_path, write_text_atomic

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def cumulative_figure(variations: Mapping[str, "InfluenceVariation"], m: int = 1000):  # noqa: F821
    """Cumulative top-m D̃− (solid) and D̃+ (dotted) per model/method (paper Fig. 3b).

    Args:
        variations: ``label -> InfluenceVariation``.
        m: Number of neurons on the x axis.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (label, var) in enumerate(variations.items()):
        color = _COLORS[i % len(_COLORS)]
        for sign, dash, name in (("-", "solid", "D̃− (negative)"), ("+", "dot", "D̃+ (positive)")):
            y = var.cumulative(sign, m).numpy()
            fig.add_scatter(
                x=np.arange(1, len(y) + 1), y=y, mode="lines", name=f"{label} {name}",
                line=dict(color=color, dash=dash),
            )
    fig.update_layout(
        title="Cumulative influence variation of the top-m neurons",
        xaxis_title="number of neurons m (sorted by D̃)",
        yaxis_title="Σ D̃ over the top-m neurons",
        template="plotly_white",
    )
    return fig


def heatmap_figure(var, top: int = 100, title: str = ""):
    """Module×layer maps of D̃+ and D̃− side by side: mean of the top-``top`` per cell (Fig. 5)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("positive D̃+", "negative D̃−"), horizontal_spacing=0.12)
    for col, sign in ((1, "+"), (2, "-")):
        grid, types, layers = var.module_layer_map(sign, top=top)
        fig.add_trace(
            go.Heatmap(
                z=grid, x=layers, y=types, colorscale="Reds" if sign == "-" else "Blues",
                colorbar=dict(x=0.44 if col == 1 else 1.0, len=0.9),
                hovertemplate="layer %{x}<br>module %{y}<br>mean top-" + str(top) + " D̃ = %{z:.3g}<extra></extra>",
            ),
            row=1, col=col,
        )
        fig.update_xaxes(title_text="layer", row=1, col=col)
        fig.update_yaxes(title_text="module", autorange="reversed", row=1, col=col)
    fig.update_layout(
        title=f"Influence variation per module and layer{(' — ' + title) if title else ''}",
        template="plotly_white", height=380,
    )
    return fig


def save_figure(fig, path: str | os.PathLike, *, png: bool = True) -> list[Path]:
    """Write ``fig`` as standalone HTML (atomically) and, when kaleido works, as PNG beside it.

    Returns:
        The paths written.
    """
    path = Path(path)
    written = [write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))]
    if png:
        try:
            with atomic_path(path.with_suffix(".png")) as tmp:
                fig.write_image(str(tmp), format="png")
            written.append(path.with_suffix(".png"))
        except Exception:  # noqa: BLE001 - static export is optional (needs kaleido + Chrome)
            pass
    return written


def uninformative_reason(fig) -> str | None:
    """Why ``fig`` carries no information, or ``None`` when it does.

    A figure carries no information when no trace has a finite value, when every finite value
    of every trace is 0 (e.g. an all-zero D̃ heatmap or cumulative curve: nothing changed), or
    when every heatmap is constant over more than one cell (a map without contrast). Values are
    ``z`` for heatmaps and ``y`` for other traces; reference lines (traces with
    ``hoverinfo="skip"``, such as the chance line) are ignored.

    Args:
        fig: A ``plotly.graph_objects.Figure``.

    Returns:
        A short phrase (e.g. ``"every value is 0"``) or ``None``.
    """
    values, heatmaps = [], []
    for tr in fig.data:
        if getattr(tr, "hoverinfo", None) == "skip":
            continue
        raw = tr.z if tr.type == "heatmap" else getattr(tr, "y", None)
        if raw is None:
            continue
        try:
            arr = np.asarray(raw, dtype=float).ravel()
        except (TypeError, ValueError):
            return None  # categorical values: assume informative
        arr = arr[np.isfinite(arr)]
        values.append(arr)
        if tr.type == "heatmap":
            heatmaps.append(arr)
    if not values or all(a.size == 0 for a in values):
        return "no finite value to plot"
    if all(a.size == 0 or not np.any(a) for a in values):
        return "every value is 0"
    if heatmaps and len(heatmaps) == len(values) and all(a.size > 1 and np.ptp(a) == 0 for a in heatmaps):
        return f"every cell has the same value ({heatmaps[0][0]:.3g})"
    return None


def figure_div(fig) -> str:
    """An embeddable ``<div>`` for the HTML report (plotly.js loaded once by the page)."""
    return fig.to_html(include_plotlyjs=False, full_html=False)


# --------------------------------------------------------------------------------------------
# Figures for several methods/models at once (paper Fig. 3c, 4, 5, 6, 7)
# --------------------------------------------------------------------------------------------


def logit_lens_figure(results: Mapping[str, "LogitLensResult"], title: str = ""):  # noqa: F821
    """Logit-lens accuracy per layer of several models, with the chance line at 0.5 (paper Fig. 4).

    Args:
        results: ``label -> LogitLensResult``; x is the layer index (0 = embeddings,
            l = output of block l−1), y the fraction of items with gold logit > distractor logit.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    n_max = 1
    for i, (label, r) in enumerate(results.items()):
        n_max = max(n_max, len(r.layers))
        fig.add_scatter(
            x=list(r.layers), y=[float(a) for a in r.accuracy], mode="lines+markers", name=f"{label} (n={r.n_items})",
            line=dict(color=_COLORS[i % len(_COLORS)]),
            hovertemplate="layer %{x}<br>accuracy %{y:.3f}<extra>" + str(label) + "</extra>",
        )
    fig.add_scatter(
        x=[0, n_max - 1], y=[0.5, 0.5], mode="lines", name="chance (0.5)",
        line=dict(color="#1f77b4", dash="dot", width=1.5), hoverinfo="skip",
    )
    fig.update_layout(
        title=title or "Logit lens: gold vs. distractor first token at the last prompt position",
        xaxis_title="layer (0 = embeddings, l = output of block l−1)",
        yaxis_title="accuracy (gold logit > distractor logit)",
        yaxis=dict(range=[0, 1.02]),
        template="plotly_white",
    )
    return fig


def top_m_bar_figure(variations: Mapping[str, "InfluenceVariation"], m: int = 100, title: str = ""):  # noqa: F821
    """Σ of the top-m D̃+ and D̃− per method as grouped bars (paper Fig. 3c).

    Args:
        variations: ``label -> InfluenceVariation``.
        m: Number of top neurons summed (paper: 100).
    """
    import plotly.graph_objects as go

    labels = list(variations)
    plus = [variations[k].top_m_sum("+", m) for k in labels]
    minus = [variations[k].top_m_sum("-", m) for k in labels]
    fig = go.Figure()
    fig.add_bar(x=labels, y=plus, name=f"Σ top-{m} D̃+ (positive, erased)", marker_color="#1f77b4")
    fig.add_bar(x=labels, y=minus, name=f"Σ top-{m} D̃− (negative, spurious)", marker_color="#d62728")
    fig.update_layout(
        barmode="group", title=title or f"Influence variation of the top-{m} neurons",
        xaxis_title="method", yaxis_title=f"Σ D̃ over the top-{m} neurons", template="plotly_white",
    )
    return fig


def heatmap_grid_figure(
    variations: Mapping[str, "InfluenceVariation"],  # noqa: F821
    top: int = 100,
    *,
    shared_scale: bool = True,
    title: str = "",
):
    """Module×layer maps for several methods: one row per method, columns D̃+ and D̃− (paper Fig. 5).

    Each cell is the mean of the top-``top`` D̃ in that (module, layer).

    Args:
        variations: ``label -> InfluenceVariation``.
        top: Neurons averaged per cell (paper: 100).
        shared_scale: One colour scale per sign across methods (so methods compare directly).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(variations)
    n = len(labels)
    titles = [f"{lab} — {s}" for lab in labels for s in ("positive D̃+", "negative D̃−")]
    fig = make_subplots(rows=n, cols=2, subplot_titles=titles, horizontal_spacing=0.12,
                        vertical_spacing=min(0.12, 0.5 / max(n, 1)))
    grids = {(lab, s): variations[lab].module_layer_map(s, top=top) for lab in labels for s in ("+", "-")}
    zmax = {s: max((np.nanmax(g[0]) if np.isfinite(g[0]).any() else 0.0) for (lab, ss), g in grids.items() if ss == s)
            for s in ("+", "-")}
    for r, lab in enumerate(labels, start=1):
        for col, sign in ((1, "+"), (2, "-")):
            grid, types, layers = grids[(lab, sign)]
            fig.add_trace(
                go.Heatmap(
                    z=grid, x=layers, y=types, colorscale="Blues" if sign == "+" else "Reds",
                    zmin=0 if shared_scale else None, zmax=(zmax[sign] or None) if shared_scale else None,
                    showscale=(r == 1) or not shared_scale,
                    colorbar=dict(x=0.44 if col == 1 else 1.0, len=0.9 / n if not shared_scale else 0.9,
                                  y=1 - (r - 0.5) / n if not shared_scale else 0.5),
                    hovertemplate=f"{lab}<br>layer %{{x}}<br>module %{{y}}<br>mean top-{top} D̃ = %{{z:.3g}}<extra></extra>",
                ),
                row=r, col=col,
            )
            fig.update_xaxes(title_text="layer" if r == n else None, row=r, col=col)
            fig.update_yaxes(autorange="reversed", row=r, col=col)
    fig.update_layout(
        title=title or f"Influence variation per module and layer (mean of the top-{top} per cell)",
        template="plotly_white", height=max(380, 300 * n),
    )
    return fig


def _downsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``range(n)`` (all when ``n <= max_points``)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def attribution_distribution_figure(
    values: Mapping[str, "np.ndarray | Mapping[str, np.ndarray]"],
    *,
    kind: str = "violin",
    max_points: int = 20000,
    seed: int = 0,
    title: str = "",
):
    """Distribution of per-neuron attributions per model (paper Fig. 6a).

    Args:
        values: ``model label -> 1-D array`` of per-neuron values, or ``model label ->
            {series: 1-D array}`` (e.g. ``{"max": ..., "min": ...}``: the mean-over-samples
            max and min attributions, drawn side by side).
        kind: ``"violin"`` or ``"histogram"``.
        max_points: Values drawn per series (a seeded random subset; plotting only — never use
            the plotted subset for statistics).
        seed: Subsampling seed.

    Raises:
        ValueError: Unknown ``kind``.
    """
    import plotly.graph_objects as go

    if kind not in ("violin", "histogram"):
        raise ValueError(f"kind: expected 'violin' or 'histogram', got {kind!r}")
    fig = go.Figure()
    series_colors: dict[str, str] = {}
    subsampled = False
    k = 0
    for i, (label, v) in enumerate(values.items()):
        parts = v if isinstance(v, Mapping) else {"": v}
        for name, arr in parts.items():
            arr = np.asarray(arr, dtype=float).ravel()
            subsampled |= arr.size > max_points
            arr = arr[_downsample(arr.size, max_points, seed)]
            if kind == "violin":
                # Series (max/min) share a colour across models; plain arrays get one per model.
                color = series_colors.setdefault(name, _COLORS[len(series_colors) % len(_COLORS)]) if name \
                    else _COLORS[i % len(_COLORS)]
                fig.add_trace(go.Violin(
                    x=[label] * arr.size, y=arr, name=name or label, legendgroup=name or label,
                    showlegend=(i == 0) if name else True, line_color=color, points=False,
                    box_visible=True, meanline_visible=True, spanmode="hard", scalemode="width",
                ))
            else:
                fig.add_trace(go.Histogram(x=arr, name=f"{label} {name}".strip(), opacity=0.55,
                                           marker_color=_COLORS[k % len(_COLORS)], nbinsx=100))
            k += 1
    if kind == "violin":
        fig.update_layout(violinmode="group", xaxis_title="model", yaxis_title="per-neuron attribution (mean over samples)")
    else:
        fig.update_layout(barmode="overlay", xaxis_title="per-neuron attribution (mean over samples)",
                          yaxis_title="neurons (random subsample)" if subsampled else "neurons")
    fig.update_layout(title=title or "Attribution distributions", template="plotly_white")
    return fig


def correlation_scatter_figure(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_label: str = "before",
    y_label: str = "after",
    pearson: float | None = None,
    spearman: float | None = None,
    max_points: int = 20000,
    seed: int = 0,
    title: str = "",
):
    """Scatter of per-neuron attributions of two models, with the identity line (paper Fig. 6b).

    The statistics shown are passed in (computed on all neurons); only the plotted points are a
    seeded random subset of at most ``max_points``.
    """
    import plotly.graph_objects as go

    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    idx = _downsample(x.size, max_points, seed)
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=x[idx], y=y[idx], mode="markers", marker=dict(size=3, opacity=0.4, color="#1f77b4"),
                               name=f"neurons ({idx.size} of {x.size} shown)"))
    if x.size:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#888", dash="dash"), name="y = x")
    stats = []
    if pearson is not None:
        stats.append(f"Pearson r = {pearson:.3f}")
    if spearman is not None:
        stats.append(f"Spearman ρ = {spearman:.3f}")
    head = title or "Per-neuron attribution correlation"
    fig.update_layout(
        title=head + (f" ({', '.join(stats)})" if stats else ""),
        xaxis_title=x_label, yaxis_title=y_label, template="plotly_white",
    )
    return fig


_NOT_METRICS = frozenset({"lam", "lambda", "lr", "steps", "epochs", "seconds", "seed", "reached"})


def _records_by_lambda(results) -> dict[float, dict[str, float]]:
    """``{λ: {metric: value}}`` from that mapping or from records holding ``lam`` (or ``lambda``)."""
    def metrics(d) -> dict[str, float]:
        return {m: float(v) for m, v in d.items() if m not in _NOT_METRICS and _is_number(v)}

    if isinstance(results, Mapping):
        return {float(k): metrics(d) for k, d in results.items()}
    out: dict[float, dict[str, float]] = {}
    for rec in results:
        key = "lam" if "lam" in rec else "lambda"
        if key not in rec:
            raise ValueError(f"λ-sweep record without field 'lam': {rec}")
        out[float(rec[key])] = metrics(rec)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def lambda_sweep_figure(results, *, metrics=None, title: str = "", percent: bool = False):
    """Accuracies against the SSIUU regularisation weight λ, log x axis (paper Fig. 7a).

    Args:
        results: The rows of :func:`neuronscope.unlearning.lambda_sweep` (``{"lam": λ, "FS": ..,
            "RS_retain": .., "RS_test": .., <extra columns such as harmful-attack FS>}``), or
            ``{λ: {metric: value}}``. Bookkeeping fields (``lr``, ``steps``, ``reached``, ...)
            and non-numeric fields are not plotted.
        metrics: Metrics to draw, in order (default: every numeric metric found).
        percent: Multiply values by 100 for display.
    """
    import plotly.graph_objects as go

    by_lam = _records_by_lambda(results)
    lams = sorted(by_lam)
    if metrics is None:
        metrics = []
        for d in by_lam.values():
            metrics += [m for m in d if m not in metrics]
    scale = 100.0 if percent else 1.0
    fig = go.Figure()
    for i, m in enumerate(metrics):
        xs = [lam for lam in lams if m in by_lam[lam]]
        attack = any(w in m.lower() for w in ("attack", "harmful", "benign"))
        fig.add_scatter(x=xs, y=[scale * by_lam[lam][m] for lam in xs], mode="lines+markers", name=m,
                        line=dict(color=_COLORS[i % len(_COLORS)], dash="dot" if attack else "solid"))
    fig.update_layout(
        title=title or "Regularisation weight λ (SSIUU)", xaxis=dict(type="log", title="λ"),
        yaxis_title="accuracy (%)" if percent else "accuracy", template="plotly_white",
    )
    return fig


def _per_lr(series) -> dict[float, float]:
    """``{lr: max FS}`` from a mapping, an ``AttackResult`` or its ``to_dict()`` (key ``per_lr``)."""
    if hasattr(series, "per_lr"):
        series = series.per_lr()
    elif isinstance(series, Mapping) and "per_lr" in series:
        series = series["per_lr"]
    return {float(k): float(v) for k, v in series.items()}


def attack_lr_figure(results, *, title: str = "", percent: bool = False):
    """Max forget accuracy during relearning against the attack learning rate (paper Fig. 7b/c).

    Args:
        results: ``{series: per-lr}`` for one panel, or ``{panel: {series: per-lr}}`` for one
            panel per unlearned model (e.g. panels ``"GA"``, ``"GD"``; series ``"harmful p=0.1"``,
            ``"benign"``). A per-lr entry is ``{lr: max FS}``, an
            :class:`~neuronscope.attacks.AttackResult` (its ``per_lr()``: mean over seeds of the
            max FS during retraining) or that result's ``to_dict()``. Log x axis.
        percent: Multiply values by 100 for display.
    """
    import plotly.graph_objects as go  # noqa: F401
    from plotly.subplots import make_subplots

    def is_series(d) -> bool:
        return hasattr(d, "per_lr") or (isinstance(d, Mapping) and (
            "per_lr" in d or (len(d) > 0 and all(_is_number(v) for v in d.values()))))

    panels = {"": results} if all(is_series(v) for v in results.values()) else dict(results)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[str(p) for p in panels], shared_yaxes=True)
    scale = 100.0 if percent else 1.0
    names: dict[str, str] = {}
    for c, (panel, series) in enumerate(panels.items(), start=1):
        for name, entry in series.items():
            color = names.setdefault(name, _COLORS[len(names) % len(_COLORS)])
            vals = _per_lr(entry)
            lrs = sorted(vals)
            fig.add_scatter(x=lrs, y=[scale * vals[lr] for lr in lrs], mode="lines+markers", name=str(name),
                            legendgroup=str(name), showlegend=(c == 1), line=dict(color=color), row=1, col=c)
        fig.update_xaxes(type="log", title_text="attack learning rate", row=1, col=c)
    fig.update_yaxes(title_text="max forget accuracy during relearning" + (" (%)" if percent else ""), row=1, col=1)
    fig.update_layout(title=title or "Relearning attacks: learning rate", template="plotly_white")
    return fig

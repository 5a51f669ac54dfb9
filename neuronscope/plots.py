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


def figure_div(fig) -> str:
    """An embeddable ``<div>`` for the HTML report (plotly.js loaded once by the page)."""
    return fig.to_html(include_plotlyjs=False, full_html=False)

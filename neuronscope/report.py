"""A self-contained HTML report: headings, prose, tables and interactive plotly figures.

plotly.js is embedded once, so the file opens offline. Written atomically.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from neuronscope.errors import write_text_atomic

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444;padding-bottom:.3em} h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.95em} th,td{border:1px solid #bbb;padding:.3em .7em;text-align:right}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left} .note{color:#555;font-size:.9em}
.kv td{text-align:left} code{background:#f4f4f4;padding:0 .2em}
"""


class HTMLReport:
    """Collects report sections in order and writes one standalone HTML file.

    Example:
        >>> r = HTMLReport("neuronscope demo")
        >>> r.heading("Results"); r.table(["a", "b"], [[1, 2]])
        >>> r.write("runs/demo/report.html")
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []
        self._opening: list[str] = []
        #: ``(figure title, reason)`` of every figure replaced by a note.
        self.omitted: list[tuple[str, str]] = []

    def opening(self, fragment: str) -> None:
        """Put an HTML fragment at the top of the report, whenever this is called.

        The verdicts open every study report this way (SPEC §16):
        ``r.opening(neuronscope.verdict.verdicts_html(verdicts))`` (the report module knows no
        verdicts, so data keeps flowing one way).

        Args:
            fragment: Trusted HTML (escaped by its producer).
        """
        self._opening.append(fragment)

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, *, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def html(self, raw: str) -> None:
        """Append trusted HTML (e.g. a table rendered by another module)."""
        self._parts.append(raw)

    def table(self, header: Sequence[str], rows: Sequence[Sequence], *, caption: str = "", fmt: str = "{:.3f}") -> None:
        """Append a table; floats are formatted with ``fmt``."""

        def cell(v) -> str:
            if isinstance(v, float):
                return html.escape(fmt.format(v))
            return html.escape("" if v is None else str(v))

        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
        for r in rows:
            out.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
        out.append("</table>")
        self._parts.append("\n".join(out))

    def figure(self, fig, *, name: str = "") -> bool:
        """Append an interactive plotly figure, or a one-line note when it carries no information.

        A figure whose data are all zero, all missing, or a heatmap without contrast
        (:func:`neuronscope.plots.uninformative_reason`) is replaced by a note naming the figure
        and the reason, so a reader does not study an empty plot.

        Args:
            fig: A plotly figure.
            name: Name used in the note (default: the figure's title).

        Returns:
            True when the figure was added, False when it was replaced by a note.
        """
        from neuronscope.plots import uninformative_reason

        reason = uninformative_reason(fig)
        if reason is not None:
            title = name or (fig.layout.title.text if fig.layout.title and fig.layout.title.text else "figure")
            self.omitted.append((title, reason))
            self.text(f"Figure “{title}” omitted: {reason}, so it carries no information.", note=True)
            return False
        self._parts.append(fig.to_html(include_plotlyjs=False, full_html=False))
        return True

    def render(self) -> str:
        import plotly.offline

        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        js = plotly.offline.get_plotlyjs()
        body = "\n".join(self._opening + self._parts)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{js}</script></head><body>"
            f"<h1>{html.escape(self.title)}</h1><p class='note'>generated {stamp} by neuronscope</p>"
            f"{body}</body></html>"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report atomically and return its path."""
        return write_text_atomic(path, self.render())

"""Results tables in the layout of paper Tables 1 and 2 (paper §6, SPEC §11).

Rows are (model, method); columns are FS (↓), RS (↑), US (↑), Harmful Attack p = 0.1 (↓),
Harmful Attack p = 0.3 (↓) and Benign Attack (↓). Scores are stored as fractions in [0, 1]
and printed as percentages with two decimals (``0.9192`` → ``91.92``); a missing score (the
Default row has no attack) prints as ``-``. A note (e.g. ``"1 seed on CPU"``) travels with the
table as its caption.

Three renderings: CSV (one flat header, model repeated on every row, for machines),
Markdown (one header row, model named on the first row of its group as in the paper, the
caption below the table) and HTML (the paper's two-row header with a grouped "Harmful
Attack" column, the caption as ``<caption>``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from neuronscope.errors import NeuronscopeError, write_json_atomic, write_text_atomic

#: Score fields of a row, in column order.
SCORE_FIELDS: tuple[str, ...] = ("fs", "rs", "us", "harmful_p01", "harmful_p03", "benign")

#: Flat column headers (CSV / Markdown), in column order after Model and Method.
FLAT_HEADERS: tuple[str, ...] = (
    "FS (↓)",
    "RS (↑)",
    "US (↑)",
    "Harmful Attack p=0.1 (↓)",
    "Harmful Attack p=0.3 (↓)",
    "Benign Attack (↓)",
)


@dataclass
class TableRow:
    """One (model, method) row; scores are fractions in [0, 1] or ``None`` (shown as ``-``).

    Attributes:
        model: Model label (e.g. ``"SmolLM2-135M"``).
        method: Method label (``"Default"``, ``"GA"``, ``"SSIUU"``, ...).
        fs: Forgetting Score on the forget set (accuracy or ROUGE-L recall).
        rs: Retention Score (test set accuracy / retain ROUGE-L recall).
        us: Utility Score.
        harmful_p01: Harmful attack score with p = 0.1 (max FS over retraining, mean of seeds).
        harmful_p03: Harmful attack score with p = 0.3.
        benign: Benign attack score.
    """

    model: str
    method: str
    fs: float | None = None
    rs: float | None = None
    us: float | None = None
    harmful_p01: float | None = None
    harmful_p03: float | None = None
    benign: float | None = None

    def __post_init__(self) -> None:
        for name in SCORE_FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                raise NeuronscopeError(
                    f"table row {self.model}/{self.method}: field '{name}' must be a fraction in [0, 1] or None, got {v!r}"
                )
            setattr(self, name, float(v))

    def scores(self) -> list[float | None]:
        return [getattr(self, f) for f in SCORE_FIELDS]

    def to_dict(self) -> dict:
        return asdict(self)


def format_score(value: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.5`` → ``"50.00"``); ``None`` → ``"-"``."""
    if value is None:
        return "-"
    return f"{100.0 * value:.2f}"


@dataclass
class ResultsTable:
    """A paper-style results table (Tables 1/2) with a caption/note.

    Attributes:
        rows: Rows in display order; consecutive rows with the same model form a group.
        title: Caption title, e.g. ``"Experimental results on the embedded FaithUn-format set"``.
        note: Free text appended to the caption, e.g. ``"1 seed on CPU"``.
    """

    rows: list[TableRow] = field(default_factory=list)
    title: str = "Experimental results"
    note: str = ""

    # ------------------------------------------------------------------ text
    @property
    def caption(self) -> str:
        """``title`` and ``note`` joined as one caption line."""
        if self.note:
            return f"{self.title}. Note: {self.note}"
        return self.title

    def to_csv(self) -> str:
        """CSV text: header ``model,method,FS (↓),...``; percentages with two decimals, ``-`` for missing."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["Model", "Method", *FLAT_HEADERS])
        for r in self.rows:
            w.writerow([r.model, r.method, *(format_score(v) for v in r.scores())])
        return buf.getvalue()

    def to_markdown(self) -> str:
        """GitHub Markdown: a pipe table (model named once per group) and the caption below it."""
        head = ["Model", "Method", *FLAT_HEADERS]
        align = ["---", "---", *(["---:"] * len(FLAT_HEADERS))]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
        previous = None
        for r in self.rows:
            model = r.model if r.model != previous else ""
            previous = r.model
            cells = [_md_escape(model), _md_escape(r.method), *(format_score(v) for v in r.scores())]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Table: {_md_escape(self.caption)}")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML ``<table>`` with the paper's two header rows and the caption."""
        e = html.escape
        out = ['<table class="neuronscope-results">', f"  <caption>{e(self.caption)}</caption>", "  <thead>"]
        out.append(
            "    <tr><th rowspan=\"2\">Model</th><th rowspan=\"2\">Method</th>"
            "<th rowspan=\"2\">FS (↓)</th><th rowspan=\"2\">RS (↑)</th><th rowspan=\"2\">US (↑)</th>"
            "<th colspan=\"2\">Harmful Attack (↓)</th><th rowspan=\"2\">Benign Attack (↓)</th></tr>"
        )
        out.append("    <tr><th>p = 0.1</th><th>p = 0.3</th></tr>")
        out.append("  </thead>")
        out.append("  <tbody>")
        groups = _groups(self.rows)
        for model, rows in groups:
            for k, r in enumerate(rows):
                cells = []
                if k == 0:
                    span = f' rowspan="{len(rows)}"' if len(rows) > 1 else ""
                    cells.append(f"<th{span}>{e(model)}</th>")
                cells.append(f"<td>{e(r.method)}</td>")
                cells.extend(f"<td>{format_score(v)}</td>" for v in r.scores())
                out.append("    <tr>" + "".join(cells) + "</tr>")
        out.append("  </tbody>")
        out.append("</table>")
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        return {"title": self.title, "note": self.note, "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict) -> "ResultsTable":
        try:
            rows = [TableRow(**r) for r in d["rows"]]
        except (KeyError, TypeError) as exc:
            raise NeuronscopeError(f"results table: malformed record ({exc})") from None
        return cls(rows=rows, title=d.get("title", "Experimental results"), note=d.get("note", ""))

    def save(self, out_dir: str | os.PathLike, stem: str = "table") -> dict[str, Path]:
        """Write ``stem.csv``, ``stem.md``, ``stem.html`` and ``stem.json`` into ``out_dir`` atomically.

        Returns:
            ``{"csv": path, "md": path, "html": path, "json": path}``.
        """
        d = Path(out_dir)
        return {
            "csv": write_text_atomic(d / f"{stem}.csv", self.to_csv()),
            "md": write_text_atomic(d / f"{stem}.md", self.to_markdown()),
            "html": write_text_atomic(d / f"{stem}.html", self.to_html()),
            "json": write_json_atomic(d / f"{stem}.json", self.to_dict()),
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ResultsTable":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise NeuronscopeError(f"{p}: no such results table") from None
        except json.JSONDecodeError as exc:
            raise NeuronscopeError(f"{p}: not valid JSON (line {exc.lineno})") from None


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _groups(rows: Iterable[TableRow]) -> list[tuple[str, list[TableRow]]]:
    groups: list[tuple[str, list[TableRow]]] = []
    for r in rows:
        if groups and groups[-1][0] == r.model:
            groups[-1][1].append(r)
        else:
            groups.append((r.model, [r]))
    return groups


def table_from_rows(rows: Sequence[dict | TableRow], *, title: str = "Experimental results", note: str = "") -> ResultsTable:
    """Build a :class:`ResultsTable` from row dicts (``model``, ``method`` and score fields) or rows."""
    return ResultsTable([r if isinstance(r, TableRow) else TableRow(**r) for r in rows], title=title, note=note)

"""Results table rendering (paper Tables 1/2 layout): exact text for a two-row example."""

from __future__ import annotations

import csv
import io

import pytest

from neuronscope.errors import NeuronscopeError
from neuronscope.tables import ResultsTable, TableRow, format_score, table_from_rows


@pytest.fixture
def two_rows() -> ResultsTable:
    return table_from_rows(
        [
            dict(model="SmolLM2", method="Default", fs=0.9192, rs=0.8922, us=0.574),
            dict(model="SmolLM2", method="GA", fs=0.0, rs=0.5841, us=0.5401, harmful_p01=0.6842, harmful_p03=0.7333, benign=0.1671),
        ],
        title="Table 1",
        note="1 seed on CPU",
    )


def test_format_score() -> None:
    assert format_score(None) == "-"
    assert format_score(0.0) == "0.00"
    assert format_score(1.0) == "100.00"
    assert format_score(0.33333) == "33.33"
    assert format_score(0.12344) == "12.34"
    assert format_score(0.12346) == "12.35"
    assert format_score(2 / 3) == "66.67"


def test_csv_exact(two_rows: ResultsTable) -> None:
    assert two_rows.to_csv() == (
        "Model,Method,FS (↓),RS (↑),US (↑),Harmful Attack p=0.1 (↓),Harmful Attack p=0.3 (↓),Benign Attack (↓)\n"
        "SmolLM2,Default,91.92,89.22,57.40,-,-,-\n"
        "SmolLM2,GA,0.00,58.41,54.01,68.42,73.33,16.71\n"
    )
    parsed = list(csv.reader(io.StringIO(two_rows.to_csv())))
    assert len(parsed) == 3 and all(len(r) == 8 for r in parsed)


def test_markdown_exact(two_rows: ResultsTable) -> None:
    assert two_rows.to_markdown() == (
        "| Model | Method | FS (↓) | RS (↑) | US (↑) | Harmful Attack p=0.1 (↓) | Harmful Attack p=0.3 (↓) | Benign Attack (↓) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| SmolLM2 | Default | 91.92 | 89.22 | 57.40 | - | - | - |\n"
        "|  | GA | 0.00 | 58.41 | 54.01 | 68.42 | 73.33 | 16.71 |\n"
        "\n"
        "Table: Table 1. Note: 1 seed on CPU\n"
    )


def test_html_exact(two_rows: ResultsTable) -> None:
    assert two_rows.to_html() == (
        '<table class="neuronscope-results">\n'
        "  <caption>Table 1. Note: 1 seed on CPU</caption>\n"
        "  <thead>\n"
        '    <tr><th rowspan="2">Model</th><th rowspan="2">Method</th><th rowspan="2">FS (↓)</th>'
        '<th rowspan="2">RS (↑)</th><th rowspan="2">US (↑)</th><th colspan="2">Harmful Attack (↓)</th>'
        '<th rowspan="2">Benign Attack (↓)</th></tr>\n'
        "    <tr><th>p = 0.1</th><th>p = 0.3</th></tr>\n"
        "  </thead>\n"
        "  <tbody>\n"
        '    <tr><th rowspan="2">SmolLM2</th><td>Default</td><td>91.92</td><td>89.22</td><td>57.40</td>'
        "<td>-</td><td>-</td><td>-</td></tr>\n"
        "    <tr><td>GA</td><td>0.00</td><td>58.41</td><td>54.01</td><td>68.42</td><td>73.33</td><td>16.71</td></tr>\n"
        "  </tbody>\n"
        "</table>\n"
    )


def test_html_escapes_and_groups() -> None:
    t = table_from_rows([dict(model="A<b>", method="x&y", fs=0.5), dict(model="B", method="GD", fs=0.25)])
    h = t.to_html()
    assert "<th>A&lt;b&gt;</th><td>x&amp;y</td><td>50.00</td>" in h
    assert "<th>B</th><td>GD</td><td>25.00</td>" in h
    md = t.to_markdown()
    assert "| A<b> | x&y | 50.00 |" in md and "| B | GD | 25.00 |" in md  # new group names its model


def test_save_and_load_roundtrip(tmp_path, two_rows: ResultsTable) -> None:
    paths = two_rows.save(tmp_path)
    assert sorted(paths) == ["csv", "html", "json", "md"]
    assert paths["csv"].read_text(encoding="utf-8") == two_rows.to_csv()
    back = ResultsTable.load(paths["json"])
    assert back.to_markdown() == two_rows.to_markdown()
    assert back.rows[1].harmful_p03 == pytest.approx(0.7333)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "0.3"])
def test_row_rejects_non_fractions(bad) -> None:
    with pytest.raises(NeuronscopeError, match="field 'fs'"):
        TableRow(model="m", method="GA", fs=bad)


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(NeuronscopeError, match="no such results table"):
        ResultsTable.load(tmp_path / "nope.json")

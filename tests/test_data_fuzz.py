"""Hypothesis fuzz test of the data loaders (issue 14): random bytes, random JSON shapes, random
Unicode, release-shaped and splits-shaped objects, in every file type the loaders read.

Each input must either load or raise a :class:`NeuronscopeError` whose message is one line
naming the file — never another exception, never a traceback. The number of inputs tried is
printed by the last test (run with ``-s`` to see it).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuronscope import data as d
from neuronscope.errors import NeuronscopeError
from neuronscope.pipeline import load_items

TRIED: dict[str, int] = {}
_COUNTER = itertools.count()
_BASE = settings(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])


def fuzz(n: int) -> settings:
    """Settings for ``n`` inputs: derandomised (the same inputs every run), no deadline."""
    return settings(_BASE, max_examples=n)

SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", "")
KEYS = ("question", "answer", "answers", "false_options", "false_answer_options", "options", "option1", "choices",
        "instruction", "input", "output", "perturbed_answer", "paraphrased_question", "paraphrased_answer", "id",
        "entity", "paraphrases", "hop1_unlearn", "hop1_test", "hop2_test", "same_object", "forget", "retain", "splits", "source")

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=20,
)
records = st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=6)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(workdir: Path, suffix: str, name: str = "data") -> Path:
    """A new folder per input (``datasets`` caches by path and modification time)."""
    folder = workdir / f"in{next(_COUNTER)}"
    folder.mkdir()
    return folder / f"{name}{suffix}"


def _check(kind: str, path: Path, *, spec: str | None = None) -> None:
    """Load ``path``: success, or one clean line naming the file."""
    TRIED[kind] = TRIED.get(kind, 0) + 1
    try:
        if spec is None:
            out = d.load_data(path)
            assert out.items, "loaded data has no items"
        else:
            assert load_items(spec)
    except NeuronscopeError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        assert "Traceback" not in msg
        names = {path.name, path.parent.name, str(path), "splits", "forget", "retain", "test", "held_out"}
        assert any(n in msg for n in names), f"message names no file: {msg!r}"


@fuzz(30)
@given(raw=st.binary(max_size=300), suffix=st.sampled_from(SUFFIXES))
def test_fuzz_random_bytes(workdir: Path, raw: bytes, suffix: str) -> None:
    path = _fresh(workdir, suffix)
    path.write_bytes(raw)
    _check("random bytes", path)


@fuzz(80)
@given(value=json_values | st.lists(records, min_size=1, max_size=4), layout=st.sampled_from(["array", "lines", "csv", "parquet"]))
def test_fuzz_random_json_shapes(workdir: Path, value, layout: str) -> None:
    if layout == "array":
        path = _fresh(workdir, ".json")
        path.write_text(json.dumps(value), encoding="utf-8")
    elif layout == "lines":
        path = _fresh(workdir, ".jsonl")
        rows = value if isinstance(value, list) else [value]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        import pandas as pd

        rows = [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []
        path = _fresh(workdir, f".{layout}")
        try:
            frame = pd.DataFrame(rows or [{"x": 1}])
            frame.to_csv(path, index=False) if layout == "csv" else frame.to_parquet(path)
        except Exception:  # pandas/pyarrow cannot write this shape: nothing to load
            return
    _check("random JSON shapes", path)


@fuzz(100)
@given(text=st.text(max_size=200), suffix=st.sampled_from([".json", ".jsonl", ".csv"]),
       header=st.sampled_from(["", "question,answer\n", "instruction,input,output\n", '{"question": ']))
def test_fuzz_random_unicode(workdir: Path, text: str, suffix: str, header: str) -> None:
    path = _fresh(workdir, suffix)
    path.write_text(header + text, encoding="utf-8", errors="surrogatepass")
    _check("random Unicode", path)


question = st.fixed_dictionaries(
    {"question": st.text(max_size=8) | st.none()},
    optional={"answers": st.lists(st.text(max_size=5) | st.integers(), max_size=3) | st.text(max_size=4),
              "false_answer_options": st.lists(st.text(max_size=5), max_size=3) | st.integers()},
)
entity = st.dictionaries(
    st.sampled_from(["hop1_unlearn", "hop1_test", "hop2_test", "same_object", "name"]),
    st.lists(question | st.lists(question, max_size=2) | scalars, max_size=3) | scalars,
    max_size=5,
)


@fuzz(120)
@given(release=st.dictionaries(st.text(max_size=4), entity | scalars, min_size=1, max_size=4),
       split_lines=st.lists(st.lists(st.sampled_from(["0", "1", "2", "3", "9", "-1", "x", "", " 2 "]), max_size=4), min_size=3, max_size=3)
       | st.none())
def test_fuzz_release_shapes_and_split_files(workdir: Path, release: dict, split_lines) -> None:
    path = _fresh(workdir, ".json", name="FaithUnBench")
    path.write_text(json.dumps(release), encoding="utf-8")
    if split_lines is not None:
        for f, lines in zip(d.RELEASE_SPLIT_FILES.values(), split_lines):
            (path.parent / f).write_text("\n".join(lines), encoding="utf-8")
    _check("release shapes", path)


@fuzz(60)
@given(obj=st.dictionaries(st.sampled_from(["forget", "retain", "test", "held_out", "extra", "source", "seed"]),
                           json_values | st.lists(st.sampled_from(["q1", "q2", "x"]) | scalars, max_size=3), max_size=5)
       | json_values,
       wrap=st.booleans(), part=st.sampled_from(["", ":retain", ":forget/paraphrase"]))
def test_fuzz_splits_json_shapes(workdir: Path, obj, wrap: bool, part: str) -> None:
    path = _fresh(workdir, ".json", name="splits")
    path.write_text(json.dumps({"splits": obj} if wrap else obj), encoding="utf-8")
    _check("splits.json shapes", path, spec=f"{path}{part}")


def test_fuzz_count_of_inputs_tried() -> None:
    total = sum(TRIED.values())
    print(f"\nfuzz: {total} inputs tried: " + ", ".join(f"{k} {v}" for k, v in TRIED.items()))
    assert total >= 350, TRIED

"""Data layer: embedded FaithUn facts, loaders and their errors, splits, Alpaca, TOFU (SPEC §10)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from neuronscope import data as d
from neuronscope.data import DataError, FaithUnSplits, InstructionItem, QAItem
from neuronscope.errors import NeuronscopeError


@pytest.fixture(scope="module")
def facts() -> list[QAItem]:
    return d.load_faithun()


def _items(n: int) -> list[QAItem]:
    return [QAItem(id=f"q{i}", question=f"Question {i}?", answer=f"a{i}", false_options=(f"b{i}", f"c{i}"), entity=f"e{i // 2}") for i in range(n)]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _mentioned(text: str, names: set[str]) -> set[str]:
    """The names that occur in ``text`` as whole words (case-insensitive)."""
    pattern = re.compile(r"(?<!\w)(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?!\w)", re.IGNORECASE)
    found = {m.casefold() for m in pattern.findall(text)}
    return {n for n in names if n.casefold() in found}


# ------------------------------------------------------------------ embedded FaithUn facts


def test_embedded_facts_counts_and_shape(facts: list[QAItem]) -> None:
    entities = Counter(it.entity for it in facts)
    assert len(facts) >= 450
    assert len(entities) >= 160
    assert (len(facts), len(entities)) == (642, 285)
    assert all(2 <= c <= 4 for c in entities.values())
    assert len({it.id for it in facts}) == len(facts)
    assert len({it.question for it in facts}) == len(facts)
    for it in facts:
        assert it.question.endswith("?") and it.entity and it.category
        assert len(it.false_options) == 2
        assert 1 <= len(it.paraphrases) <= 2
        assert it.question not in it.paraphrases
        assert 1 <= len(it.answer.split()) <= 4
        folded = [o.casefold() for o in (it.answer, *it.false_options)]
        assert len(set(folded)) == 3, it.id  # no duplicates, answer never a false option
        assert it.answer.casefold() not in {o.casefold() for o in it.false_options}


def test_embedded_facts_known_values(facts: list[QAItem]) -> None:
    by_id = {it.id: it for it in facts}
    assert by_id["france-capital"].answer == "Paris"
    assert by_id["france-capital"].question == "What is the capital of France?"
    assert by_id["albert-einstein-field"].answer == "Physics"
    assert by_id["albert-einstein-field"].false_options == ("Biology", "Economics")
    assert by_id["australia-capital"].answer == "Canberra"
    assert by_id["william-shakespeare-play"].answer == "Hamlet"
    assert by_id["donald-trump-from"].question == "Which country is Donald Trump from?"
    assert by_id["donald-trump-from"].answer == "United States"


def test_embedded_file_is_packaged_jsonl() -> None:
    path = Path(d.__file__).parent / "resources" / d.FAITHUN_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 642
    first = json.loads(lines[0])
    assert set(first) == {"id", "entity", "question", "answer", "false_options", "paraphrases", "category"}


def test_options_deterministic_and_seeded(facts: list[QAItem]) -> None:
    it = QAItem(id="demo-1", question="Q?", answer="A", false_options=("B", "C"))
    # Fixed expected orders: the shuffle uses SHA-256 of (seed, id), not the salted hash().
    assert [it.options(s) for s in range(4)] == [["A", "C", "B"], ["B", "C", "A"], ["A", "C", "B"], ["B", "A", "C"]]
    for item in facts[:50]:
        assert item.options(3) == item.options(3)
        assert sorted(item.options(3)) == sorted([item.answer, *item.false_options])
    # the answer is not always first: positions vary across items
    positions = Counter(item.options(0).index(item.answer) for item in facts)
    assert set(positions) == {0, 1, 2}
    assert min(positions.values()) > len(facts) / 6


def test_qaitem_to_dict_round_trips_through_loader(tmp_path: Path, facts: list[QAItem]) -> None:
    path = _write_jsonl(tmp_path / "copy.jsonl", [it.to_dict() for it in facts[:5]])
    assert d.load_faithun(path) == facts[:5]


# ------------------------------------------------------------------ loader variants


def test_faithun_field_variants(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "variants.jsonl",
        [
            {"question": "Capital of Peru?", "answer": "Lima", "options": ["Quito", "Lima", "Cusco"], "subject": "Peru"},
            {"question": "Q2?", "answer": 1, "choices": ["x", "y", "z"], "paraphrased_questions": ["Q2 again?"]},
            {"question": "Q3?", "answer": "Yes", "wrong_options": ["No"], "id": "custom", "relation": "r"},
            {"question": "Q4?", "answer": "1912", "distractors": ["1905", "1920"]},
        ],
    )
    items = d.load_faithun(path)
    assert items[0] == QAItem(id="variants-1", question="Capital of Peru?", answer="Lima", false_options=("Quito", "Cusco"), entity="Peru")
    assert items[1].answer == "y" and items[1].false_options == ("x", "z") and items[1].paraphrases == ("Q2 again?",)
    assert items[2].id == "custom" and items[2].false_options == ("No",) and items[2].category == "r"
    assert items[3].false_options == ("1905", "1920") and items[3].id == "variants-4"


def test_faithun_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"question": "Q?", "answer": "A", "false_options": ["B", "C"]}]), encoding="utf-8")
    assert d.load_faithun(path) == [QAItem(id="arr-1", question="Q?", answer="A", false_options=("B", "C"))]


def test_hub_names_go_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([{"question": "Q?", "answer": "A", "options": ["A", "B", "C"]}])

    monkeypatch.setattr(d, "load_dataset", fake)
    items = d.load_faithun("someone/faithun:base")
    assert calls == [(("someone/faithun", "base"), {"split": "train"})]
    assert items[0].false_options == ("B", "C") and items[0].id == "someone-faithun-base-1"

    def broken(*args, **kwargs):
        raise ConnectionError("offline\nmore detail")

    monkeypatch.setattr(d, "load_dataset", broken)
    with pytest.raises(DataError) as exc:
        d.load_faithun("someone/faithun")
    assert str(exc.value) == "someone/faithun: cannot load from the Hugging Face Hub (offline)"


# ------------------------------------------------------------------ loader errors


GOOD = {"question": "Capital of France?", "answer": "Paris", "false_options": ["Lyon", "Nice"]}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"question": "Q?", "false_options": ["B", "C"]}, "field 'answer' is missing"),
        ({"question": "Q?", "answer": None, "false_options": ["B", "C"]}, "field 'answer' is missing"),
        ({"answer": "A", "false_options": ["B", "C"]}, "field 'question' is missing"),
        ({"question": "  ", "answer": "A", "false_options": ["B", "C"]}, "field 'question' is empty"),
        ({"question": "Q?", "answer": "Paris", "options": ["Lyon", "Nice", "Rouen"]}, "field 'options' does not contain the answer 'Paris'"),
        ({"question": "Q?", "answer": "A", "false_options": ["Lyon", "lyon"]}, "field 'false_options' has duplicate option 'lyon'"),
        ({"question": "Q?", "answer": "A", "options": ["A", "B", "B"]}, "field 'options' has duplicate option 'B'"),
        ({"question": "Q?", "answer": "A", "false_options": ["B", "a"]}, "field 'false_options' contains the answer 'A'"),
        ({"question": "Q?", "answer": "A", "false_options": []}, "field 'false_options' has fewer than 2 options (the answer plus at least one false option), got 1"),
        ({"question": "Q?", "answer": "A"}, "field 'false_options' has fewer than 2 options (the answer plus at least one false option), got 1"),
        ({"question": "Q?", "answer": "A", "choices": ["A"]}, "field 'choices' has fewer than 2 options (the answer plus at least one false option), got 1"),
        ({"question": "Q?", "answer": "A", "false_options": "B"}, None),
    ],
)
def test_faithun_record_errors(tmp_path: Path, record: dict, message: str | None) -> None:
    path = _write_jsonl(tmp_path / "faithun.jsonl", [GOOD, record])
    if message is None:  # a single string is accepted as a one-element list
        assert d.load_faithun(path)[1].false_options == ("B",)
        return
    with pytest.raises(DataError) as exc:
        d.load_faithun(path)
    assert str(exc.value) == f"faithun.jsonl: record 2: {message}"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as exc:
        d.load_faithun(missing)
    assert str(exc.value) == f"{missing}: file not found"
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, NeuronscopeError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        d.load_faithun(path)
    assert str(exc.value) == "empty.jsonl: file is empty (no records)"
    (tmp_path / "none.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"^none\.json: file is empty \(no records\)$"):
        d.load_faithun(tmp_path / "none.json")


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n" + '{"question": "Q?", "answer": \n', encoding="utf-8")
    with pytest.raises(DataError) as exc:
        d.load_faithun(path)
    assert str(exc.value) == "bad.jsonl: line 3: malformed JSON (Expecting value)"
    arr = tmp_path / "bad.json"
    arr.write_text('[\n{"question": "Q?",\n "answer": }\n]', encoding="utf-8")
    with pytest.raises(DataError) as exc:
        d.load_faithun(arr)
    assert str(exc.value) == "bad.json: line 3: malformed JSON (Expecting value)"


def test_duplicate_ids(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dup.jsonl", [dict(GOOD, id="x"), dict(GOOD, id="y"), dict(GOOD, id="x")])
    with pytest.raises(DataError) as exc:
        d.load_faithun(path)
    assert str(exc.value) == "dup.jsonl: record 3: field 'id' duplicates record 1 ('x')"


# ------------------------------------------------------------------ FaithUn splits


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (20, (1, 2, 14, 3)),  # 0.05*20=1, 0.1*20=2, 0.7*20=14
        (30, (2, 3, 21, 4)),  # 1.5 rounds half up to 2
        (10, (1, 1, 7, 1)),  # 0.5 -> 1 (at least one), 1, 7
        (642, (32, 64, 449, 97)),  # 32.1, 64.2, 449.4 (the embedded set)
    ],
)
def test_split_sizes_by_hand(n: int, sizes: tuple[int, int, int, int]) -> None:
    items = _items(n)
    s = d.split_faithun(items, seed=0)
    assert (len(s.forget), len(s.retain), len(s.test), len(s.held_out)) == sizes
    ids = [it.id for part in (s.forget, s.retain, s.test, s.held_out) for it in part]
    assert sorted(ids) == sorted(it.id for it in items)  # disjoint and complete
    for part in (s.forget, s.retain, s.test, s.held_out):  # original order kept
        assert part == sorted(part, key=items.index)


def test_split_deterministic_and_seeded() -> None:
    items = _items(200)
    a, b = d.split_faithun(items, seed=1), d.split_faithun(items, seed=1)
    assert a.to_dict() == b.to_dict()
    assert d.split_faithun(items, seed=2).to_dict() != a.to_dict()


def test_split_custom_fractions_and_summary() -> None:
    s = d.split_faithun(_items(20), forget=0.25, retain=0.25, test=0.5)
    assert (len(s.forget), len(s.retain), len(s.test), len(s.held_out)) == (5, 5, 10, 0)
    assert s.summary() == "forget 5, retain 5, test 10, held_out 0 (20 items, 10 entities)"
    s0 = d.split_faithun(_items(20), forget=0.1, retain=0.0, test=0.0)
    assert (len(s0.forget), len(s0.retain), len(s0.test), len(s0.held_out)) == (2, 0, 0, 18)


def test_forget_pool_respected() -> None:
    items = _items(100)
    pool = {"q3", "q7", "q11", "q50", "q99", "q98", "q97", "not-an-item"}
    s = d.split_faithun(items, forget_pool=pool)
    assert len(s.forget) == 5  # round(0.05 * 100)
    assert {it.id for it in s.forget} <= pool
    assert (len(s.retain), len(s.test)) == (10, 70)
    small = d.split_faithun(items, forget_pool={"q3", "q4"})
    assert [it.id for it in small.forget] == ["q3", "q4"]  # pool smaller than 5: all of it
    rest = {it.id for it in small.retain + small.test + small.held_out}
    assert rest.isdisjoint({"q3", "q4"}) and len(rest) == 98


def test_splits_dict_round_trip() -> None:
    items = _items(40)
    s = d.split_faithun(items, seed=5)
    blob = json.loads(json.dumps(s.to_dict()))
    assert set(blob) == {"forget", "retain", "test", "held_out"}
    assert FaithUnSplits.from_dict(blob, items) == s
    with pytest.raises(DataError, match=r"^split 'retain': unknown item id 'zzz'$"):
        FaithUnSplits.from_dict({"forget": [], "retain": ["zzz"]}, items)
    with pytest.raises(DataError, match=r"^split 'test': item id 'q1' is also in split 'forget'$"):
        FaithUnSplits.from_dict({"forget": ["q1"], "test": ["q1"]}, items)


@pytest.mark.parametrize(
    ("kwargs", "n", "message"),
    [
        (dict(forget=0.5, retain=0.5, test=0.2), 20, "split fractions sum to 1.2 > 1 (forget=0.5, retain=0.5, test=0.2)"),
        (dict(forget=-0.1), 20, "split 'forget': fraction must be between 0 and 1, got -0.1"),
        (dict(test=1.5), 20, "split 'test': fraction must be between 0 and 1, got 1.5"),
        (dict(), 4, "split 'retain' is empty: 0.1 of 4 items rounds to 0 (use more items or a larger fraction)"),
        (dict(forget_pool={"x", "y"}), 20, "split 'forget' is empty: forget_pool contains none of the item ids"),
        (dict(), 0, "cannot split an empty item list"),
    ],
)
def test_split_errors(kwargs: dict, n: int, message: str) -> None:
    with pytest.raises(DataError) as exc:
        d.split_faithun(_items(n), **kwargs)
    assert str(exc.value) == message


# ------------------------------------------------------------------ utility set


def test_utility_set(facts: list[QAItem]) -> None:
    util = d.load_utility()
    assert len(util) >= 100
    assert all(len(it.false_options) == 2 and it.answer not in it.false_options for it in util)
    names = {it.entity for it in facts}
    text = "\n".join(f"{it.question} {it.answer} {' '.join(it.false_options)}" for it in util)
    assert _mentioned(text, names) == set()


# ------------------------------------------------------------------ Alpaca


def test_alpaca_default_is_1000_distinct_benign_items(facts: list[QAItem]) -> None:
    items = d.load_alpaca()
    assert len(items) == 1000 and len(set(items)) == 1000
    assert all(isinstance(it, InstructionItem) and it.instruction and it.output for it in items)
    pool = d.generate_alpaca()
    assert len(pool) >= 1000 and len(set(pool)) == len(pool)
    assert set(items) <= set(pool)
    text = "\n".join(f"{it.instruction} {it.input} {it.output}" for it in pool)
    names = {it.entity for it in facts}
    assert _mentioned(text, names) == set()
    families = Counter(it.instruction.split()[0] for it in items)
    assert len(families) >= 8  # a mix of task families, not one kind


def test_alpaca_determinism_and_values() -> None:
    assert d.load_alpaca(seed=3) == d.load_alpaca(seed=3)
    assert d.load_alpaca(seed=3) != d.load_alpaca(seed=4)
    assert d.generate_alpaca() == d.generate_alpaca()
    pool = d.generate_alpaca()
    conv = [it for it in pool if it.instruction == "Convert 7 kilometers to meters."]
    assert conv == [InstructionItem("Convert 7 kilometers to meters.", "", "7 kilometers is 7000 meters.")]
    for it in pool:
        if it.instruction == "Sort these words in alphabetical order.":
            assert it.output.split(", ") == sorted(it.input.split(", "))
        if it.instruction.startswith("How many letters are in the word"):
            word = it.instruction.split('"')[1]
            assert it.output == f'The word "{word}" has {len(word)} letters.'
    assert len(d.load_alpaca(n=None)) == len(pool)


def test_alpaca_real_file(tmp_path: Path) -> None:
    path = tmp_path / "alpaca_data.json"
    recs = [{"instruction": f"Say {i}.", "input": "" if i % 2 else "ctx", "output": str(i)} for i in range(10)]
    recs[3].pop("input")
    path.write_text(json.dumps(recs), encoding="utf-8")
    items = d.load_alpaca(path, n=None)
    assert items[0] == InstructionItem("Say 0.", "ctx", "0") and items[3] == InstructionItem("Say 3.", "", "3")
    picked = d.load_alpaca(path, n=4, seed=1)
    assert len(picked) == 4 and picked == sorted(picked, key=items.index)
    with pytest.raises(DataError, match=r"^alpaca_data\.json: asked for n=11 items but only 10 are available$"):
        d.load_alpaca(path, n=11)
    with pytest.raises(DataError, match=r"^alpaca_data\.json: n must be a positive integer, got 0$"):
        d.load_alpaca(path, n=0)
    bad = _write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Do it."}])
    with pytest.raises(DataError, match=r"^alpaca\.jsonl: record 1: field 'output' is missing$"):
        d.load_alpaca(bad, n=None)


# ------------------------------------------------------------------ TOFU


def test_generate_tofu_deterministic_profiles() -> None:
    a = d.generate_tofu(n_authors=20, questions_per_author=5, seed=0)
    assert a == d.generate_tofu(n_authors=20, questions_per_author=5, seed=0)
    assert a != d.generate_tofu(n_authors=20, questions_per_author=5, seed=1)
    assert len(a) == 100 and len({it.id for it in a}) == 100
    authors = Counter(it.entity for it in a)
    assert len(authors) == 20 and set(authors.values()) == {5}
    for it in a:
        assert it.false_options == ()
        assert it.entity in it.question and it.entity in it.answer and it.answer.endswith(".")
    born = [it for it in d.generate_tofu(50, 10, seed=0) if it.category == "birthplace"]
    assert len(born) == 50
    assert all(re.fullmatch(rf"{re.escape(it.entity)} was born in [^,]+, [^,]+\.", it.answer) for it in born)
    with pytest.raises(DataError, match=r"^questions_per_author must be an integer between 1 and 10, got 11$"):
        d.generate_tofu(questions_per_author=11)


def test_split_tofu_by_whole_authors() -> None:
    items = d.generate_tofu(n_authors=20, questions_per_author=5, seed=0)
    s = d.split_tofu(items, forget=0.01, seed=0)
    assert len(s.forget) == 5 and len(s.retain) == 95 and s.test == [] and s.held_out == []
    assert len({it.entity for it in s.forget}) == 1
    assert {it.entity for it in s.forget}.isdisjoint({it.entity for it in s.retain})
    s12 = d.split_tofu(items, forget=0.12, seed=0)  # 12 questions -> 3 whole authors
    assert len(s12.forget) == 15 and len({it.entity for it in s12.forget}) == 3
    assert d.split_tofu(items, forget=0.12, seed=0) == s12
    with pytest.raises(DataError, match=r"^split 'forget': fraction must be in \(0, 1\), got 0$"):
        d.split_tofu(items, forget=0)


def test_load_tofu_groups_blocks_by_author(tmp_path: Path) -> None:
    recs = [{"question": f"Q{i}?", "answer": f"A{i}.", "paraphrased_question": f"P{i}?"} for i in range(6)]
    path = _write_jsonl(tmp_path / "forget01.jsonl", recs)
    items = d.load_tofu(path, questions_per_author=3)
    assert [it.entity for it in items] == ["author-1"] * 3 + ["author-2"] * 3
    assert items[4] == QAItem(id="forget01-5", question="Q4?", answer="A4.", entity="author-2", paraphrases=("P4?",))
    s = d.split_tofu(items, forget=0.01)
    assert len(s.forget) == 3 and len(s.retain) == 3
    with pytest.raises(DataError, match=r"^forget01\.jsonl: record 2: field 'answer' is missing$"):
        d.load_tofu(_write_jsonl(tmp_path / "forget01.jsonl", [recs[0], {"question": "Q?"}]))

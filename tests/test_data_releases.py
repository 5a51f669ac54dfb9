"""Real dataset releases as published (issue 13 deliverable 2; SPEC §10): the FaithUn release
with its split files, TOFU (incl. ``*_perturbed``), Alpaca and FaithUn-format tables in JSON,
JSON Lines, parquet and CSV; format detection; provenance in ``splits.json``; ``--data`` specs.

Every file is built here in ``tmp_path`` in the published schema (no real release is shipped)
and the loaded items are compared field by field with what was written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from neuronscope import data as d
from neuronscope.data import DataError, InstructionItem, QAItem
from neuronscope.errors import NeuronscopeError
from neuronscope.pipeline import load_items

# ------------------------------------------------------------------ builders (published schemas)

PEOPLE = [
    ("Q76", "Barack Obama", "United States", "Honolulu"),
    ("Q90", "Pablo Picasso", "Spain", "Málaga"),
    ("Q937", "Albert Einstein", "Germany", "Ulm"),
    ("Q1339", "Johann Sebastian Bach", "Germany", "Eisenach"),
]


def _q(question: str, answers: list[str], false: list[str]) -> dict:
    return {"question": question, "answers": answers, "false_answer_options": false}


def release_obj() -> dict:
    """A FaithUn release: 4 entities × 2 ``hop1_unlearn`` questions = 8 clusters (0..7)."""
    rel = {}
    for qid, name, country, city in PEOPLE:
        rel[qid] = {
            "hop1_unlearn": [
                _q(f"Which country is {name} from?", [country], ["France", "Japan"]),
                _q(f"Where was {name} born?", [city, f"{city} (city)"], ["Paris", "Tokyo"]),
            ],
            # aligned with hop1_unlearn (2 entries): entry k belongs to cluster k of the entity
            "hop1_test": [
                _q(f"What is the home country of {name}?", [country], ["France", "Japan"]),
                _q(f"In which city was {name} born?", [city], ["Paris", "Tokyo"]),
            ],
            # not aligned (1 entry for 2 clusters): belongs to both clusters of the entity
            "hop2_test": [_q(f"Which continent is the birthplace of {name} on?", ["Earth"], ["Mars", "Venus"])],
            # aligned, entries are lists of questions
            "same_object": [[_q(f"Who else is from the country of {name}?", [f"not {name}"], ["a", "b"])], []],
        }
    return rel


SPLIT_IDX = {"forget_set_split.txt": [1, 6], "retaining_set_split.txt": [0], "test_set_split.txt": [2, 3, 4, 5]}


def write_release(root: Path, *, splits: dict[str, list] | None = SPLIT_IDX, in_subdir: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "FaithUnBench.json"
    path.write_text(json.dumps(release_obj(), indent=1, ensure_ascii=False), encoding="utf-8")
    if splits is not None:
        sdir = root / "splits" if in_subdir else root
        sdir.mkdir(exist_ok=True)
        for f, idx in splits.items():
            (sdir / f).write_text("".join(f"{i}\n" for i in idx), encoding="utf-8")
    return path


def tofu_rows(perturbed: bool, authors: int = 3, per: int = 20) -> list[dict]:
    rows = []
    for a in range(authors):
        for k in range(per):
            r = {"question": f"What is fact {k} about author {a}?", "answer": f"Author {a} has fact number {k}, a full sentence."}
            if perturbed:
                r |= {
                    "paraphrased_question": f"Can you tell fact {k} of author {a}?",
                    "paraphrased_answer": f"Fact {k} of author {a}, said differently.",
                    "perturbed_answer": [f"Author {a} has no fact {k}.", f"Author {a} invented fact {k + 1}.", f"Nobody knows fact {k}."],
                }
            rows.append(r)
    return rows


ALPACA = [{"instruction": f"Add {i} and {i + 1}.", "input": "" if i % 2 else f"the numbers {i}", "output": str(2 * i + 1)} for i in range(12)]
FAITHUN = [
    {"id": f"f{i}", "question": f"What is the capital of land {i}?", "answer": f"City {i}", "false_options": [f"Town {i}", f"Village {i}"],
     "entity": f"Land {i}", "paraphrases": [f"Name the capital of land {i}."]}
    for i in range(12)
]
REAL_AUTHORS = [  # option-column layout (answer is the text of one option)
    {"question": "Who wrote 'Hamlet'?", "option1": "Jane Austen", "option2": "William Shakespeare", "option3": "Mark Twain",
     "option4": "Leo Tolstoy", "answer": "William Shakespeare"},
]


def write_table(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as JSON array / JSON Lines / parquet / CSV by the suffix (pandas, as users do)."""
    suffix = path.suffix
    if suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)  # lists become "['a', 'b']" text cells
    else:
        raise AssertionError(suffix)
    return path


FILE_TYPES = (".json", ".jsonl", ".parquet", ".csv")


# ------------------------------------------------------------------ the FaithUn release


def test_release_maps_entities_clusters_and_official_splits(tmp_path: Path) -> None:
    path = write_release(tmp_path / "dataset")
    data = d.load_data(tmp_path / "dataset")  # the folder, as downloaded
    assert data.format == "faithun-release"
    rel = release_obj()
    # Clusters: the hop1_unlearn questions of all entities, concatenated in file order.
    expected = [(qid, k, q) for qid, ent in rel.items() for k, q in enumerate(ent["hop1_unlearn"])]
    assert len(data.items) == 8
    for it, (qid, k, q) in zip(data.items, expected):
        assert it.id == f"{qid}-hop1-{k}"
        assert it.question == q["question"]
        assert it.answer == q["answers"][0]
        assert list(it.false_options) == q["false_answer_options"]
        assert it.entity == qid
        # the aligned hop1_test question of the same cluster is its paraphrase
        assert it.paraphrases == (rel[qid]["hop1_test"][k]["question"],)
    assert data.items[3].answer == "Málaga"  # non-ASCII kept
    # Official splits by cluster index.
    s = data.splits
    assert [it.id for it in s.forget] == [data.items[1].id, data.items[6].id]
    assert [it.id for it in s.retain] == [data.items[0].id]
    assert [it.id for it in s.test] == [it.id for it in data.items[2:6]]
    assert [it.id for it in s.held_out] == [data.items[7].id]
    # Extra evaluation sets follow their clusters: aligned lists by position, others by entity.
    assert [e.id for e in s.extra["forget"]["paraphrase"]] == ["Q76-hop1_test-1", "Q1339-hop1_test-0"]
    assert [e.id for e in s.extra["forget"]["multihop"]] == ["Q76-hop2_test-0", "Q1339-hop2_test-0"]
    assert [e.id for e in s.extra["forget"]["same_answer"]] == ["Q1339-same_object-0-0"]
    assert "same_answer" not in s.extra["held_out"]  # Q1339 cluster 1 has an empty same_object list
    mh = s.extra["test"]["multihop"][0]
    assert (mh.question, mh.answer, mh.false_options, mh.category) == (
        rel["Q90"]["hop2_test"][0]["question"], "Earth", ("Mars", "Venus"), "hop2_test")
    # Provenance: absolute path, format, SHA-256 of the bytes.
    assert data.source.location == str(path.resolve())
    assert data.source.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert s.source == data.source.to_dict()
    # load_faithun and the file path itself (split files beside it) give the same items.
    assert d.load_faithun(path) == data.items
    write_release(tmp_path / "flat", in_subdir=False)
    assert d.load_data(tmp_path / "flat" / "FaithUnBench.json").splits.to_dict()["forget"] == ["Q76-hop1-1", "Q1339-hop1-0"]


def test_release_without_split_files_has_no_official_splits(tmp_path: Path) -> None:
    data = d.load_data(write_release(tmp_path / "r", splits=None))
    assert data.splits is None
    s = data.split(seed=0)  # seeded paper split 5/10/70 % over the 8 clusters
    assert (len(s.forget), len(s.retain), len(s.test)) == (1, 1, 6)
    assert s.source["format"] == "faithun-release"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"forget_set_split.txt": [1, 8], "retaining_set_split.txt": [0], "test_set_split.txt": [2]},
         "forget_set_split.txt: line 2: cluster index 8 out of range (the release has 8 clusters, 0–7)"),
        ({"forget_set_split.txt": [1], "retaining_set_split.txt": [0, "x1"], "test_set_split.txt": [2]},
         "retaining_set_split.txt: line 2: expected a cluster index (an integer ≥ 0), got 'x1'"),
        ({"forget_set_split.txt": [1], "retaining_set_split.txt": [0], "test_set_split.txt": [2, 1]},
         "test_set_split.txt: line 2: cluster index 1 listed also in forget_set_split.txt"),
        ({"forget_set_split.txt": [1, 1], "retaining_set_split.txt": [0], "test_set_split.txt": [2]},
         "forget_set_split.txt: line 2: cluster index 1 listed twice"),
        ({"forget_set_split.txt": [], "retaining_set_split.txt": [0], "test_set_split.txt": [2]},
         "forget_set_split.txt: lists no cluster index (the forget split is empty)"),
    ],
)
def test_release_split_file_errors(tmp_path: Path, files: dict, message: str) -> None:
    write_release(tmp_path / "r", splits=files)
    with pytest.raises(DataError) as exc:
        d.load_data(tmp_path / "r")
    assert str(exc.value) == message


def test_release_missing_split_file_and_split_file_as_data(tmp_path: Path) -> None:
    write_release(tmp_path / "r", splits={"forget_set_split.txt": [1], "test_set_split.txt": [2]})
    with pytest.raises(DataError) as exc:
        d.load_data(tmp_path / "r")
    assert str(exc.value) == f"{tmp_path / 'r' / 'splits'}: FaithUn split file retaining_set_split.txt is missing (found forget_set_split.txt, test_set_split.txt)"
    with pytest.raises(DataError, match=r"^forget_set_split\.txt: a plain-text file; .*pass FaithUnBench\.json or its folder\)$"):
        load_items(str(tmp_path / "r" / "splits" / "forget_set_split.txt"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["Q90"].pop("hop1_unlearn"), "FaithUnBench.json: entity Q90: field 'hop1_unlearn' is missing"),
        (lambda r: r["Q90"]["hop1_unlearn"][1].pop("answers"), "FaithUnBench.json: entity Q90: hop1_unlearn[1]: field 'answer' is missing"),
        (lambda r: r["Q90"]["hop1_unlearn"][0].update(answers=[]), "FaithUnBench.json: entity Q90: hop1_unlearn[0]: field 'answers' is empty"),
        (lambda r: r["Q937"]["hop2_test"][0].update(false_answer_options=["Earth", "Mars"]),
         "FaithUnBench.json: entity Q937: hop2_test[0]: field 'false_answer_options' contains the answer 'Earth'"),
        (lambda r: r["Q76"].update(hop1_test="oops"), "FaithUnBench.json: entity Q76: field 'hop1_test' must be a list, got str"),
        (lambda r: r.update(Q5=[1, 2]), "FaithUnBench.json: entity Q5: expected an object with hop1_unlearn, hop1_test, hop2_test, same_object"),
        (lambda r: r["Q76"]["same_object"][0].append(7), "FaithUnBench.json: entity Q76: same_object[0][1]: expected a question object, got int"),
    ],
)
def test_release_record_errors_name_entity_list_and_position(tmp_path: Path, mutate, message: str) -> None:
    rel = release_obj()
    mutate(rel)
    (tmp_path / "FaithUnBench.json").write_text(json.dumps(rel), encoding="utf-8")
    with pytest.raises(DataError) as exc:
        d.load_data(tmp_path / "FaithUnBench.json")
    assert str(exc.value) == message


# ------------------------------------------------------------------ tables in every file type


@pytest.mark.parametrize("suffix", FILE_TYPES)
def test_tofu_rows_load_with_fields_as_written(tmp_path: Path, suffix: str) -> None:
    rows = tofu_rows(perturbed=False)
    data = d.load_data(write_table(tmp_path / f"forget01{suffix}", rows))
    assert data.format == "tofu" and not data.has_options
    assert [(it.question, it.answer, it.false_options) for it in data.items] == [(r["question"], r["answer"], ()) for r in rows]
    assert [it.entity for it in data.items] == [f"author-{i // 20 + 1}" for i in range(60)]  # blocks of 20 per author
    s = data.split(seed=0)  # 1 % forget by whole authors: one author
    assert len(s.forget) == 20 and len({it.entity for it in s.forget}) == 1 and len(s.retain) == 40


@pytest.mark.parametrize("suffix", FILE_TYPES)
def test_tofu_perturbed_answers_become_false_options(tmp_path: Path, suffix: str) -> None:
    rows = tofu_rows(perturbed=True)
    data = d.load_data(write_table(tmp_path / f"forget01_perturbed{suffix}", rows))
    assert data.format == "tofu-perturbed" and data.has_options
    for it, r in zip(data.items, rows, strict=True):
        assert (it.question, it.answer) == (r["question"], r["answer"])
        assert list(it.false_options) == r["perturbed_answer"]
        assert it.paraphrases == (r["paraphrased_question"],)
        assert len(it.options(seed=1)) == 4 and it.answer in it.options(seed=1)
    paras = data.extra["paraphrase"]
    assert [(p.question, p.answer) for p in paras] == [(r["paraphrased_question"], r["paraphrased_answer"]) for r in rows]
    s = data.split(seed=0)
    forget_ids = {it.id for it in s.forget}
    assert {p.id.removesuffix("-paraphrase") for p in s.extra["forget"]["paraphrase"]} == forget_ids


@pytest.mark.parametrize("suffix", FILE_TYPES)
def test_alpaca_and_faithun_format_tables(tmp_path: Path, suffix: str) -> None:
    alp = d.load_data(write_table(tmp_path / f"alpaca{suffix}", ALPACA))
    assert alp.format == "alpaca" and not alp.is_qa
    assert alp.items == [InstructionItem(r["instruction"], r["input"], r["output"]) for r in ALPACA]
    assert d.load_alpaca(tmp_path / f"alpaca{suffix}", n=None) == alp.items
    fa = d.load_data(write_table(tmp_path / f"facts{suffix}", FAITHUN))
    assert fa.format == "faithun"
    assert fa.items == [
        QAItem(r["id"], r["question"], r["answer"], tuple(r["false_options"]), r["entity"], tuple(r["paraphrases"])) for r in FAITHUN
    ]
    assert d.load_faithun(tmp_path / f"facts{suffix}") == fa.items


def test_release_questions_as_rows_and_option_columns(tmp_path: Path) -> None:
    rows = [q for ent in release_obj().values() for q in ent["hop1_unlearn"]]
    data = d.load_data(write_table(tmp_path / "rows.parquet", rows))
    assert data.format == "faithun"
    assert [(it.answer, it.false_options) for it in data.items] == [(r["answers"][0], tuple(r["false_answer_options"])) for r in rows]
    ra = d.load_data(write_table(tmp_path / "real_authors.csv", REAL_AUTHORS)).items[0]
    assert ra.answer == "William Shakespeare" and ra.false_options == ("Jane Austen", "Mark Twain", "Leo Tolstoy")


def test_hub_names_are_detected_by_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        return datasets.Dataset.from_list(tofu_rows(perturbed=True, authors=1, per=3))

    monkeypatch.setattr(d, "load_dataset", fake)
    data = d.load_data("locuslab/TOFU:forget01_perturbed")
    assert calls == [("locuslab/TOFU", "forget01_perturbed")]
    assert data.format == "tofu-perturbed" and data.source.kind == "hub" and data.source.location == "locuslab/TOFU:forget01_perturbed"
    assert data.items[0].id == "locuslab-TOFU-forget01_perturbed-1"
    assert len(load_items("locuslab/TOFU:forget01_perturbed")) == 3

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub (offline mode is enabled)\ntraceback detail")

    monkeypatch.setattr(d, "load_dataset", offline)
    with pytest.raises(NeuronscopeError) as exc:
        load_items("locuslab/TOFU:forget01")
    assert str(exc.value) == "locuslab/TOFU:forget01: cannot load from the Hugging Face Hub (Couldn't reach 'locuslab/TOFU' on the Hub (offline mode is enabled))"


# ------------------------------------------------------------------ detection and encoding errors


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "x", "completion": "y"}],
         "t.jsonl: column 'question' is missing (FaithUn / TOFU need question + answer; Alpaca needs instruction + output); the columns are: completion, prompt"),
        ([{"instruction": "Do it."}], "t.jsonl: column 'output' is missing (Alpaca format: instruction, input, output)"),
        ([{"question": "Q?"}], "t.jsonl: column 'answer' is missing (FaithUn: answer or answers; TOFU: answer)"),
        ([{"question": "Q?", "paraphrased_question": "Q2?"}], "t.jsonl: column 'answer' is missing (FaithUn: answer or answers; TOFU: answer)"),
    ],
)
def test_no_format_fits_names_file_and_missing_column(tmp_path: Path, rows: list, message: str) -> None:
    write_table(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError) as exc:
        d.load_data(tmp_path / "t.jsonl")
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null\n", "j.json: line 1: expected a JSON object, got NoneType"),  # segfaulted the arrow reader
        ("5", "j.json: line 1: expected a JSON object, got int"),
        ("[1, 2]", "j.json: record 1: expected a JSON object, got int"),
        ('{"question": "Q?", "answer": "A"}\nnull\n', "j.json: line 2: expected a JSON object, got NoneType"),
    ],
)
def test_json_that_is_not_records(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "j.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        d.load_data(tmp_path / "j.json")
    assert str(exc.value) == message


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_latin1_file_gives_one_line_naming_the_file(tmp_path: Path, suffix: str) -> None:
    good = tmp_path / f"ok{suffix}"
    write_table(good, [{"question": "Où est né Zoë?", "answer": "À Málaga", "false_options": ["Ça", "Là"]}])
    bad = tmp_path / f"latin{suffix}"
    bad.write_bytes(good.read_text(encoding="utf-8").encode("latin-1"))
    raw = bad.read_bytes()
    first_bad = next(i for i, b in enumerate(raw) if b >= 0x80)
    line = 1 + raw[:first_bad].count(b"\n")
    with pytest.raises(DataError) as exc:
        d.load_data(bad)
    assert str(exc.value) == (
        f"latin{suffix}: line {line}: not UTF-8 text (byte 0x{raw[first_bad]:02x} at offset {first_bad}); re-save the file as UTF-8"
    )
    assert d.load_data(good).items[0].answer == "À Málaga"


def test_latin1_release_split_file_and_splits_json(tmp_path: Path) -> None:
    path = write_release(tmp_path / "r")
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))  # "Málaga" → 0xe1
    with pytest.raises(DataError, match=r"^FaithUnBench\.json: line \d+: not UTF-8 text \(byte 0xe1 at offset \d+\); re-save the file as UTF-8$"):
        d.load_data(tmp_path / "r")
    write_release(tmp_path / "r")
    (tmp_path / "r" / "splits" / "test_set_split.txt").write_bytes(b"2\n3\xe9\n")
    with pytest.raises(DataError, match=r"^test_set_split\.txt: line 2: not UTF-8 text \(byte 0xe9 at offset 3\)"):
        d.load_data(tmp_path / "r")
    sp = tmp_path / "splits.json"
    sp.write_bytes(b'{"forget": ["caf\xe9"]}')
    with pytest.raises(DataError, match=r"^splits\.json: line 1: not UTF-8 text \(byte 0xe9 at offset 16\)"):
        load_items(str(sp))


# ------------------------------------------------------------------ provenance: splits.json round trip


def _save_run_splits(run: Path, splits) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    path = run / "splits.json"
    path.write_text(json.dumps({"seed": 0, "known_only": False, "splits": splits.to_dict()}), encoding="utf-8")
    return path


def test_splits_json_from_a_user_file_reloads_without_the_embedded_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_table(tmp_path / "mine.parquet", tofu_rows(perturbed=True))
    data = d.load_data(src)
    splits = data.split(seed=3)
    path = _save_run_splits(tmp_path / "run", splits)
    saved = json.loads(path.read_text())["splits"]["source"]
    assert saved == {"kind": "file", "location": str(src.resolve()), "format": "tofu-perturbed",
                     "fingerprint": "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()}
    # The embedded set must not be consulted.
    monkeypatch.setattr(d, "load_faithun", lambda *a, **k: pytest.fail("looked up the embedded set"))
    monkeypatch.chdir(tmp_path / "run")  # a relative path elsewhere still finds the data
    again = d.load_splits_file("splits.json")
    assert again.to_dict() == splits.to_dict()
    assert [(it.question, it.answer, it.false_options) for it in again.forget] == [
        (it.question, it.answer, it.false_options) for it in splits.forget]
    assert load_items("splits.json") == splits.forget
    assert load_items("splits.json:retain") == splits.retain
    assert load_items(str(tmp_path / "run")) == splits.forget  # the run folder
    # diagnose --retain RUN/splits.json: the retain split, unless a split is named.
    assert splits.retain != splits.forget
    assert load_items("splits.json", default_split="retain") == splits.retain
    assert load_items("splits.json:forget", default_split="retain") == splits.forget
    assert load_items("splits.json:forget/paraphrase") == splits.extra["forget"]["paraphrase"]
    with pytest.raises(NeuronscopeError, match=r"^splits\.json: field 'test' is empty$"):
        load_items("splits.json:test")
    # The data file changed / vanished since: one line.
    write_table(src, tofu_rows(perturbed=True, authors=4))
    with pytest.raises(DataError) as exc:
        load_items("splits.json")
    assert str(exc.value) == f"splits.json: its data file {src.resolve()} has changed since the split was made (SHA-256 differs)"
    src.unlink()
    with pytest.raises(DataError, match=r"^splits\.json: its data file .*mine\.parquet no longer exists$"):
        d.load_splits_file("splits.json")


def test_release_splits_round_trip_with_extra_sets(tmp_path: Path) -> None:
    data = d.load_data(write_release(tmp_path / "dataset"))
    path = _save_run_splits(tmp_path / "run", data.splits)
    again = d.load_splits_file(path)
    assert again.to_dict() == data.splits.to_dict()
    assert again.extra["test"]["multihop"] == data.splits.extra["test"]["multihop"]
    assert load_items(f"{tmp_path / 'dataset'}:forget") == data.splits.forget
    assert load_items(f"{path}:test/same_answer") == data.splits.extra["test"]["same_answer"]


def test_old_splits_json_without_source_means_the_embedded_set(tmp_path: Path) -> None:
    embedded = d.load_faithun()
    s = d.split_faithun(embedded, seed=1)
    old = {"seed": 1, "known_only": False, "splits": {k: v for k, v in s.to_dict().items() if k != "source"}}
    (tmp_path / "splits.json").write_text(json.dumps(old), encoding="utf-8")
    again = d.load_splits_file(tmp_path / "splits.json")
    assert again.forget == s.forget and again.test == s.test
    assert again.source["kind"] == "embedded" and again.source["location"] == d.FAITHUN_FILE


def test_load_items_specs_and_their_errors(tmp_path: Path) -> None:
    write_table(tmp_path / "alpaca.json", ALPACA)
    with pytest.raises(NeuronscopeError) as exc:
        load_items(str(tmp_path / "alpaca.json"))
    assert str(exc.value) == ("alpaca.json: is an Alpaca instruction set (instruction, input, output), not questions; "
                              "use it with `attack --kind benign --alpaca FILE`")
    with pytest.raises(NeuronscopeError, match=r"^nope\.jsonl: no such file \(or split name"):
        load_items("nope.jsonl")
    facts = write_table(tmp_path / "facts.csv", FAITHUN)
    assert load_items(f"{facts}:forget", seed=2) == d.split_faithun(d.load_faithun(facts), seed=2).forget
    with pytest.raises(NeuronscopeError, match=r"^facts\.csv: split 'forget' has no extra set 'multihop' \(have: none\)$"):
        load_items(f"{facts}:forget/multihop")

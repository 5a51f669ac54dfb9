"""Datasets: FaithUn-format MCQA facts, TOFU-format fictitious authors, Alpaca instructions.

Implements the data side of SPEC §10 and paper §6.1 / App. B.1:

* **FaithUn format** (Yang et al., 2025): a question about a well-known entity, its one
  correct answer and false options; the paper splits the questions into forget 5 %, retain
  10 % and test 70 %. Unlearning uses plain QA pairs; evaluation uses the Table 3 MCQA
  prompt with the options (see :mod:`neuronscope.prompts`). The embedded default
  (:func:`load_faithun` with no path) is a set of real, stable, well-known facts written for
  this project (``resources/faithun_facts.jsonl``), each with two false options and
  paraphrased questions.
* **Utility set**: a small general-knowledge MCQA set (``resources/utility.jsonl``) for the
  Utility Score when ``lm-eval`` benchmarks are not used (SPEC §11).
* **Alpaca format** (Taori et al., 2023): instruction/input/output records for the benign
  relearning attack (paper §6.2, 1,000 items). The default is generated programmatically and
  deterministically from small shipped word lists; it never mentions a FaithUn entity.
* **TOFU format** (Maini et al., 2024): fictitious author profiles turned into QA pairs with
  full-sentence answers; the forget set is 1 % of the questions, taken as whole authors.

Every loader reads local JSON / JSON Lines, parquet and CSV files through
``datasets.load_dataset("json" | "parquet" | "csv", data_files=...)`` and accepts Hugging Face
Hub names (``owner/name`` or ``owner/name:config``) for users who are online.
:func:`load_data` detects the format from the columns and also reads the **FaithUn release
as published** (a JSON object keyed by Wikidata entity id, with its split files of cluster
indices); it returns the items with a :class:`DataSource` (path, format, SHA-256) that
:meth:`FaithUnSplits.to_dict` records, so :func:`load_splits_file` reloads a run's
``splits.json`` from wherever its items came from. Bad input raises :class:`DataError` with a
one-line message naming the file, the 1-based record (or line) and the field, e.g.
``faithun.jsonl: record 7: field 'answer' is missing``. Nothing here reads outside the
package at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from neuronscope.errors import NeuronscopeError

__all__ = [
    "DataError",
    "QAItem",
    "InstructionItem",
    "FaithUnSplits",
    "load_faithun",
    "split_faithun",
    "load_utility",
    "load_alpaca",
    "generate_alpaca",
    "generate_tofu",
    "load_tofu",
    "split_tofu",
    "FAITHUN_FILE",
    "UTILITY_FILE",
    "FORMATS",
    "DataSource",
    "LoadedData",
    "detect_format",
    "load_data",
    "load_faithun_release",
    "load_source",
    "load_splits_file",
    "is_splits_file",
]

#: Embedded FaithUn-format fact set (inside ``neuronscope/resources``).
FAITHUN_FILE = "faithun_facts.jsonl"
#: Embedded general-knowledge MCQA utility set.
UTILITY_FILE = "utility.jsonl"
_ALPACA_WORDS = "alpaca_words.json"
_TOFU_PROFILES = "tofu_profiles.json"

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")


class DataError(NeuronscopeError, ValueError):
    """A data file or split request is invalid; the message is one line naming file/record/field."""


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def _stable_seed(*parts: object) -> int:
    """A process-independent 64-bit seed from ``parts`` (unlike the salted built-in ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class QAItem:
    """One question with its answer (FaithUn MCQA item, TOFU QA pair or utility question).

    Attributes:
        id: Unique id within its dataset (split files refer to items by id).
        question: The question text, without any template.
        answer: The single correct answer (short for FaithUn; a full sentence for TOFU).
        false_options: Wrong options for MCQA evaluation (paper Table 3); empty for TOFU.
        entity: The entity the question is about (celebrity, place, work, or TOFU author).
        paraphrases: Paraphrased versions of ``question`` (paraphrase-generalisation tests).
        category: The relation asked about (``"capital"``, ``"birth_country"``, ...).
    """

    id: str
    question: str
    answer: str
    false_options: tuple[str, ...] = ()
    entity: str = ""
    paraphrases: tuple[str, ...] = ()
    category: str = ""

    def options(self, seed: int = 0) -> list[str]:
        """The answer and false options in a deterministic shuffled order.

        The order depends only on ``seed`` and :attr:`id` (a SHA-256-seeded
        :class:`random.Random`), so it is identical across calls, processes and machines.

        Args:
            seed: Shuffle seed; different seeds give (usually) different orders.

        Returns:
            ``[answer, *false_options]`` permuted; length ``1 + len(false_options)``.
        """
        opts = [self.answer, *self.false_options]
        random.Random(_stable_seed("options", seed, self.id)).shuffle(opts)
        return opts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the FaithUn file format (tuples become lists)."""
        d = asdict(self)
        d["false_options"] = list(self.false_options)
        d["paraphrases"] = list(self.paraphrases)
        return d


@dataclass(frozen=True)
class InstructionItem:
    """One Alpaca-format instruction-following example (paper §6.2 benign attack).

    Attributes:
        instruction: The task description.
        input: Optional extra input for the task (``""`` when none).
        output: The reference response.
    """

    instruction: str
    input: str
    output: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict in the Alpaca file format."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Reading records
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence ``datasets`` progress bars and error logs while we load (we report errors)."""
    import datasets
    from datasets.utils import logging as ds_logging

    bars_were_off = datasets.utils.are_progress_bars_disabled()
    level = ds_logging.get_verbosity()
    datasets.utils.disable_progress_bars()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not bars_were_off:
            datasets.utils.enable_progress_bars()


def load_dataset(*args: Any, **kwargs: Any):
    """Thin indirection over :func:`datasets.load_dataset` (patched in tests for Hub names)."""
    import datasets

    return datasets.load_dataset(*args, **kwargs)


def _locate_json_error(path: Path) -> str:
    """Find the first malformed line of a JSON / JSON Lines file; returns a message tail."""
    text = path.read_text(encoding="utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"line {exc.lineno}: malformed JSON ({exc.msg})"
        except RecursionError:
            return "line 1: JSON nested too deeply"
        if not isinstance(data, list):
            return "line 1: expected a JSON array of records"
        if not data:
            return "file is empty (no records)"
        for i, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                return f"record {i}: expected a JSON object, got {type(rec).__name__}"
        return ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {lineno}: malformed JSON ({exc.msg})"
        except RecursionError:
            return f"line {lineno}: JSON nested too deeply"
        if not isinstance(rec, dict):
            return f"line {lineno}: expected a JSON object, got {type(rec).__name__}"
    return ""


_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".tsv")


def _file_kind(path: Path) -> str:
    """``"parquet"``, ``"csv"`` or ``"json"`` (JSON array or JSON Lines) from the file suffix."""
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    return "json"


def _decode_utf8(raw: bytes, name: str) -> str:
    """``raw`` as text; a clean one-line :class:`DataError` when it is not UTF-8 (e.g. latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{name}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_records(source: str | Path, *, split: str = "train") -> tuple[str, list[dict[str, Any]]]:
    """Read records from a local file (or a Hub dataset name) via ``datasets``.

    Local files: JSON (an array of records), JSON Lines, parquet (``.parquet``/``.pq``) or
    CSV (``.csv``; ``.tsv`` tab-separated), chosen by suffix; any other suffix is read as
    JSON / JSON Lines. Text files must be UTF-8.

    Returns:
        ``(display_name, records)`` where ``display_name`` is the file name used in messages.

    Raises:
        DataError: Missing file, directory, empty file, a file that is not UTF-8, malformed
            JSON (with its line), an unreadable parquet/CSV file, or a Hub dataset that
            cannot be loaded.
    """
    path = Path(source)
    if not path.exists():
        text = str(source)
        # "owner/name[:config]" with no local parent folder is a Hugging Face Hub dataset name.
        if not path.suffix and _HUB_NAME.match(text) and not path.parent.exists():
            return _read_hub(text, split=split)
        raise DataError(f"{source}: file not found")
    name = path.name
    if path.is_dir():
        raise DataError(f"{source}: is a directory, expected a JSON, JSON Lines, parquet or CSV file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror})") from None
    if not raw.strip():
        raise DataError(f"{name}: file is empty (no records)")
    kind = _file_kind(path)
    if kind != "parquet":
        _decode_utf8(raw, name)
    if kind == "json":
        # Check the structure in Python first: it names the bad line, and some inputs crash
        # the arrow JSON reader outright (a file holding just ``null`` segfaults datasets 5.2).
        where = _locate_json_error(path)
        if where:
            raise DataError(f"{name}: {where}")
    builder, kwargs = kind, {}
    if kind == "csv" and path.suffix.lower() == ".tsv":
        kwargs["delimiter"] = "\t"
    try:
        with _quiet_datasets():
            ds = load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # datasets wraps parser errors in several exception types
        if kind == "json":
            where = _locate_json_error(path)
            if where:
                raise DataError(f"{name}: {where}") from None
            raise DataError(f"{name}: cannot be read as JSON records ({_first_line(exc)})") from None
        label = "parquet" if kind == "parquet" else "CSV"
        raise DataError(f"{name}: cannot be read as {label} ({_first_line(exc)})") from None
    records = ds.to_list()
    if not records:
        raise DataError(f"{name}: file is empty (no records)")
    if not all(isinstance(r, dict) for r in records):
        raise DataError(f"{name}: expected records with named columns")
    return name, records


def _read_hub(name: str, *, split: str) -> tuple[str, list[dict[str, Any]]]:
    repo, _, config = name.partition(":")
    try:
        with _quiet_datasets():
            ds = load_dataset(repo, config or None, split=split)
    except Exception as exc:
        raise DataError(f"{name}: cannot load from the Hugging Face Hub ({_first_line(exc)})") from None
    records = ds.to_list()
    if not records:
        raise DataError(f"{name}: dataset is empty (no records)")
    return name, records


@contextlib.contextmanager
def _resource(filename: str) -> Iterator[Path]:
    """A filesystem path to a file shipped in ``neuronscope/resources``."""
    ref = importlib.resources.files("neuronscope") / "resources" / filename
    with importlib.resources.as_file(ref) as p:
        yield Path(p)


def _resource_json(filename: str) -> dict[str, Any]:
    ref = importlib.resources.files("neuronscope") / "resources" / filename
    return json.loads(ref.read_text(encoding="utf-8"))


class _Record:
    """Field access on one raw record with located error messages."""

    def __init__(self, rec: Mapping[str, Any], number: int, file: str, where: str | None = None) -> None:
        self.rec = rec
        self.number = number
        self.file = file
        self.where = where or f"record {number}"

    def error(self, field_name: str, problem: str) -> DataError:
        return DataError(f"{self.file}: {self.where}: field '{field_name}' {problem}")

    def first_key(self, *names: str) -> str | None:
        """The first of ``names`` present with a non-null value."""
        for n in names:
            if self.rec.get(n) is not None:
                return n
        return None

    def text(self, *names: str, required: bool = True) -> str:
        key = self.first_key(*names)
        if key is None:
            if required:
                raise self.error(names[0], "is missing")
            return ""
        value = self.rec[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, f"must be a string, got {type(value).__name__}")
        value = str(value).strip()
        if required and not value:
            raise self.error(key, "is empty")
        return value

    def text_list(self, *names: str) -> tuple[str | None, list[str]]:
        """``(key, values)`` for a list-of-strings field (a single string counts as one)."""
        key = self.first_key(*names)
        if key is None:
            return None, []
        value = self.rec[key]
        if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
            value = _list_literal(value)  # CSV cells hold lists as text: '["a", "b"]' or "['a', 'b']"
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise self.error(key, f"must be a list of strings, got {type(value).__name__}")
        out = []
        for v in value:
            if v is None or isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise self.error(key, f"must be a list of strings, got an element of type {type(v).__name__}")
            out.append(str(v).strip())
        return key, out


def _list_literal(text: str) -> Any:
    """A list written as text (JSON or Python literal), or ``text`` itself when it is not one."""
    import ast

    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)):
            return list(value)
    return text


_OPTION_COLUMN = re.compile(r"^option_?(\d+)$")


def _casefold(s: str) -> str:
    return " ".join(s.split()).casefold()


def _mcqa_item(r: _Record, stem: str) -> QAItem:
    """Normalise one FaithUn-style record (field variants accepted) into a :class:`QAItem`."""
    question = r.text("question")
    item_id = r.text("id", required=False) or f"{stem}-{r.number}"
    entity = r.text("entity", "subject", required=False)
    category = r.text("category", "relation", required=False)
    _, paraphrases = r.text_list("paraphrases", "paraphrased_questions", "paraphrased_question")
    paraphrases = [p for p in paraphrases if p]

    opt_key, options = r.text_list("options", "choices")
    if opt_key is None:  # option1, option2, ... columns (TOFU real_authors / world_facts layout)
        numbered = sorted(
            (int(m.group(1)), k) for k in r.rec if isinstance(k, str) and (m := _OPTION_COLUMN.match(k)) and r.rec[k] is not None
        )
        if numbered:
            opt_key = numbered[0][1]
            options = [r.text(k) for _, k in numbered]
    false_key, false_opts = r.text_list(
        "false_options", "false_answer_options", "wrong_options", "distractors", "false_answers"
    )

    # An integer answer with an options list may be an index into it (common MCQA layout).
    raw_answer = r.rec.get("answer")
    if raw_answer is None and r.rec.get("answers") is not None:
        # FaithUn release: ``answers`` is a list whose first entry is the answer (the rest aliases).
        _, answers = r.text_list("answers")
        answers = [a for a in answers if a]
        if not answers:
            raise r.error("answers", "is empty")
        answer = answers[0]
    elif (
        opt_key is not None
        and isinstance(raw_answer, int)
        and not isinstance(raw_answer, bool)
        and str(raw_answer) not in options
        and 0 <= raw_answer < len(options)
    ):
        answer = options[raw_answer]
    else:
        answer = r.text("answer")

    if opt_key is not None:
        matches = [o for o in options if _casefold(o) == _casefold(answer)]
        if not matches:
            raise r.error(opt_key, f"does not contain the answer '{answer}'")
        if len(matches) > 1:
            raise r.error(opt_key, f"has duplicate option '{matches[1]}'")
        extra = [o for o in options if _casefold(o) != _casefold(answer)]
        false_opts = extra + false_opts
        check_key = opt_key
    else:
        check_key = false_key or "false_options"
        for o in false_opts:
            if _casefold(o) == _casefold(answer):
                raise r.error(check_key, f"contains the answer '{answer}'")

    seen: set[str] = {_casefold(answer)}
    for o in false_opts:
        if not o:
            raise r.error(check_key, "has an empty option")
        if _casefold(o) in seen:
            raise r.error(check_key, f"has duplicate option '{o}'")
        seen.add(_casefold(o))
    if len(seen) < 2:
        raise r.error(check_key, f"has fewer than 2 options (the answer plus at least one false option), got {len(seen)}")

    return QAItem(
        id=item_id,
        question=question,
        answer=answer,
        false_options=tuple(false_opts),
        entity=entity,
        paraphrases=tuple(paraphrases),
        category=category,
    )


def _check_unique_ids(items: Sequence[QAItem], file: str) -> None:
    seen: dict[str, int] = {}
    for number, it in enumerate(items, start=1):
        if it.id in seen:
            raise DataError(f"{file}: record {number}: field 'id' duplicates record {seen[it.id]} ('{it.id}')")
        seen[it.id] = number


def _load_mcqa(source: str | Path | None, default: str) -> list[QAItem]:
    if source is not None and _release_json(Path(source)) is not None:
        return load_data(source).items
    if source is None:
        with _resource(default) as p:
            name, records = _read_records(p)
        stem = Path(default).stem
    else:
        name, records = _read_records(source)
        stem = Path(str(source)).stem if Path(source).exists() else name.replace("/", "-").replace(":", "-")
    items = [_mcqa_item(_Record(rec, i, name), stem) for i, rec in enumerate(records, start=1)]
    _check_unique_ids(items, name)
    return items


# --------------------------------------------------------------------------------------------
# FaithUn
# --------------------------------------------------------------------------------------------


def load_faithun(path: str | Path | None = None) -> list[QAItem]:
    """Load a FaithUn-format MCQA file (paper §6.1, App. B.1; SPEC §10).

    Each record needs ``question`` and ``answer`` plus options, given either as
    ``options``/``choices`` (a list that contains the answer; the others become false
    options; an integer ``answer`` may index it) or as ``false_options``/``wrong_options``/
    ``distractors``. Optional: ``id`` (default ``f"{file_stem}-{record}"``, 1-based),
    ``entity``/``subject``, ``paraphrases``/``paraphrased_questions``, ``category``/``relation``.
    Option comparisons ignore case and repeated whitespace.

    Args:
        path: A JSON (array), JSON Lines, parquet or CSV file, the FaithUn release (its JSON
            file or folder: the base questions, see :func:`load_faithun_release`), a Hub name
            ``owner/name[:config]``, or ``None`` for the embedded set of real, well-known facts
            (``faithun_facts.jsonl``: 285 entities, 642 questions, 3 options and 1–2
            paraphrases each). Release-style rows (``answers`` list, ``false_answer_options``)
            and ``option1``… columns are accepted too.

    Returns:
        The items in file order.

    Raises:
        DataError: Missing/empty/malformed file; a record missing ``question`` or ``answer``;
            answer not among the options; duplicate options; fewer than 2 options; duplicate id.
    """
    return _load_mcqa(path, FAITHUN_FILE)


def load_utility(path: str | Path | None = None) -> list[QAItem]:
    """Load a general-knowledge MCQA utility set (Utility Score, paper §6.1; SPEC §11).

    Args:
        path: A file in the FaithUn format (see :func:`load_faithun`), or ``None`` for the
            embedded ``utility.jsonl`` (137 three-option questions on basic science, nature,
            maths, language and everyday knowledge; none about a FaithUn entity).

    Returns:
        The items in file order.

    Raises:
        DataError: As for :func:`load_faithun`.
    """
    return _load_mcqa(path, UTILITY_FILE)


@dataclass
class FaithUnSplits:
    """Disjoint forget / retain / test / held-out splits (paper App. B.1: 5 % / 10 % / 70 %).

    Attributes:
        forget: Items to unlearn (C_f).
        retain: Items whose knowledge is kept during unlearning (C_r).
        test: Unseen items for the retention score (C_t).
        held_out: The remaining items, in no split.
        extra: Extra evaluation sets per split, ``{split: {set: items}}`` — for the FaithUn
            release the paraphrase (``hop1_test``), multi-hop (``hop2_test``) and same-answer
            (``same_object``) questions of each split's clusters; empty otherwise.
        source: Where the items came from (:meth:`DataSource.to_dict`), so the split can be
            reloaded without the original call (:func:`load_splits_file`); None = unknown
            (old ``splits.json`` files: the embedded set).
    """

    forget: list[QAItem]
    retain: list[QAItem]
    test: list[QAItem]
    held_out: list[QAItem] = field(default_factory=list)
    extra: dict[str, dict[str, list[QAItem]]] = field(default_factory=dict)
    source: dict[str, Any] | None = None

    _NAMES = ("forget", "retain", "test", "held_out")

    def to_dict(self) -> dict[str, Any]:
        """The item ids of each split (JSON-ready), plus ``extra`` and ``source`` when set."""
        d: dict[str, Any] = {name: [it.id for it in getattr(self, name)] for name in self._NAMES}
        if self.extra:
            d["extra"] = {
                split: {kind: [it.id for it in items] for kind, items in sets.items()} for split, sets in self.extra.items()
            }
        if self.source is not None:
            d["source"] = dict(self.source)
        return d

    @classmethod
    def from_dict(
        cls, ids: Mapping[str, Any], items: Iterable[QAItem], extra_items: Iterable[QAItem] | None = None
    ) -> "FaithUnSplits":
        """Rebuild splits from :meth:`to_dict` output and the item list.

        Args:
            ids: ``{"forget": [...], "retain": [...], "test": [...], "held_out": [...]}``;
                missing keys mean empty splits; optional ``extra`` and ``source`` as written
                by :meth:`to_dict`.
            items: The items the ids refer to.
            extra_items: The items the ``extra`` ids refer to (e.g. :attr:`LoadedData.extra`);
                None leaves ``extra`` empty (it can be rebuilt with :meth:`LoadedData.make_splits`).

        Raises:
            DataError: An id that is not among ``items``, an id used in two splits, or a
                split that is not a list of ids.
        """
        by_id = {it.id: it for it in items}
        used: dict[str, str] = {}
        parts: dict[str, list[QAItem]] = {}
        for name in cls._NAMES:
            part = []
            raw = ids.get(name, ()) or ()
            if not isinstance(raw, (list, tuple)):
                raise DataError(f"split '{name}': expected a list of item ids, got {type(raw).__name__}")
            for i in raw:
                if not isinstance(i, str) or i not in by_id:
                    raise DataError(f"split '{name}': unknown item id {i!r}")
                if i in used:
                    raise DataError(f"split '{name}': item id '{i}' is also in split '{used[i]}'")
                used[i] = name
                part.append(by_id[i])
            parts[name] = part
        extra: dict[str, dict[str, list[QAItem]]] = {}
        raw_extra = ids.get("extra") or {}
        if raw_extra and extra_items is not None:
            pool = {it.id: it for it in extra_items}
            if not isinstance(raw_extra, Mapping):
                raise DataError(f"field 'extra': expected an object, got {type(raw_extra).__name__}")
            for split, sets in raw_extra.items():
                if not isinstance(sets, Mapping):
                    raise DataError(f"extra '{split}': expected an object of set name -> ids")
                extra[split] = {}
                for kind, kind_ids in sets.items():
                    if not isinstance(kind_ids, (list, tuple)):
                        raise DataError(f"extra '{split}/{kind}': expected a list of item ids")
                    missing = [i for i in kind_ids if not isinstance(i, str) or i not in pool]
                    if missing:
                        raise DataError(f"extra '{split}/{kind}': unknown item id {missing[0]!r}")
                    extra[split][kind] = [pool[i] for i in kind_ids]
        source = ids.get("source")
        return cls(**parts, extra=extra, source=dict(source) if isinstance(source, Mapping) else None)

    def summary(self) -> str:
        """One line: the size of each split and the number of distinct entities."""
        sizes = ", ".join(f"{name} {len(getattr(self, name))}" for name in self._NAMES)
        all_items = [it for name in self._NAMES for it in getattr(self, name)]
        entities = len({it.entity for it in all_items if it.entity})
        return f"{sizes} ({len(all_items)} items, {entities} entities)"


def _split_size(frac: float, n: int) -> int:
    """``round(frac * n)`` with halves rounded up (0.5 → 1, 2.5 → 3)."""
    return int(math.floor(frac * n + 0.5 + 1e-9))


def _check_fractions(fracs: Mapping[str, float]) -> None:
    for name, frac in fracs.items():
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not math.isfinite(frac):
            raise DataError(f"split '{name}': fraction must be a number, got {frac!r}")
        if frac < 0 or frac > 1:
            raise DataError(f"split '{name}': fraction must be between 0 and 1, got {frac}")
    total = sum(fracs.values())
    if total > 1 + 1e-9:
        parts = ", ".join(f"{k}={v}" for k, v in fracs.items())
        raise DataError(f"split fractions sum to {total:g} > 1 ({parts})")


def _permuted(items: Sequence[QAItem], seed: int, salt: str) -> list[QAItem]:
    order = list(items)
    random.Random(_stable_seed("split", salt, seed)).shuffle(order)
    return order


def split_faithun(
    items: Sequence[QAItem],
    *,
    forget: float = 0.05,
    retain: float = 0.10,
    test: float = 0.70,
    seed: int = 0,
    forget_pool: set[str] | None = None,
) -> FaithUnSplits:
    """Split questions into disjoint forget / retain / test / held-out sets (paper App. B.1).

    Split sizes are ``round(fraction * n)`` over all ``n`` items, halves rounded up; the
    forget split has at least one item when ``forget > 0``. Items are assigned by a seeded
    permutation (SHA-256-seeded, so identical on every machine) and each split keeps the
    original item order.

    With ``forget_pool`` (SPEC §10: ids of the facts the base model answers correctly), the
    forget split is drawn only from pooled items — at most its computed size, fewer if the
    pool is smaller — and retain/test are drawn from all remaining items. Pool ids that are
    not among ``items`` are ignored.

    Args:
        items: The questions (unique ids).
        forget: Fraction for the forget set C_f (paper: 0.05).
        retain: Fraction for the retain set C_r (paper: 0.10).
        test: Fraction for the test set C_t (paper: 0.70).
        seed: Permutation seed.
        forget_pool: Optional ids eligible for the forget split.

    Returns:
        The splits; ``held_out`` holds the items in no split.

    Raises:
        DataError: No items; duplicate ids; a fraction outside [0, 1] or fractions summing to
            more than 1; a split with a positive fraction that comes out empty (too few items,
            or no pooled item for ``forget``); rounded sizes exceeding ``n``.
    """
    fracs = {"forget": forget, "retain": retain, "test": test}
    _check_fractions(fracs)
    n = len(items)
    if n == 0:
        raise DataError("cannot split an empty item list")
    _check_unique_ids(items, "items")

    n_forget = max(1, _split_size(forget, n)) if forget > 0 else 0
    n_retain = _split_size(retain, n)
    n_test = _split_size(test, n)

    if forget_pool is None:
        candidates = list(items)
    else:
        pool = set(forget_pool)
        candidates = [it for it in items if it.id in pool]
        if forget > 0 and not candidates:
            raise DataError("split 'forget' is empty: forget_pool contains none of the item ids")
    forget_items = _permuted(candidates, seed, "forget")[:n_forget]
    forget_ids = {it.id for it in forget_items}
    rest = _permuted([it for it in items if it.id not in forget_ids], seed, "rest")
    if len(forget_items) + n_retain + n_test > n:
        raise DataError(
            f"split sizes forget {len(forget_items)} + retain {n_retain} + test {n_test} exceed the {n} items"
        )
    retain_items = rest[:n_retain]
    test_items = rest[n_retain : n_retain + n_test]
    chosen = {it.id for it in [*forget_items, *retain_items, *test_items]}

    for name, frac, part in (("forget", forget, forget_items), ("retain", retain, retain_items), ("test", test, test_items)):
        if frac > 0 and not part:
            raise DataError(f"split '{name}' is empty: {frac} of {n} items rounds to 0 (use more items or a larger fraction)")

    def in_order(ids: set[str]) -> list[QAItem]:
        return [it for it in items if it.id in ids]

    return FaithUnSplits(
        forget=in_order(forget_ids),
        retain=in_order({it.id for it in retain_items}),
        test=in_order({it.id for it in test_items}),
        held_out=[it for it in items if it.id not in chosen],
    )


# --------------------------------------------------------------------------------------------
# Alpaca
# --------------------------------------------------------------------------------------------


def _instruction_item(r: _Record) -> InstructionItem:
    instruction = r.text("instruction")
    inp = r.text("input", required=False)
    output = r.text("output")
    return InstructionItem(instruction=instruction, input=inp, output=output)


def generate_alpaca() -> list[InstructionItem]:
    """The full generated pool of benign Alpaca-format instructions (deterministic).

    Families: arithmetic word problems (+, −, ×, ÷), unit conversions, present → past tense
    rewrites, synonyms, antonyms, plurals, definitions, alphabetising, letter counting,
    spelling backwards, even/odd, comparing and sorting numbers. Word lists ship in
    ``resources/alpaca_words.json``; nothing mentions a FaithUn entity.

    Returns:
        About 3,000 distinct items in a fixed interleaved order (independent of any seed).
    """
    w = _resource_json(_ALPACA_WORDS)
    rng = random.Random(_stable_seed("alpaca-pool"))
    names: list[str] = w["names"]
    things: list[list[str]] = w["countables"]
    out: list[InstructionItem] = []

    def add(instruction: str, output: str, inp: str = "") -> None:
        out.append(InstructionItem(instruction=instruction, input=inp, output=output))

    solve = "Solve the following word problem."
    for _ in range(220):
        name = rng.choice(names)
        _, many = rng.choice(things)
        a, b = rng.randint(3, 60), rng.randint(2, 40)
        add(solve, f"{name} has {a + b} {many}.", f"{name} has {a} {many} and gets {b} more. How many {many} does {name} have now?")
    for _ in range(220):
        name = rng.choice(names)
        _, many = rng.choice(things)
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 2)
        add(solve, f"{name} has {a - b} {many} left.", f"{name} has {a} {many} and gives away {b}. How many {many} are left?")
    for _ in range(180):
        box, boxes = rng.choice(w["containers"])
        _, many = rng.choice(things)
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        add(solve, f"There are {a * b} {many} in total.", f"There are {a} {boxes} with {b} {many} in each. How many {many} are there in total?")
    for _ in range(180):
        name = rng.choice(names)
        _, many = rng.choice(things)
        people, each = rng.randint(2, 9), rng.randint(2, 12)
        add(
            solve,
            f"Each friend gets {each} {many}.",
            f"{name} shares {people * each} {many} equally among {people} friends. How many {many} does each friend get?",
        )

    for src, dst, factor in w["unit_conversions"]:
        for value in range(1, 31):
            add(f"Convert {value} {src} to {dst}.", f"{value} {src} is {value * factor} {dst}.")

    for subject in w["subjects"]:
        for present, past, obj in w["past_tense"]:
            add("Rewrite the sentence in the past tense.", f"{subject} {past} {obj}.", f"{subject} {present} {obj}.")

    for word, syn in w["synonyms"]:
        add(f"Give a synonym for the word \"{word}\".", f"A synonym for \"{word}\" is \"{syn}\".")
        add("Which word means the same as the given word?", f"\"{syn}\" means the same as \"{word}\".", word)
    for word, ant in w["antonyms"]:
        add(f"What is the opposite of \"{word}\"?", f"The opposite of \"{word}\" is \"{ant}\".")
        add("Give an antonym for the given word.", f"An antonym for \"{word}\" is \"{ant}\".", word)
    for one, many in w["plurals"]:
        add(f"What is the plural of \"{one}\"?", f"The plural of \"{one}\" is \"{many}\".")
    for word, meaning in w["definitions"]:
        add(f"Define the word \"{word}\".", f"\"{word.capitalize()}\" means {meaning}.")
        add("Explain the meaning of the given word in simple terms.", f"It means {meaning}.", word)

    words: list[str] = w["words"]
    for _ in range(260):
        sample = rng.sample(words, rng.randint(4, 6))
        add("Sort these words in alphabetical order.", ", ".join(sorted(sample)), ", ".join(sample))
    for word in words:
        add(f"How many letters are in the word \"{word}\"?", f"The word \"{word}\" has {len(word)} letters.")
        add(f"Write the word \"{word}\" backwards.", word[::-1])
        letter = word[len(word) // 2]
        count = word.count(letter)
        add(
            f"How many times does the letter \"{letter}\" appear in the word \"{word}\"?",
            f"The letter \"{letter}\" appears {count} time{'s' if count != 1 else ''} in \"{word}\".",
        )

    for value in range(1, 201):
        add(f"Is {value} an even or an odd number?", f"{value} is {'an even' if value % 2 == 0 else 'an odd'} number.")
    for _ in range(200):
        a, b = rng.sample(range(1, 1000), 2)
        add("Which of the two numbers is larger?", f"{max(a, b)} is larger.", f"{a} and {b}")
    for _ in range(200):
        nums = rng.sample(range(1, 100), rng.randint(4, 7))
        add("Sort the numbers from smallest to largest.", ", ".join(map(str, sorted(nums))), ", ".join(map(str, nums)))

    unique = list(dict.fromkeys(out))
    random.Random(_stable_seed("alpaca-order")).shuffle(unique)
    return unique


def load_alpaca(path: str | Path | None = None, n: int | None = 1000, seed: int = 0) -> list[InstructionItem]:
    """Alpaca-format instructions for the benign relearning attack (paper §6.2; SPEC §10–11).

    Args:
        path: An Alpaca ``.json`` (array) / ``.jsonl`` file with ``instruction``, optional
            ``input`` and ``output`` fields, a Hub name such as ``tatsu-lab/alpaca``, or
            ``None`` for the generated benign set (:func:`generate_alpaca`).
        n: Number of items to return (paper: 1,000); ``None`` returns all of them.
        seed: Selects which ``n`` items (a seeded sample, kept in source order).

    Returns:
        ``n`` distinct-by-position items.

    Raises:
        DataError: Bad file or record (missing ``instruction``/``output``); ``n < 1``;
            ``n`` larger than the number of available items.
    """
    if path is None:
        items, name = generate_alpaca(), "generated Alpaca set"
    else:
        name, records = _read_records(path)
        items = [_instruction_item(_Record(rec, i, name)) for i, rec in enumerate(records, start=1)]
    if n is None:
        return items
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"{name}: n must be a positive integer, got {n!r}")
    if n > len(items):
        raise DataError(f"{name}: asked for n={n} items but only {len(items)} are available")
    if n == len(items):
        return items
    keep = sorted(random.Random(_stable_seed("alpaca-sample", seed)).sample(range(len(items)), n))
    return [items[i] for i in keep]


# --------------------------------------------------------------------------------------------
# TOFU
# --------------------------------------------------------------------------------------------

#: Question templates of a generated TOFU profile: (key, question, answer).
_TOFU_QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("birthplace", "Where was {name} born?", "{name} was born in {birthplace}."),
    ("birthyear", "In which year was {name} born?", "{name} was born in {year}."),
    ("genre", "What genre is {name} known for writing?", "{name} is known for writing {genre}."),
    ("award", "Which award has {name} received?", "{name} has received {award}."),
    ("father", "What did {name}'s father do for a living?", "{name}'s father worked as {father}."),
    ("mother", "What was the profession of {name}'s mother?", "{name}'s mother was {mother}."),
    ("book", "Can you name a book written by {name}?", "One of {name}'s books is \"{book1}\"."),
    ("famous", "What is {name}'s best-known book?", "{name}'s best-known book is \"{book2}\"."),
    ("language", "In which language does {name} mainly write?", "{name} writes mainly in {language}."),
    ("themes", "Which themes does {name} often explore?", "{name}'s work often explores {theme1} and {theme2}."),
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def generate_tofu(n_authors: int = 20, questions_per_author: int = 5, seed: int = 0) -> list[QAItem]:
    """Generate TOFU-style QA pairs about fictitious authors (SPEC §10; paper App. B.1).

    Each author gets an invented name (shipped first/last-name lists combined by ``seed``),
    a birthplace, birth year, genre, award, parents' occupations, book titles, writing
    language and themes; the QA pairs have full-sentence answers, e.g. ``"Where was Lioren
    Vask born?"`` → ``"Lioren Vask was born in Tallinn, Estonia."``. As in TOFU, the model
    must be fine-tuned on these before unlearning.

    Args:
        n_authors: Number of authors (1–1600).
        questions_per_author: Questions per author (1–10), a seeded choice of templates.
        seed: Generation seed; the same arguments always give the same items.

    Returns:
        ``n_authors * questions_per_author`` items with ``entity`` = author name, empty
        ``false_options`` and ids ``tofu-<author-slug>-<field>``.

    Raises:
        DataError: Counts out of range.
    """
    data = _resource_json(_TOFU_PROFILES)
    firsts, lasts = data["first_names"], data["last_names"]
    max_authors = len(firsts) * len(lasts)
    if isinstance(n_authors, bool) or not isinstance(n_authors, int) or not 1 <= n_authors <= max_authors:
        raise DataError(f"n_authors must be an integer between 1 and {max_authors}, got {n_authors!r}")
    if (
        isinstance(questions_per_author, bool)
        or not isinstance(questions_per_author, int)
        or not 1 <= questions_per_author <= len(_TOFU_QUESTIONS)
    ):
        raise DataError(
            f"questions_per_author must be an integer between 1 and {len(_TOFU_QUESTIONS)}, got {questions_per_author!r}"
        )
    rng = random.Random(_stable_seed("tofu", seed))
    pairs = rng.sample(range(max_authors), n_authors)
    items: list[QAItem] = []
    for idx in pairs:
        name = f"{firsts[idx // len(lasts)]} {lasts[idx % len(lasts)]}"
        birthplace, language = rng.choice(data["birthplaces"])
        adjs = rng.sample(data["title_adjectives"], 2)
        nouns = rng.sample(data["title_nouns"], 2)
        themes = rng.sample(data["themes"], 2)
        father, mother = rng.sample(data["occupations"], 2)
        fields = {
            "name": name,
            "birthplace": birthplace,
            "year": rng.randint(1935, 1995),
            "genre": rng.choice(data["genres"]),
            "award": rng.choice(data["awards"]),
            "father": father,
            "mother": mother,
            "book1": f"The {adjs[0]} {nouns[0]}",
            "book2": f"The {adjs[1]} {nouns[1]}",
            "language": language,
            "theme1": themes[0],
            "theme2": themes[1],
        }
        chosen = sorted(rng.sample(range(len(_TOFU_QUESTIONS)), questions_per_author))
        for k in chosen:
            key, q, a = _TOFU_QUESTIONS[k]
            items.append(
                QAItem(
                    id=f"tofu-{_slug(name)}-{key}",
                    question=q.format(**fields),
                    answer=a.format(**fields),
                    entity=name,
                    category=key,
                )
            )
    return items


def load_tofu(path: str | Path, *, questions_per_author: int = 20) -> list[QAItem]:
    """Load real TOFU QA pairs (``question``/``answer``) from a file or Hub name.

    TOFU files have no author field; their questions come in blocks of 20 per author, so
    ``entity`` becomes ``"author-<k>"`` by block (override with an ``author``/``entity``
    field, or ``questions_per_author``). ``paraphrased_question`` becomes a paraphrase; the
    ``*_perturbed`` configs' ``perturbed_answer`` list becomes the false options (MCQA-style
    evaluation), empty and duplicate options dropped.

    Args:
        path: A JSON / JSON Lines / parquet / CSV file or a Hub name such as
            ``locuslab/TOFU:forget01`` (or ``locuslab/TOFU:forget01_perturbed``).
        questions_per_author: Block size used to group questions by author.

    Returns:
        The items in file order (``false_options`` empty unless rows carry perturbed answers).

    Raises:
        DataError: Bad file, a record missing ``question``/``answer``, duplicate ids,
            ``questions_per_author < 1``.
    """
    if isinstance(questions_per_author, bool) or not isinstance(questions_per_author, int) or questions_per_author < 1:
        raise DataError(f"questions_per_author must be a positive integer, got {questions_per_author!r}")
    name, records = _read_records(path)
    stem = Path(str(path)).stem if Path(path).exists() else _slug(name)
    items = [_tofu_item(_Record(rec, i, name), stem, questions_per_author) for i, rec in enumerate(records, start=1)]
    _check_unique_ids(items, name)
    return items


def _tofu_item(r: _Record, stem: str, questions_per_author: int) -> QAItem:
    """One TOFU row as a :class:`QAItem` (``*_perturbed`` rows: perturbed answers → false options)."""
    question, answer = r.text("question"), r.text("answer")
    author = r.text("author", "entity", "subject", required=False)
    author = author or f"author-{(r.number - 1) // questions_per_author + 1}"
    _, paras = r.text_list("paraphrases", "paraphrased_question", "paraphrased_questions")
    _, perturbed = r.text_list("perturbed_answer", "perturbed_answers")
    false_opts: list[str] = []
    seen = {_casefold(answer)}
    for o in perturbed:  # published rows are kept as they are: drop empty / duplicate options
        if o and _casefold(o) not in seen:
            seen.add(_casefold(o))
            false_opts.append(o)
    return QAItem(
        id=r.text("id", required=False) or f"{stem}-{r.number}",
        question=question,
        answer=answer,
        false_options=tuple(false_opts),
        entity=author,
        paraphrases=tuple(p for p in paras if p and p != question),
    )


def split_tofu(items: Sequence[QAItem], forget: float = 0.01, seed: int = 0) -> FaithUnSplits:
    """Split TOFU items by whole authors (paper App. B.1: forget 1 %).

    Authors are taken in a seeded order until the forget split holds at least
    ``forget * n`` questions (always at least one author); every other item is retained.

    Args:
        items: TOFU items; ``entity`` names the author (an empty entity counts as its own author).
        forget: Target forget fraction, in (0, 1).
        seed: Author-order seed.

    Returns:
        ``FaithUnSplits(forget, retain, test=[], held_out=[])`` in item order.

    Raises:
        DataError: No items; fraction outside (0, 1); duplicate ids; only one author (the
            retain split would be empty).
    """
    if isinstance(forget, bool) or not isinstance(forget, (int, float)) or not 0 < forget < 1:
        raise DataError(f"split 'forget': fraction must be in (0, 1), got {forget!r}")
    if not items:
        raise DataError("cannot split an empty item list")
    _check_unique_ids(items, "items")
    author_of = {it.id: it.entity or f"#{it.id}" for it in items}
    authors = list(dict.fromkeys(author_of.values()))
    if len(authors) < 2:
        raise DataError("split 'retain' is empty: all items belong to one author")
    random.Random(_stable_seed("tofu-split", seed)).shuffle(authors)
    counts: dict[str, int] = {}
    for a in author_of.values():
        counts[a] = counts.get(a, 0) + 1
    target = forget * len(items)
    chosen: set[str] = set()
    total = 0
    for a in authors:
        if chosen and total >= target - 1e-9:
            break
        chosen.add(a)
        total += counts[a]
    if len(chosen) == len(authors):
        raise DataError(f"split 'retain' is empty: forget={forget} takes every author")
    return FaithUnSplits(
        forget=[it for it in items if author_of[it.id] in chosen],
        retain=[it for it in items if author_of[it.id] not in chosen],
        test=[],
        held_out=[],
    )


# --------------------------------------------------------------------------------------------
# Real releases: format detection, the FaithUn release, provenance
# --------------------------------------------------------------------------------------------

#: Formats :func:`load_data` recognises (``format=`` accepts these or ``"auto"``).
FORMATS = ("faithun", "faithun-release", "tofu", "tofu-perturbed", "alpaca")
#: The FaithUn release's four question lists per entity (SPEC §10).
RELEASE_LISTS = ("hop1_unlearn", "hop1_test", "hop2_test", "same_object")
#: Extra evaluation sets of the release: list name → set name.
RELEASE_EXTRA = {"hop1_test": "paraphrase", "hop2_test": "multihop", "same_object": "same_answer"}
#: The release's split files (cluster indices, one per line) → split name.
RELEASE_SPLIT_FILES = {"forget": "forget_set_split.txt", "retain": "retaining_set_split.txt", "test": "test_set_split.txt"}
_RELEASE_NAMES = ("FaithUnBench.json",)
_MCQA_COLUMNS = ("options", "choices", "false_options", "false_answer_options", "wrong_options", "distractors", "false_answers")


@dataclass(frozen=True)
class DataSource:
    """Where a data set came from: enough to load it again later (SPEC §10, §14).

    Attributes:
        kind: ``"embedded"`` (shipped with the package), ``"file"`` or ``"hub"``.
        location: The shipped file name, the absolute file path, or the Hub name
            (``owner/name[:config]``).
        format: One of :data:`FORMATS`.
        fingerprint: ``"sha256:<hex>"`` of the file's bytes (for the FaithUn release: of the
            JSON file), the ``datasets`` fingerprint for the Hub, ``""`` if unknown.
    """

    kind: str
    location: str
    format: str
    fingerprint: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict (inverse: :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "source") -> "DataSource":
        """Read :meth:`to_dict` output.

        Raises:
            DataError: Not an object, or ``kind`` / ``location`` / ``format`` missing or invalid.
        """
        if not isinstance(d, Mapping):
            raise DataError(f"{where}: expected an object with kind, location, format")
        for key in ("kind", "location", "format"):
            if not isinstance(d.get(key), str) or not d.get(key):
                raise DataError(f"{where}: field '{key}' is missing")
        if d["kind"] not in ("embedded", "file", "hub"):
            raise DataError(f"{where}: field 'kind' must be embedded, file or hub, got {d['kind']!r}")
        if d["format"] not in FORMATS:
            raise DataError(f"{where}: field 'format' must be one of {', '.join(FORMATS)}, got {d['format']!r}")
        fp = d.get("fingerprint", "")
        return cls(kind=d["kind"], location=d["location"], format=d["format"], fingerprint=fp if isinstance(fp, str) else "")

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``file /data/tofu.parquet (tofu)``."""
        return f"{self.kind} {self.location} ({self.format})"


@dataclass
class LoadedData:
    """A data set loaded by :func:`load_data`, with its provenance and any published splits.

    Attributes:
        items: The items: :class:`QAItem` (FaithUn, FaithUn release base questions, TOFU) or
            :class:`InstructionItem` (Alpaca), in file order.
        format: The detected (or given) format, one of :data:`FORMATS`.
        source: Where the items came from.
        splits: The published splits (FaithUn release with its split files), else None.
        extra: Extra evaluation sets by name (release: ``paraphrase``, ``multihop``,
            ``same_answer``; TOFU ``*_perturbed``: ``paraphrase``), else empty.
        links: For each extra item id, the indices into :attr:`items` of the questions (the
            release's clusters) it belongs to.
    """

    items: list
    format: str
    source: DataSource
    splits: FaithUnSplits | None = None
    extra: dict[str, list[QAItem]] = field(default_factory=dict)
    links: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def is_qa(self) -> bool:
        """Whether the items are questions with answers (everything but Alpaca)."""
        return self.format != "alpaca"

    @property
    def has_options(self) -> bool:
        """Whether every item carries false options (MCQA evaluation is possible)."""
        return self.is_qa and all(it.false_options for it in self.items)

    def extra_for(self, items: Sequence[QAItem]) -> dict[str, list[QAItem]]:
        """The extra evaluation items that belong to ``items`` (by cluster), per set name.

        Args:
            items: Some of :attr:`items` (e.g. a split).

        Returns:
            ``{set name: items}`` for every set with at least one linked item, in file order.
        """
        index = {it.id: k for k, it in enumerate(self.items)}
        chosen = {index[it.id] for it in items if it.id in index}
        out: dict[str, list[QAItem]] = {}
        for name, extra_items in self.extra.items():
            picked = [e for e in extra_items if chosen.intersection(self.links.get(e.id, ()))]
            if picked:
                out[name] = picked
        return out

    def make_splits(self, splits: FaithUnSplits) -> FaithUnSplits:
        """``splits`` with this data's :attr:`source` and the extra sets of each split attached."""
        extra = {}
        for name in FaithUnSplits._NAMES:
            sets = self.extra_for(getattr(splits, name))
            if sets:
                extra[name] = sets
        return FaithUnSplits(
            forget=list(splits.forget), retain=list(splits.retain), test=list(splits.test),
            held_out=list(splits.held_out), extra=extra, source=self.source.to_dict(),
        )

    def split(self, *, seed: int = 0, **fractions: float) -> FaithUnSplits:
        """The published splits if there are any, else a seeded split with provenance.

        FaithUn-format data uses :func:`split_faithun` (paper 5 % / 10 % / 70 %); TOFU uses
        :func:`split_tofu` by whole authors (forget 1 %). ``fractions`` override the split
        fractions (``forget=``, and for FaithUn ``retain=``, ``test=``).

        Raises:
            DataError: Alpaca data (nothing to split), or as the split functions.
        """
        if not self.is_qa:
            raise DataError(f"{self.source.location}: an Alpaca instruction set has no forget/retain splits")
        if self.splits is not None and not fractions:
            return self.splits
        if self.format in ("tofu", "tofu-perturbed"):
            return self.make_splits(split_tofu(self.items, forget=fractions.get("forget", 0.01), seed=seed))
        return self.make_splits(split_faithun(self.items, seed=seed, **fractions))


def _sha256(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def detect_format(columns: Iterable[str], *, name: str = "data") -> str:
    """The data format implied by a table's column names (SPEC §10).

    Rules, first match wins: ``instruction`` + ``output`` → ``alpaca``; ``question`` plus an
    option column (``options``, ``choices``, ``false_options``, ``false_answer_options``,
    ``option1``…, ...) or ``answers`` → ``faithun``; ``question`` + ``answer`` +
    ``perturbed_answer`` → ``tofu-perturbed``; ``question`` + ``answer`` → ``tofu``.

    Args:
        columns: The column names.
        name: The file or dataset name for the message.

    Returns:
        One of :data:`FORMATS` (never ``faithun-release``, which is not a table).

    Raises:
        DataError: No rule fits; the message names the file and the missing column.
    """
    cols = {c for c in columns if isinstance(c, str)}
    if "instruction" in cols or "output" in cols and "question" not in cols:
        if "output" not in cols:
            raise DataError(f"{name}: column 'output' is missing (Alpaca format: instruction, input, output)")
        if "instruction" not in cols:
            raise DataError(f"{name}: column 'instruction' is missing (Alpaca format: instruction, input, output)")
        return "alpaca"
    if "question" not in cols:
        shown = ", ".join(sorted(cols)[:8]) + (", ..." if len(cols) > 8 else "")
        raise DataError(
            f"{name}: column 'question' is missing (FaithUn / TOFU need question + answer; Alpaca needs "
            f"instruction + output); the columns are: {shown or 'none'}"
        )
    if any(c in cols for c in _MCQA_COLUMNS) or any(_OPTION_COLUMN.match(c) for c in cols) or "answers" in cols:
        return "faithun"
    if "answer" not in cols:
        raise DataError(f"{name}: column 'answer' is missing (FaithUn: answer or answers; TOFU: answer)")
    if "perturbed_answer" in cols or "perturbed_answers" in cols:
        return "tofu-perturbed"
    return "tofu"


def _columns(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns with a value in at least one record (``datasets`` fills absent keys with None)."""
    return list(dict.fromkeys(k for r in records for k, v in r.items() if v is not None))


def _items_from_records(records: list[dict[str, Any]], name: str, stem: str, fmt: str, questions_per_author: int) -> list:
    if fmt == "alpaca":
        return [_instruction_item(_Record(rec, i, name)) for i, rec in enumerate(records, start=1)]
    if fmt == "faithun":
        items = [_mcqa_item(_Record(rec, i, name), stem) for i, rec in enumerate(records, start=1)]
    elif fmt in ("tofu", "tofu-perturbed"):
        items = [_tofu_item(_Record(rec, i, name), stem, questions_per_author) for i, rec in enumerate(records, start=1)]
    else:
        raise DataError(f"{name}: format {fmt!r} is not a table format (use format='auto')")
    _check_unique_ids(items, name)
    return items


def load_data(
    source: str | Path | None = None,
    *,
    format: str = "auto",
    split: str = "train",
    questions_per_author: int = 20,
) -> LoadedData:
    """Load any supported data set as it is published, detecting its format (SPEC §10).

    Accepted sources: ``None`` (the embedded FaithUn-format fact set); a local JSON (array or
    object), JSON Lines, parquet or CSV file read through ``datasets``; the FaithUn release
    (its JSON file, or a folder holding it, with the split files found beside it or in
    ``splits/``); a Hugging Face Hub name ``owner/name[:config]`` (e.g.
    ``locuslab/TOFU:forget01_perturbed``, ``tatsu-lab/alpaca``) when online.

    Formats (see :func:`detect_format`): ``faithun`` (question, answer, options), the
    FaithUn release (``faithun-release``: a JSON object keyed by Wikidata entity id; see
    :func:`load_faithun_release`), ``tofu`` / ``tofu-perturbed`` (question, answer;
    perturbed answers → false options, paraphrased question → paraphrase and an extra
    ``paraphrase`` set with the paraphrased answer), ``alpaca`` (instruction, input, output).

    Args:
        source: File, folder, Hub name, or None.
        format: ``"auto"`` or one of :data:`FORMATS` to skip detection.
        split: Hub split to load.
        questions_per_author: TOFU: questions per author block (entity grouping).

    Returns:
        The items with their :class:`DataSource` (absolute path + SHA-256 for files).

    Raises:
        DataError: One line naming the file (and record, field or column): missing file, not
            UTF-8, malformed file, no format fits the columns, bad record, duplicate ids,
            bad FaithUn split file, Hub dataset not loadable (e.g. offline).
    """
    if format != "auto" and format not in FORMATS:
        raise DataError(f"format: expected auto or one of {', '.join(FORMATS)}, got {format!r}")
    if isinstance(questions_per_author, bool) or not isinstance(questions_per_author, int) or questions_per_author < 1:
        raise DataError(f"questions_per_author must be a positive integer, got {questions_per_author!r}")
    if source is None:
        with _resource(FAITHUN_FILE) as p:
            fp = _sha256(p.read_bytes())
        return LoadedData(load_faithun(), "faithun", DataSource("embedded", FAITHUN_FILE, "faithun", fp))
    path = Path(source)
    release = _release_json(path)
    if release is not None or format == "faithun-release":
        return load_faithun_release(release or path)
    if path.is_file() and path.suffix.lower() == ".txt":
        name = path.name
        raise DataError(
            f"{name}: a plain-text file; give a JSON, JSON Lines, parquet or CSV data file"
            + (" (a FaithUn split file is read with its release: pass FaithUnBench.json or its folder)"
               if name in RELEASE_SPLIT_FILES.values() else "")
        )
    name, records = _read_records(path, split=split)
    fmt = detect_format(_columns(records), name=name) if format == "auto" else format
    if path.exists():
        stem = path.stem
        src = DataSource("file", str(path.resolve()), fmt, _sha256(path.read_bytes()))
    else:
        stem = name.replace("/", "-").replace(":", "-")
        src = DataSource("hub", str(source), fmt, "")
    items = _items_from_records(records, name, stem, fmt, questions_per_author)
    data = LoadedData(items, fmt, src)
    if fmt == "tofu-perturbed":
        paras = []
        for it, rec in zip(items, records):
            q, a = rec.get("paraphrased_question"), rec.get("paraphrased_answer")
            if isinstance(q, str) and q.strip() and isinstance(a, str) and a.strip():
                paras.append(QAItem(id=f"{it.id}-paraphrase", question=q.strip(), answer=a.strip(),
                                    false_options=it.false_options, entity=it.entity, category="paraphrase"))
        if paras:
            index = {it.id: k for k, it in enumerate(items)}
            data.extra["paraphrase"] = paras
            data.links = {p.id: (index[p.id[: -len("-paraphrase")]],) for p in paras}
    return data


def _release_json(path: Path) -> Path | None:
    """The FaithUn release JSON file at ``path`` (the file itself or inside a folder), else None."""
    try:
        if path.is_dir():
            for n in _RELEASE_NAMES:
                if (path / n).is_file():
                    return path / n
            candidates = [p for p in sorted(path.glob("*.json")) if _is_release_file(p)]
            return candidates[0] if len(candidates) == 1 else None
        if path.is_file() and path.suffix.lower() == ".json" and _is_release_file(path):
            return path
    except OSError:
        return None
    return None


def _is_release_file(path: Path) -> bool:
    """Cheap check: a JSON object whose first value is an object with a release list key."""
    if path.name in _RELEASE_NAMES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        return False
    return any(f'"{k}"' in text for k in RELEASE_LISTS) and not text.startswith(('{"question"', '{"instruction"'))


def _release_question(q: Any, where: str, file: str, item_id: str, entity: str, category: str) -> QAItem:
    if not isinstance(q, Mapping):
        raise DataError(f"{file}: {where}: expected a question object, got {type(q).__name__}")
    r = _Record(q, 0, file, where=where)
    it = _mcqa_item(r, item_id)
    return QAItem(
        id=r.text("id", required=False) or item_id,
        question=it.question,
        answer=it.answer,
        false_options=it.false_options,
        entity=it.entity or entity,
        paraphrases=it.paraphrases,
        category=it.category or category,
    )


def load_faithun_release(path: str | Path, *, split_dir: str | Path | None = None) -> LoadedData:
    """Load the FaithUn release as published (Yang et al., 2025; SPEC §10).

    The release (``FaithUnBench.json``) is one JSON object keyed by Wikidata entity id
    (``"Q76"``); each entity holds the lists ``hop1_unlearn`` (base questions),
    ``hop1_test`` (paraphrased), ``hop2_test`` (multi-hop) and ``same_object`` (same-answer
    questions); each question has ``question``, ``answers`` (a list: the first is the
    answer) and ``false_answer_options``. Every ``hop1_unlearn`` question is one *cluster*;
    the clusters of all entities concatenated in file order are numbered from 0 (664 in the
    release), and the split files ``forget_set_split.txt``, ``retaining_set_split.txt``,
    ``test_set_split.txt`` list cluster indices one per line (paper App. B.1: 5 % / 10 % /
    70 %; clusters in no file are held out).

    Mapping: each base question becomes a :class:`QAItem` (id ``<entity>-hop1-<k>``, entity
    = the entity id or its ``name``/``label`` field). An extra list with as many entries as
    ``hop1_unlearn`` is aligned with it (entry *k*, a question or a list of questions, belongs
    to cluster *k*); otherwise its questions belong to all clusters of the entity. Paraphrased
    questions of a cluster also become the base item's ``paraphrases``; all three lists are
    kept as extra evaluation sets ``paraphrase`` / ``multihop`` / ``same_answer``, and each
    split's share is in ``splits.extra``.

    Args:
        path: The release JSON file, or a folder holding it.
        split_dir: Folder of the split files (default: beside the JSON, then ``splits/``).

    Returns:
        The base questions (clusters, in cluster order), the extra sets with their cluster
        links, and the published splits when the split files are found (else None).

    Raises:
        DataError: Not UTF-8, malformed JSON, not an object of entities, an entity without
            ``hop1_unlearn``, a bad question (its entity, list and position named), a bad
            split file (line named), an index out of range or in two split files, only some
            of the three split files present.
    """
    p = Path(path)
    found = _release_json(p) if p.is_dir() else p
    if found is None or not found.is_file():
        raise DataError(f"{path}: no FaithUn release JSON (FaithUnBench.json) found")
    p = found
    name = p.name
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror})") from None
    text = _decode_utf8(raw, name)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}: line {exc.lineno}: malformed JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(f"{name}: JSON nested too deeply") from None
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{name}: expected a JSON object keyed by Wikidata entity id")
    items: list[QAItem] = []
    extra: dict[str, list[QAItem]] = {v: [] for v in RELEASE_EXTRA.values()}
    links: dict[str, tuple[int, ...]] = {}
    for qid, ent in obj.items():
        if not isinstance(ent, dict):
            raise DataError(f"{name}: entity {qid}: expected an object with {', '.join(RELEASE_LISTS)}")
        base = ent.get("hop1_unlearn")
        if base is None:
            raise DataError(f"{name}: entity {qid}: field 'hop1_unlearn' is missing")
        label = next((ent[k].strip() for k in ("name", "label", "entity") if isinstance(ent.get(k), str) and ent[k].strip()), qid)
        for key in RELEASE_LISTS:
            if ent.get(key) is not None and not isinstance(ent[key], list):
                raise DataError(f"{name}: entity {qid}: field '{key}' must be a list, got {type(ent[key]).__name__}")
        first = len(items)
        for k, q in enumerate(base):
            items.append(_release_question(q, f"entity {qid}: hop1_unlearn[{k}]", name, f"{qid}-hop1-{k}", label, "hop1_unlearn"))
        clusters = tuple(range(first, len(items)))
        for key, set_name in RELEASE_EXTRA.items():
            entries = ent.get(key) or []
            aligned = len(entries) == len(base) and len(base) > 0
            for k, entry in enumerate(entries):
                group = entry if isinstance(entry, list) else [entry]
                for j, q in enumerate(group):
                    where = f"entity {qid}: {key}[{k}]" + (f"[{j}]" if isinstance(entry, list) else "")
                    item_id = f"{qid}-{key}-{k}" + (f"-{j}" if isinstance(entry, list) else "")
                    it = _release_question(q, where, name, item_id, label, key)
                    extra[set_name].append(it)
                    links[it.id] = (first + k,) if aligned else clusters
    if not items:
        raise DataError(f"{name}: no hop1_unlearn questions (no clusters)")
    _check_unique_ids(items + [e for v in extra.values() for e in v], name)
    # Paraphrased questions of exactly one cluster become that item's paraphrases.
    paras: dict[int, list[str]] = {}
    for e in extra["paraphrase"]:
        if len(links[e.id]) == 1:
            paras.setdefault(links[e.id][0], []).append(e.question)
    for k, qs in paras.items():
        it = items[k]
        new = tuple(dict.fromkeys([*it.paraphrases, *(q for q in qs if q != it.question)]))
        items[k] = QAItem(it.id, it.question, it.answer, it.false_options, it.entity, new, it.category)
    data = LoadedData(
        items, "faithun-release", DataSource("file", str(p.resolve()), "faithun-release", _sha256(raw)),
        extra={k: v for k, v in extra.items() if v}, links=links,
    )
    indices = _read_release_splits(p, len(items), split_dir)
    if indices is not None:
        chosen = set().union(*indices.values())
        data.splits = data.make_splits(
            FaithUnSplits(
                forget=[items[i] for i in sorted(indices["forget"])],
                retain=[items[i] for i in sorted(indices["retain"])],
                test=[items[i] for i in sorted(indices["test"])],
                held_out=[it for i, it in enumerate(items) if i not in chosen],
            )
        )
    return data


def _read_release_splits(json_path: Path, n: int, split_dir: str | Path | None) -> dict[str, set[int]] | None:
    """Cluster indices per split from the release's split files, or None when there are none."""
    dirs = [Path(split_dir)] if split_dir is not None else [json_path.parent, json_path.parent / "splits"]
    for folder in dirs:
        present = {s: folder / f for s, f in RELEASE_SPLIT_FILES.items() if (folder / f).is_file()}
        if not present:
            continue
        if len(present) < len(RELEASE_SPLIT_FILES):
            missing = [f for s, f in RELEASE_SPLIT_FILES.items() if s not in present]
            raise DataError(f"{folder}: FaithUn split file {missing[0]} is missing (found {', '.join(p.name for p in present.values())})")
        out: dict[str, set[int]] = {}
        owner: dict[int, str] = {}
        for split, f in present.items():
            out[split] = set()
            text = _decode_utf8(f.read_bytes(), f.name)
            for lineno, line in enumerate(text.splitlines(), start=1):
                token = line.strip()
                if not token:
                    continue
                if not re.fullmatch(r"\d+", token):
                    raise DataError(f"{f.name}: line {lineno}: expected a cluster index (an integer ≥ 0), got {token[:40]!r}")
                idx = int(token)
                if idx >= n:
                    raise DataError(f"{f.name}: line {lineno}: cluster index {idx} out of range (the release has {n} clusters, 0–{n - 1})")
                if idx in owner:
                    other = RELEASE_SPLIT_FILES[owner[idx]]
                    where = "twice" if owner[idx] == split else f"also in {other}"
                    raise DataError(f"{f.name}: line {lineno}: cluster index {idx} listed {where}")
                owner[idx] = split
                out[split].add(idx)
        if not out["forget"]:
            raise DataError(f"{present['forget'].name}: lists no cluster index (the forget split is empty)")
        return out
    if split_dir is not None:
        raise DataError(f"{split_dir}: no FaithUn split files ({', '.join(RELEASE_SPLIT_FILES.values())})")
    return None


def load_source(source: Mapping[str, Any] | DataSource | None, *, where: str = "source", check: bool = True) -> LoadedData:
    """Load the data a :class:`DataSource` (or its dict) describes; None = the embedded set.

    Args:
        source: The recorded source.
        where: Name for messages (e.g. the ``splits.json`` path).
        check: Refuse a file whose SHA-256 differs from the recorded fingerprint.

    Raises:
        DataError: Bad source record, file gone or changed, or as :func:`load_data`.
    """
    if source is None:
        return load_data(None)
    src = source if isinstance(source, DataSource) else DataSource.from_dict(source, where=f"{where}: source")
    if src.kind == "embedded":
        if src.location != FAITHUN_FILE:
            raise DataError(f"{where}: source: unknown embedded data set {src.location!r}")
        return load_data(None)
    if src.kind == "file" and not Path(src.location).exists():
        raise DataError(f"{where}: its data file {src.location} no longer exists")
    data = load_data(src.location, format=src.format if src.format != "faithun-release" else "auto")
    if check and src.kind == "file" and src.fingerprint and data.source.fingerprint != src.fingerprint:
        raise DataError(f"{where}: its data file {src.location} has changed since the split was made (SHA-256 differs)")
    return data


def load_splits_file(path: str | Path, *, items: Sequence[QAItem] | None = None) -> FaithUnSplits:
    """Reload a run's ``splits.json`` (written with :meth:`FaithUnSplits.to_dict`).

    The items are taken from the data source the file records (file path + SHA-256, Hub
    name, or the embedded set), so ids never have to be looked up elsewhere; files without a
    ``source`` (written before provenance was recorded) mean the embedded set. Accepts the
    run layout ``{"seed": ..., "splits": {...}}`` and a bare ``{"forget": [...], ...}``.

    Args:
        path: The ``splits.json`` file.
        items: Resolve the ids against these items instead of the recorded source.

    Returns:
        The splits with their ``source`` (and ``extra`` sets when recorded).

    Raises:
        DataError: Missing file, not UTF-8, malformed JSON, not a splits object, unknown ids,
            the recorded data file gone or changed.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: splits file not found")
    text = _decode_utf8(p.read_bytes(), p.name)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise DataError(f"{p}: JSON nested too deeply") from None
    if not isinstance(raw, dict):
        raise DataError(f"{p}: expected a JSON object with forget/retain/test item ids")
    ids = raw.get("splits", raw)
    if not isinstance(ids, dict) or not any(k in ids for k in FaithUnSplits._NAMES):
        raise DataError(f"{p}: not a splits file (no 'forget'/'retain'/'test' lists)")
    source = ids.get("source", raw.get("source"))
    try:
        if items is not None:
            splits = FaithUnSplits.from_dict(ids, items)
            return splits
        data = load_source(source, where=str(p))
        splits = FaithUnSplits.from_dict(ids, data.items, [e for v in data.extra.values() for e in v])
    except DataError as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
    if splits.source is None:
        splits.source = data.source.to_dict()
    return splits


def is_splits_file(path: str | Path) -> bool:
    """Whether ``path`` is a ``splits.json`` of a run (by name, or a small JSON object with split lists)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".json":
        return False
    if p.name.endswith("splits.json"):
        return True
    try:
        if p.stat().st_size > 50_000_000:
            return False
        raw = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    if not isinstance(raw, dict):
        return False
    ids = raw.get("splits", raw)
    return isinstance(ids, dict) and isinstance(ids.get("forget"), list) and all(
        isinstance(ids.get(k, []), list) for k in FaithUnSplits._NAMES
    )

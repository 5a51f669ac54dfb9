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

Every loader reads local JSON / JSON Lines files through ``datasets.load_dataset("json",
data_files=...)`` and accepts Hugging Face Hub names (``owner/name`` or
``owner/name:config``) for users who are online. Bad input raises :class:`DataError` with a
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
        if not isinstance(rec, dict):
            return f"line {lineno}: expected a JSON object, got {type(rec).__name__}"
    return ""


def _read_records(source: str | Path, *, split: str = "train") -> tuple[str, list[dict[str, Any]]]:
    """Read records from a local JSON/JSONL file (or a Hub dataset name) via ``datasets``.

    Returns:
        ``(display_name, records)`` where ``display_name`` is the file name used in messages.

    Raises:
        DataError: Missing file, directory, empty file, malformed JSON (with its line), or a
            Hub dataset that cannot be loaded.
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
        raise DataError(f"{source}: is a directory, expected a JSON or JSON Lines file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{name}: file is empty (no records)")
    try:
        with _quiet_datasets():
            ds = load_dataset("json", data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps parser errors in several exception types
        where = _locate_json_error(path)
        if where:
            raise DataError(f"{name}: {where}") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{name}: cannot be read as JSON records ({first})") from None
    records = ds.to_list()
    if not records:
        raise DataError(f"{name}: file is empty (no records)")
    return name, records


def _read_hub(name: str, *, split: str) -> tuple[str, list[dict[str, Any]]]:
    repo, _, config = name.partition(":")
    try:
        with _quiet_datasets():
            ds = load_dataset(repo, config or None, split=split)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{name}: cannot load from the Hugging Face Hub ({first})") from None
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

    def __init__(self, rec: Mapping[str, Any], number: int, file: str) -> None:
        self.rec = rec
        self.number = number
        self.file = file

    def error(self, field_name: str, problem: str) -> DataError:
        return DataError(f"{self.file}: record {self.number}: field '{field_name}' {problem}")

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
    false_key, false_opts = r.text_list("false_options", "wrong_options", "distractors", "false_answers")

    # An integer answer with an options list may be an index into it (common MCQA layout).
    raw_answer = r.rec.get("answer")
    if (
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
        path: A ``.json`` (array) or ``.jsonl`` file, a Hub name ``owner/name[:config]``, or
            ``None`` for the embedded set of real, well-known facts (``faithun_facts.jsonl``:
            285 entities, 642 questions, 3 options and 1–2 paraphrases each).

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
    """

    forget: list[QAItem]
    retain: list[QAItem]
    test: list[QAItem]
    held_out: list[QAItem] = field(default_factory=list)

    _NAMES = ("forget", "retain", "test", "held_out")

    def to_dict(self) -> dict[str, list[str]]:
        """The item ids of each split (JSON-ready)."""
        return {name: [it.id for it in getattr(self, name)] for name in self._NAMES}

    @classmethod
    def from_dict(cls, ids: Mapping[str, Sequence[str]], items: Iterable[QAItem]) -> "FaithUnSplits":
        """Rebuild splits from :meth:`to_dict` output and the item list.

        Args:
            ids: ``{"forget": [...], "retain": [...], "test": [...], "held_out": [...]}``;
                missing keys mean empty splits.
            items: The items the ids refer to.

        Raises:
            DataError: An id that is not among ``items``, or an id used in two splits.
        """
        by_id = {it.id: it for it in items}
        used: dict[str, str] = {}
        parts: dict[str, list[QAItem]] = {}
        for name in cls._NAMES:
            part = []
            for i in ids.get(name, ()) or ():
                if i not in by_id:
                    raise DataError(f"split '{name}': unknown item id '{i}'")
                if i in used:
                    raise DataError(f"split '{name}': item id '{i}' is also in split '{used[i]}'")
                used[i] = name
                part.append(by_id[i])
            parts[name] = part
        return cls(**parts)

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
    field, or ``questions_per_author``). ``paraphrased_question`` becomes a paraphrase.

    Args:
        path: A ``.json``/``.jsonl`` file or a Hub name such as ``locuslab/TOFU:forget01``.
        questions_per_author: Block size used to group questions by author.

    Returns:
        The items in file order with empty ``false_options``.

    Raises:
        DataError: Bad file, a record missing ``question``/``answer``, duplicate ids,
            ``questions_per_author < 1``.
    """
    if isinstance(questions_per_author, bool) or not isinstance(questions_per_author, int) or questions_per_author < 1:
        raise DataError(f"questions_per_author must be a positive integer, got {questions_per_author!r}")
    name, records = _read_records(path)
    stem = Path(str(path)).stem if Path(path).exists() else _slug(name)
    items = []
    for i, rec in enumerate(records, start=1):
        r = _Record(rec, i, name)
        question, answer = r.text("question"), r.text("answer")
        author = r.text("author", "entity", "subject", required=False) or f"author-{(i - 1) // questions_per_author + 1}"
        _, paras = r.text_list("paraphrases", "paraphrased_question", "paraphrased_questions")
        items.append(
            QAItem(
                id=r.text("id", required=False) or f"{stem}-{i}",
                question=question,
                answer=answer,
                entity=author,
                paraphrases=tuple(p for p in paras if p),
            )
        )
    _check_unique_ids(items, name)
    return items


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

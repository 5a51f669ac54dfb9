"""One validation layer for command-line options and input files (issue 14, SPEC §12).

Every check raises :class:`~neuronscope.errors.ConfigError` (a
:class:`~neuronscope.errors.NeuronscopeError`) with one line naming the option or file, so the
CLI prints ``error: ...`` and exits 2. The commands call these *before* any output exists and
before a model is loaded.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from neuronscope.errors import ConfigError, NeuronscopeError, check_replaceable

#: Model dtypes a command accepts (``--dtype``).
DTYPES = ("float32", "bfloat16", "float16")
#: numpy's seed range (``np.random.default_rng`` / ``RandomState`` take 0 .. 2**32 - 1).
SEED_MAX = 2**32 - 1

_DEVICE = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")


def number(option: str, value: Optional[float], *, positive: bool = False, minimum: float | None = None,
           maximum: float | None = None, open_min: bool = False, open_max: bool = False) -> Optional[float]:
    """A finite float, optionally > 0 or within [minimum, maximum] (None passes through).

    Raises:
        ConfigError: NaN, ±inf, or out of range (names ``option``).
    """
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{option}: must be a finite number, got {value!r}")
    if positive and not v > 0:
        raise ConfigError(f"{option}: must be > 0, got {value!r}")
    if minimum is not None and (v <= minimum if open_min else v < minimum):
        raise ConfigError(f"{option}: must be {'>' if open_min else '≥'} {minimum:g}, got {value!r}")
    if maximum is not None and (v >= maximum if open_max else v > maximum):
        raise ConfigError(f"{option}: must be {'<' if open_max else '≤'} {maximum:g}, got {value!r}")
    return v


def numbers(option: str, values: Optional[Iterable[float]], **kw) -> Optional[list[float]]:
    """:func:`number` for each value of a repeated option."""
    if values is None:
        return None
    return [number(option, v, **kw) for v in values]


def integer(option: str, value: Optional[int], *, minimum: int | None = None, maximum: int | None = None) -> Optional[int]:
    """An integer within [minimum, maximum] (None passes through).

    Raises:
        ConfigError: Out of range (names ``option``).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{option}: must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{option}: must be ≥ {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{option}: must be ≤ {maximum}, got {value}")
    return value


def seed(option: str, value: Optional[int]) -> Optional[int]:
    """A random seed within numpy's range 0 .. 2**32 - 1."""
    if value is not None and isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{option}: a seed must be within 0 .. 2**32-1 (numpy's range), got {value}")
    return integer(option, value)


def dtype(option: str, value: Optional[str]) -> Optional[str]:
    """One of :data:`DTYPES` (None passes through)."""
    if value is None:
        return None
    if value not in DTYPES:
        raise ConfigError(f"{option}: expected one of {', '.join(DTYPES)}, got {value!r}")
    return value


def device(option: str, value: Optional[str]) -> Optional[str]:
    """``cpu``, ``cuda``, ``cuda:N`` (or ``mps``) that exists on this machine (None passes through).

    Raises:
        ConfigError: An unknown device string, or a CUDA/MPS device this machine does not have.
    """
    if value is None:
        return None
    m = _DEVICE.match(value.strip())
    if not m:
        raise ConfigError(f"{option}: expected cpu, cuda or cuda:N, got {value!r}")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ConfigError(f"{option}: expected cpu, cuda or cuda:N, got {value!r}")
        return "cpu"
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {value}: no CUDA device on this machine (torch.cuda.is_available() is False); use --device cpu")
        n = torch.cuda.device_count()
        if index is not None and int(index) >= n:
            raise ConfigError(f"{option} {value}: this machine has {n} CUDA device(s) (cuda:0 .. cuda:{n - 1})")
        return value
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{option} {value}: no MPS device on this machine; use --device cpu")
    return value


def output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """An output file that may be written: not a directory, not an existing read-only file.

    Raises:
        NeuronscopeError: ``path`` is a directory or an existing read-only file.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p}: is a directory, expected a file path")
    check_replaceable(p)
    return p


def output_files(folder: str | os.PathLike, names: Iterable[str], option: str = "--out") -> Path:
    """An output folder whose files ``names`` may be written (each not read-only)."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{option} {d}: exists and is not a directory")
    for n in names:
        check_replaceable(d / n)
    return d


def json_file(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file with one-line errors (missing, unreadable, not UTF-8, invalid JSON).

    Raises:
        NeuronscopeError: Names the file and what is wrong with it.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise NeuronscopeError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise NeuronscopeError(f"{p}: is a directory, expected a JSON {what}") from None
    except OSError as exc:
        raise NeuronscopeError(f"{p}: cannot read {what} ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NeuronscopeError(f"{p}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NeuronscopeError(f"{p}: corrupt {what}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None


def model_spec(spec: str, option: str = "--model") -> str:
    """A model given as a folder must hold a readable ``config.json`` (checked before loading).

    Names and hub ids pass through (the loader reports those).

    Raises:
        NeuronscopeError: A model folder whose ``config.json`` is missing or corrupt.
    """
    p = Path(spec)
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.exists():
            raise NeuronscopeError(f"{option} {spec}: folder has no config.json (not a saved model)")
        data = json_file(cfg, "model config")
        if not isinstance(data, dict):
            raise NeuronscopeError(f"{cfg}: corrupt model config (not a JSON object)")
    return spec


def check_context(model, items, source: str) -> None:
    """Every item fits the model's context, in both of its uses (checked before any work).

    The longest sequence of an item is the larger of the QA pair (chat-templated question +
    answer, as in unlearning and attribution) and the MCQA prompt (paper Table 3) followed by
    its longest option.

    Args:
        model: A :class:`~neuronscope.models.HookedModel`.
        items: FaithUn-format items (``question``, ``answer``, ``false_options``, ``id``).
        source: The data file or split name, for the message.

    Raises:
        DataError: Names the file, the record (1-based position) and its id, the length and
            the context.
    """
    from neuronscope.data import DataError
    from neuronscope.models import context_length
    from neuronscope.prompts import chat_prompt, mcqa_prompt

    limit = context_length(model.hf_model)
    if limit is None:
        return
    tok = model.tokenizer

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    for i, it in enumerate(items, start=1):
        lengths = [n(chat_prompt(tok, it.question)) + n(it.answer) - 1]
        options = [it.answer, *getattr(it, "false_options", ())]
        if len(options) > 1:
            base = n(mcqa_prompt(tok, it.question, options))
            lengths.append(base + max(n(o) for o in options) - 1)
        if max(lengths) > limit:
            raise DataError(
                f"{source}: record {i} (id {it.id!r}): input of {max(lengths)} tokens is longer than the context "
                f"of {getattr(model, 'name', 'the model')} ({limit} tokens); shorten the question or answer"
            )

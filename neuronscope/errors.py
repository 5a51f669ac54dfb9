"""Error types and atomic file output shared by every module.

Every user-facing failure is a :class:`NeuronscopeError` whose message is one line naming
the file, field or value at fault; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


class NeuronscopeError(Exception):
    """Base class for bad input and unrecoverable run conditions (CLI exit code 2)."""


class ModelError(NeuronscopeError):
    """A model cannot be loaded, or its architecture cannot be mapped to module types."""


class ConfigError(NeuronscopeError):
    """A configuration value is out of range (learning rate, λ, p, ...)."""


class DivergenceError(NeuronscopeError):
    """Training produced a NaN or infinite loss."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``path`` only if the block succeeds.

    Args:
        path: Final file or directory path.
        is_dir: Create the temporary path as a directory (for ``save_pretrained``).

    Raises:
        NeuronscopeError: The parent directory cannot be created or written, or ``path``
            cannot be replaced (e.g. a file is to be written where a directory is).
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise NeuronscopeError(f"{final.parent}: cannot write output directory ({exc.strerror})") from None
    try:
        yield tmp
        # mkstemp/mkdtemp create private (0600/0700) paths; give the result the permissions
        # a plain open()/mkdir() would have had under the current umask.
        if tmp.exists():
            os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~_umask())
        try:
            if is_dir and final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as exc:  # e.g. the output path is an existing directory (or a file, for is_dir)
            raise NeuronscopeError(f"{final}: cannot write ({exc.strerror})") from None
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename). Returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically. Returns the path."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

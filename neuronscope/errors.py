"""Error types and atomic file output shared by every module.

Every user-facing failure is a :class:`NeuronscopeError` whose message is one line naming
the file, field or value at fault; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
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
    check_replaceable(final)
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
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            # Disk full, quota, permission, read-only file system: one line; the previous
            # ``final`` (if any) was never touched.
            kept = "the previous version is unchanged" if final.exists() else "nothing was written"
            raise NeuronscopeError(f"{final}: cannot write ({exc.strerror or exc}); {kept}") from None
        raise


#: errno values of write failures that are conditions of the disk, not bugs.
DISK_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EFBIG", "EIO") if hasattr(errno, n)
)


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to replace an existing read-only file (its content and mode are left as they are).

    A rename over a file in a writable folder would succeed even when the file itself is
    read-only; a user who made an output read-only wants it kept.

    Raises:
        NeuronscopeError: ``path`` is an existing file without write permission.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise NeuronscopeError(f"{p}: existing output file is read-only; not replacing it (make it writable or choose another output)")


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

"""Run-directory safety: the one place that decides what a command may do to its output folder.

Every command that writes a *run folder* (``unlearn``, ``attack``, and the study runner) goes
through :func:`prepare_run_dir`. It guarantees (issue 14):

* **Only neuronscope runs are replaced.** A run folder carries a marker file
  (``.neuronscope-run``: JSON with command, version, created). A non-empty folder without it is
  refused with one line, with or without ``--overwrite``; nothing in it is touched.
* **``--overwrite`` deletes nothing up front.** The old run stays exactly as it was while inputs
  are validated and the model is loaded. Only when the new run is about to write its first
  file (:meth:`RunDir.claim`) are the old contents *moved aside* into
  ``OUT/.neuronscope-previous/`` (a rename in the same folder: instant, no copy). When the new run
  finishes, that folder is deleted. If the new run fails or is interrupted (an exception or
  Ctrl-C), the new partial contents are removed and the old run is moved back: a replacement is
  all or nothing. If the process is killed outright (SIGKILL, power loss), the next command in
  that folder finds ``.neuronscope-previous/`` and restores it before anything else.
* **One writer at a time.** A lock file (``.neuronscope-lock``: pid, host, command, started) is
  created atomically while the run is prepared and held until the command ends. A second
  process is refused with one line naming the holder. A lock whose process is gone (same host,
  pid not alive, or an unreadable lock file) is stale and taken over.
* **Leftovers of an interrupted atomic save are removed.** :func:`neuronscope.errors.atomic_path`
  writes to ``.NAME.XXXXXXXX`` (directories, e.g. ``.model.k2j4_x9a``) or ``.NAME.XXXXXXXX.tmp``
  (files) beside the target; a process killed during the save leaves them behind. With the lock
  held, such names anywhere in a marked run folder are deleted at the start of the next run.
* **A failed fresh run leaves nothing half-written.** If a run that started in a new or empty
  folder fails before it saved any resumable progress (``progress`` patterns, e.g. a
  checkpoint), what it wrote is removed again (and the folder too, when this run created it).
  Once progress exists it is kept, so that the same command resumes.

Typical use::

    with prepare_run_dir(out, command="unlearn", overwrite=overwrite) as rd:
        ...validate, load data and model (no writes)...
        rd.claim()          # first write from here on
        ...train, save...
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from neuronscope.errors import NeuronscopeError, write_json_atomic

MARKER = ".neuronscope-run"
LOCK = ".neuronscope-lock"
PREVIOUS = ".neuronscope-previous"
_OWN = {MARKER, LOCK, PREVIOUS}

# Names made by tempfile.mkdtemp / mkstemp in errors.atomic_path: prefix ".NAME." + 8 random
# characters from [a-z0-9_] (+ ".tmp" for files).
_TMP_DIR = re.compile(r"^\..+\.[a-z0-9_]{8}$")
_TMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_LOCK_TMP = re.compile(r"^\.neuronscope-lock\.\d+\.tmp$")

#: Set when a run folder is left by an exception (read by ``neuronscope.cli.main`` for the
#: Ctrl-C message): one sentence saying what was kept and how to resume.
last_exit_note: str | None = None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("neuronscope")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_marker(path: str | os.PathLike) -> dict | None:
    """The marker of a run folder, or None when there is none.

    Raises:
        NeuronscopeError: The marker exists but is not a JSON object (names the file).
    """
    p = Path(path) / MARKER
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NeuronscopeError(f"{p}: corrupt run marker ({type(exc).__name__}); remove the folder or the file") from None
    if not isinstance(data, dict):
        raise NeuronscopeError(f"{p}: corrupt run marker (not a JSON object)")
    return data


# ----------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    # A zombie (exited, not yet reaped) no longer writes anything.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def _lock_holder(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _is_stale(holder: dict | None) -> bool:
    if holder is None:  # unreadable: our writes are atomic, so this is not a live writer's lock
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder.get("pid"))
    except (TypeError, ValueError):
        return True
    return not _pid_alive(pid)


def acquire_lock(folder: str | os.PathLike, command: str) -> Path:
    """Create ``folder/.neuronscope-lock`` atomically (hard link of a complete file).

    Args:
        folder: An existing directory.
        command: What holds the lock (shown to a second writer).

    Returns:
        The lock path (remove it with :func:`release_lock`).

    Raises:
        NeuronscopeError: Another live process holds the lock (names its pid, host, command
            and start time), or the lock cannot be written.
    """
    folder = Path(folder)
    lock = folder / LOCK
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": _now()}
    tmp = folder / f"{LOCK}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
    except OSError as exc:
        raise NeuronscopeError(f"{folder}: cannot write to the run folder ({exc.strerror})") from None
    try:
        for _ in range(5):
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                pass
            except OSError as exc:  # no hard links here: exclusive create instead
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise NeuronscopeError(f"{lock}: cannot create lock ({exc.strerror})") from None
                try:
                    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    pass
                else:
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        fh.write(json.dumps(info) + "\n")
                    return lock
            holder = _lock_holder(lock)
            if not _is_stale(holder):
                h = holder or {}
                raise NeuronscopeError(
                    f"{folder}: locked by another neuronscope process (pid {h.get('pid')} on {h.get('host')}, "
                    f"command {h.get('command')!r}, since {h.get('started')}); wait for it to finish, or remove "
                    f"{lock} if that process no longer exists"
                )
            # Stale: take it over. Renaming first makes two takers race on one rename only.
            aside = folder / f"{LOCK}.{os.getpid()}.stale.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.replace(lock, aside)
                aside.unlink()
        raise NeuronscopeError(f"{lock}: could not take the lock (contended)")
    finally:
        tmp.unlink(missing_ok=True)


def release_lock(lock: Path) -> None:
    """Remove a lock taken by this process (a lock of another pid is left alone)."""
    holder = _lock_holder(lock)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- cleanup


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted atomic saves under ``folder`` (recursively).

    Removes directories named like ``.model.k2j4_x9a`` and files like ``.summary.json.ab12cd34.tmp``
    (see :func:`neuronscope.errors.atomic_path`), plus stray lock temporaries. Call it only with
    the run folder's lock held (another writer's live temporaries would look the same).

    Returns:
        The removed paths.
    """
    removed: list[Path] = []
    for root, dirs, files in os.walk(folder):
        r = Path(root)
        for d in list(dirs):
            if d == PREVIOUS:
                dirs.remove(d)
            elif _TMP_DIR.match(d):
                shutil.rmtree(r / d, ignore_errors=True)
                removed.append(r / d)
                dirs.remove(d)
        for f in files:
            if _TMP_FILE.match(f) or (r == Path(folder) and _LOCK_TMP.match(f)):
                with contextlib.suppress(OSError):
                    (r / f).unlink()
                    removed.append(r / f)
    return removed


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in _OWN)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _restore_previous(folder: Path) -> None:
    """Put the contents of ``folder/.neuronscope-previous`` back (the new partial run is deleted)."""
    prev = folder / PREVIOUS
    for p in _entries(folder):
        _remove(p)
    (folder / MARKER).unlink(missing_ok=True)
    for p in sorted(prev.iterdir()):
        os.rename(p, folder / p.name)
    prev.rmdir()


# ----------------------------------------------------------------------------- the run folder


@dataclass
class RunDir:
    """A run folder prepared by :func:`prepare_run_dir` (lock held).

    Attributes:
        path: The folder.
        command: The command writing it (stored in the marker).
        overwrite: A previous run is to be replaced at :meth:`claim`.
        state: ``"new"`` (created or empty), ``"resume"`` (a marked, unfinished run continued)
            or ``"replace"`` (a marked run replaced with ``overwrite``).
        claimed: :meth:`claim` has been called (the run may have written files).
    """

    path: Path
    command: str
    overwrite: bool
    state: str
    created: bool
    progress: tuple[str, ...] = ()
    claimed: bool = False
    lock: Path | None = None
    cleaned: list[Path] = field(default_factory=list)

    def claim(self) -> Path:
        """Call right before the first write: move a replaced run aside, write the marker.

        Idempotent. Returns the folder.

        Raises:
            NeuronscopeError: The old run cannot be moved aside (it is then left as it was).
        """
        if self.claimed:
            return self.path
        if self.state == "replace":
            prev = self.path / PREVIOUS
            moved: list[Path] = []
            try:
                prev.mkdir()
                for p in [*_entries(self.path), self.path / MARKER]:
                    if p.exists():
                        os.rename(p, prev / p.name)
                        moved.append(p)
            except OSError as exc:
                for p in moved:
                    with contextlib.suppress(OSError):
                        os.rename(prev / p.name, p)
                with contextlib.suppress(OSError):
                    prev.rmdir()
                raise NeuronscopeError(f"{self.path}: cannot move the previous run aside ({exc.strerror}); nothing was changed") from None
        write_json_atomic(
            self.path / MARKER, {"command": self.command, "version": _version(), "created": _now(), "pid": os.getpid()}
        )
        self.claimed = True
        return self.path

    def has_progress(self) -> bool:
        """Whether the folder holds resumable progress (any of the ``progress`` glob patterns)."""
        return any(next(self.path.glob(pat), None) is not None for pat in self.progress)

    def _finish(self) -> None:
        prev = self.path / PREVIOUS
        if prev.exists():
            shutil.rmtree(prev)

    def _undo(self) -> str:
        """Called on an exception; returns what was kept (one sentence)."""
        where = str(self.path)
        if not self.claimed:
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            return f"nothing was written to {where}"
        if self.state == "replace":
            try:
                _restore_previous(self.path)
            except OSError as exc:
                return (f"the previous run is in {self.path / PREVIOUS} (could not be moved back: {exc.strerror}); "
                        f"the next neuronscope command in {where} restores it")
            return f"{where} holds the previous run, unchanged; run the command again with --overwrite to replace it"
        if self.has_progress():
            return f"the progress saved so far is kept in {where}; run the same command again (without --overwrite) to resume"
        if self.state == "new":
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                for p in _entries(self.path):
                    with contextlib.suppress(OSError):
                        _remove(p)
                (self.path / MARKER).unlink(missing_ok=True)
            return f"nothing was kept in {where} (no checkpoint had been saved yet)"
        return f"{where} is as the previous (unfinished) run left it; run the same command again to resume"


class _Follower:
    """The run-folder handle of a non-main data-parallel process: it holds and claims nothing."""

    state = "follower"

    def claim(self) -> None:
        pass


@contextlib.contextmanager
def follower_run_dir() -> Iterator[_Follower]:
    """What a non-main process of a data-parallel run uses instead of :func:`prepare_run_dir`.

    Under ``accelerate launch`` only the main process prepares, locks and writes the run folder
    (:mod:`neuronscope.distributed`); the others compute the same stages and write nothing.
    """
    yield _Follower()


@contextlib.contextmanager
def prepare_run_dir(
    out: str | os.PathLike,
    *,
    command: str,
    overwrite: bool = False,
    finished: Sequence[str] = ("summary.json",),
    progress: Sequence[str] = ("**/checkpoint", "**/result.json"),
    same_command: bool = True,
) -> Iterator[RunDir]:
    """Check, lock and (on exit) settle a run folder; see the module docstring for the rules.

    Args:
        out: The run folder (created if missing).
        command: The command writing it (e.g. ``"unlearn"``), stored in the marker.
        overwrite: Replace a marked run (finished or not), at :meth:`RunDir.claim` time.
        finished: Files whose presence marks a finished run (refused without ``overwrite``).
        progress: Glob patterns of resumable progress (kept when a fresh run fails).
        same_command: Refuse a folder marked by another command (even with ``overwrite``).

    Yields:
        The :class:`RunDir` (call :meth:`RunDir.claim` before the first write).

    Raises:
        NeuronscopeError: ``out`` is a file; a non-empty folder without the marker; a finished
            run without ``overwrite``; a folder of another command; locked by a live process;
            the folder cannot be created or written. In every case nothing was changed.
    """
    global last_exit_note
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NeuronscopeError(f"{path}: exists and is not a directory")
    created = not path.exists()
    if not created:
        _check_folder(path, command=command, overwrite=overwrite, finished=finished, same_command=same_command)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NeuronscopeError(f"{path}: cannot create output directory ({exc.strerror})") from None
    try:
        lock = acquire_lock(path, command)
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        if (path / PREVIOUS).is_dir():  # a replacement killed midway: the previous run stands
            _restore_previous(path)
        # Checked again under the lock (another process may have written meanwhile).
        state = _check_folder(path, command=command, overwrite=overwrite, finished=finished, same_command=same_command)
        rd = RunDir(path=path, command=command, overwrite=overwrite, state=state, created=created,
                    progress=tuple(progress), lock=lock)
        if state != "new" or (path / MARKER).exists():
            rd.cleaned = remove_temporaries(path)
    except BaseException:
        release_lock(lock)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    last_exit_note = None
    try:
        yield rd
    except BaseException:
        try:
            last_exit_note = rd._undo()
        finally:
            if rd.path.exists():
                release_lock(lock)
        raise
    else:
        rd._finish()
        if not rd.claimed and created and not _entries(path):
            release_lock(lock)
            shutil.rmtree(path, ignore_errors=True)
        else:
            release_lock(lock)


def _check_folder(path: Path, *, command: str, overwrite: bool, finished: Sequence[str], same_command: bool) -> str:
    """Classify an existing folder: ``"new"``, ``"resume"`` or ``"replace"`` (or refuse it)."""
    try:
        entries = _entries(path)
    except OSError as exc:
        raise NeuronscopeError(f"{path}: cannot read the output directory ({exc.strerror})") from None
    marker = read_marker(path)
    if marker is None:
        if entries and not (path / PREVIOUS).exists():
            raise NeuronscopeError(
                f"{path}: folder is not empty and is not a neuronscope run (no {MARKER} file); nothing was changed "
                "- choose a new or empty folder"
            )
        return "new"
    if same_command and marker.get("command") not in (None, command):
        raise NeuronscopeError(
            f"{path}: holds a neuronscope {marker.get('command')!r} run, not {command!r}; choose another folder"
        )
    if overwrite:
        return "replace"
    if any((path / f).exists() for f in finished):
        raise NeuronscopeError(f"{path}: output directory already holds a finished run (use --overwrite to replace it)")
    return "resume"

"""Run-folder safety and the validation layer, in process (issue 14).

* :mod:`neuronscope.rundir`: a folder that is not a neuronscope run is never touched; a
  replaced run stays byte-identical until the new one claims the folder and is restored when the
  new one fails; a live writer's lock refuses a second writer, a dead writer's lock is taken
  over; leftovers of an interrupted atomic save and of a killed replacement are cleaned up.
* Disk errors (ENOSPC, EACCES) during a write: one-line error, previous file intact.
* :mod:`neuronscope.validate`: each check against hand-picked values at and beyond its bounds.
* ``run_unlearning`` on the tiny Llama: a full-disk failure at the final model save of an
  ``--overwrite`` run leaves the previous run byte-identical.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from neuronscope import rundir, validate
from neuronscope.errors import ConfigError, NeuronscopeError, atomic_path, write_json_atomic, write_text_atomic
from neuronscope.rundir import LOCK, MARKER, PREVIOUS, prepare_run_dir


def _tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes (lock files left out)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != LOCK}


def _finished_run(d: Path, command: str = "unlearn") -> dict[str, bytes]:
    d.mkdir(parents=True)
    (d / MARKER).write_text(json.dumps({"command": command, "version": "0", "created": "x"}))
    (d / "summary.json").write_text('{"FS": 0.25}\n')
    (d / "model").mkdir()
    (d / "model" / "model.safetensors").write_bytes(os.urandom(256))
    return _tree(d)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- rundir


def test_foreign_folder_is_refused_and_untouched(tmp_path):
    d = tmp_path / "userdir"
    d.mkdir()
    (d / "precious.txt").write_text("x\n")
    for overwrite in (False, True):
        with pytest.raises(NeuronscopeError, match=r"userdir: folder is not empty and is not a neuronscope run"):
            with prepare_run_dir(d, command="unlearn", overwrite=overwrite):
                pytest.fail("must not enter")
    assert sorted(p.name for p in d.iterdir()) == ["precious.txt"]
    assert (d / "precious.txt").read_text() == "x\n"


def test_finished_run_needs_overwrite(tmp_path):
    d = tmp_path / "run"
    before = _finished_run(d)
    with pytest.raises(NeuronscopeError, match=r"already holds a finished run \(use --overwrite"):
        with prepare_run_dir(d, command="unlearn"):
            pass
    with pytest.raises(NeuronscopeError, match=r"holds a neuronscope 'unlearn' run, not 'attack'"):
        with prepare_run_dir(d, command="attack", overwrite=True):
            pass
    assert _tree(d) == before and not (d / LOCK).exists()


def test_overwrite_keeps_the_old_run_until_claim_and_restores_it_on_failure(tmp_path):
    d = tmp_path / "run"
    before = _finished_run(d)

    class Boom(RuntimeError):
        pass

    # Failure before claim (bad data, model load): nothing moved, nothing written.
    with pytest.raises(Boom):
        with prepare_run_dir(d, command="unlearn", overwrite=True) as rd:
            assert rd.state == "replace" and _tree(d) == before
            raise Boom
    assert _tree(d) == before and not (d / PREVIOUS).exists() and not (d / LOCK).exists()
    assert "nothing was written" in rundir.last_exit_note

    # Failure after claim, with new files and even a new checkpoint: the old run comes back.
    with pytest.raises(KeyboardInterrupt):
        with prepare_run_dir(d, command="unlearn", overwrite=True) as rd:
            rd.claim()
            assert sorted(p.name for p in d.iterdir()) == sorted([LOCK, MARKER, PREVIOUS])
            (d / "train" / "checkpoint").mkdir(parents=True)
            write_json_atomic(d / "summary.json", {"FS": 0.99})
            raise KeyboardInterrupt
    assert _tree(d) == before and not (d / PREVIOUS).exists()
    assert "holds the previous run, unchanged" in rundir.last_exit_note

    # Success: the new run replaces the old one; no backup is left.
    with prepare_run_dir(d, command="unlearn", overwrite=True) as rd:
        rd.claim()
        write_json_atomic(d / "summary.json", {"FS": 0.1})
    assert json.loads((d / "summary.json").read_text()) == {"FS": 0.1}
    assert sorted(p.name for p in d.iterdir()) == [MARKER, "summary.json"]
    assert json.loads((d / MARKER).read_text())["command"] == "unlearn"


def test_replacement_killed_midway_is_rolled_back_by_the_next_run(tmp_path):
    d = tmp_path / "run"
    before = _finished_run(d)
    # What a SIGKILL after claim leaves: the old run aside, a partial new one, a dead lock.
    (d / PREVIOUS).mkdir()
    for p in list(d.iterdir()):
        if p.name != PREVIOUS:
            os.rename(p, d / PREVIOUS / p.name)
    (d / MARKER).write_text(json.dumps({"command": "unlearn"}))
    (d / "train").mkdir()
    (d / "train" / "config.json").write_text("{}")
    (d / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "unlearn"}))
    with pytest.raises(NeuronscopeError, match="already holds a finished run"):
        with prepare_run_dir(d, command="unlearn"):
            pass
    assert _tree(d) == before and not (d / LOCK).exists()


def test_fresh_run_failing_before_progress_leaves_nothing(tmp_path):
    d = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError):
        with prepare_run_dir(d, command="attack", progress=("attack.json",)) as rd:
            rd.claim()
            write_json_atomic(d / "attack_config.json", {"p": 0.1})
            raise RuntimeError("pool is empty")
    assert not d.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        with prepare_run_dir(empty, command="attack", progress=("attack.json",)) as rd:
            rd.claim()
            write_json_atomic(empty / "attack_config.json", {"p": 0.1})
            raise RuntimeError
    assert empty.is_dir() and list(empty.iterdir()) == []
    # With progress saved, it stays for a resume.
    with pytest.raises(KeyboardInterrupt):
        with prepare_run_dir(d, command="attack", progress=("attack.json",)) as rd:
            rd.claim()
            write_json_atomic(d / "attack.json", {"runs": []})
            raise KeyboardInterrupt
    assert sorted(p.name for p in d.iterdir()) == [MARKER, "attack.json"]
    assert "run the same command again (without --overwrite) to resume" in rundir.last_exit_note
    with prepare_run_dir(d, command="attack", finished=("attack.html",)) as rd:
        assert rd.state == "resume"


def test_live_lock_refuses_a_second_writer_and_a_dead_one_is_taken_over(tmp_path):
    d = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        d.mkdir()
        (d / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "demo",
                                          "started": "2026-01-01T00:00:00+00:00"}))
        with pytest.raises(NeuronscopeError, match=rf"locked by another neuronscope process \(pid {holder.pid} on "
                                                   rf"{socket.gethostname()}, command 'demo'"):
            with prepare_run_dir(d, command="unlearn"):
                pass
        assert (d / LOCK).exists() and json.loads((d / LOCK).read_text())["pid"] == holder.pid
        # Nested: the lock of this very process also refuses a second prepare.
        (d / LOCK).unlink()
        with prepare_run_dir(d, command="unlearn") as rd:
            assert json.loads((d / LOCK).read_text())["pid"] == os.getpid()
            with pytest.raises(NeuronscopeError, match=rf"pid {os.getpid()}"):
                with prepare_run_dir(d, command="unlearn"):
                    pass
            rd.claim()
    finally:
        holder.kill()
        holder.wait()
    assert not (d / LOCK).exists()
    (d / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "unlearn"}))
    with prepare_run_dir(d, command="unlearn") as rd:
        assert json.loads((d / LOCK).read_text())["pid"] == os.getpid()
    # A lock of another host cannot be checked: refused (naming the host).
    (d / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "unlearn"}))
    with pytest.raises(NeuronscopeError, match="on elsewhere"):
        with prepare_run_dir(d, command="unlearn"):
            pass


def test_leftover_temporaries_are_removed_at_start(tmp_path):
    d = tmp_path / "run"
    before = _finished_run(d)
    (d / ".model.k2j4_x9a").mkdir()  # a save_pretrained killed midway
    (d / ".model.k2j4_x9a" / "model.safetensors").write_bytes(b"partial")
    (d / "train").mkdir()
    (d / "train" / ".history.json.ab12cd34.tmp").write_text("{")
    (d / ".hidden-user-dir").mkdir()  # not a temporary name: kept
    with prepare_run_dir(d, command="unlearn", overwrite=True) as rd:
        assert sorted(p.name for p in rd.cleaned) == [".history.json.ab12cd34.tmp", ".model.k2j4_x9a"]
    assert not (d / ".model.k2j4_x9a").exists() and not (d / "train" / ".history.json.ab12cd34.tmp").exists()
    assert (d / ".hidden-user-dir").is_dir()
    assert {k: v for k, v in _tree(d).items()} == before


def test_output_path_that_is_a_file_or_uncreatable(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(NeuronscopeError, match="a_file: exists and is not a directory"):
        with prepare_run_dir(f, command="unlearn"):
            pass
    with pytest.raises(NeuronscopeError, match=r"a_file/run: cannot create output directory \(Not a directory\)"):
        with prepare_run_dir(f / "run", command="unlearn"):
            pass
    assert f.read_text() == "x"


# ----------------------------------------------------------------------------- disk errors


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_disk_error_during_a_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"old": 1})

    def full(self, *a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(NeuronscopeError) as exc:
        write_json_atomic(target, {"new": 2})
    msg = str(exc.value)
    assert msg == f"{target}: cannot write ({os.strerror(code)}); the previous version is unchanged"
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_read_only_output_is_refused_unchanged(tmp_path):
    ro = tmp_path / "out.json"
    ro.write_text("keep\n")
    ro.chmod(0o444)
    with pytest.raises(NeuronscopeError, match=r"out.json: existing output file is read-only; not replacing it"):
        write_text_atomic(ro, "new\n")
    with pytest.raises(NeuronscopeError, match="read-only"):
        validate.output_files(tmp_path, ["out.json"])
    assert ro.read_text() == "keep\n" and stat.S_IMODE(ro.stat().st_mode) == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    # A writable file is replaced and keeps the umask mode.
    rw = tmp_path / "rw.json"
    rw.write_text("a")
    write_text_atomic(rw, "b")
    assert rw.read_text() == "b"


# ----------------------------------------------------------------------------- validate


def test_numbers_and_integers():
    assert validate.number("--lr", 1e-5, positive=True) == 1e-5
    for bad, pat in [(float("nan"), "finite"), (float("inf"), "finite"), (0.0, "> 0"), (-1e-5, "> 0")]:
        with pytest.raises(ConfigError, match=rf"^--lr: must be (a )?{pat}"):
            validate.number("--lr", bad, positive=True)
    with pytest.raises(ConfigError, match=r"^--lr: must be a finite number, got nan"):
        validate.numbers("--lr", [1e-5, float("nan")], positive=True)
    assert validate.number("--p", 0.5, minimum=0, maximum=1, open_min=True, open_max=True) == 0.5
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match=r"^--p: must be"):
            validate.number("--p", bad, minimum=0, maximum=1, open_min=True, open_max=True)
    assert validate.integer("--limit", 1, minimum=1) == 1 and validate.integer("--limit", None, minimum=1) is None
    with pytest.raises(ConfigError, match=r"^--limit: must be ≥ 1, got -1$"):
        validate.integer("--limit", -1, minimum=1)
    assert validate.seed("--seed", 0) == 0 and validate.seed("--seed", 2**32 - 1) == 2**32 - 1
    for bad in (-1, 2**32, 2**70):
        with pytest.raises(ConfigError, match=rf"^--seed: a seed must be within 0 .. 2\*\*32-1 .*got {bad}$"):
            validate.seed("--seed", bad)
    # numpy itself agrees on the boundary.
    import numpy as np

    np.random.default_rng(2**32 - 1)
    np.random.RandomState(2**32 - 1)
    with pytest.raises(ValueError):
        np.random.RandomState(2**32)


def test_devices_and_dtypes(monkeypatch):
    import torch

    for good in validate.DTYPES:
        assert validate.dtype("--dtype", good) == good and isinstance(getattr(torch, good), torch.dtype)
    for bad in ("int8", "float99", "fp32"):
        with pytest.raises(ConfigError, match=rf"^--dtype: expected one of float32, bfloat16, float16, got '{bad}'$"):
            validate.dtype("--dtype", bad)
    assert validate.device("--device", "cpu") == "cpu"
    for bad in ("tpu", "cuda:x", "gpu0", "cpu:1"):
        with pytest.raises(ConfigError, match=r"^--device: expected cpu, cuda or cuda:N"):
            validate.device("--device", bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--device cuda: no CUDA device on this machine"):
        validate.device("--device", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert validate.device("--device", "cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match=r"^--device cuda:2: this machine has 2 CUDA device\(s\) \(cuda:0 .. cuda:1\)$"):
        validate.device("--device", "cuda:2")


def test_json_files_and_model_folders(tmp_path):
    (tmp_path / "latin1.json").write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))  # é at byte offset 10
    (tmp_path / "broken.json").write_text('{"a": 1,\n "b": }')
    with pytest.raises(NeuronscopeError, match=r"latin1.json: run config is not UTF-8 text \(byte 10\)"):
        validate.json_file(tmp_path / "latin1.json", "run config")
    with pytest.raises(NeuronscopeError, match=r"broken.json: corrupt run config: invalid JSON at line 2, column 7"):
        validate.json_file(tmp_path / "broken.json", "run config")
    with pytest.raises(NeuronscopeError, match=r"missing.json: run config not found"):
        validate.json_file(tmp_path / "missing.json", "run config")
    m = tmp_path / "model"
    m.mkdir()
    with pytest.raises(NeuronscopeError, match=r"model: folder has no config.json"):
        validate.model_spec(str(m))
    (m / "config.json").write_text("{not json")
    with pytest.raises(NeuronscopeError, match=r"model/config.json: corrupt model config: invalid JSON at line 1"):
        validate.model_spec(str(m))
    assert validate.model_spec("tiny-llama") == "tiny-llama"


def test_context_overflow_names_file_record_and_id(tiny_llama):
    from neuronscope.data import QAItem

    ok = QAItem(id="f-1", question="What is the capital of France?", answer="Paris", false_options=("Rome", "Berlin"))
    long = QAItem(id="f-2", question="Please answer this question. " * 150, answer="Paris", false_options=("Rome",))
    validate.check_context(tiny_llama, [ok], "facts.jsonl")
    with pytest.raises(NeuronscopeError, match=r"^facts.jsonl: record 2 \(id 'f-2'\): input of \d+ tokens is longer than "
                                               r"the context of tiny-llama \(512 tokens\)"):
        validate.check_context(tiny_llama, [ok, long], "facts.jsonl")


# ----------------------------------------------------------------------------- unlearn, end to end in process


def test_overwrite_run_failing_at_the_final_save_keeps_the_previous_run(tmp_path, monkeypatch):
    from neuronscope.models import HookedModel
    from neuronscope.unlearning import UnlearningConfig
    from neuronscope.unlearning.run import run_unlearning

    out = tmp_path / "run"
    cfg = UnlearningConfig(method="gd", max_steps=1, threshold=-1.0, batch_size=4)
    kw = dict(model="tiny-llama", data=None, eval_splits=("forget",), progress=False, known_only=False)
    first = run_unlearning(out, cfg, **kw)
    assert first["steps"] == 1 and (out / MARKER).exists()
    before = _tree(out)

    def disk_full(self, path):
        with atomic_path(path, is_dir=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(HookedModel, "save", disk_full)
    with pytest.raises(NeuronscopeError, match=r"run/model: cannot write \(No space left on device\)"):
        run_unlearning(out, cfg.replace(seed=1), overwrite=True, **kw)
    assert _tree(out) == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MARKER]

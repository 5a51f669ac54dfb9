"""Run folders through the real command line: overwrite, leftovers, locks, Ctrl-C, exit codes (issue 14).

The two slow flows train the tiny random Llama for a few steps in a subprocess
(``python -m neuronscope``, the same ``main()`` as the console script):

* ``--overwrite`` keeps a finished run byte-identical while the new run's input is bad, and
  replaces it (removing the temporary folder a SIGKILL during the final model save leaves,
  and taking over the lock of a dead process) once the input is good.
* Ctrl-C during training prints one line saying what was kept and how to resume, exits 130,
  and the same command then finishes the run from the checkpoint.

The in-process tests check :func:`neuronscope.cli.main`'s exit codes for an internal error (3),
an interrupt (130) and a full disk (2).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli_errors import _rendered_lines  # noqa: E402

TIMEOUT = 900
TRAIN = ["unlearn", "--model", "tiny-llama", "--method", "gd", "--threshold", "-1", "--eval-splits", "forget"]


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuronscope", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_overwrite_keeps_the_old_run_until_the_new_one_loads(tmp_path):
    args = [*TRAIN, "--max-steps", "1", "--batch-size", "4", "--out", "run"]
    r = _cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "run"
    marker = json.loads((run / ".neuronscope-run").read_text())
    assert marker["command"] == "unlearn" and marker["version"]
    old_model = _sha(run / "model" / "model.safetensors")
    before = _tree(run)

    # Bad data with --overwrite: one line, exit 2, the finished run byte-identical.
    (tmp_path / "bad.jsonl").write_text('{"question": "Q?", "answer": \n')
    r = _cli([*args, "--overwrite", "--data", "bad.jsonl"], tmp_path)
    lines = _rendered_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: bad.jsonl: line 1"), r.stderr[-2000:]
    assert _tree(run) == before

    # What a SIGKILL during the final model save leaves, plus the lock of the killed process.
    (run / ".model.k2j4_x9a").mkdir()
    (run / ".model.k2j4_x9a" / "model.safetensors").write_bytes(b"partial")
    (run / ".summary.json.ab12cd34.tmp").write_text("{")
    (run / ".neuronscope-lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "unlearn"}))
    r = _cli([*args, "--overwrite", "--seed", "7"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in run.iterdir())
    assert names == [".neuronscope-run", "config.json", "history.json", "model", "splits.json", "summary.json", "train"]
    assert json.loads((run / "config.json").read_text())["seed"] == 7
    assert json.loads((run / ".neuronscope-run").read_text())["created"] >= marker["created"]
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob(".model.*"))
    # The new model is a different training run (seed 7), saved whole.
    assert _sha(run / "model" / "model.safetensors") != old_model


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_the_same_command_resumes(tmp_path):
    args = [*TRAIN, "--max-steps", "40", "--max-epochs", "100", "--batch-size", "1", "--checkpoint-every", "1",
            "--out", "run"]
    p = subprocess.Popen([sys.executable, "-m", "neuronscope", *args], cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "run" / "train" / "checkpoint" / "state.pt"
    deadline = time.time() + TIMEOUT
    while not state.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 130, err[-2000:]
    lines = _rendered_lines(err)
    assert lines[-1] == ("error: interrupted (Ctrl-C): the progress saved so far is kept in run; "
                         "run the same command again (without --overwrite) to resume"), err[-2000:]
    assert len([x for x in lines if x.startswith("error:")]) == 1 and "Traceback" not in err
    run = tmp_path / "run"
    assert state.exists() and not (run / "summary.json").exists() and not (run / ".neuronscope-lock").exists()

    r = _cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 40
    steps = [h["step"] for h in json.loads((run / "history.json").read_text()) if "loss" in h]
    assert steps == list(range(1, 41))


def test_python_dash_m_neuronscope_runs_main(tmp_path):
    r = _cli(["unlearn", "--lr", "nan", "--out", "x"], tmp_path)
    assert r.returncode == 2 and _rendered_lines(r.stderr) == ["error: --lr: must be a finite number, got nan"]
    assert not (tmp_path / "x").exists()


def _main(argv, capsys) -> tuple[int, list[str]]:
    from neuronscope import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return exc.value.code, [x for x in capsys.readouterr().err.splitlines() if x.strip()]


@pytest.mark.parametrize(
    "raised, code, line",
    [
        (ZeroDivisionError("boom"), 3, "error: internal error: ZeroDivisionError: boom (run with --debug for the traceback)"),
        (KeyboardInterrupt(), 130, "error: interrupted (Ctrl-C): nothing was written to {out}"),
        (OSError(errno.ENOSPC, "No space left on device", "{out}/model.safetensors"), 2,
         "error: {out}/model.safetensors: cannot write (No space left on device); files written before are intact"),
    ],
)
def test_main_exit_codes(tmp_path, monkeypatch, capsys, raised, code, line):
    """Internal error → 3, Ctrl-C → 130 with what was kept, full disk → 2; never 1."""
    from neuronscope import rundir
    from neuronscope.unlearning import run as run_mod

    out = tmp_path / "out"
    if isinstance(raised, OSError):
        raised = OSError(raised.errno, raised.strerror, raised.filename.format(out=out))

    def fake(out_, *a, **k):
        with rundir.prepare_run_dir(out_, command="unlearn"):
            raise raised

    monkeypatch.setattr(run_mod, "run_unlearning", fake)
    rc, lines = _main(["unlearn", "--model", "tiny-llama", "--out", str(out)], capsys)
    assert rc == code
    assert lines == [line.format(out=out)]
    assert not out.exists()

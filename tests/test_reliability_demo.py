"""``demo`` run folders through the real command line (issue 14), written against the issue's demands.

The demo is the study runner's preset (:func:`neuronscope.study.run_study`, which goes through
:func:`neuronscope.rundir.prepare_run_dir`):

* ``demo --overwrite`` into a folder that is not a neuronscope run: exit 2, one line, the
  user's file untouched;
* ``demo --overwrite --model no-such-dir`` on a finished demo run: exit 2, one line naming the
  model, the finished run byte-identical (nothing deleted, nothing half-written);
* a corrupt ``study.json`` in a run folder that ``report --methods`` continues: exit 2, one line
  naming the file (the demo itself never reads an old configuration: every stage is keyed by its
  inputs, so a damaged stage file is recomputed);
* a second ``demo`` into a run folder locked by a live process: exit 2 naming the holder;
* ``--seed`` beyond numpy's range, an absent ``--device``: exit 2 before anything exists.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_cli_errors import _rendered_lines  # noqa: E402

TIMEOUT = 900
MARK = '{"command": "demo", "version": "0.1.0", "created": "2026-01-01T00:00:00+00:00"}\n'

CASES = {
    "overwrite a folder that is not a run": (
        ["demo", "--model", "tiny-llama", "--quick", "--overwrite", "--out", "userdir"],
        ["userdir", "not a neuronscope run"], [],
    ),
    "overwrite a finished run with a missing model": (
        ["demo", "--model", "no-such-dir", "--quick", "--overwrite", "--out", "finished"],
        ["no-such-dir", "cannot load model"], [],
    ),
    "corrupt study.json in a run folder": (
        ["report", "--runs", "corrupt", "--methods", "gd", "--model", "tiny-llama", "--out", "table"],
        ["corrupt/study.json"], ["table"],
    ),
    "second writer into a locked run": (
        ["demo", "--model", "tiny-llama", "--quick", "--out", "locked"],
        ["locked", "locked by another neuronscope process"], [],
    ),
    "seed beyond numpy's range": (
        ["demo", "--model", "tiny-llama", "--quick", "--seed", str(2**70), "--out", "out"],
        ["--seed", str(2**70)], ["out"],
    ),
    "absent device": (
        ["demo", "--model", "tiny-llama", "--quick", "--device", "cuda:99", "--out", "out"],
        ["--device cuda:99"], ["out"],
    ),
}


def _inputs(d: Path, holder_pid: int) -> None:
    (d / "userdir").mkdir()
    (d / "userdir" / "precious.txt").write_text("x\n")
    fin = d / "finished"
    fin.mkdir()
    (fin / ".neuronscope-run").write_text(MARK)
    (fin / "summary.json").write_text('{"done": true}\n')
    (fin / "report.html").write_text("<html>finished</html>\n")
    (fin / "config.json").write_text('{"model": "tiny-llama"}\n')
    cor = d / "corrupt"
    cor.mkdir()
    (cor / ".neuronscope-run").write_text(MARK.replace('"demo"', '"study"'))
    (cor / "study.json").write_text('{"model": "tiny-llama", ')
    locked = d / "locked"
    locked.mkdir()
    (locked / ".neuronscope-run").write_text(MARK)
    (locked / "config.json").write_text('{"model": "tiny-llama"}\n')
    (locked / ".neuronscope-lock").write_text(json.dumps(
        {"pid": holder_pid, "host": socket.gethostname(), "command": "demo", "started": "2026-01-01T00:00:00+00:00"}))


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(d)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(d.rglob("*")) if p.is_file()}


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "neuronscope", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        dirs, before = {}, {}
        for i, name in enumerate(CASES):
            d = tmp_path_factory.mktemp(f"demo{i}")
            _inputs(d, holder.pid)
            dirs[name], before[name] = d, _snapshot(d)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_run, CASES[name][0], dirs[name]) for name in CASES}
            results = {name: f.result() for name, f in futures.items()}
    finally:
        holder.kill()
        holder.wait()
    return {"results": results, "dirs": dirs, "before": before, "holder": holder.pid}


@pytest.mark.parametrize("name", list(CASES))
def test_demo_bad_input_is_one_line_exit_2_and_nothing_lost(runs, name):
    _, expect, absent = CASES[name]
    r, d = runs["results"][name], runs["dirs"][name]
    detail = f"{name}: rc {r.returncode}\nstderr:\n{r.stderr[-3000:]}"
    assert r.returncode == 2, detail
    lines = _rendered_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, detail
    for s in expect:
        assert s in lines[0], f"{s!r} not in {lines[0]!r}"
    if name == "second writer into a locked run":
        assert f"pid {runs['holder']}" in lines[0]
    for rel in absent:
        assert not (d / rel).exists(), f"{name}: left {d / rel}"
    assert _snapshot(d) == runs["before"][name], f"{name}: files changed"

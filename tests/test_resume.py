"""A run killed with SIGKILL during unlearning resumes from its last checkpoint (issue 7).

An SSIUU run on the tiny Llama (float32, 4 steps, checkpoint every 2 steps, MCQA forget accuracy
after every epoch) is started in a subprocess and killed with SIGKILL as soon as its first checkpoint
appears. A second process resumes it; it must end with the same weights, loss history and
forget scores as an uninterrupted run. The same holds when the kill lands in the middle of a
checkpoint swap (only ``.checkpoint.old`` and a half-written temporary directory on disk), and
a resume under a different configuration is refused with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neuronscope.errors import ConfigError
from neuronscope.models import hf_state_dict, load_model
from neuronscope.unlearning import UnlearningConfig, unlearn

from factories import FORGET, RETAIN  # noqa: E402
# 4 forget items in batches of 2: 2 steps per epoch, 4 steps; never stops early.
CONFIG = dict(method="ssiuu", lr=1e-3, lam=1.0, max_epochs=2, batch_size=2, checkpoint_every=2, threshold=-1.0, seed=3)
TOTAL_STEPS = 4

_SCRIPT = """
import json, sys, time
import torch
from safetensors.torch import save_file
from neuronscope.data import QAItem
from neuronscope.models import hf_state_dict, load_model
from neuronscope.unlearning import UnlearningConfig, unlearn
from neuronscope.unlearning.trainer import METHODS

run_dir, weights_out, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
spec = json.loads(sys.argv[4])
cfg = UnlearningConfig(**spec["config"])
forget = [QAItem(*d) for d in spec["forget"]]
retain = [QAItem(*d) for d in spec["retain"]]
if slow:
    cls = METHODS[cfg.method]
    orig = cls.after_step
    def after_step(self, key):
        orig(self, key)
        time.sleep(slow)  # leave time to be killed between checkpoints; numerics unchanged
    cls.after_step = after_step
model = load_model("tiny-llama", seed=0)
print("loaded", flush=True)
unlearn(model, forget, retain, cfg, run_dir=run_dir, progress=False, resume=True)
save_file({k: v.contiguous() for k, v in hf_state_dict(model).items()}, weights_out)
print("done", flush=True)
"""


def _spec() -> str:
    def rows(items):
        return [[it.id, it.question, it.answer, list(it.false_options), it.entity] for it in items]

    return json.dumps({"config": CONFIG, "forget": rows(FORGET), "retain": rows(RETAIN)})


def _child(script: Path, run_dir: Path, weights: Path, slow: float) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(weights), str(slow), _spec()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _history(run_dir: Path) -> list[dict]:
    return _strip(json.loads((run_dir / "history.json").read_text()))


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same_history(got: list[dict], want: list[dict]) -> None:
    assert [h["step"] for h in got] == [h["step"] for h in want]
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k, v in w.items():
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=1e-5, abs=1e-7), (g["step"], k)
            else:
                assert g[k] == v, (g["step"], k)


def _assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run (no checkpoints needed): final weights, history, initial weights."""
    model = load_model("tiny-llama", seed=0)
    initial = {k: v.detach().clone() for k, v in hf_state_dict(model).items()}
    res = unlearn(model, FORGET, RETAIN, UnlearningConfig(**CONFIG), progress=False)
    assert res.steps == TOTAL_STEPS
    final = {k: v.detach().clone() for k, v in hf_state_dict(model).items()}
    return {"weights": final, "history": _strip(res.history), "initial": initial, "result": res}


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run killed with SIGKILL right after its first checkpoint appeared (a pristine copy)."""
    d = tmp_path_factory.mktemp("killed")
    script = d / "run_unlearn.py"
    script.write_text(_SCRIPT)
    run_dir = d / "run"
    weights = d / "final.safetensors"
    proc = _child(script, run_dir, weights, slow=1.0)
    ckpt = run_dir / "checkpoint" / "state.pt"
    deadline = time.monotonic() + 600
    try:
        while not ckpt.exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"run ended (rc {proc.returncode}) before its first checkpoint:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 600 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not weights.exists() and not (run_dir / "result.json").exists(), "the run finished before the kill"
    saved_step = torch.load(ckpt, weights_only=False)["state"]["step"]
    assert 2 <= saved_step < TOTAL_STEPS
    return {"script": script, "run_dir": run_dir}


def _copy(killed: dict, dest: Path) -> Path:
    shutil.copytree(killed["run_dir"], dest)
    return dest


def test_sigkill_during_unlearning_resumes_to_the_same_weights(tmp_path, killed, reference):
    run_dir = _copy(killed, tmp_path / "run")
    weights = tmp_path / "final.safetensors"
    proc = _child(killed["script"], run_dir, weights, slow=0.0)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "done" in out
    _assert_same_weights(load_file(str(weights)), reference["weights"])
    _assert_same_history(_history(run_dir), reference["history"])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == TOTAL_STEPS
    assert result["forget_score"] == reference["result"].forget_score
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")], "temporary checkpoint files left"


def test_kill_during_checkpoint_swap_resumes_from_the_old_checkpoint(tmp_path, killed, reference):
    # The state between "move the old checkpoint aside" and "move the new one in": only
    # .checkpoint.old is complete, and a half-written temporary directory lies next to it.
    run_dir = _copy(killed, tmp_path / "run")
    os.replace(run_dir / "checkpoint", run_dir / ".checkpoint.old")
    half = run_dir / ".checkpoint.half"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    model = load_model("tiny-llama", seed=0)
    res = unlearn(model, FORGET, RETAIN, UnlearningConfig(**CONFIG), run_dir=run_dir, progress=False)
    assert res.steps == TOTAL_STEPS
    _assert_same_weights(hf_state_dict(model), reference["weights"])
    _assert_same_history(_history(run_dir), reference["history"])


def test_resume_under_another_configuration_is_refused(tmp_path, killed, reference):
    run_dir = _copy(killed, tmp_path / "run")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    fresh = load_model("tiny-llama", seed=0)
    other = UnlearningConfig(**{**CONFIG, "lr": 5e-4})
    with pytest.raises(ConfigError) as exc:
        unlearn(fresh, FORGET, RETAIN, other, run_dir=run_dir, progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and "lr=" in msg and str(run_dir / "checkpoint") in msg
    # Nothing was trained and nothing in the run directory changed (config.json included).
    for k, v in hf_state_dict(fresh).items():
        assert torch.equal(v, reference["initial"][k])
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in before), [str(k) for k in before if after[k] != before[k]]

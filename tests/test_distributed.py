"""Data parallelism (neuronscope.distributed, issue 15): 2 gloo processes on the CPU against one.

The 2-process runs happen once per module: this process and one ``torch.multiprocessing`` child
join a gloo process group (as under ``accelerate launch``) and save their results; the one-process
references are computed here with the same global batches. Tiny random Llama in float64, so
the only differences are the order of floating-point sums (batches split differently).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from factories import FORGET, RETAIN, run_two_processes
from neuronscope import distributed
from neuronscope.data import QAItem
from neuronscope.errors import ConfigError

#: Six forget items: with batch_size 4 the partition is one batch of 4 and one of 2, so both
#: processes hold shares with different numbers of answer tokens.
FORGET6 = FORGET + [
    QAItem("f4", "Who painted the Mona Lisa?", "Leonardo da Vinci", ("Picasso", "Monet"), "Mona Lisa"),
    QAItem("f5", "What is the chemical symbol of gold?", "Au", ("Ag", "Fe"), "gold"),
]
QUESTIONS = [it.question for it in FORGET6 + RETAIN]
ANSWERS = [it.answer for it in FORGET6 + RETAIN]

#: name -> UnlearningConfig fields of the compared runs (4 steps: both batches are revisited, so
#: the SSIUU penalty is active in steps 3 and 4).
JOBS = {
    "gd": dict(method="gd", lr=2e-3, batch_size=4, max_steps=4),
    "ssiuu_exact": dict(method="ssiuu", lr=2e-3, batch_size=4, max_steps=4, lam=10.0, ssiuu_grad="exact"),
    "ssiuu_fo": dict(method="ssiuu", lr=2e-3, batch_size=4, max_steps=4, lam=10.0, ssiuu_grad="first_order"),
}
DTYPE = torch.float64


_CACHE: dict = {}


def _model():
    """The tiny model with its initial weights (loaded once per process, then reset in place)."""
    from neuronscope.models import load_model

    if "model" not in _CACHE:
        _CACHE["model"] = load_model("tiny-llama", dtype=DTYPE, seed=3)
        _CACHE["init"] = _weights(_CACHE["model"])
    model = _CACHE["model"]
    with torch.no_grad():
        for k, p in model.hf_model.named_parameters():
            p.copy_(_CACHE["init"][k])
    return model


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.hf_model.named_parameters()}


def _unlearn(model, job: str, **kw):
    from neuronscope.unlearning import UnlearningConfig, unlearn

    cfg = UnlearningConfig(**{**JOBS[job], **kw.pop("cfg", {})})
    # A forget score that never reaches the threshold: every run takes max_steps steps.
    return unlearn(model, FORGET6, RETAIN, cfg, progress=False, eval_fn=lambda m: 1.0, **kw)


def _worker(rank: int, out_dir: Path) -> None:
    from neuronscope.attribution import AttributionConfig, attribute

    results = {}
    for job in JOBS:
        model = _model()
        res = _unlearn(model, job)
        results[job] = {"weights": _weights(model), "history": res.history}
    # Resume: 2 steps with a checkpoint every step, then continue to 4 in a new call.
    model = _model()
    _unlearn(model, "ssiuu_exact", run_dir=out_dir / "run", cfg={"max_steps": 2, "checkpoint_every": 1})
    model = _model()
    res = _unlearn(model, "ssiuu_exact", run_dir=out_dir / "run", cfg={"checkpoint_every": 1}, resume=True)
    results["resumed"] = {"weights": _weights(model), "history": res.history}
    attr = attribute(_model(), QUESTIONS, ANSWERS, AttributionConfig(batch_size=3), progress=False)
    results["attribution"] = {"max": attr.flat("max"), "min": attr.flat("min"), "target": attr.target_value}
    try:
        _unlearn(_model(), "gd", cfg={"method": "npo"})
        results["npo_refused"] = ""
    except ConfigError as exc:
        results["npo_refused"] = str(exc)
    torch.save(results, out_dir / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory) -> dict:
    """Process 0 runs here (its imports are already paid), process 1 in a spawned child."""
    out = tmp_path_factory.mktemp("ddp")
    run_two_processes(_worker, out)
    assert not distributed.active()
    res = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    res[0]["out"] = out
    res[0]["rank1"] = res[1]
    return res[0]


def _assert_weights_close(a: dict, b: dict, rtol: float) -> float:
    worst = 0.0
    for k in a:
        scale = float(b[k].abs().max()) or 1.0
        err = float((a[k] - b[k]).abs().max()) / scale
        worst = max(worst, err)
        assert err <= rtol, f"{k}: max |Δ| / max |w| = {err:.3g}"
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("job", list(JOBS))
def test_two_processes_match_one(two_procs, job, monkeypatch):
    """GD and SSIUU (exact, first order) on 2 processes = 1 process with the same global batch."""
    from neuronscope.unlearning import ssiuu

    model = _model()
    before = _weights(model)
    if job == "ssiuu_exact":
        # the one-process shortcut (forget part of ∇L_GD from the attribution's backward) sums in
        # another order; it is compared with the data-parallel path separately below
        with monkeypatch.context() as mp:
            mp.setattr(ssiuu, "_SHARE_BACKWARD", True)
            _unlearn(model, job)
            shortcut = _weights(model)
        model = _model()
        monkeypatch.setattr(ssiuu, "_SHARE_BACKWARD", False)
    res = _unlearn(model, job)
    ref = _weights(model)
    got = two_procs[job]["weights"]
    moved = max(float((ref[k] - before[k]).abs().max()) for k in ref)
    assert moved > 1e-3  # the runs really trained
    # float64: measured ≤ 1e-13 relative on the scale branch; after the merge with the architecture
    # work the worst is 2.8e-7 (GD, layer-0 up_proj) — float32-level rounding somewhere in the bridge's
    # path that depends on the batch shape (the shards pad differently); not yet explained.
    _assert_weights_close(got, ref, rtol=1e-6)
    if job == "ssiuu_exact":  # measured 1.005e-6 (layer-0 gate_proj) after 4 steps
        _assert_weights_close(shortcut, got, rtol=1e-5)
    # both processes hold the same weights
    _assert_weights_close(two_procs["rank1"][job]["weights"], got, rtol=0.0)
    # the history is the global one: losses, terms and the SSIUU negative set agree
    for r1, r2 in zip(res.history, two_procs[job]["history"]):
        assert set(r1) == set(r2)
        for k, v in r1.items():
            if k == "seconds":
                continue
            assert v == pytest.approx(r2[k], rel=1e-6, abs=1e-12), (k, r1["step"])
    if job.startswith("ssiuu"):
        assert any(r.get("ssiuu_penalty", 0.0) > 0 for r in res.history)


@pytest.mark.slow
def test_two_process_resume(two_procs, monkeypatch):
    """A 2-process run interrupted after 2 steps and resumed ends with the uninterrupted weights."""
    from neuronscope.unlearning import ssiuu

    monkeypatch.setattr(ssiuu, "_SHARE_BACKWARD", False)  # the data-parallel path's arithmetic
    model = _model()
    _unlearn(model, "ssiuu_exact")
    _assert_weights_close(two_procs["resumed"]["weights"], _weights(model), rtol=1e-6)
    out = two_procs["out"] / "run"
    hist = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in hist] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_two_process_attribution(two_procs):
    """Items sharded over 2 processes and gathered = one process (per-sample max/min, P(y|x))."""
    from neuronscope.attribution import AttributionConfig, attribute

    ref = attribute(_model(), QUESTIONS, ANSWERS, AttributionConfig(batch_size=3), progress=False)
    got = two_procs["attribution"]
    for which in ("max", "min"):
        want = ref.flat(which)
        assert got[which].shape == want.shape
        torch.testing.assert_close(got[which], want, rtol=1e-6, atol=1e-9 * float(want.abs().max()))
    torch.testing.assert_close(got["target"], ref.target_value, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(two_procs["rank1"]["attribution"]["max"], got["max"], rtol=0.0, atol=0.0)


@pytest.mark.slow
def test_unsupported_method_refused(two_procs):
    assert two_procs["npo_refused"].startswith("method: npo does not run data-parallel")


def test_shard_and_launch_checks(monkeypatch):
    """One process: shards are everything; FSDP / DeepSpeed / mixed precision are refused in one line."""
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.world_size() == 1 and distributed.is_main()
    distributed.check_batch_sizes([1, 4])  # one process: any batch works
    for env, word in (
        ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed_precision=bf16"),
    ):
        with pytest.raises(ConfigError, match=word) as info:
            distributed.check_launch_env(env)
        assert "\n" not in str(info.value)
    distributed.check_launch_env({"ACCELERATE_MIXED_PRECISION": "no"})


def test_shard_ranges_cover_items(monkeypatch):
    """Contiguous shares of n items over w processes: disjoint, in order, sizes differ by ≤ 1."""
    for w in (2, 3, 4):
        for n in range(0, 11):
            ranges = []
            for r in range(w):
                monkeypatch.setattr(distributed, "world_size", lambda w=w: w)
                monkeypatch.setattr(distributed, "rank", lambda r=r: r)
                ranges.append(distributed.shard_range(n))
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [hi - lo for lo, hi in ranges]
            assert max(sizes) - min(sizes) <= 1

"""Faults and interruptions leave the model and the disk as they were (issue 7).

* Hook hygiene: an exception inside any analysis (attribution forward and backward, logit lens,
  ablation, activation means, MCQA evaluation, an unlearning step of each method) leaves no
  hook on the bridge, no extra torch module hook, no gradient, and the ``requires_grad`` /
  train-mode state of before; the model still computes the same logits.
* Divergence: a NaN/inf loss stops the run with a one-line :class:`DivergenceError`; the bad
  step is not applied and the last good checkpoint is kept.
* Atomic writes: a failure while writing a result, an attribution file, a saved model or a
  checkpoint leaves the previous file (or nothing) and no temporary file behind.
* Determinism: the same seed gives the same unlearned weights, attributions, splits and
  attack draws (also in another process with another hash seed).

All on the tiny random Llama (2 layers, d_model 64).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuronscope.ablation import activation_means, ablate
from neuronscope.attacks import draw_attack_items
from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute
from neuronscope.data import load_faithun, split_faithun
from neuronscope.errors import DivergenceError, NeuronscopeError, atomic_path, write_json_atomic, write_text_atomic
from neuronscope.evaluation import mcqa_evaluate
from neuronscope.lens import logit_lens, logit_lens_report
from neuronscope.models import clone_model, hf_state_dict, load_model
from neuronscope.unlearning import UnlearningConfig, unlearn
from neuronscope.unlearning.trainer import METHODS

from factories import FORGET, RETAIN  # noqa: E402
QS = [it.question for it in FORGET]
AS = [it.answer for it in FORGET]


class Injected(RuntimeError):
    """The fault injected into an analysis."""


@pytest.fixture(scope="module")
def model(tiny_llama):
    """A private copy (float64) shared by the read-only analyses of this module."""
    return clone_model(tiny_llama)


# ----------------------------------------------------------------------------- helpers


def _module_hook_counts(m) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, mod in m.bridge.named_modules():
        out[name] = tuple(
            len(getattr(mod, attr, {}) or {})
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        )
    return out


def _snapshot(m) -> dict:
    # TransformerLens wires its own permanent capture hooks on the first forward pass of a
    # bridge; run one so that they are part of the reference state.
    _logits(m)
    params = list(m.bridge.parameters())
    return {
        "requires_grad": [p.requires_grad for p in params],
        "training": m.bridge.training,
        "module_hooks": _module_hook_counts(m),
    }


def _assert_clean(m, before: dict) -> None:
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in m.bridge.hook_dict.values()), "bridge hooks left attached"
    after = _snapshot(m)
    assert after["requires_grad"] == before["requires_grad"], "requires_grad state not restored"
    assert after["training"] == before["training"], "train/eval mode not restored"
    assert after["module_hooks"] == before["module_hooks"], "torch module hooks left attached"
    assert all(p.grad is None for p in m.bridge.parameters()), "gradients left on parameters"


def _logits(m) -> torch.Tensor:
    from neuronscope.prompts import encode_qa

    b = encode_qa(m.tokenizer, QS[:2], AS[:2])
    with torch.no_grad():
        return m.bridge(b.input_ids, attention_mask=b.attention_mask)


@pytest.fixture
def odd_grad_state(model):
    """A non-default requires_grad pattern (embeddings frozen), restored after the test."""
    emb = model.hf_model.get_input_embeddings().weight
    emb.requires_grad_(False)
    yield
    emb.requires_grad_(True)


@contextlib.contextmanager
def bomb(m, module_type: str = "down", layer: int = 1, armed: dict | None = None):
    """Make one HF linear raise :class:`Injected` in its forward (while ``armed['on']``, if given)."""
    lin = m.linear(module_type, layer)
    orig = lin.forward

    def forward(*args, **kwargs):
        if armed is None or armed["on"]:
            raise Injected(f"injected fault in {module_type}.{layer}")
        return orig(*args, **kwargs)

    lin.forward = forward
    try:
        yield
    finally:
        del lin.forward  # back to the class's forward, no instance attribute left


# ----------------------------------------------------------------------------- hook hygiene


def test_attribution_forward_fault_leaves_model_clean(model, odd_grad_state):
    ref = _logits(model)
    before = _snapshot(model)
    with bomb(model), pytest.raises(Injected):
        attribute(model, QS, AS, AttributionConfig(batch_size=2), progress=False)
    _assert_clean(model, before)
    torch.testing.assert_close(_logits(model), ref, rtol=0, atol=0)


def test_attribution_backward_fault_leaves_model_clean(model, odd_grad_state, monkeypatch):
    import neuronscope.attribution as attr_mod

    before = _snapshot(model)

    def boom(self, a):
        raise Injected("injected fault in the gradient hook")

    monkeypatch.setattr(attr_mod._Reducer, "__call__", boom)
    with pytest.raises(Injected):
        attribute(model, QS, AS, AttributionConfig(batch_size=2), progress=False)
    _assert_clean(model, before)
    monkeypatch.undo()
    # Attribution still works and matches a run on an untouched copy.
    a = attribute(model, QS[:2], AS[:2], progress=False)
    b = attribute(clone_model(model), QS[:2], AS[:2], progress=False)
    for k in a.keys:
        torch.testing.assert_close(a.max[k], b.max[k], rtol=0, atol=0)


def test_logit_lens_fault_leaves_model_clean(model, odd_grad_state):
    before = _snapshot(model)
    with bomb(model, "up", 1), pytest.raises(Injected):
        logit_lens(model, FORGET)
    _assert_clean(model, before)


def test_ablation_fault_leaves_model_clean(model, odd_grad_state):
    ref = _logits(model)
    before = _snapshot(model)
    neurons = [("down", 0, 3), ("q", 1, 5), ("gate", 1, 7)]
    # A fault raised by the caller inside the ablation block ...
    with pytest.raises(Injected):
        with ablate(model, neurons):
            raise Injected("caller fault")
    _assert_clean(model, before)
    # ... and one raised inside the forward pass of an evaluation under ablation.
    with bomb(model, "o", 1), pytest.raises(Injected):
        with ablate(model, neurons):
            mcqa_evaluate(model, FORGET)
    _assert_clean(model, before)
    with bomb(model, "o", 1), pytest.raises(Injected):
        activation_means(model, QS, AS)
    _assert_clean(model, before)
    torch.testing.assert_close(_logits(model), ref, rtol=0, atol=0)


def test_evaluation_fault_restores_train_mode(model):
    model.bridge.train()
    try:
        before = _snapshot(model)
        with bomb(model), pytest.raises(Injected):
            mcqa_evaluate(model, FORGET)
        _assert_clean(model, before)
        assert model.bridge.training
    finally:
        model.bridge.eval()


@pytest.mark.parametrize("method", ["gd", "npo", "rmu", "klue", "ssiuu"])
def test_unlearning_step_fault_leaves_model_clean(tiny_llama, method, monkeypatch):
    m = clone_model(tiny_llama)
    m.hf_model.get_input_embeddings().weight.requires_grad_(False)
    before = _snapshot(m)
    armed = {"on": False}
    cls = METHODS[method]
    orig_loss = cls.loss

    def loss(self, *args, **kwargs):
        armed["on"] = True  # the fault fires inside the training step, after setup
        return orig_loss(self, *args, **kwargs)

    monkeypatch.setattr(cls, "loss", loss)
    cfg = UnlearningConfig(method=method, lr=1e-3, max_epochs=1, batch_size=2, klue_n=1, threshold=-1.0)
    # q of layer 0 runs in every forward, also RMU's truncated one.
    with bomb(m, "q", 0, armed), pytest.raises(Injected):
        unlearn(m, FORGET, RETAIN, cfg, eval_fn=lambda _m: 1.0, progress=False)
    assert armed["on"], "the fault was not reached inside a training step"
    _assert_clean(m, before)


def test_fault_after_backward_clears_gradients(tiny_llama, monkeypatch):
    m = clone_model(tiny_llama)
    before = _snapshot(m)

    def step(self, *a, **k):
        raise Injected("injected fault in the optimiser step")

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    cfg = UnlearningConfig(method="ssiuu", lr=1e-3, max_epochs=1, batch_size=2, threshold=-1.0)
    with pytest.raises(Injected):
        unlearn(m, FORGET, RETAIN, cfg, eval_fn=lambda _m: 1.0, progress=False)
    _assert_clean(m, before)
    # No weight changed: the step never happened.
    for k, v in hf_state_dict(m).items():
        torch.testing.assert_close(v, hf_state_dict(tiny_llama)[k], rtol=0, atol=0)


# ----------------------------------------------------------------------------- divergence


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tiny_llama, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    m = clone_model(tiny_llama)
    before = _snapshot(m)
    cls = METHODS["gd"]
    orig_loss = cls.loss
    calls = {"n": 0}

    def loss(self, *args, **kwargs):
        calls["n"] += 1
        value, terms = orig_loss(self, *args, **kwargs)
        if calls["n"] == 3:
            value = value * float("nan")
        return value, terms

    monkeypatch.setattr(cls, "loss", loss)
    run = tmp_path / "run"
    cfg = UnlearningConfig(method="gd", lr=1e-3, max_epochs=3, batch_size=2, checkpoint_every=1, threshold=-1.0)
    with pytest.raises(DivergenceError) as exc:
        unlearn(m, FORGET, RETAIN, cfg, run_dir=run, eval_fn=lambda _m: 1.0, progress=False)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "nan" in msg and "step 3" in msg and str(run / "checkpoint") in msg
    state = torch.load(run / "checkpoint" / "state.pt", weights_only=False)
    assert state["state"]["step"] == 2
    # The bad step was not applied: the model holds exactly the checkpointed step-2 weights.
    saved = load_file(str(run / "checkpoint" / "model.safetensors"))
    live = hf_state_dict(m)  # checkpoints hold the plain HF names (models.save_weights)
    assert saved and all(torch.equal(v, live[k]) for k, v in saved.items())
    assert not (run / "result.json").exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    _assert_clean(m, before)


def test_huge_learning_rate_diverges_with_one_line_error(tmp_path):
    m = load_model("tiny-llama")  # float32: a 1e30 step overflows
    cfg = UnlearningConfig(method="gd", lr=1e30, max_epochs=5, batch_size=2, checkpoint_every=1, threshold=-1.0)
    with pytest.raises(DivergenceError) as exc:
        unlearn(m, FORGET, RETAIN, cfg, run_dir=tmp_path / "run", eval_fn=lambda _m: 1.0, progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and "loss is" in msg and "lr 1e+30" in msg
    assert (tmp_path / "run" / "checkpoint" / "state.pt").exists()
    assert not (tmp_path / "run" / "result.json").exists()


# ----------------------------------------------------------------------------- atomic writes


def _no_temp_files(d: Path) -> bool:
    return not [p for p in d.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_failed_text_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    write_text_atomic(target, "old report")
    real = Path.write_text

    def half_then_crash(self, data, *a, **k):
        real(self, data[: len(data) // 2], *a, **k)
        raise Injected("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(Injected):
        write_text_atomic(target, "a new, longer report")
    monkeypatch.undo()
    assert target.read_text() == "old report"
    assert _no_temp_files(tmp_path)
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "summary.json", {"x": object()})
    assert not (tmp_path / "summary.json").exists() and _no_temp_files(tmp_path)


def test_failed_attribution_save_leaves_nothing(model, tmp_path, monkeypatch):
    import safetensors.torch

    res = attribute(model, QS[:2], AS[:2], progress=False)
    out = tmp_path / "a.safetensors"
    real = safetensors.torch.save_file

    def crash(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"partial")
        raise Injected("killed while writing")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(Injected):
        res.save(out)
    assert not out.exists() and _no_temp_files(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    res.save(out)
    back = NeuronAttribution.load(out)
    assert back.keys == res.keys and _no_temp_files(tmp_path)


def test_failed_model_save_keeps_the_previous_directory(model, tmp_path, monkeypatch):
    d = tmp_path / "saved"
    model.save(d)
    before = sorted(p.name for p in d.iterdir())

    def crash(*a, **k):
        raise Injected("killed while saving the tokenizer")

    monkeypatch.setattr(model.tokenizer, "save_pretrained", crash)
    with pytest.raises(Injected):
        model.save(d)
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]
    with pytest.raises(Injected):
        with monkeypatch.context() as mp:
            mp.setattr(model.tokenizer, "save_pretrained", crash)
            model.save(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and [p.name for p in tmp_path.iterdir()] == ["saved"]


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tiny_llama, tmp_path, monkeypatch):
    import neuronscope.unlearning.trainer as trainer

    m = clone_model(tiny_llama)
    real = trainer.torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(f).write_bytes(b"partial")
            raise Injected("killed while writing the second checkpoint")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(trainer.torch, "save", save)
    run = tmp_path / "run"
    cfg = UnlearningConfig(method="gd", lr=1e-3, max_epochs=2, batch_size=2, checkpoint_every=1, threshold=-1.0)
    with pytest.raises(Injected):
        unlearn(m, FORGET, RETAIN, cfg, run_dir=run, eval_fn=lambda _m: 1.0, progress=False)
    monkeypatch.undo()
    state = torch.load(run / "checkpoint" / "state.pt", weights_only=False)
    assert state["state"]["step"] == 1
    assert _no_temp_files(run)


def test_unwritable_output_directory_is_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(NeuronscopeError) as exc:
        write_json_atomic(blocker / "sub" / "x.json", {"a": 1})
    assert "\n" not in str(exc.value) and str(blocker / "sub") in str(exc.value)
    with pytest.raises(NeuronscopeError):
        with atomic_path(blocker / "dir", is_dir=True):
            pass
    assert blocker.read_text() == "not a directory"
    # The output path is an existing directory (or, for a directory output, a file).
    taken = tmp_path / "taken"
    (taken / "inside").mkdir(parents=True)
    with pytest.raises(NeuronscopeError) as exc:
        write_text_atomic(taken, "report")
    assert "\n" not in str(exc.value) and str(taken) in str(exc.value)
    with pytest.raises(NeuronscopeError):
        with atomic_path(blocker, is_dir=True) as tmp:
            (tmp / "weights").write_text("w")
    assert (taken / "inside").is_dir() and blocker.read_text() == "not a directory"
    assert _no_temp_files(tmp_path)


def test_successful_writes_leave_no_temporary_files(model, tmp_path):
    res = logit_lens_report({"a": model}, FORGET, tmp_path / "lens")
    assert json.loads(res["json"].read_text())["models"]["a"]["n_items"] >= 1
    attribute(model, QS[:2], AS[:2], progress=False).save(tmp_path / "attr" / "x.safetensors")
    assert _no_temp_files(tmp_path)
    mode = os.stat(res["json"]).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# ----------------------------------------------------------------------------- determinism


def _weights(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in hf_state_dict(m).items()}


def test_same_seed_same_unlearned_weights(tiny_llama):
    def run(seed):
        m = clone_model(tiny_llama)
        cfg = UnlearningConfig(method="ssiuu", lr=1e-3, max_epochs=1, batch_size=2, seed=seed, threshold=-1.0)
        r = unlearn(m, FORGET, RETAIN, cfg, progress=False)
        return _weights(m), [{k: v for k, v in h.items() if k != "seconds"} for h in r.history]

    w1, h1 = run(0)
    w2, h2 = run(0)
    w3, h3 = run(5)
    assert h1 == h2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert h1 != h3 or any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_same_seed_same_attribution_and_model(model):
    a = attribute(model, QS, AS, AttributionConfig(batch_size=3), progress=False)
    b = attribute(model, QS, AS, AttributionConfig(batch_size=3), progress=False)
    fresh = load_model("tiny-llama", dtype=torch.float64, seed=0)
    c = attribute(fresh, QS, AS, AttributionConfig(batch_size=3), progress=False)
    for k in a.keys:
        assert torch.equal(a.max[k], b.max[k]) and torch.equal(a.min[k], b.min[k])
        assert torch.equal(a.max[k], c.max[k]) and torch.equal(a.min[k], c.min[k])
    assert torch.equal(a.target_value, c.target_value)
    other = load_model("tiny-llama", dtype=torch.float64, seed=1)
    d = attribute(other, QS[:1], AS[:1], progress=False)
    assert not torch.equal(a.max[a.keys[0]][:1], d.max[a.keys[0]])


_SPLIT_SCRIPT = """
import json
from neuronscope.data import load_faithun, split_faithun
from neuronscope.attacks import draw_attack_items
items = load_faithun()
s = split_faithun(items, seed=3)
train, rest = draw_attack_items(s.forget, s.forget, 0.3, 7)
print(json.dumps({"splits": s.to_dict(), "train": [it.id for it in train],
                  "options": [items[i].options(2) for i in range(5)]}))
"""


def test_same_seed_same_splits_draws_and_option_order_across_processes():
    items = load_faithun()
    s = split_faithun(items, seed=3)
    assert s.to_dict() == split_faithun(list(items), seed=3).to_dict()
    assert s.to_dict() != split_faithun(items, seed=4).to_dict()
    train, _ = draw_attack_items(s.forget, s.forget, 0.3, 7)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", _SPLIT_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert other["splits"] == s.to_dict()
    assert other["train"] == [it.id for it in train]
    assert other["options"] == [items[i].options(2) for i in range(5)]
    assert math.isclose(len(s.forget) / len(items), 0.05, abs_tol=0.01)

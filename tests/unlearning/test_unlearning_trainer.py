"""The shared loop: early stopping, data order, determinism, checkpoint/resume, divergence, finetune."""

from __future__ import annotations

import json

import pytest
import torch

from neuronscope.data import InstructionItem
from neuronscope.errors import ConfigError, DivergenceError
from neuronscope.evaluation import mcqa_evaluate
from neuronscope.models import clone_model
from neuronscope.unlearning import UnlearningConfig, finetune, unlearn
from neuronscope.unlearning import trainer as trainer_mod
from neuronscope.unlearning.losses import GD
from neuronscope.unlearning.ssiuu import SSIUU


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.hf_model.parameters()]


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# ----------------------------------------------------------------------------- early stopping


def test_early_stop_at_first_score_below_threshold(tiny, forget, retain):
    scores = iter([0.8, 0.6, 0.3, 0.2])
    cfg = UnlearningConfig(method="ga", lr=1e-4, batch_size=5, max_epochs=10, threshold=0.33)
    res = unlearn(tiny, forget, retain, cfg, eval_fn=lambda m: next(scores), progress=False)
    assert res.reached and res.steps == 2 and res.epochs == 2
    assert [h["forget_acc"] for h in res.history if "forget_acc" in h] == [0.8, 0.6, 0.3]
    assert res.initial_forget_score == 0.8 and res.forget_score == 0.3
    assert res.seconds_per_step > 0


def test_no_step_when_already_below_threshold(tiny, forget, retain):
    before = _weights(tiny)
    res = unlearn(tiny, forget, retain, UnlearningConfig(threshold=1.0), progress=False)
    assert res.reached and res.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(tiny)))


def test_default_score_is_mcqa_accuracy_of_forget_set(tiny, forget, retain):
    expected = mcqa_evaluate(tiny, forget).accuracy
    res = unlearn(tiny, forget, retain, UnlearningConfig(max_steps=1, threshold=-1.0), progress=False)
    assert res.history[0]["forget_acc"] == expected
    assert res.steps == 1 and not res.reached
    assert res.history[-1]["forget_acc"] == mcqa_evaluate(tiny, forget).accuracy  # evaluated after the last step


def test_eval_every_n_steps_and_after_the_last(tiny, forget, retain):
    calls = []
    cfg = UnlearningConfig(method="gd", lr=1e-4, batch_size=2, max_epochs=1, eval_every=2, threshold=-1.0)
    res = unlearn(tiny, forget, retain, cfg, eval_fn=lambda m: calls.append(1) or 0.5, progress=False)
    assert res.steps == 3  # 5 items, batches of 2
    assert [h["step"] for h in res.history if "forget_acc" in h] == [0, 2, 3]


# ----------------------------------------------------------------------------- data order


def test_fixed_partition_and_seeded_order():
    items = list(range(7))
    plan = trainer_mod._Plan(items, list(range(100, 105)), 3, seed=0, fixed=True)
    ident = lambda x: x  # noqa: E731
    parts = {tuple(b) for _, b in plan.epoch_batches(0, ident)}
    assert sorted(len(p) for p in parts) == [1, 3, 3]
    assert sorted(i for p in parts for i in p) == items
    orders = [[k for k, _ in plan.epoch_batches(e, ident)] for e in range(6)]
    assert all({tuple(b) for _, b in plan.epoch_batches(e, ident)} == parts for e in range(6))  # same batches
    assert len({tuple(o) for o in orders}) > 1  # shuffled between epochs
    assert orders == [[k for k, _ in trainer_mod._Plan(items, [], 3, 0, fixed=True).epoch_batches(e, ident)] for e in range(6)]
    # retain stream: step s takes items s·B … s·B+B−1 of concatenated seeded permutations
    stream = [i for s in range(5) for i in plan.retain_batch(s)]
    assert sorted(stream[:5]) == sorted(stream[5:10]) == list(range(100, 105))
    assert plan.retain_batch(3) == trainer_mod._Plan(items, list(range(100, 105)), 3, 0, fixed=True).retain_batch(3)


def test_same_seed_same_weights_other_seed_other_weights(tiny_llama, forget, retain):
    cfg = UnlearningConfig(method="gd", lr=1e-3, batch_size=2, max_epochs=1, max_steps=2, threshold=-1.0)
    a, b, c = clone_model(tiny_llama), clone_model(tiny_llama), clone_model(tiny_llama)
    unlearn(a, forget, retain, cfg, progress=False)
    unlearn(b, forget, retain, cfg, progress=False)
    unlearn(c, forget, retain, cfg.replace(seed=1), progress=False)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c)))


# ----------------------------------------------------------------------------- checkpoints


def test_resume_after_kill_gives_the_same_final_weights(tiny_llama, forget, retain, tmp_path, monkeypatch):
    cfg = UnlearningConfig(
        method="ssiuu", lr=1e-3, lam=1.0, ssiuu_target="logprob", ssiuu_anchor="batch", batch_size=2, max_epochs=2,
        threshold=-1.0, checkpoint_every=2,
    )
    forget = forget[:4]  # two forget batches, two epochs: 4 steps, checkpoints after steps 2 and 4
    ref = clone_model(tiny_llama)
    res_ref = unlearn(ref, forget, retain, cfg, progress=False)
    assert res_ref.steps == 4 and any(h.get("ssiuu_penalty", 0) > 0 for h in res_ref.history)

    calls = {"n": 0}
    orig = SSIUU.after_step

    def killed(self, key):
        orig(self, key)
        calls["n"] += 1
        if calls["n"] == 3:  # killed inside step 3, after its weight update (last checkpoint: step 2)
            raise KeyboardInterrupt

    monkeypatch.setattr(SSIUU, "after_step", killed)
    with pytest.raises(KeyboardInterrupt):
        unlearn(clone_model(tiny_llama), forget, retain, cfg, run_dir=tmp_path, progress=False)
    monkeypatch.setattr(SSIUU, "after_step", orig)
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=False)
    assert state["state"]["step"] == 2 and set(state["method"]["cache"]) == {0, 1}

    resumed = clone_model(tiny_llama)  # the initial model, as the caller passes it again
    res = unlearn(resumed, forget, retain, cfg, run_dir=tmp_path, progress=False)
    assert res.steps == 4
    assert all(torch.equal(x, y) for x, y in zip(_weights(ref), _weights(resumed)))
    assert _strip(res.history) == _strip(res_ref.history)
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 4
    assert UnlearningConfig.load(tmp_path / "config.json") == cfg


def test_checkpoint_from_other_config_is_refused(tiny, forget, retain, tmp_path):
    cfg = UnlearningConfig(method="gd", lr=1e-3, batch_size=5, max_epochs=1, threshold=-1.0, checkpoint_every=1)
    unlearn(clone_model(tiny), forget, retain, cfg, run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"checkpoint was written with lr=0.001"):
        unlearn(tiny, forget, retain, cfg.replace(lr=2e-3), run_dir=tmp_path, progress=False)
    # a larger epoch budget continues the same run
    res = unlearn(tiny, forget, retain, cfg.replace(max_epochs=2), run_dir=tmp_path, progress=False)
    assert res.steps == 2


def test_nan_loss_raises_divergence_and_keeps_last_good_checkpoint(tiny, forget, retain, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    calls = {"n": 0}
    orig = GD.loss

    def loss(self, *args):
        out, terms = orig(self, *args)
        calls["n"] += 1
        return (out * float("nan") if calls["n"] == 3 else out), terms

    monkeypatch.setattr(GD, "loss", loss)
    cfg = UnlearningConfig(method="gd", lr=1e-3, batch_size=2, max_epochs=3, threshold=-1.0, checkpoint_every=1)
    with pytest.raises(DivergenceError) as info:
        unlearn(tiny, forget, retain, cfg, run_dir=tmp_path, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "nan" in msg and "step 3" in msg and str(tmp_path / "checkpoint") in msg
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=False)
    assert state["state"]["step"] == 2
    saved = load_file(str(tmp_path / "checkpoint" / "model.safetensors"))
    from neuronscope.models import hf_state_dict

    now = hf_state_dict(tiny)  # checkpoints hold plain HF names
    assert set(saved) == set(now)
    for k, v in saved.items():  # the NaN step was not applied; the checkpoint holds the current weights
        assert torch.equal(v, now[k])
    assert all(torch.isfinite(p).all() for p in tiny.hf_model.parameters())


def test_nan_gradient_raises_before_the_update(tiny, forget, retain, monkeypatch):
    def poison(self, model):
        model.linear("up", 1).weight.grad[0, 0] = float("inf")

    monkeypatch.setattr(GD, "after_backward", poison)
    before = _weights(tiny)
    with pytest.raises(DivergenceError, match="gradient norm is inf"):
        unlearn(tiny, forget, retain, UnlearningConfig(method="gd", batch_size=5, threshold=-1.0), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(tiny)))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw, field",
    [({"lr": 0.0}, "lr"), ({"lr": -1e-5}, "lr"), ({"lam": -0.1}, "lam"), ({"method": "xyz"}, "method"),
     ({"batch_size": 0}, "batch_size"), ({"ssiuu_grad": "second"}, "ssiuu_grad"), ({"beta": 0}, "beta")],
)
def test_bad_config_is_one_line_naming_the_field(kw, field):
    with pytest.raises(ConfigError) as info:
        UnlearningConfig(**kw)
    assert str(info.value).startswith(f"{field}:") and "\n" not in str(info.value)


def test_config_json_round_trip_and_unknown_field(tmp_path):
    cfg = UnlearningConfig(method="ssiuu", lam=1e-4, ssiuu_grad="first_order", rmu_layer=3, ssiuu_modules=("q", "down"))
    assert UnlearningConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg.save(tmp_path / "c.json")
    assert UnlearningConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ConfigError, match="unknown field 'lrate'"):
        UnlearningConfig.from_dict({"lrate": 1.0})
    with pytest.raises(ConfigError, match="config file not found"):
        UnlearningConfig.load(tmp_path / "missing.json")


def test_empty_forget_or_missing_retain_is_a_config_error(tiny, forget):
    with pytest.raises(ConfigError, match="forget set is empty"):
        unlearn(tiny, [], forget, UnlearningConfig(), progress=False)
    with pytest.raises(ConfigError, match="needs a retain set"):
        unlearn(tiny, forget, [], UnlearningConfig(method="gd"), progress=False)


# ----------------------------------------------------------------------------- finetune


def test_finetune_lowers_the_nll_and_records_evaluations(tiny, retain):
    values = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    h = finetune(tiny, retain, lr=1e-3, epochs=3, batch_size=2, eval_fn=lambda m: next(values), progress=False)
    assert h["steps"] == 6 and h["epochs"] == 3
    assert [e["step"] for e in h["eval"]] == [2, 4, 6] and [e["value"] for e in h["eval"]] == [0.1, 0.2, 0.3]
    assert h["max_eval"] == 0.3
    assert len(h["loss"]) == 6
    assert sum(h["loss"][-2:]) < sum(h["loss"][:2])


def test_finetune_strings_instructions_and_eval_every(tiny):
    h = finetune(tiny, ["Say hi.", "Say bye.", "Count to two."], ["hi", "bye", "one two"], lr=1e-4, epochs=1,
                 batch_size=1, eval_fn=lambda m: 1.0, eval_every=2, progress=False)
    assert [e["step"] for e in h["eval"]] == [2, 3]
    items = [InstructionItem("Translate to French.", "cat", "chat"), InstructionItem("Add.", "", "2")]
    pairs = trainer_mod._as_pairs(items, None)
    assert pairs[0].question == "Translate to French.\n\ncat" and pairs[1].question == "Add." and pairs[0].answer == "chat"
    assert finetune(tiny, items, lr=1e-4, epochs=1, progress=False)["steps"] == 1
    with pytest.raises(ConfigError, match="eval_every"):
        finetune(tiny, items, lr=1e-4, epochs=1, eval_every="step", progress=False)
    with pytest.raises(ConfigError, match="lr: must be > 0"):
        finetune(tiny, items, lr=0.0, epochs=1, progress=False)

"""Relearning attacks (paper §6.2.2): pool, draws, disjointness, max-over-retraining score, errors.

The fast tests drive :func:`run_attack` with a fake model (a set of known item ids), a fake
evaluation (accuracy = fraction of known items) and a fake ``finetune`` that scripts the FS
trajectory, so every reported number can be checked by hand.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import pytest

from neuronscope.attacks import (
    AttackConfig,
    AttackResult,
    AttackRun,
    attack_pool,
    draw_attack_items,
    n_attack_items,
    run_attack,
)
from neuronscope.errors import ConfigError


@dataclass(frozen=True)
class Item:
    id: str
    question: str = "q"
    answer: str = "a"


@dataclass
class FakeModel:
    known: set = field(default_factory=set)


@dataclass
class FakeEval:
    accuracy: float
    wrong: set

    def wrong_ids(self) -> set:
        return self.wrong


def fake_evaluate(model: FakeModel, items) -> FakeEval:
    known = [it.id in model.known for it in items]
    return FakeEval(sum(known) / len(items), {it.id for it, k in zip(items, known) if not k})


FORGET = [Item(f"f{i:02d}") for i in range(20)]
#: The unlearned model still answers these correctly "by chance"; the other 14 are wrong.
CHANCE = {"f00", "f03", "f07", "f11", "f15", "f19"}


def unlearned() -> FakeModel:
    return FakeModel(set(CHANCE))


# ---------------------------------------------------------------- pool, sizes, draws
def test_n_attack_items_rounds_half_up_and_is_at_least_one() -> None:
    assert n_attack_items(0.1, 32) == 3
    assert n_attack_items(0.3, 32) == 10
    assert n_attack_items(0.1, 20) == 2
    assert n_attack_items(0.3, 20) == 6
    assert n_attack_items(0.05, 10) == 1  # 0.5 rounds up
    assert n_attack_items(0.01, 20) == 1  # max(1, 0)


def test_attack_pool_holds_only_wrongly_answered_items() -> None:
    res = fake_evaluate(unlearned(), FORGET)
    pool = attack_pool(FORGET, res.wrong_ids())
    assert [it.id for it in pool] == [it.id for it in FORGET if it.id not in CHANCE]
    assert len(pool) == 14


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_draw_is_from_pool_and_disjoint_from_the_evaluation_remainder(p: float, seed: int) -> None:
    pool = attack_pool(FORGET, fake_evaluate(unlearned(), FORGET).wrong_ids())
    train, rest = draw_attack_items(FORGET, pool, p, seed)
    train_ids, rest_ids = {it.id for it in train}, {it.id for it in rest}
    assert len(train) == n_attack_items(p, 20)
    assert train_ids <= {it.id for it in pool}
    assert not train_ids & CHANCE
    assert not train_ids & rest_ids
    assert train_ids | rest_ids == {it.id for it in FORGET}
    assert [it.id for it in rest] == [it.id for it in FORGET if it.id not in train_ids]  # forget order
    again, _ = draw_attack_items(FORGET, pool, p, seed)
    assert [it.id for it in again] == [it.id for it in train]  # seeded


def test_seeds_draw_different_items() -> None:
    pool = attack_pool(FORGET, fake_evaluate(unlearned(), FORGET).wrong_ids())
    draws = {tuple(it.id for it in draw_attack_items(FORGET, pool, 0.3, s)[0]) for s in range(3)}
    assert len(draws) == 3


@pytest.mark.parametrize("p", [0.0, -0.1, 1.0, 1.5, float("nan")])
def test_p_selecting_no_item_is_an_error_naming_p(p: float) -> None:
    with pytest.raises(ConfigError, match=r"p=(0\.0|-0\.1|1\.0|1\.5|nan)"):
        draw_attack_items(FORGET, FORGET, p, 0)
    with pytest.raises(ConfigError, match=r"^p="):
        AttackConfig(kind="harmful", p=p)


def test_p_selecting_more_than_the_pool_is_an_error_naming_p() -> None:
    pool = attack_pool(FORGET, fake_evaluate(unlearned(), FORGET).wrong_ids())  # 14 items
    with pytest.raises(ConfigError, match=r"p=0\.8: selects 16 of 20 forget items but the attack pool holds only 14"):
        draw_attack_items(FORGET, pool, 0.8, 0)
    with pytest.raises(ConfigError, match=r"p=0\.98: selects all 20 forget items"):
        draw_attack_items(FORGET, FORGET, 0.98, 0)


def test_run_attack_with_too_large_p_fails_before_training() -> None:
    calls = []
    with pytest.raises(ConfigError, match=r"p=0\.8"):
        run_attack(
            unlearned(), FORGET, AttackConfig(p=0.8, seeds=(0,), lrs=(1e-5,)),
            finetune_fn=lambda *a, **k: calls.append(1), evaluate_fn=fake_evaluate, clone_fn=copy.deepcopy, progress=False,
        )
    assert calls == []


def test_empty_pool_is_an_error() -> None:
    with pytest.raises(ConfigError, match="attack pool is empty"):
        run_attack(
            FakeModel({it.id for it in FORGET}), FORGET, AttackConfig(p=0.1, seeds=(0,), lrs=(1e-5,)),
            finetune_fn=lambda *a, **k: None, evaluate_fn=fake_evaluate, clone_fn=copy.deepcopy, progress=False,
        )


# ---------------------------------------------------------------- the score
class ScriptedFinetune:
    """Fake ``finetune``: after each epoch learns the scripted number of remainder items.

    ``script[(seed, lr)]`` = cumulative number of evaluation items known after each epoch
    (beyond the ones known by chance). Records every call.
    """

    def __init__(self, script: dict) -> None:
        self.script = script
        self.calls: list[dict] = []

    def __call__(self, model, items, answers=None, *, lr, epochs, batch_size, seed, eval_fn, eval_every, progress):
        self.calls.append(dict(model=model, ids=[it.id for it in items], lr=lr, epochs=epochs, seed=seed, eval_every=eval_every))
        model.known |= {it.id for it in items}  # the retraining items themselves are learned
        targets = [it.id for it in FORGET if it.id not in model.known]
        base = set(model.known)
        for n_known in self.script[(seed, lr)][:epochs]:
            model.known = base | set(targets[:n_known])
            eval_fn(model)
        return {"evals": []}


def test_score_is_max_over_retraining_max_over_lrs_mean_over_seeds() -> None:
    # p = 0.3 of 20 → 6 retraining items; remainder 14 items of which 6 are known by chance.
    lrs = (1e-5, 1e-6)
    script = {
        (0, 1e-5): [1, 4, 2],  # max at epoch 2: (6+4)/14
        (0, 1e-6): [0, 1, 1],
        (1, 1e-5): [0, 0, 0],
        (1, 1e-6): [3, 2, 1],  # max at epoch 1: (6+3)/14
        (2, 1e-5): [2, 2, 8],  # max at epoch 3: (6+8)/14
        (2, 1e-6): [5, 0, 0],
    }
    ft = ScriptedFinetune(script)
    model = unlearned()
    cfg = AttackConfig(kind="harmful", p=0.3, lrs=lrs, seeds=(0, 1, 2), epochs=3, batch_size=4)
    res = run_attack(model, FORGET, cfg, finetune_fn=ft, evaluate_fn=fake_evaluate, clone_fn=copy.deepcopy, progress=False)

    assert model.known == CHANCE  # the unlearned model itself is never trained
    assert len(ft.calls) == 6
    assert len({id(c["model"]) for c in ft.calls}) == 6  # a fresh copy per run
    for c in ft.calls:
        assert not set(c["ids"]) & CHANCE  # retrained only on wrongly answered items

    for r in res.runs:
        assert len(r.eval_ids) == 14 and not set(r.train_ids) & set(r.eval_ids)
        assert r.fs_before == pytest.approx(6 / 14)
        assert r.fs == pytest.approx([(6 + k) / 14 for k in script[(r.seed, r.lr)]])
        assert r.steps == [2, 4, 6]  # ceil(6 / 4) = 2 steps per epoch
    assert res.per_seed() == pytest.approx({0: 10 / 14, 1: 9 / 14, 2: 14 / 14})
    assert res.per_lr() == pytest.approx({1e-5: (10 + 6 + 14) / 42, 1e-6: (7 + 9 + 11) / 42})
    assert res.score == pytest.approx((10 + 9 + 14) / 42)
    d = res.to_dict()
    assert d["score"] == pytest.approx(33 / 42)
    assert d["pool_ids"] == [it.id for it in FORGET if it.id not in CHANCE]


def test_fs_before_retraining_does_not_count_towards_the_maximum() -> None:
    # Retraining only makes FS drop: the maximum is over evaluations during retraining.
    class Forgetting:
        def __call__(self, model, items, answers=None, **kw):
            model.known = set()
            for _ in range(kw["epochs"]):
                kw["eval_fn"](model)

    res = run_attack(
        unlearned(), FORGET, AttackConfig(p=0.1, seeds=(0,), lrs=(1e-5,), epochs=2),
        finetune_fn=Forgetting(), evaluate_fn=fake_evaluate, clone_fn=copy.deepcopy, progress=False,
    )
    (run,) = res.runs
    assert run.fs_before == pytest.approx(6 / 18)
    assert run.fs == [0.0, 0.0]
    assert res.score == 0.0


def test_benign_attack_trains_on_instructions_and_evaluates_the_whole_forget_set() -> None:
    @dataclass(frozen=True)
    class Instr:
        instruction: str
        input: str
        output: str

    alpaca = [Instr("Name a colour.", "", "Blue."), Instr("Add the numbers.", "2 and 3", "5")]
    seen = []

    def ft(model, prompts, answers=None, **kw):
        seen.append((list(prompts), list(answers), kw["lr"], kw["eval_every"], kw["epochs"]))
        model.known |= {"f01", "f02"}
        kw["eval_fn"](model)
        model.known |= {"f04"}
        kw["eval_fn"](model)

    cfg = AttackConfig(kind="benign", seeds=(0, 1), eval_every=1)
    assert cfg.lrs == (1e-5, 1e-6, 1e-7) and cfg.epochs == 1
    res = run_attack(unlearned(), FORGET, cfg, finetune_fn=ft, evaluate_fn=fake_evaluate, clone_fn=copy.deepcopy,
                     alpaca=alpaca, progress=False)
    assert seen[0][:2] == (["Name a colour.", "Add the numbers.\n\n2 and 3"], ["Blue.", "5"])
    assert [s[2] for s in seen] == [1e-5, 1e-6, 1e-7] * 2
    assert res.pool_ids == []
    for r in res.runs:
        assert r.eval_ids == [it.id for it in FORGET] and r.train_ids == []
        assert r.fs_before == pytest.approx(6 / 20)
        assert r.fs == pytest.approx([8 / 20, 9 / 20])
        assert r.steps == [1, 2]  # every step, 2 items / batch 8 = 1 step per epoch
    assert res.score == pytest.approx(9 / 20)


def test_resume_reuses_saved_runs(tmp_path) -> None:
    script = {(s, lr): [1, 2] for s in (0, 1) for lr in (1e-5, 1e-6)}
    cfg = AttackConfig(p=0.1, seeds=(0, 1), lrs=(1e-5, 1e-6), epochs=2)
    first = run_attack(unlearned(), FORGET, cfg, run_dir=tmp_path, finetune_fn=ScriptedFinetune(script),
                       evaluate_fn=fake_evaluate, clone_fn=copy.deepcopy, progress=False)
    saved = json.loads((tmp_path / "attack.json").read_text())
    assert saved["score"] == pytest.approx(first.score)
    assert json.loads((tmp_path / "attack_config.json").read_text())["p"] == 0.1

    def must_not_train(*a, **k):
        raise AssertionError("resumed run retrained")

    def must_not_eval(*a, **k):
        raise AssertionError("resumed run re-evaluated")

    again = run_attack(unlearned(), FORGET, cfg, run_dir=tmp_path, finetune_fn=must_not_train,
                       evaluate_fn=must_not_eval, clone_fn=copy.deepcopy, progress=False)
    assert again.to_dict() == first.to_dict()

    # A partial file (one run missing) resumes only the missing run.
    saved["runs"] = saved["runs"][:3]
    (tmp_path / "attack.json").write_text(json.dumps(saved))
    ft = ScriptedFinetune(script)
    third = run_attack(unlearned(), FORGET, cfg, run_dir=tmp_path, finetune_fn=ft, evaluate_fn=fake_evaluate,
                       clone_fn=copy.deepcopy, progress=False)
    assert [(c["seed"], c["lr"]) for c in ft.calls] == [(1, 1e-6)]
    assert third.score == pytest.approx(first.score)


def test_config_roundtrip_and_defaults() -> None:
    h = AttackConfig()
    assert (h.kind, h.p, h.lrs, h.seeds, h.epochs, h.eval_every, h.pool) == (
        "harmful", 0.1, (1e-5, 5e-6, 1e-6), (0, 1, 2), 10, "epoch", "wrong"
    )
    assert AttackConfig.from_dict(h.to_dict()) == h
    b = AttackConfig(kind="benign", seeds=3)
    assert b.seeds == (0, 1, 2) and b.to_dict()["p"] is None and b.eval_every == 25
    assert AttackConfig.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    assert AttackConfig(metric="rouge").pool == "all"
    with pytest.raises(ConfigError, match="unknown field 'bogus'"):
        AttackConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="lrs"):
        AttackConfig(lrs=(0.0,))


def test_result_roundtrip_and_plot(tmp_path) -> None:
    cfg = AttackConfig(p=0.1, seeds=(0, 1), lrs=(1e-5, 1e-6))
    runs = [
        AttackRun(seed=s, lr=lr, steps=[1, 2], fs=[0.1 * (s + 1), 0.2 * (s + 1)], fs_before=0.05)
        for s in (0, 1) for lr in (1e-5, 1e-6)
    ]
    res = AttackResult(cfg, runs, pool_ids=["a"], n_forget=10)
    back = AttackResult.load(res.save(tmp_path / "r.json"))
    assert back.to_dict() == res.to_dict()
    assert back.score == pytest.approx((0.2 + 0.4) / 2)
    fig = res.plot()
    assert [t.name for t in fig.data] == ["lr = 1e-05", "lr = 1e-06"]
    assert list(fig.data[0].x) == [0, 1, 2]
    assert list(fig.data[0].y) == pytest.approx([5.0, 15.0, 30.0])


# ---------------------------------------------------------------- end to end on the tiny model
def test_harmful_attack_on_tiny_model_with_real_finetune(tiny_llama) -> None:
    import torch

    from neuronscope.data import load_faithun
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.models import clone_model
    from neuronscope.unlearning import finetune

    forget = load_faithun()[:10]
    before = {k: v.clone() for k, v in tiny_llama.hf_model.state_dict().items()}
    wrong = mcqa_evaluate(tiny_llama, forget).wrong_ids()
    n_wrong = len(wrong)
    assert 3 <= n_wrong < 10  # the random model answers some by chance
    cfg = AttackConfig(kind="harmful", p=0.3, lrs=(1e-3,), seeds=(0,), epochs=2, batch_size=2)
    res = run_attack(tiny_llama, forget, cfg, progress=False)

    assert res.pool_ids == [it.id for it in forget if it.id in wrong]
    (run,) = res.runs
    assert len(run.train_ids) == 3 and set(run.train_ids) <= wrong
    assert set(run.eval_ids) == {it.id for it in forget} - set(run.train_ids)
    assert run.steps == [2, 4]  # ceil(3 / 2) steps per epoch, FS after each epoch
    assert run.fs_before == pytest.approx(mcqa_evaluate(tiny_llama, [it for it in forget if it.id in run.eval_ids]).accuracy)
    # The unlearned model itself is untouched.
    for k, v in tiny_llama.hf_model.state_dict().items():
        assert torch.equal(v, before[k])
    # The recorded FS is the FS of the same fine-tuning reproduced by hand.
    m = clone_model(tiny_llama)
    train = [it for it in forget if it.id in run.train_ids]
    finetune(m, train, lr=1e-3, epochs=2, batch_size=2, seed=0, progress=False)
    rest = [it for it in forget if it.id in run.eval_ids]
    assert run.fs[-1] == pytest.approx(mcqa_evaluate(m, rest).accuracy)
    assert res.score == pytest.approx(max(run.fs))


def test_attack_command_impossible_p_is_one_error_line(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "neuronscope.cli", "attack", "--model", "tiny-llama", "--kind", "harmful", "--p", "0.99",
         "--lr", "1e-5", "--seeds", "1", "--out", str(tmp_path / "atk")],
        capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: p=0.99: selects 32 of 32 forget items but the attack pool holds only ")
    assert not (tmp_path / "atk").exists()  # nothing half-written


def test_study_config_validation(tmp_path) -> None:
    from neuronscope.study import StudyConfig

    with pytest.raises(ConfigError, match="unknown method 'foo'"):
        StudyConfig(methods={"foo": {}})
    with pytest.raises(ConfigError, match=r"^p=1\.2"):
        StudyConfig(attacks={"harmful": {"ps": [0.1, 1.2]}})
    with pytest.raises(ConfigError, match="data: unknown field 'flie'"):
        StudyConfig.from_dict({"data": {"flie": "x"}})
    cfg = StudyConfig.table1_cpu(methods={"ga": {}, "gd": {}, "npo": {}, "ssiuu": {}})
    assert list(cfg.methods) == ["ga", "gd", "npo", "ssiuu"]
    assert StudyConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    path = tmp_path / "study.json"
    path.write_text(__import__("json").dumps(cfg.to_dict()))
    assert StudyConfig.load(path).to_dict() == cfg.to_dict()
    atk = cfg.attack_configs()
    assert [a.label for a in atk] == ["harmful-p0.1", "harmful-p0.3", "benign"]
    assert atk[0].lrs == (1e-5,) and atk[0].seeds == (0,) and atk[2].n_alpaca == 200


def test_paper_configs_load_in_the_one_schema() -> None:
    from pathlib import Path

    from neuronscope.study import StudyConfig

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json")):
        cfg = StudyConfig.load(path)
        assert cfg.device == "cuda" and cfg.dtype == "bfloat16"
        for m in cfg.methods:
            assert cfg.lrs(m) == sorted(cfg.lrs(m))
        lam = cfg.unlearning_config("ssiuu").lam
        assert lam == (1e-4 if cfg.data.format == "tofu" else 1e-3)  # the paper's λ

"""Knowledge protocols (SPEC §10): cloze scoring against the model's own logits, margins,
known-fact selection (δ, all option orders for mcqa) and the protocol threaded through
early stopping, attacks, utility and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import neuronscope.evaluation as ev
from neuronscope.data import QAItem
from neuronscope.errors import ConfigError, NeuronscopeError
from neuronscope.evaluation import (
    combine_orders,
    knowledge_evaluate,
    known_facts,
    mcqa_evaluate,
    option_margin,
    option_orders,
    rotations,
)
from neuronscope.prompts import chat_prompt, cloze_prompt, knowledge_prompt, mcqa_prompt
from tests.factories import FORGET, RETAIN

ITEMS = FORGET + RETAIN


def _hand_logprob(model, prompt: str, option: str) -> float:
    """log P(option | prompt): log-softmax of the full-sequence logits at the answer positions, summed."""
    tok = model.tokenizer
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    o = tok(option, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + o])
    with torch.no_grad():
        logits = model.bridge(ids)[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(o))


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


# ----------------------------------------------------------------------------- prompts


def test_cloze_prompt_is_the_question_alone(tiny_llama):
    tok = tiny_llama.tokenizer
    q, opts = "What is the capital of France?", ["Paris", "Rome", "Berlin"]
    p = cloze_prompt(tok, q)
    assert p == chat_prompt(tok, q) and q in p
    assert not any(o in p for o in opts)
    assert knowledge_prompt(tok, "cloze", q, opts) == p
    assert knowledge_prompt(tok, "mcqa", q, opts) == mcqa_prompt(tok, q, opts)
    with pytest.raises(ValueError, match="protocol"):
        knowledge_prompt(tok, "quiz", q, opts)


# ----------------------------------------------------------------------------- cloze vs own logits


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_cloze_scores_equal_hand_computation_from_logits(fixture, request):
    model = request.getfixturevalue(fixture)
    res = knowledge_evaluate(model, ITEMS, protocol="cloze", batch_size=6)
    assert res.protocol == "cloze" and res.ids == [it.id for it in ITEMS]
    for k, it in enumerate(ITEMS):
        opts = it.options(0)
        assert res.options[k] == opts
        hand = [_hand_logprob(model, chat_prompt(model.tokenizer, it.question), o) for o in opts]
        assert res.option_logprobs[k] == pytest.approx(hand, rel=1e-6, abs=1e-6)
        gold = opts.index(it.answer)
        best_wrong = max(h for j, h in enumerate(hand) if j != gold)
        assert res.margins[k] == pytest.approx(hand[gold] - best_wrong, rel=1e-6, abs=1e-6)
        assert res.predictions[k] == opts[max(range(3), key=lambda j: hand[j])]
        assert res.correct[k] == (res.margins[k] > 0)
    assert res.accuracy == sum(res.correct) / len(ITEMS)


def test_cloze_prediction_does_not_depend_on_option_order(tiny_llama):
    a = knowledge_evaluate(tiny_llama, ITEMS, protocol="cloze", option_seed=0)
    b = knowledge_evaluate(tiny_llama, ITEMS, protocol="cloze", option_seed=7)
    assert a.predictions == b.predictions and a.margins == pytest.approx(b.margins, rel=1e-6, abs=1e-6)
    m = knowledge_evaluate(tiny_llama, ITEMS, protocol="mcqa")
    assert m.protocol == "mcqa"
    assert _max_diff(m.option_logprobs, a.option_logprobs) > 1e-3  # options in the prompt change the scores


def test_mcqa_evaluate_is_the_mcqa_protocol(tiny_llama):
    a = mcqa_evaluate(tiny_llama, ITEMS)
    b = knowledge_evaluate(tiny_llama, ITEMS, protocol="mcqa")
    assert a.to_dict() == b.to_dict()
    assert a.protocol == "mcqa" and len(a.margins) == len(ITEMS)


def test_cloze_generate_mode_records_protocol(tiny_llama):
    res = knowledge_evaluate(tiny_llama, ITEMS[:2], protocol="cloze", mode="generate")
    assert res.protocol == "cloze" and len(res.predictions) == 2 and res.margins == []


def test_bad_protocol_and_options(tiny_llama):
    with pytest.raises(NeuronscopeError, match="^protocol: expected one of mcqa, cloze, got 'quiz'$"):
        knowledge_evaluate(tiny_llama, ITEMS, protocol="quiz")
    with pytest.raises(NeuronscopeError, match="lacks its answer"):
        knowledge_evaluate(tiny_llama, ITEMS[:1], options=[["Rome", "Berlin", "Oslo"]])
    with pytest.raises(NeuronscopeError, match="delta"):
        known_facts(tiny_llama, ITEMS, "cloze", -1.0)
    with pytest.raises(NeuronscopeError, match="protocol"):
        known_facts(tiny_llama, ITEMS, "quiz", 0.0)


# ----------------------------------------------------------------------------- margins and known facts


def test_option_margin_by_hand():
    assert option_margin([-1.0, -3.0, -2.5], 0) == pytest.approx(1.5)
    assert option_margin([-4.0, -3.0, -2.5], 0) == pytest.approx(-1.5)
    assert option_margin([-4.0, -1.0, -2.5], 1) == pytest.approx(1.5)
    assert option_margin([0.0], 0) == math.inf
    with pytest.raises(NeuronscopeError):
        option_margin([0.0, 1.0], 2)


def test_rotations_and_option_orders():
    assert rotations(["a", "b", "c"]) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    mc = option_orders(ITEMS, "mcqa")
    assert len(mc) == 3 and [o[0] for o in mc] == rotations(ITEMS[0].options(0))
    assert option_orders(ITEMS, "cloze") == [[it.options(0) for it in ITEMS]]


def test_combine_orders_refuses_mismatched_results(tiny_llama, monkeypatch):
    monkeypatch.setattr(ev, "packed_option_logprobs", _fake_scores(tiny_llama))
    a = knowledge_evaluate(tiny_llama, HAND_ITEMS, protocol="cloze")
    b = knowledge_evaluate(tiny_llama, HAND_ITEMS[:2], protocol="cloze")
    with pytest.raises(NeuronscopeError, match="different items"):
        combine_orders([a, b])
    with pytest.raises(NeuronscopeError, match="no evaluation results"):
        combine_orders([])
    with pytest.raises(NeuronscopeError, match="delta"):
        combine_orders([a], float("nan"))
    assert combine_orders([a, a], 0.5).known == [True, True, False, False]


#: Hand-built option log-likelihoods (nats) without position effects, per question.
BASE = {
    "Q sure?": {"A": -1.0, "B": -3.0, "C": -3.5},    # margin 2.0 everywhere
    "Q slight?": {"A": -2.0, "B": -2.5, "C": -4.0},  # margin 0.5
    "Q first?": {"A": -2.0, "B": -2.0, "C": -2.2},   # tie with B; wins only when listed first in mcqa
    "Q wrong?": {"A": -3.0, "B": -1.0, "C": -2.0},   # margin -2.0
}
FIRST_BONUS = 0.3  # mcqa: the option listed first in the prompt gains 0.3 nats


def _fake_scores(model):
    tok = model.tokenizer

    def fake(_model, prompts, options):
        out = []
        for p, opts in zip(prompts, options):
            text = tok.decode(p)
            q = next(k for k in BASE if k in text)
            shown = text.split("Options: ")[1].split("\n")[0].split(", ") if "Options: " in text else None
            row = []
            for o in opts:
                name = tok.decode(o)
                row.append(BASE[q][name] + (FIRST_BONUS if shown and shown[0] == name else 0.0))
            out.append(row)
        return out

    return fake


HAND_ITEMS = [QAItem(f"h{k}", q, "A", ("B", "C")) for k, q in enumerate(BASE)]


def _mcqa_margin_by_hand(q: str, order: list[str]) -> float:
    s = {o: BASE[q][o] + (FIRST_BONUS if o == order[0] else 0.0) for o in order}
    return s["A"] - max(s["B"], s["C"])


def test_margins_and_known_facts_on_a_hand_built_example(tiny_llama, monkeypatch):
    monkeypatch.setattr(ev, "packed_option_logprobs", _fake_scores(tiny_llama))
    # cloze: no options in the prompt, so no position effect: margins are BASE's.
    res = knowledge_evaluate(tiny_llama, HAND_ITEMS, protocol="cloze")
    assert res.margins == pytest.approx([2.0, 0.5, 0.0, -2.0])
    order = HAND_ITEMS[2].options(0)  # the tie goes to whichever of A and B is listed earlier
    assert res.correct == [True, True, order.index("A") < order.index("B"), False]
    cl = {d: known_facts(tiny_llama, HAND_ITEMS, "cloze", d) for d in (0.0, 0.5, 1.0, 3.0)}
    assert cl[0.0].known == [True, True, False, False]  # a tie (margin 0) is not knowledge
    assert cl[0.5].known == [True, True, False, False]
    assert cl[1.0].known == [True, False, False, False]
    assert cl[3.0].known == [False] * 4
    assert cl[1.0].n_orders == 1 and cl[1.0].known_ids() == {"h0"}
    assert cl[1.0].fraction == 0.25 and cl[1.0].fraction_at(0.5) == 0.5
    assert cl[1.0].to_dict()["protocol"] == "cloze"


def test_mcqa_known_needs_every_option_order(tiny_llama, monkeypatch):
    monkeypatch.setattr(ev, "packed_option_logprobs", _fake_scores(tiny_llama))
    kf = known_facts(tiny_llama, HAND_ITEMS, "mcqa", 0.0)
    assert kf.n_orders == 3
    expected = [min(_mcqa_margin_by_hand(it.question, r) for r in rotations(it.options(0))) for it in HAND_ITEMS]
    assert kf.margins == pytest.approx(expected)
    # "Q first?": +0.3 when A is listed first, −0.3 (tie broken by B's bonus) when B is first.
    assert kf.margins == pytest.approx([1.7, 0.2, -0.3, -2.3])
    assert kf.correct_all_orders == [True, True, False, False]
    assert kf.known == [True, True, False, False]
    # Per order: rotation 0 is options(0); "Q first?" is right only in the order listing A first.
    by_hand = [sum(_mcqa_margin_by_hand(it.question, rotations(it.options(0))[k]) > 0 for it in HAND_ITEMS) / 4
               for k in range(3)]
    assert kf.accuracy_by_order == by_hand and kf.accuracy == by_hand[0]
    assert known_facts(tiny_llama, HAND_ITEMS, "mcqa", 1.0).known == [True, False, False, False]
    # One order alone can get "Q first?" right: accuracy counts it when A is listed first.
    first = knowledge_evaluate(tiny_llama, HAND_ITEMS, protocol="mcqa",
                               options=[["A", "B", "C"]] * len(HAND_ITEMS))
    assert first.correct == [True, True, True, False]


def test_mcqa_known_facts_on_a_real_model_equal_min_over_rotations(tiny_llama):
    kf = known_facts(tiny_llama, ITEMS, "mcqa", 0.0)
    tok = tiny_llama.tokenizer
    for k, it in enumerate(ITEMS):
        worst = math.inf
        for order in rotations(it.options(0)):
            hand = [_hand_logprob(tiny_llama, mcqa_prompt(tok, it.question, order), o) for o in order]
            worst = min(worst, option_margin(hand, order.index(it.answer)))
        assert kf.margins[k] == pytest.approx(worst, rel=1e-6, abs=1e-6)
        assert kf.known[k] == (worst > 0)


# ----------------------------------------------------------------------------- threading


def test_configs_validate_protocol():
    from neuronscope.attacks import AttackConfig
    from neuronscope.unlearning import UnlearningConfig

    assert UnlearningConfig().protocol == "mcqa" and AttackConfig().protocol == "mcqa"
    with pytest.raises(ConfigError, match="^protocol: expected one of mcqa, cloze, got 'quiz'$"):
        UnlearningConfig(protocol="quiz")
    with pytest.raises(ConfigError, match="^protocol: expected 'mcqa' or 'cloze', got 'quiz'$"):
        AttackConfig(protocol="quiz")
    cfg = UnlearningConfig(protocol="cloze")
    assert UnlearningConfig.from_dict(cfg.to_dict()).protocol == "cloze"
    a = AttackConfig(protocol="cloze")
    assert AttackConfig.from_dict(a.to_dict()).protocol == "cloze"


def test_early_stop_attack_and_utility_use_the_protocol(tiny_llama):
    from neuronscope.attacks import AttackConfig, _default_evaluate
    from neuronscope.models import clone_model
    from neuronscope.unlearning import UnlearningConfig, unlearn
    from neuronscope.unlearning.search import _score
    from neuronscope.utility import utility_score

    cloze = knowledge_evaluate(tiny_llama, FORGET, protocol="cloze")
    mcqa = knowledge_evaluate(tiny_llama, FORGET, protocol="mcqa")
    assert _max_diff(cloze.option_logprobs, mcqa.option_logprobs) > 1e-3
    cfg = UnlearningConfig(method="gd", lr=1e-4, max_steps=1, threshold=-1.0, protocol="cloze", batch_size=4)
    res = unlearn(clone_model(tiny_llama), FORGET, RETAIN, cfg, progress=False)
    assert res.history[0]["forget_acc"] == cloze.accuracy
    assert res.to_dict()["config"]["protocol"] == "cloze"
    assert _score(tiny_llama, FORGET, cfg) == cloze.accuracy
    att = _default_evaluate(AttackConfig(protocol="cloze"))(tiny_llama, FORGET)
    assert att.protocol == "cloze" and _max_diff(att.option_logprobs, cloze.option_logprobs) < 1e-9
    us = utility_score(tiny_llama, items=ITEMS, protocol="cloze")
    assert us.protocol == "cloze"
    assert us.score == knowledge_evaluate(tiny_llama, ITEMS, protocol="cloze").accuracy
    assert utility_score(tiny_llama, items=ITEMS).protocol == "mcqa"


def test_cli_unlearn_and_attack_take_protocol(tmp_path):
    from typer.testing import CliRunner

    from neuronscope.cli import app

    out = tmp_path / "u"
    r = CliRunner().invoke(app, ["unlearn", "--method", "ga", "--model", "tiny-llama", "--lr", "1e-4", "--max-steps", "1",
                                 "--threshold=-1", "--eval-splits", "forget", "--protocol", "cloze", "--out", str(out),
                                 "--known-only", "--known-candidates", "15", "--known-delta", "0"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["protocol"] == "cloze" and s["known_delta"] == 0.0
    assert json.loads((out / "config.json").read_text())["protocol"] == "cloze"
    assert json.loads((out / "splits.json").read_text())["protocol"] == "cloze"
    assert s["initial_FS"] == 1.0  # the forget split holds only facts known under cloze
    bad = CliRunner().invoke(app, ["attack", "--model", "tiny-llama", "--out", str(tmp_path / "a"), "--protocol", "quiz"])
    assert bad.exit_code != 0 and "protocol" in str(bad.exception or bad.output)

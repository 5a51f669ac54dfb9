"""GA/GD/DPO/NPO/RMU losses against hand computations and an independent per-example forward."""

from __future__ import annotations

import math

import pytest
import torch

from neuronscope.prompts import REFUSAL, chat_prompt
from neuronscope.unlearning import UnlearningConfig, unlearn
from neuronscope.unlearning.losses import (
    DPO,
    answer_logprobs,
    GA,
    GD,
    NLL,
    NPO,
    RMU,
    default_rmu_layer,
    dpo_loss,
    masked_mse,
    npo_loss,
    residual,
    rmu_direction,
)
from neuronscope.prompts import encode_qa, mean_nll, sequence_logprob


def _token_logprobs(model, question: str, answer: str) -> list[float]:
    """log p of each answer token, one example at a time through the raw HF model (no padding)."""
    tok = model.tokenizer
    p_ids = tok(chat_prompt(tok, question), add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + a_ids[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model.hf_model(input_ids=ids).logits[0].double(), -1)
    return [float(logp[len(p_ids) - 1 + j, a]) for j, a in enumerate(a_ids)]


def _mean_nll(model, items, answers=None) -> float:
    toks = [lp for it, a in zip(items, answers or [it.answer for it in items]) for lp in _token_logprobs(model, it.question, a)]
    return -sum(toks) / len(toks)


def _seq_logprob(model, item, answer=None) -> float:
    return sum(_token_logprobs(model, item.question, answer or item.answer))


def _layer_output(model, ids, layer):
    store = {}

    def hook(mod, args, out):
        store["h"] = (out[0] if isinstance(out, tuple) else out).detach()

    handle = model.hf_model.model.layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.hf_model(input_ids=ids)
    finally:
        handle.remove()
    return store["h"]


# ----------------------------------------------------------------------------- formulas by hand


def test_npo_formula_by_hand():
    logp = torch.tensor([-1.0, -3.0], dtype=torch.float64)
    ref = torch.tensor([-2.0, -2.0], dtype=torch.float64)
    expected = (2 / 0.5) * (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-0.5))) / 2
    assert npo_loss(logp, ref, 0.5).item() == pytest.approx(expected, rel=1e-12)
    # π = π_ref: (2/β)·log 2 for every β
    for beta in (0.1, 0.25, 0.5):
        assert npo_loss(ref, ref, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-12)


def test_dpo_formula_by_hand():
    f = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    got = dpo_loss(f(-5.0), f(-6.0), f(-1.0), f(-0.5), 0.2).item()
    margin = (-5.0 + 6.0) - (-1.0 + 0.5)  # 1.5
    expected = -(2 / 0.2) * math.log(1 / (1 + math.exp(-0.2 * margin)))
    assert got == pytest.approx(expected, rel=1e-12)
    assert dpo_loss(f(-2.0), f(-2.0), f(-1.0), f(-1.0), 0.1).item() == pytest.approx(20 * math.log(2), rel=1e-12)


def test_masked_mse_by_hand():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    mask = torch.tensor([[True, False]])
    assert masked_mse(h, torch.tensor([0.0, 1.0]), mask).item() == pytest.approx(1.0)  # ((1-0)²+(2-1)²)/2
    assert masked_mse(h, torch.zeros_like(h), torch.ones(1, 2, dtype=torch.bool)).item() == pytest.approx(30 / 4)


def test_rmu_direction_and_default_layer():
    u = rmu_direction(64, seed=3, dtype=torch.float64)
    assert u.norm().item() == pytest.approx(1.0, abs=1e-12)
    assert bool((u >= 0).all())  # torch.rand then normalised, as in the WMDP code
    assert torch.equal(u, rmu_direction(64, seed=3, dtype=torch.float64))
    assert not torch.equal(u, rmu_direction(64, seed=4, dtype=torch.float64))
    assert [default_rmu_layer(n) for n in (28, 30, 36, 2)] == [7, 8, 9, 0]


# ----------------------------------------------------------------------------- method losses on the tiny model


def test_ga_and_gd_match_independent_nll(tiny, forget, retain):
    cfg = UnlearningConfig(method="gd", retain_weight=0.5)
    nll_f, nll_r = _mean_nll(tiny, forget[:3]), _mean_nll(tiny, retain[:2])
    loss, terms = GD(cfg).loss(tiny, forget[:3], retain[:2], 0)
    assert terms["nll_forget"] == pytest.approx(nll_f, rel=1e-6)
    assert terms["nll_retain"] == pytest.approx(nll_r, rel=1e-6)
    assert loss.item() == pytest.approx(-nll_f + 0.5 * nll_r, rel=1e-6)
    loss, _ = GA(cfg).loss(tiny, forget[:3], None, 0)
    assert loss.item() == pytest.approx(-nll_f, rel=1e-6)
    loss, _ = NLL(cfg).loss(tiny, retain[:2], None, None)
    assert loss.item() == pytest.approx(nll_r, rel=1e-6)


def test_npo_and_dpo_equal_2_over_beta_log2_at_reference(tiny, forget, retain):
    batches = {0: forget[:2], 1: forget[2:4]}
    for cls in (NPO, DPO):
        cfg = UnlearningConfig(method=cls.name, beta=0.25)
        m = cls(cfg)
        m.setup(tiny, batches, retain)
        loss, terms = m.loss(tiny, batches[1], retain[:2], 1)
        assert terms[cls.name] == pytest.approx(2 / 0.25 * math.log(2), rel=1e-9)
        assert loss.item() == pytest.approx(2 / 0.25 * math.log(2) + _mean_nll(tiny, retain[:2]), rel=1e-6)


def test_npo_and_dpo_reference_values_are_sequence_logprobs(tiny, forget, retain):
    batches = {0: forget[:2]}
    npo, dpo = NPO(UnlearningConfig(method="npo")), DPO(UnlearningConfig(method="dpo"))
    npo.setup(tiny, batches, retain)
    dpo.setup(tiny, batches, retain)
    for i, it in enumerate(forget[:2]):
        lp = _seq_logprob(tiny, it)
        assert npo.ref[0]["logp"][i].item() == pytest.approx(lp, rel=1e-6)
        assert dpo.ref[0]["logp_l"][i].item() == pytest.approx(lp, rel=1e-6)
        assert dpo.ref[0]["logp_w"][i].item() == pytest.approx(_seq_logprob(tiny, it, REFUSAL), rel=1e-6)


def test_rmu_loss_matches_hidden_states(tiny, forget, retain):
    cfg = UnlearningConfig(method="rmu", rmu_layer=1, rmu_c=3.0, rmu_alpha=7.0, seed=5)
    m = RMU(cfg)
    m.setup(tiny, {0: forget[:2]}, retain)
    u = rmu_direction(tiny.arch.d_model, 5, torch.float64)
    loss, terms = m.loss(tiny, forget[:2], retain[:2], 0)
    # independent: a plain PyTorch hook on the HF decoder layer l, per example, unpadded, with
    # the shared chat-template prefix (found by comparing two prompts token by token) left out
    a = encode_qa(tiny.tokenizer, [forget[0].question], [forget[0].answer]).input_ids[0]
    b = encode_qa(tiny.tokenizer, [forget[1].question], [forget[1].answer]).input_ids[0]
    skip = int((a[: min(len(a), len(b))] == b[: min(len(a), len(b))]).long().cumprod(0).sum())
    assert m.skip == skip > 0
    sq, n = 0.0, 0
    for it in forget[:2]:
        ids = encode_qa(tiny.tokenizer, [it.question], [it.answer]).input_ids
        h = _layer_output(tiny, ids, 1)[0, skip:].double()
        sq += float(((h - 3.0 * u) ** 2).sum())
        n += h.shape[0] * h.shape[1]
    assert terms["rmu_forget"] == pytest.approx(sq / n, rel=1e-6)
    assert terms["rmu_retain"] == pytest.approx(0.0, abs=1e-10)  # the model is still the reference
    assert loss.item() == pytest.approx(sq / n, rel=1e-6)
    # the early-exit residual equals the full forward's hidden state
    b = encode_qa(tiny.tokenizer, [forget[0].question], [forget[0].answer])
    with torch.no_grad():
        assert torch.allclose(residual(tiny, b, 0), _layer_output(tiny, b.input_ids, 0), atol=1e-6)


def test_rmu_without_template_skip_uses_every_token(tiny, forget, retain):
    """``rmu_skip_template=False``: the MSE runs over every real token (the plain RMU formula)."""
    cfg = UnlearningConfig(method="rmu", rmu_layer=1, rmu_c=3.0, rmu_alpha=7.0, seed=5, rmu_skip_template=False)
    m = RMU(cfg)
    m.setup(tiny, {0: forget[:2]}, retain)
    assert m.skip == 0
    u = rmu_direction(tiny.arch.d_model, 5, torch.float64)
    _, terms = m.loss(tiny, forget[:2], retain[:2], 0)
    sq, n = 0.0, 0
    for it in forget[:2]:
        h = _layer_output(tiny, encode_qa(tiny.tokenizer, [it.question], [it.answer]).input_ids, 1)[0].double()
        sq += float(((h - 3.0 * u) ** 2).sum())
        n += h.shape[0] * h.shape[1]
    assert terms["rmu_forget"] == pytest.approx(sq / n, rel=1e-6)


def test_rmu_updates_only_down_proj_of_layers_l_minus_2_to_l(tiny, forget, retain):
    params = list(tiny.hf_model.parameters())
    before = [p.detach().clone() for p in params]
    cfg = UnlearningConfig(method="rmu", lr=1e-3, rmu_layer=1, max_epochs=1, batch_size=3, threshold=-1.0)
    unlearn(tiny, forget, retain, cfg, progress=False)
    changed = {id(p) for p, b in zip(params, before) if not torch.equal(p, b)}
    assert changed == {id(tiny.linear("down", 0).weight), id(tiny.linear("down", 1).weight)}


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_answer_logprobs_equal_full_forward(name, request, forget):
    model = request.getfixturevalue(name)
    b = encode_qa(model.tokenizer, [i.question for i in forget], [i.answer for i in forget])
    with torch.no_grad():
        logits = model.bridge(b.input_ids, attention_mask=b.attention_mask)
        lp = answer_logprobs(model, b)
    assert torch.allclose(lp.seq, sequence_logprob(logits, b), rtol=1e-10, atol=1e-10)
    assert lp.nll.item() == pytest.approx(mean_nll(logits, b).item(), rel=1e-10)
    assert lp.tok.shape[0] == int(b.target_mask.sum())

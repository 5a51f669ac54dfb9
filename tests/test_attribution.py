"""Eq. 1 attribution against finite differences and an independent per-sample computation."""

from __future__ import annotations

import pytest
import torch

from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute, attribute_batch
from neuronscope.models import MODULE_TYPES
from neuronscope.prompts import encode_qa, sequence_logprob

QS = ["Which country is Albert Einstein from?", "What is the capital of France?"]
AS = ["Germany", "Paris"]


def _prob_with_perturbation(model, batch, hook_name, sample, pos, neuron, eps):
    """P(y|x) of one sample when activation [sample, pos, neuron] of `hook_name` is shifted by eps."""

    def hook(act, hook):
        flat = act.reshape(act.shape[0], act.shape[1], -1).clone()
        flat[sample, pos, neuron] += eps
        return flat.reshape(act.shape)

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(hook_name, hook)]):
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    return sequence_logprob(logits, batch)[sample].exp().item()


def _activation(model, batch, hook_name):
    store = {}

    def hook(act, hook):
        store["a"] = act.detach().reshape(act.shape[0], act.shape[1], -1).clone()

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(hook_name, hook)]):
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    return store["a"]


@pytest.mark.parametrize("module_type", MODULE_TYPES)
def test_attribution_matches_finite_differences(tiny_llama, module_type):
    model = tiny_llama
    batch = encode_qa(model.tokenizer, QS[:1], AS[:1])
    layer = 1
    key = f"{module_type}.{layer}"
    res = attribute_batch(model, batch, AttributionConfig(keep_tokens=(key,)))
    tokens = res.tokens[(module_type, layer)][0]  # [pos, neurons]
    hook_name = model.hook_name(module_type, layer)
    h = _activation(model, batch, hook_name)[0]
    n_pos, n_neurons = tokens.shape
    assert n_neurons == model.arch.n_neurons(module_type)
    gen = torch.Generator().manual_seed(1)
    # HF's RMSNorm computes in float32 even in a float64 model, so a tiny step drowns in
    # rounding; central differences at two steps + Richardson extrapolation (error O(eps^4)).
    eps = 1e-2
    # Several (position, neuron) cells, including the last position and a GQA k/v head > 0.
    top = int(tokens.abs().argmax())
    cells = [(top // n_neurons, top % n_neurons), (n_pos - 1, n_neurons - 1)] + [
        (int(torch.randint(n_pos, (1,), generator=gen)), int(torch.randint(n_neurons, (1,), generator=gen)))
        for _ in range(4)
    ]
    for pos, neuron in cells:
        def central(e):
            p_plus = _prob_with_perturbation(model, batch, hook_name, 0, pos, neuron, e)
            p_minus = _prob_with_perturbation(model, batch, hook_name, 0, pos, neuron, -e)
            return (p_plus - p_minus) / (2 * e)

        grad = (4 * central(eps / 2) - central(eps)) / 3
        fd = h[pos, neuron].item() * grad
        scale = tokens.abs().max().item()
        assert tokens[pos, neuron].item() == pytest.approx(fd, rel=2e-3, abs=1e-3 * scale)
    # max/min aggregate the per-token attributions.
    assert torch.allclose(res.max[(module_type, layer)][0], tokens.max(0).values)
    assert torch.allclose(res.min[(module_type, layer)][0], tokens.min(0).values)


def test_every_module_type_gets_nonzero_gradient(tiny_llama):
    res = attribute_batch(tiny_llama, encode_qa(tiny_llama.tokenizer, QS, AS))
    for key in tiny_llama.arch.modules():
        assert res.max[key].abs().sum() > 0, key
        assert res.min[key].abs().sum() > 0, key
        assert (res.max[key] >= res.min[key]).all()


def test_padded_batch_equals_one_by_one(tiny_llama):
    cfg = AttributionConfig(batch_size=2)
    together = attribute(tiny_llama, QS, AS, cfg, progress=False)
    for i in range(2):
        alone = attribute(tiny_llama, QS[i : i + 1], AS[i : i + 1], cfg, progress=False)
        for key in together.keys:
            torch.testing.assert_close(together.max[key][i], alone.max[key][0], rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(together.min[key][i], alone.min[key][0], rtol=1e-9, atol=1e-12)


def test_logprob_target_is_prob_attribution_divided_by_prob(tiny_llama):
    batch = encode_qa(tiny_llama.tokenizer, QS[:1], AS[:1])
    p = attribute_batch(tiny_llama, batch, AttributionConfig(target="prob"))
    lp = attribute_batch(tiny_llama, batch, AttributionConfig(target="logprob"))
    prob = p.target_value[0]
    assert lp.target_value[0].exp().item() == pytest.approx(prob.item(), rel=1e-9)
    # d log P = dP / P, and P > 0, so max/min scale by 1/P exactly.
    torch.testing.assert_close(lp.max[("up", 0)], p.max[("up", 0)] / prob, rtol=1e-5, atol=1e-9)


def test_weights_grad_state_restored_and_no_hooks_left(tiny_llama):
    params = list(tiny_llama.bridge.parameters())
    before = [p.requires_grad for p in params]
    attribute_batch(tiny_llama, encode_qa(tiny_llama.tokenizer, QS[:1], AS[:1]))
    assert [p.requires_grad for p in params] == before
    assert all(len(hp.fwd_hooks) == 0 and len(hp.bwd_hooks) == 0 for hp in tiny_llama.bridge.hook_dict.values())
    assert all(p.grad is None for p in params)


def test_save_load_roundtrip(tiny_llama, tmp_path):
    res = attribute(tiny_llama, QS, AS, AttributionConfig(keep_tokens=("q.0",)), progress=False)
    path = res.save(tmp_path / "attr.safetensors")
    back = NeuronAttribution.load(path)
    assert back.keys == res.keys
    for k in res.keys:
        assert torch.equal(back.max[k], res.max[k]) and torch.equal(back.min[k], res.min[k])
    assert torch.equal(back.tokens[("q", 0)][1], res.tokens[("q", 0)][1])
    assert back.meta["data_fingerprint"] == res.meta["data_fingerprint"]


def test_matches_plain_pytorch_hooks_on_hf_linears(tiny_qwen2):
    """Independent computation without the bridge: forward hooks + retain_grad on the HF
    nn.Linear outputs of the raw HF model (Qwen2: q/k/v biases)."""
    model = tiny_qwen2
    batch = encode_qa(model.tokenizer, QS, AS)
    res = attribute_batch(model, batch, AttributionConfig(keep_tokens=("k.1", "down.0")))
    store = {}
    handles = []
    for key in model.arch.modules():
        def fh(mod, inp, out, key=key):
            out.retain_grad()
            store[key] = out
        handles.append(model.linear(*key).register_forward_hook(fh))
    try:
        with torch.enable_grad():
            emb = model.hf_model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
            logits = model.hf_model(inputs_embeds=emb, attention_mask=batch.attention_mask).logits
            sequence_logprob(logits, batch).exp().sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.hf_model.zero_grad(set_to_none=True)
    valid = batch.attention_mask.bool().unsqueeze(-1)
    for key, out in store.items():
        a = (out * out.grad).detach()
        torch.testing.assert_close(res.max[key], a.masked_fill(~valid, -float("inf")).amax(1), rtol=1e-6, atol=1e-15)
        torch.testing.assert_close(res.min[key], a.masked_fill(~valid, float("inf")).amin(1), rtol=1e-6, atol=1e-15)
    torch.testing.assert_close(res.tokens[("k", 1)][1], (store[("k", 1)] * store[("k", 1)].grad)[1][valid[1, :, 0]].detach())

"""Eq. 1 attribution against finite differences and an independent computation (SPEC §5, §13).

Tolerances (float64 tiny models unless stated):

* finite differences: Richardson-extrapolated central differences, ``rel=2e-3`` or
  ``1e-3 × max|A|`` of the module (HF's RMSNorm computes in float32 even in float64 models);
* independent computation (plain PyTorch hooks + ``retain_grad`` on the HF ``nn.Linear``
  outputs of an un-bridged copy): ``rtol=1e-6`` on the tiny model; on SmolLM2 (float32, same
  batch) ``1e-3·|A_ref| + 5e-4·max|A_ref|`` per module (measured worst: 1.2e-4·max);
* padded batch vs one sample at a time: ``rtol=1e-9, atol=1e-12`` on the tiny model (float64);
  SmolLM2 in float64: ``1e-9·|A| + 1e-9·max|A|`` per module (measured: 5e-15·max); SmolLM2 in
  float32: ``1e-3·|A| + 1e-4·max|A|`` (measured: bitwise equal with MKL).
"""

from __future__ import annotations

import pytest
import torch

import neuronscope.attribution as attribution_mod
from neuronscope.attribution import (
    AttributionConfig,
    NeuronAttribution,
    answer_logprob,
    attribute,
    attribute_batch,
    check_compatible,
)
from neuronscope.errors import NeuronscopeError
from neuronscope.models import MODULE_TYPES, load_model, plain_hf_model
from neuronscope.prompts import encode_qa, sequence_logprob

QS = ["Which country is Albert Einstein from?", "What is the capital of France?"]
AS = ["Germany", "Paris"]
# Ragged batch: different prompt lengths and multi-token answers (3, 1, 6 tokens).
RAGGED_Q = [
    "Who developed the theory of relativity?",
    "What is the capital of France?",
    "In which year did the first human land on the Moon, and who was the commander of that mission?",
]
RAGGED_A = ["Albert Einstein", "Paris", "1969, Neil Armstrong"]


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
    """Every module type, GQA k/v included (4 query heads, 2 KV heads), multi-token answer."""
    model = tiny_llama
    batch = encode_qa(model.tokenizer, RAGGED_Q[:1], RAGGED_A[:1])
    assert int(batch.target_mask.sum()) == 3  # P(y|x) is a product over 3 answer tokens
    layer = 1
    key = f"{module_type}.{layer}"
    res = attribute_batch(model, batch, AttributionConfig(keep_tokens=(key,)))
    tokens = res.tokens[(module_type, layer)][0]  # [pos, neurons]
    hook_name = model.hook_name(module_type, layer)
    h = _activation(model, batch, hook_name)[0]
    n_pos, n_neurons = tokens.shape
    assert n_pos == batch.input_ids.shape[1]
    assert n_neurons == model.arch.n_neurons(module_type)
    gen = torch.Generator().manual_seed(1)
    # HF's RMSNorm computes in float32 even in a float64 model, so a tiny step drowns in
    # rounding; central differences at two steps + Richardson extrapolation (error O(eps^4)).
    eps = 1e-2
    # Several (position, neuron) cells: the largest, the last position × last neuron (second
    # KV head for k/v), a prompt position in the first head, and random ones.
    top = int(tokens.abs().argmax())
    cells = [(top // n_neurons, top % n_neurons), (n_pos - 1, n_neurons - 1), (3, 0)] + [
        (int(torch.randint(n_pos, (1,), generator=gen)), int(torch.randint(n_neurons, (1,), generator=gen)))
        for _ in range(4)
    ]
    scale = tokens.abs().max().item()
    assert scale > 0
    for pos, neuron in cells:
        def central(e):
            p_plus = _prob_with_perturbation(model, batch, hook_name, 0, pos, neuron, e)
            p_minus = _prob_with_perturbation(model, batch, hook_name, 0, pos, neuron, -e)
            return (p_plus - p_minus) / (2 * e)

        grad = (4 * central(eps / 2) - central(eps)) / 3
        fd = h[pos, neuron].item() * grad
        assert tokens[pos, neuron].item() == pytest.approx(fd, rel=2e-3, abs=1e-3 * scale)
    # max/min aggregate the per-token attributions.
    assert torch.equal(res.max[(module_type, layer)][0], tokens.max(0).values)
    assert torch.equal(res.min[(module_type, layer)][0], tokens.min(0).values)


def test_every_module_type_gets_nonzero_gradient(tiny_llama):
    res = attribute_batch(tiny_llama, encode_qa(tiny_llama.tokenizer, QS, AS))
    assert res.keys == list(tiny_llama.arch.modules())
    for key in tiny_llama.arch.modules():
        assert res.max[key].shape == (2, tiny_llama.arch.n_neurons(key[0]))
        assert (res.max[key] > 0).any(), key
        assert (res.min[key] < 0).any(), key
        assert (res.max[key] >= res.min[key]).all()


def test_target_value_is_product_of_answer_token_probabilities(tiny_llama):
    model = tiny_llama
    batch = encode_qa(model.tokenizer, RAGGED_Q, RAGGED_A)
    res = attribute_batch(model, batch, AttributionConfig(layers=(0,), module_types=("up",)))
    with torch.no_grad():
        probs = model.bridge(batch.input_ids, attention_mask=batch.attention_mask).softmax(-1)
    for i, (q, a) in enumerate(zip(RAGGED_Q, RAGGED_A)):
        n_prompt = int(batch.prompt_mask[i].sum())
        answer = model.tokenizer(a, add_special_tokens=False)["input_ids"]
        expected = 1.0
        for j, tok in enumerate(answer):  # position n_prompt - 1 + j predicts answer token j
            expected *= probs[i, n_prompt - 1 + j, tok].item()
        assert res.target_value[i].item() == pytest.approx(expected, rel=1e-9)


def test_answer_logprob_equals_full_logits_and_fallback(tiny_qwen2, monkeypatch):
    """10 answer rows, and 1 answer row (padded with ignored rows to _MIN_UNEMBED_ROWS)."""
    model = tiny_qwen2
    for qs, ans in ((RAGGED_Q, RAGGED_A), (RAGGED_Q[1:2], RAGGED_A[1:2])):
        batch = encode_qa(model.tokenizer, qs, ans)
        with torch.no_grad():
            full = sequence_logprob(model.bridge(batch.input_ids, attention_mask=batch.attention_mask), batch)
            fast = answer_logprob(model, batch)
            with monkeypatch.context() as mp:
                mp.setattr(attribution_mod, "_supports_logits_mask", lambda m: False)
                fallback = answer_logprob(model, batch)
        torch.testing.assert_close(fast, full, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fallback, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("positions", ["all", "prompt"])
def test_padded_ragged_batch_equals_one_by_one(tiny_llama, positions):
    """Right-padded batch of 3 (different prompt and answer lengths) == one sample at a time."""
    keep = ("k.1", "down.0")
    cfg = AttributionConfig(batch_size=3, positions=positions, keep_tokens=keep)
    together = attribute(tiny_llama, RAGGED_Q, RAGGED_A, cfg, progress=False)
    batch = encode_qa(tiny_llama.tokenizer, RAGGED_Q, RAGGED_A)
    assert batch.attention_mask.sum(1).unique().numel() == 3  # really ragged
    for i in range(3):
        alone = attribute(tiny_llama, RAGGED_Q[i : i + 1], RAGGED_A[i : i + 1], cfg, progress=False)
        torch.testing.assert_close(together.target_value[i], alone.target_value[0], rtol=1e-9, atol=0)
        for key in together.keys:
            torch.testing.assert_close(together.max[key][i], alone.max[key][0], rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(together.min[key][i], alone.min[key][0], rtol=1e-9, atol=1e-12)
        for key in (("k", 1), ("down", 0)):
            n = int((batch.prompt_mask[i] if positions == "prompt" else batch.attention_mask[i].bool()).sum())
            assert together.tokens[key][i].shape == (n, tiny_llama.arch.n_neurons(key[0]))
            torch.testing.assert_close(together.tokens[key][i], alone.tokens[key][0], rtol=1e-9, atol=1e-12)


def test_prompt_positions_restrict_the_reduction(tiny_llama):
    batch = encode_qa(tiny_llama.tokenizer, RAGGED_Q, RAGGED_A)
    full = attribute_batch(tiny_llama, batch, AttributionConfig(keep_tokens=("q.0", "gate.1")))
    prompt = attribute_batch(tiny_llama, batch, AttributionConfig(positions="prompt"))
    for key in (("q", 0), ("gate", 1)):
        for i in range(3):
            n_prompt = int(batch.prompt_mask[i].sum())
            tok = full.tokens[key][i]
            # Input = prompt ⊕ answer[:-1]: a 1-token answer ("Paris") adds no input position.
            n_answer = len(tiny_llama.tokenizer(RAGGED_A[i], add_special_tokens=False)["input_ids"])
            assert tok.shape[0] == int(batch.attention_mask[i].sum()) == n_prompt + n_answer - 1
            assert torch.equal(prompt.max[key][i], tok[:n_prompt].max(0).values)
            assert torch.equal(prompt.min[key][i], tok[:n_prompt].min(0).values)
            assert torch.equal(full.max[key][i], tok.max(0).values)
            assert torch.equal(full.min[key][i], tok.min(0).values)


@pytest.mark.parametrize("prefix", [True, False])
def test_reducer_matches_masked_max_min(prefix):
    """The on-the-fly reduction == brute-force masked max/min, for prefix masks (right padding:
    one fused aminmax on the common prefix + the masked ragged tail) and arbitrary masks."""
    gen = torch.Generator().manual_seed(0)
    b, pos, n = 5, 11, 7
    a = torch.randn(b, pos, n, generator=gen, dtype=torch.float64)
    if prefix:
        lengths = torch.tensor([11, 3, 7, 1, 7])
        valid = torch.arange(pos).unsqueeze(0) < lengths.unsqueeze(1)
    else:
        valid = torch.rand(b, pos, generator=gen) < 0.5
        valid[:, 4] = True
    red = attribution_mod._Reducer(valid)
    assert red.prefix == prefix
    mx, mn = red(a)
    for i in range(b):
        assert torch.equal(mx[i], a[i][valid[i]].max(0).values)
        assert torch.equal(mn[i], a[i][valid[i]].min(0).values)
        assert torch.equal(red.tokens(a)[i], a[i][valid[i]])
    empty = valid.clone()
    empty[2] = False
    with pytest.raises(NeuronscopeError, match="sample 2"):
        attribution_mod._Reducer(empty)


def test_logprob_target_is_prob_attribution_divided_by_prob(tiny_llama):
    batch = encode_qa(tiny_llama.tokenizer, QS[:1], AS[:1])
    p = attribute_batch(tiny_llama, batch, AttributionConfig(target="prob"))
    lp = attribute_batch(tiny_llama, batch, AttributionConfig(target="logprob"))
    prob = p.target_value[0]
    assert lp.target_value[0].exp().item() == pytest.approx(prob.item(), rel=1e-9)
    # d log P = dP / P, and P > 0, so max/min scale by 1/P exactly.
    for key in p.keys:
        torch.testing.assert_close(lp.max[key], p.max[key] / prob, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(lp.min[key], p.min[key] / prob, rtol=1e-5, atol=1e-9)


def test_bfloat16_model_attributes_in_float32():
    """3B models run in bfloat16: the product h·∂P/∂h is formed and reduced in float32."""
    bf = load_model("tiny-llama", dtype=torch.bfloat16, seed=0)
    batch = encode_qa(bf.tokenizer, QS, AS)
    res = attribute_batch(bf, batch, AttributionConfig(target="logprob"))
    ref = attribute_batch(load_model("tiny-llama", dtype=torch.float64, seed=0), batch, AttributionConfig(target="logprob"))
    a = res.flat("max")
    assert a.dtype == torch.float32 and torch.isfinite(a).all()
    corr = torch.corrcoef(torch.stack([a.double().flatten(), ref.flat("max").flatten()]))[0, 1]
    assert corr > 0.95


def test_bad_options_raise(tiny_llama):
    batch = encode_qa(tiny_llama.tokenizer, QS[:1], AS[:1])
    with pytest.raises(NeuronscopeError, match="keep_tokens"):
        attribute_batch(tiny_llama, batch, AttributionConfig(keep_tokens=("q.7",)))
    with pytest.raises(NeuronscopeError, match="keep_tokens"):
        attribute_batch(tiny_llama, batch, AttributionConfig(keep_tokens=("query.0",)))
    with pytest.raises(NeuronscopeError, match="module_types"):
        attribute_batch(tiny_llama, batch, AttributionConfig(module_types=("qkv",)))
    with pytest.raises(NeuronscopeError, match="target"):
        AttributionConfig(target="loss")
    with pytest.raises(NeuronscopeError, match="positions"):
        AttributionConfig(positions="answer")
    with pytest.raises(NeuronscopeError, match="empty split"):
        attribute(tiny_llama, [], [], progress=False)


def test_weights_grad_state_restored_and_no_hooks_left(tiny_llama):
    params = list(tiny_llama.bridge.parameters())
    before = [p.requires_grad for p in params]
    attribute_batch(tiny_llama, encode_qa(tiny_llama.tokenizer, QS[:1], AS[:1]))
    assert [p.requires_grad for p in params] == before
    assert all(len(hp.fwd_hooks) == 0 and len(hp.bwd_hooks) == 0 for hp in tiny_llama.bridge.hook_dict.values())
    assert all(p.grad is None for p in params)


def test_save_load_roundtrip(tiny_llama, tmp_path):
    cfg = AttributionConfig(keep_tokens=("q.0",), target="logprob", positions="prompt")
    res = attribute(tiny_llama, QS, AS, cfg, progress=False)
    path = res.save(tmp_path / "attr.safetensors")
    back = NeuronAttribution.load(path)
    assert back.keys == res.keys
    for k in res.keys:
        assert torch.equal(back.max[k], res.max[k]) and torch.equal(back.min[k], res.min[k])
    assert torch.equal(back.target_value, res.target_value)
    assert torch.equal(back.tokens[("q", 0)][1], res.tokens[("q", 0)][1])
    meta = back.meta
    assert meta["model"] == "tiny-llama" and meta["n_samples"] == 2
    assert meta["data_fingerprint"] == res.meta["data_fingerprint"] and len(meta["data_fingerprint"]) == 16
    assert meta["target"] == "logprob" and meta["positions"] == "prompt"
    assert meta["config"]["keep_tokens"] == ["q.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attr.safetensors", "attr.safetensors.json"]


def test_load_errors_and_compatibility(tiny_llama, tmp_path):
    with pytest.raises(NeuronscopeError, match="not found"):
        NeuronAttribution.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(NeuronscopeError, match="not an attribution file"):
        NeuronAttribution.load(tmp_path / "junk.safetensors")
    cfg = AttributionConfig(layers=(0,))
    a = attribute(tiny_llama, QS, AS, cfg, progress=False)
    check_compatible(a, a)
    with pytest.raises(NeuronscopeError, match="different data"):
        check_compatible(a, attribute(tiny_llama, QS[::-1], AS[::-1], cfg, progress=False))
    with pytest.raises(NeuronscopeError, match="target"):
        check_compatible(a, attribute(tiny_llama, QS, AS, AttributionConfig(layers=(0,), target="logprob"), progress=False))
    with pytest.raises(NeuronscopeError, match="positions"):
        check_compatible(a, attribute(tiny_llama, QS, AS, AttributionConfig(layers=(0,), positions="prompt"), progress=False))


def _independent_attribution(model, batch):
    """Eq. 1 without the bridge: an un-bridged HF copy, forward hooks + retain_grad on the
    outputs of its nn.Linear modules, full logits, one backward of Σ P(y|x)."""
    hf = plain_hf_model(model)
    for p in hf.parameters():
        p.requires_grad_(False)
    store, handles = {}, []
    for key in model.arch.modules():
        path = model.arch.linear_paths[key].replace("._original_component", "")
        lin = hf.get_submodule(path)
        assert isinstance(lin, torch.nn.Linear)

        def fh(mod, inp, out, key=key):
            out.retain_grad()
            store[key] = out

        handles.append(lin.register_forward_hook(fh))
    try:
        with torch.enable_grad():
            emb = hf.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
            logits = hf(inputs_embeds=emb, attention_mask=batch.attention_mask).logits
            sequence_logprob(logits, batch).exp().sum().backward()
    finally:
        for h in handles:
            h.remove()
    valid = batch.attention_mask.bool().unsqueeze(-1)
    out = {}
    for key, act in store.items():
        a = (act * act.grad).detach()
        out[key] = (a.masked_fill(~valid, -float("inf")).amax(1), a.masked_fill(~valid, float("inf")).amin(1), a)
    return out


def test_matches_plain_pytorch_hooks_on_hf_linears(tiny_qwen2):
    """Independent computation on the tiny Qwen2 (q/k/v biases), every module and layer."""
    model = tiny_qwen2
    batch = encode_qa(model.tokenizer, RAGGED_Q, RAGGED_A)
    res = attribute_batch(model, batch, AttributionConfig(keep_tokens=("k.1",)))
    ref = _independent_attribution(model, batch)
    assert set(ref) == set(res.keys)
    for key, (mx, mn, _) in ref.items():
        torch.testing.assert_close(res.max[key], mx, rtol=1e-6, atol=1e-15)
        torch.testing.assert_close(res.min[key], mn, rtol=1e-6, atol=1e-15)
    n = int(batch.attention_mask[1].sum())
    torch.testing.assert_close(res.tokens[("k", 1)][1], ref[("k", 1)][2][1, :n], rtol=1e-6, atol=1e-15)


# ---------------------------------------------------------------- SmolLM2 (slow)

SMOL_Q = RAGGED_Q + ["Which country is Albert Einstein from?"]
SMOL_A = RAGGED_A + ["Germany"]


def _assert_batch_equals_one_by_one(model, cfg, *, target_rtol: float, rel: float, scaled: float):
    """Attribute SMOL_Q/SMOL_A as one padded batch and one sample at a time; assert they agree.

    Per module: ``|a − b| ≤ rel·|b| + scaled·max|b|`` for max, min and any kept per-token
    attributions; P(y|x) to ``target_rtol``. Returns the batched result.
    """
    together = attribute(model, SMOL_Q, SMOL_A, cfg, progress=False)
    for i in range(len(SMOL_Q)):
        alone = attribute(model, SMOL_Q[i : i + 1], SMOL_A[i : i + 1], cfg, progress=False)
        torch.testing.assert_close(together.target_value[i], alone.target_value[0], rtol=target_rtol, atol=0)
        for key in together.keys:
            _assert_close_scaled(together.max[key][i], alone.max[key][0], rel, scaled, f"max {key} sample {i}")
            _assert_close_scaled(together.min[key][i], alone.min[key][0], rel, scaled, f"min {key} sample {i}")
        for key in together.tokens:
            _assert_close_scaled(together.tokens[key][i], alone.tokens[key][0], rel, scaled, f"tokens {key} sample {i}")
    return together


def _assert_close_scaled(actual, expected, rtol, scale_frac, what):
    """|actual − expected| ≤ rtol·|expected| + scale_frac·max|expected| (per module)."""
    tol = rtol * expected.abs() + scale_frac * expected.abs().max()
    bad = (actual - expected).abs() > tol
    assert not bad.any(), f"{what}: {int(bad.sum())} of {bad.numel()} differ; max diff {(actual - expected).abs().max():.3g}"


@pytest.mark.slow
def test_smollm2_matches_independent_computation_every_module(smollm2):
    """SmolLM2 (float32, 30 layers, GQA): engine == plain PyTorch hooks on the raw HF linears,
    for 4 prompts in one padded batch; every one of the 210 modules gets a nonzero gradient."""
    model = smollm2
    batch = encode_qa(model.tokenizer, SMOL_Q, SMOL_A)
    res = attribute_batch(model, batch)
    ref = _independent_attribution(model, batch)
    assert len(res.keys) == 210 and set(ref) == set(res.keys)
    for key, (mx, mn, _) in ref.items():
        _assert_close_scaled(res.max[key], mx, 1e-3, 5e-4, f"max {key}")
        _assert_close_scaled(res.min[key], mn, 1e-3, 5e-4, f"min {key}")
        assert (res.max[key] > 0).any() and (res.min[key] < 0).any(), key
    with torch.no_grad():
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    torch.testing.assert_close(res.target_value, sequence_logprob(logits, batch).exp(), rtol=1e-4, atol=0)


@pytest.mark.slow
def test_smollm2_padded_batch_equals_one_by_one():
    """SmolLM2 in float64: a right-padded batch of 4 (prompts 37–51 tokens, answers of 1–6
    tokens) gives the numbers of one-sample batches to 1e-9 of each module's max |A|, for all
    210 modules (measured: 5e-15)."""
    model = load_model("smollm2-135m-instruct", dtype=torch.float64)
    cfg = AttributionConfig(batch_size=4, keep_tokens=("k.29",))
    together = _assert_batch_equals_one_by_one(model, cfg, target_rtol=1e-12, rel=1e-9, scaled=1e-9)
    assert len(together.keys) == 210


@pytest.mark.slow
def test_smollm2_float32_padded_batch_equals_one_by_one(smollm2):
    """The same in float32 (the default dtype): to 1e-4 of each module's max |A| (measured:
    bitwise equal on MKL; the vocabulary projection is never fed fewer than 8 rows, see
    ``attribution._MIN_UNEMBED_ROWS``)."""
    cfg = AttributionConfig(batch_size=4, layers=(0, 14, 25, 29))
    _assert_batch_equals_one_by_one(smollm2, cfg, target_rtol=1e-5, rel=1e-3, scaled=1e-4)

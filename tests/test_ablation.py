"""Neuron ablation through bridge hooks, checked against editing the weights themselves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronscope.ablation import ablate, ablation_sweep, activation_means, group_neurons, random_neurons_like
from neuronscope.data import QAItem
from neuronscope.errors import NeuronscopeError
from neuronscope.evaluation import mcqa_evaluate
from neuronscope.models import load_model
from neuronscope.prompts import encode_qa

QS = ["What is the capital of France?", "Who wrote Hamlet?", "Which planet is largest?"]
ANS = ["Paris", "William Shakespeare", "Jupiter"]

# Neurons in every module type, including q/k/v whose hooks see [batch, pos, heads, d_head] views.
NEURONS = [("q", 0, 3), ("q", 0, 40), ("k", 1, 5), ("v", 0, 17), ("o", 1, 9), ("gate", 0, 100),
           ("up", 1, 7), ("down", 0, 63), ("down", 0, 0)]


def _copy(model):
    """An independent copy with identical weights (the tiny models' init is seeded)."""
    return load_model(model.name, dtype=torch.float64, seed=0)


def _logits(model, batch):
    with torch.no_grad():
        return model.bridge(batch.input_ids, attention_mask=batch.attention_mask)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_zero_ablation_equals_zeroed_weight_rows(fixture, request):
    model = request.getfixturevalue(fixture)
    batch = encode_qa(model.tokenizer, QS, ANS)
    plain = _logits(model, batch)
    edited = _copy(model)
    with torch.no_grad():
        for t, layer, i in NEURONS:
            lin = edited.linear(t, layer)
            lin.weight[i] = 0
            if lin.bias is not None:  # Qwen2 q/k/v carry biases
                lin.bias[i] = 0
    expect = _logits(edited, batch)
    with ablate(model, NEURONS) as groups:
        got = _logits(model, batch)
    assert groups[("q", 0)] == [3, 40]
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-10)
    assert float((got - plain).abs().max()) > 1e-3  # the ablation did something
    torch.testing.assert_close(_logits(model, batch), plain, rtol=0, atol=0)  # hooks removed on exit


def test_mean_ablation_equals_bias_edit_and_means_are_exact(tiny_llama):
    model = tiny_llama
    keys = sorted({(t, layer) for t, layer, _ in NEURONS})
    means = activation_means(model, QS, ANS, modules=keys, batch_size=2)
    # Independent means: torch forward hooks on the HF linears, one sample at a time, no padding.
    for k in keys:
        lin = model.linear(*k)
        outs = []
        h = lin.register_forward_hook(lambda mod, inp, out: outs.append(out.detach()))
        try:
            for q, a in zip(QS, ANS):
                b = encode_qa(model.tokenizer, [q], [a])
                _logits(model, b)
        finally:
            h.remove()
        ref = torch.cat([o.reshape(-1, o.shape[-1]) for o in outs]).mean(0)
        torch.testing.assert_close(means[k].double(), ref, rtol=1e-5, atol=1e-6)
    # Mean ablation == weight row zeroed and bias entry set to the mean.
    batch = encode_qa(model.tokenizer, QS[:2], ANS[:2])
    edited = _copy(model)
    with torch.no_grad():
        for t, layer, i in NEURONS:
            lin = edited.linear(t, layer)
            if lin.bias is None:
                lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype))
            lin.weight[i] = 0
            lin.bias[i] = means[(t, layer)][i].double()
    expect = _logits(edited, batch)
    with ablate(model, NEURONS, mode="mean", means=means):
        got = _logits(model, batch)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-10)


def test_ablation_applies_to_evaluation_and_sweep(tiny_llama):
    items = [QAItem(f"i{j}", q, a, ("Rome", "Mars")) for j, (q, a) in enumerate(zip(QS, ANS))]
    base = mcqa_evaluate(tiny_llama, items)
    # Ablate every neuron of the last down projection: the residual update of block 1's MLP vanishes.
    all_down = [("down", 1, i) for i in range(tiny_llama.arch.d_model)]
    with ablate(tiny_llama, all_down):
        abl = mcqa_evaluate(tiny_llama, items)
    assert abl.option_logprobs != base.option_logprobs
    sweep = ablation_sweep(tiny_llama, items, all_down, [0, 10, 64], control_seed=0)
    assert sweep["count"] == [0, 10, 64]
    assert sweep["accuracy"][0] == base.accuracy
    assert sweep["accuracy"][2] == abl.accuracy
    assert sweep["control_accuracy"][0] == base.accuracy


def test_neuron_validation_and_controls(tiny_llama):
    with pytest.raises(NeuronscopeError, match="out of range"):
        with ablate(tiny_llama, [("q", 0, 10_000)]):
            pass
    with pytest.raises(NeuronscopeError, match="unknown module type"):
        group_neurons(tiny_llama, [("mlp", 0, 1)])
    with pytest.raises(NeuronscopeError, match="layer 5"):
        group_neurons(tiny_llama, [("q", 5, 1)])
    with pytest.raises(NeuronscopeError, match="needs means"):
        with ablate(tiny_llama, NEURONS, mode="mean"):
            pass
    # top_neurons rows (type, layer, index, value) and mappings are accepted
    assert group_neurons(tiny_llama, [("q", 0, 1, 0.5), ("q", 0, 1, 0.4)]) == {("q", 0): [1]}
    assert group_neurons(tiny_llama, {("up", 1): [2, 3]}) == {("up", 1): [2, 3]}
    ctrl = random_neurons_like(tiny_llama, NEURONS, seed=0)
    assert len(ctrl) == len(NEURONS) and not set(ctrl) & set(NEURONS)
    assert {(t, layer) for t, layer, _ in ctrl} == {(t, layer) for t, layer, _ in NEURONS}
    assert ctrl == random_neurons_like(tiny_llama, NEURONS, seed=0)


def test_patch_restores_source_activations(tiny_llama):
    """Patching every attention-output and MLP-output neuron of every layer from a source model that
    shares embeddings, final norm and unembedding makes the residual stream — hence the logits —
    exactly the source's."""
    from neuronscope.ablation import patch

    target = tiny_llama
    source = _copy(target)
    with torch.no_grad():
        for t, layer in source.arch.modules():
            source.linear(t, layer).weight.mul_(1.5).add_(0.01)
    batch = encode_qa(target.tokenizer, QS, ANS)
    own, src = _logits(target, batch), _logits(source, batch)
    assert float((own - src).abs().max()) > 1e-2
    every = [(t, layer, i) for layer in range(target.arch.n_layers) for t in ("o", "down")
             for i in range(target.arch.n_neurons(t))]
    with patch(target, source, every):
        got = _logits(target, batch)
    torch.testing.assert_close(got, src, rtol=0, atol=1e-10)
    torch.testing.assert_close(_logits(target, batch), own, rtol=0, atol=0)  # hooks removed
    # a subset: equals zeroing nothing else; q neurons patched through the [b, pos, heads, d_head] view
    with patch(target, source, [("q", 0, 5)]):
        part = _logits(target, batch)
    assert 0 < float((part - own).abs().max())
    with patch(target, source, []):
        torch.testing.assert_close(_logits(target, batch), own, rtol=0, atol=0)
    with pytest.raises(NeuronscopeError, match="another model"):
        with patch(target, target, [("q", 0, 5)]):
            pass
    items = [QAItem(f"i{j}", q, a, ("Rome", "Mars")) for j, (q, a) in enumerate(zip(QS, ANS))]
    sweep = ablation_sweep(target, items, every, [0, len(every)], mode="patch", source=source, control_seed=None)
    assert sweep["accuracy"][0] == mcqa_evaluate(target, items).accuracy
    assert sweep["accuracy"][1] == mcqa_evaluate(source, items).accuracy
    assert "control_accuracy" not in sweep

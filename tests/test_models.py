"""Module maps resolved from the bridge (SPEC §3–4): tiny Llama/Qwen2, an unmappable Mamba, the embedded SmolLM2."""

from __future__ import annotations

import pytest
import torch

from neuronscope.errors import ModelError
from neuronscope.models import MODULE_TYPES, _boot_bridge, default_tokenizer, load_model, resolve_architecture
from neuronscope.prompts import chat_prompt

# HF attribute name of each module type in Llama-family decoder layers.
HF_NAMES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
# Tiny models: d_model 64, 4 query heads, 2 KV heads (d_head 16), d_mlp 128.
TINY_NEURONS = {"q": 64, "k": 32, "v": 32, "o": 64, "gate": 128, "up": 128, "down": 64}


def _hook_widths(model, ids):
    """Flattened last-dim width of every mapped hook on a real forward pass."""
    widths = {}

    def make(key):
        def hook(act, hook):
            widths[key] = act.reshape(act.shape[0], act.shape[1], -1).shape[-1]

        return hook

    hooks = [(model.hook_name(*key), make(key)) for key in model.arch.modules()]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(ids)
    return widths


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_tiny_models_map_all_seven_module_types(fixture, request):
    model = request.getfixturevalue(fixture)
    arch = model.arch
    assert arch.module_types == MODULE_TYPES
    assert (arch.n_layers, arch.d_model, arch.n_heads, arch.n_kv_heads, arch.d_head, arch.d_mlp) == (2, 64, 4, 2, 16, 128)
    assert {t: arch.n_neurons(t) for t in MODULE_TYPES} == TINY_NEURONS
    assert list(arch.modules()) == [(t, layer) for layer in range(2) for t in MODULE_TYPES]
    widths = _hook_widths(model, torch.tensor([[5, 6, 7, 8, 9]]))
    for t, layer in arch.modules():
        assert model.hook_name(t, layer).startswith(f"blocks.{layer}.")
        # The bridge wraps HF modules in place; without the wrappers the path is HF's own name.
        plain = arch.linear_paths[(t, layer)].replace("._original_component", "")
        assert plain == f"model.layers.{layer}.{HF_NAMES[t]}"
        lin = model.linear(t, layer)
        assert isinstance(lin, torch.nn.Linear)
        # Neurons = output features = weight rows = width of the hook's activation.
        assert lin.out_features == lin.weight.shape[0] == TINY_NEURONS[t] == widths[(t, layer)]


def test_qwen2_qkv_biases_are_on_the_mapped_linears(tiny_qwen2, tiny_llama):
    for layer in range(2):
        for t in ("q", "k", "v"):
            assert tiny_qwen2.linear(t, layer).bias is not None
            assert tiny_qwen2.linear(t, layer).bias.shape == (TINY_NEURONS[t],)
            assert tiny_llama.linear(t, layer).bias is None
        assert tiny_qwen2.linear("o", layer).bias is None


def test_unmappable_architecture_raises_clear_model_error():
    """Mamba: supported by the bridge, but has no attention or MLP projections to map.
    (GPT-2, the former example, is mapped now: tests/test_architectures.py.)"""
    from transformers import MambaConfig, MambaForCausalLM

    tok = default_tokenizer()
    torch.manual_seed(0)
    hf = MambaForCausalLM(MambaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, state_size=4)).eval()
    bridge = _boot_bridge("mamba", hf, tok, "cpu")  # the bridge itself supports Mamba
    with pytest.raises(ModelError) as err:
        resolve_architecture(bridge)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("MambaForCausalLM: cannot map module types")
    for part in ("q (blocks.0.attn.q)", "o (blocks.0.attn.o)", "up (blocks.0.mlp.in)", "down (blocks.0.mlp.out)"):
        assert part in msg


def test_missing_checkpoint_dir_is_a_model_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json missing"):
        load_model(str(tmp_path / "empty"))


@pytest.mark.slow
def test_embedded_smollm2_shape_and_answers_paris(smollm2):
    arch = smollm2.arch
    assert (arch.n_layers, arch.d_model, arch.n_heads, arch.n_kv_heads, arch.d_mlp) == (30, 576, 9, 3, 1536)
    assert arch.d_head == 64 and arch.module_types == MODULE_TYPES
    assert {t: arch.n_neurons(t) for t in MODULE_TYPES} == {
        "q": 576, "k": 192, "v": 192, "o": 576, "gate": 1536, "up": 1536, "down": 576
    }
    assert next(smollm2.hf_model.parameters()).dtype == torch.float32
    tok = smollm2.tokenizer
    prompt = chat_prompt(tok, "What is the capital of France?")
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    # Greedy decoding through the bridge (raw HF weights), without a KV cache.
    out = ids
    with torch.no_grad():
        for _ in range(12):
            nxt = smollm2.bridge(out)[0, -1].argmax()
            out = torch.cat([out, nxt.view(1, 1)], dim=1)
            if nxt.item() == tok.eos_token_id:
                break
        # The bridge and the wrapped HF model give the same logits (no weight folding).
        torch.testing.assert_close(smollm2.bridge(ids), smollm2.hf_model(input_ids=ids).logits, rtol=1e-5, atol=1e-4)
    reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply


@pytest.mark.slow
def test_smollm2_save_pretrained_reload_identical_logits(smollm2, tmp_path):
    path = smollm2.save(tmp_path / "smollm2")
    assert (path / "config.json").exists() and any(path.glob("*.safetensors"))
    back = load_model(str(path))
    assert back.arch == smollm2.arch
    ids = torch.tensor([smollm2.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(back.bridge(ids), smollm2.bridge(ids), rtol=0, atol=0)
    assert back.tokenizer("Paris")["input_ids"] == smollm2.tokenizer("Paris")["input_ids"]

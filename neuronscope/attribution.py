"""Neuron attribution, paper Eq. 1, on TransformerLens hook points (SPEC §4–5).

``A[i, k] = h[i, k] · ∂P(y|x)/∂h[i, k]`` for every neuron i (output feature) of every module
(q, k, v, o, gate, up, down) and layer, at every input position k. One forward and one backward
pass per batch cover all modules: a forward hook on each module's ``hook_out`` registers a
tensor hook on that very activation, which receives ``∂P/∂h`` during the backward pass,
forms ``h ⊙ ∂P/∂h`` and immediately reduces it to the per-sample ``max_k`` and ``min_k`` of
paper App. A, so no ``[batch, pos, neurons]`` tensor outlives its hook (unless per-token
attributions are requested for chosen modules with ``keep_tokens``).

Cost (``benchmarks/attribution.py``): weights are frozen during attribution (only activations
need gradients), which skips the weight-gradient matmuls of a training backward pass; the
unembedding runs only on the answer rows that enter P(y|x); right padding makes the selected
positions a per-sample prefix, so max and min come from one fused ``aminmax`` over the common
prefix plus a masked pass over the short ragged tail only.

Memory: besides what autograd saves, the engine holds one reference per hooked module to its
output ``h`` (a view, never a copy) until the gradient arrives. For gate/up autograd saves that
same storage anyway (SiLU input, product operand); for q/k/v/o/down it does not, so the engine's
only extra activation memory is their outputs,
``n_heads·d_head + 2·n_kv_heads·d_head + 2·d_model`` values per token and layer — ~124 MiB for
SmolLM2 at 8×64 tokens, against ~480 MiB saved by autograd and ~830 MiB saved by a plain
training forward (measured; recomputing h instead would cost another forward of five linears
per layer).

The previous ``requires_grad`` state of the weights and the hook registry are restored even if
the computation raises.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from neuronscope.errors import NeuronscopeError, atomic_path
from neuronscope.models import HookedModel
from neuronscope.prompts import TokenBatch, encode_qa

ModuleKey = tuple[str, int]


@dataclass
class AttributionConfig:
    """Options of :func:`attribute` (serialised next to saved results).

    Attributes:
        target: ``"prob"`` — P(y|x), the product over answer tokens (paper Eq. 1) — or
            ``"logprob"`` — log P(y|x).
        positions: ``"all"`` non-padding input positions (default) or ``"prompt"`` only.
        module_types: Module types to attribute.
        layers: Layers to attribute (None = all).
        batch_size: Samples per forward/backward pass.
        keep_tokens: Module keys ``"type.layer"`` (e.g. ``"q.12"``) whose full per-token
            attributions are kept for token-level exploration.
    """

    target: Literal["prob", "logprob"] = "prob"
    positions: Literal["all", "prompt"] = "all"
    module_types: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
    layers: tuple[int, ...] | None = None
    batch_size: int = 8
    keep_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in ("prob", "logprob"):
            raise NeuronscopeError(f"target: expected 'prob' or 'logprob', got {self.target!r}")
        if self.positions not in ("all", "prompt"):
            raise NeuronscopeError(f"positions: expected 'all' or 'prompt', got {self.positions!r}")
        if self.batch_size < 1:
            raise NeuronscopeError(f"batch_size: must be ≥ 1, got {self.batch_size}")
        self.module_types = tuple(self.module_types)
        self.layers = None if self.layers is None else tuple(int(x) for x in self.layers)
        self.keep_tokens = tuple(self.keep_tokens)


@dataclass
class NeuronAttribution:
    """Per-sample aggregated attributions, labelled by (module type, layer) (SPEC §5).

    Attributes:
        max: ``(type, layer) -> Float[Tensor, "n_samples n_neurons"]``, ``max_k A[i, k]``.
        min: ``(type, layer) -> Float[Tensor, "n_samples n_neurons"]``, ``min_k A[i, k]``.
        target_value: ``Float[Tensor, "n_samples"]`` P(y|x) (or log P) of each sample.
        tokens: ``(type, layer) -> list of Float[Tensor, "pos n_neurons"]`` per-token
            attributions for the modules in ``config.keep_tokens`` (valid positions only).
        meta: Model name, data fingerprint, config.

    Units: attribution has the units of the target (probability, or nats for ``logprob``).
    """

    max: dict[ModuleKey, Tensor]
    min: dict[ModuleKey, Tensor]
    target_value: Tensor
    tokens: dict[ModuleKey, list[Tensor]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def keys(self) -> list[ModuleKey]:
        return list(self.max.keys())

    @property
    def n_samples(self) -> int:
        return int(self.target_value.shape[0])

    def flat(self, which: Literal["max", "min"] = "max") -> Float[Tensor, "n_samples n_total_neurons"]:
        """All modules concatenated along the neuron axis, in ``keys`` order."""
        src = self.max if which == "max" else self.min
        return torch.cat([src[k] for k in self.keys], dim=1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (safetensors) and ``path.json`` metadata, atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"target_value": self.target_value.contiguous()}
        for (t, layer), v in self.max.items():
            tensors[f"max.{t}.{layer}"] = v.contiguous()
            tensors[f"min.{t}.{layer}"] = self.min[(t, layer)].contiguous()
        for (t, layer), seqs in self.tokens.items():
            for i, s in enumerate(seqs):
                tensors[f"tokens.{t}.{layer}.{i}"] = s.contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        meta = dict(self.meta)
        meta["keys"] = [[t, layer] for t, layer in self.keys]
        with atomic_path(path.with_suffix(path.suffix + ".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeuronAttribution":
        """Read a file written by :meth:`save`.

        Raises:
            NeuronscopeError: The file or its ``.json`` metadata is missing or malformed.
        """
        from safetensors.torch import load_file

        path = Path(path)
        meta_path = path.with_suffix(path.suffix + ".json")
        if not path.exists():
            raise NeuronscopeError(f"{path}: attribution file not found")
        try:
            tensors = load_file(str(path))
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        except Exception as exc:  # noqa: BLE001
            raise NeuronscopeError(f"{path}: not an attribution file ({exc})") from None
        if "target_value" not in tensors:
            raise NeuronscopeError(f"{path}: field 'target_value' missing; not an attribution file")
        mx, mn, toks = {}, {}, {}
        for name, v in tensors.items():
            parts = name.split(".")
            if parts[0] in ("max", "min"):
                (mx if parts[0] == "max" else mn)[(parts[1], int(parts[2]))] = v
            elif parts[0] == "tokens":
                toks.setdefault((parts[1], int(parts[2])), {})[int(parts[3])] = v
        order = [tuple((k[0], int(k[1]))) for k in meta.get("keys", [])] or sorted(mx, key=lambda k: (k[1], k[0]))
        mx = {k: mx[k] for k in order}
        mn = {k: mn[k] for k in order}
        tokens = {k: [d[i] for i in sorted(d)] for k, d in toks.items()}
        return cls(max=mx, min=mn, target_value=tensors["target_value"], tokens=tokens, meta=meta)


@contextlib.contextmanager
def frozen_weights(model: HookedModel) -> Iterator[None]:
    """Set ``requires_grad=False`` on all parameters; restore the previous state on exit."""
    params = list(model.bridge.parameters())
    state = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, s in zip(params, state):
            p.requires_grad_(s)


def _selected_keys(model: HookedModel, cfg: AttributionConfig) -> list[ModuleKey]:
    """The ``(type, layer)`` keys to attribute.

    Module types of paper §4 that the architecture does not have (``gate`` of GPT-2 and
    GPT-NeoX, see ``Architecture.absent_types``) are skipped, so the default seven-type config
    works on every architecture; a name that is no module type, or a selection that leaves no
    module, raises.
    """
    layers = range(model.arch.n_layers) if cfg.layers is None else cfg.layers
    for t in cfg.module_types:
        if t not in model.arch.module_types and t not in model.arch.absent_types:
            raise NeuronscopeError(f"module_types: unknown module type {t!r} (have {model.arch.module_types})")
    types = [t for t in cfg.module_types if t in model.arch.module_types]
    if not types:
        raise NeuronscopeError(
            f"module_types: {model.name} has none of {tuple(cfg.module_types)} (have {model.arch.module_types})"
        )
    for layer in layers:
        if not 0 <= layer < model.arch.n_layers:
            raise NeuronscopeError(f"layers: layer {layer} out of range 0..{model.arch.n_layers - 1}")
    return [(t, layer) for layer in layers for t in types]


def _parse_keep(keys: Sequence[str], model: HookedModel) -> set[ModuleKey]:
    out = set()
    for k in keys:
        t, _, layer = str(k).partition(".")
        if t not in model.arch.module_types or not layer.isdigit() or not 0 <= int(layer) < model.arch.n_layers:
            raise NeuronscopeError(
                f"keep_tokens: {k!r} is not 'type.layer' with type in {model.arch.module_types} "
                f"and layer in 0..{model.arch.n_layers - 1}"
            )
        out.add((t, int(layer)))
    return out


def _supports_logits_mask(model: HookedModel) -> bool:
    """Whether the HF forward accepts a boolean ``logits_to_keep`` mask (transformers ≥ 5)."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.hf_model.forward).parameters
    except (TypeError, ValueError):
        return False


#: Fewest rows handed to the vocabulary projection. With 1–2 rows, CPU BLAS takes a path whose
#: backward (a reduction over the whole vocabulary) loses about two decimal digits in float32
#: (SmolLM2, one sample with a one-token answer: 9e-4 of max|A| off float64 instead of 1e-5);
#: from 4 rows on it is as accurate as the full projection. Extra rows are computed and ignored.
_MIN_UNEMBED_ROWS = 8


def answer_logprob(
    model: HookedModel, batch: TokenBatch
) -> Float[Tensor, " batch"]:
    """log P(y|x) per sample, projecting onto the vocabulary only at answer positions.

    Same value as :func:`neuronscope.prompts.sequence_logprob` on full logits, but the
    unembedding (and its backward) runs on the ``n_answer_tokens`` rows that enter
    P(y|x) (at least ``_MIN_UNEMBED_ROWS``, for float32 accuracy) instead of all
    ``batch × pos`` rows, through HF's boolean ``logits_to_keep``; models without it fall
    back to full logits.

    Returns:
        ``[batch]`` log-probabilities in nats, differentiable.
    """
    mask = batch.target_mask
    logits = None
    if _supports_logits_mask(model):
        kept = mask
        n_answer = int(mask.sum())
        if n_answer < _MIN_UNEMBED_ROWS:
            spare = (batch.attention_mask.bool() & ~mask).flatten().nonzero().squeeze(1)
            kept = mask.flatten().clone()
            kept[spare[: _MIN_UNEMBED_ROWS - n_answer]] = True
            kept = kept.view_as(mask)
        try:
            out = model.bridge(batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=kept)
        except (TypeError, ValueError, IndexError):
            out = None
        if out is not None and out.dim() == 2 and out.shape[0] == int(kept.sum()):
            # Rows come in row-major order of `kept`; keep those that are answer tokens.
            logits = out if kept is mask else out[mask[kept]]
    if logits is None:
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)[mask]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = batch.target_ids[mask]
    tok = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)[mask]
    return torch.zeros(mask.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)


class _Reducer:
    """Per-sample ``max_k`` / ``min_k`` over the selected positions of ``[batch, pos, n]`` tensors.

    Right padding makes the selected positions of every sample a prefix ``0 .. L_i - 1``
    (both for all non-padding positions and for the prompt). The common prefix
    ``0 .. min L - 1`` is reduced for the whole batch in one fused ``aminmax`` (no copy);
    only the ragged tail ``min L .. max L - 1`` is masked, on a copy of that slice alone.
    A mask that is not a prefix (e.g. a hand-made left-padded batch) uses the general
    masked path.
    """

    def __init__(self, valid: Bool[Tensor, "batch pos"]):
        b, pos = valid.shape
        self.lengths = valid.sum(1)
        if bool((self.lengths == 0).any()):
            bad = int((self.lengths == 0).nonzero()[0])
            raise NeuronscopeError(f"attribution: sample {bad} of the batch has no position to attribute")
        ar = torch.arange(pos, device=valid.device)
        self.prefix = bool(torch.equal(valid, ar.unsqueeze(0) < self.lengths.unsqueeze(1)))
        self.lo = int(self.lengths.min())
        self.hi = int(self.lengths.max())
        self.valid = valid
        self.lengths_list = self.lengths.tolist()
        # Invalid cells of the ragged tail (or of the whole sequence, for non-prefix masks).
        self.tail_invalid = (~valid[:, self.lo : self.hi]).unsqueeze(-1) if self.prefix else (~valid).unsqueeze(-1)

    def __call__(self, a: Float[Tensor, "batch pos n"]) -> tuple[Tensor, Tensor]:
        if not self.prefix:
            mx = a.masked_fill(self.tail_invalid, -math.inf).amax(1)
            mn = a.masked_fill(self.tail_invalid, math.inf).amin(1)
            return mx, mn
        mn, mx = torch.aminmax(a[:, : self.lo], dim=1)
        if self.hi > self.lo:
            tail = a[:, self.lo : self.hi]
            mx = torch.maximum(mx, tail.masked_fill(self.tail_invalid, -math.inf).amax(1))
            mn = torch.minimum(mn, tail.masked_fill(self.tail_invalid, math.inf).amin(1))
        return mx, mn

    def tokens(self, a: Float[Tensor, "batch pos n"]) -> list[Tensor]:
        """Per-sample ``[L_i, n]`` copies of the selected positions (on the CPU)."""
        if self.prefix:
            return [a[i, :n].to("cpu", copy=True) for i, n in enumerate(self.lengths_list)]
        return [a[i][self.valid[i]].cpu() for i in range(a.shape[0])]


def _to_cpu(d: dict[ModuleKey, Tensor], keys: list[ModuleKey]) -> dict[ModuleKey, Tensor]:
    """One device→host transfer for all modules (no sync per hook during backward)."""
    if not keys:
        return {}
    widths = [d[k].shape[1] for k in keys]
    flat = torch.cat([d[k] for k in keys], dim=1).cpu()
    return {k: v.clone() for k, v in zip(keys, flat.split(widths, dim=1))}


def attribute_batch(
    model: HookedModel,
    batch: TokenBatch,
    config: AttributionConfig | None = None,
) -> NeuronAttribution:
    """Eq. 1 for one batch: one forward + one backward pass covers every selected module.

    ``A[i, k] = h[i, k] · ∂T/∂h[i, k]`` with ``T = P(y|x)`` (``target="prob"``, paper Eq. 1)
    or ``log P(y|x)``; ``P(y|x)`` is the teacher-forced product over all answer tokens
    (multi-token answers). The backward pass is of ``Σ_samples T``: samples do not interact
    (causal attention, right padding, attention mask), so each sample receives its own
    gradient. ``A`` is reduced to ``max_k`` / ``min_k`` over the selected positions inside
    the gradient hook, in float32 (float64 models stay float64).

    bfloat16/float16 models: the product and the max/min are formed in float32. Against a
    float32 run with the same weights the result differs by ≤ 0.12 × max|A| per module
    (Pearson r ≥ 0.999; tiny model, 3 seeds; SmolLM2: 0.18) — the rounding of the half
    precision forward/backward itself (``tests/test_scale_bf16.py``); use float32 where the
    exact ranking of near-equal neurons matters.

    Memory: per hook, the engine holds a reference to the activation ``h`` (a view, no copy)
    until its gradient arrives; gate/up/v outputs are saved by autograd anyway, q/k/o/down
    outputs are not — see ``benchmarks/attribution.py`` for the measured peak. The per-token
    product ``h ⊙ ∂T/∂h`` exists for one hook at a time and is dropped after the reduction,
    except for the modules in ``config.keep_tokens``.

    Args:
        model: The hooked model.
        batch: Right-padded teacher-forced QA batch (:func:`neuronscope.prompts.encode_qa`).
        config: Target, positions, modules and token-keeping options.

    Returns:
        A :class:`NeuronAttribution` with ``Float[Tensor, "batch n_neurons"]`` max/min per
        module, on the CPU. A right-padded batch gives the numbers of one-sample batches up
        to floating-point rounding: tested to ``rtol=1e-9`` (float64 tiny model), to
        ``1e-9 × max|A|`` per module (float64 SmolLM2; measured 5e-15) and to
        ``1e-4 × max|A|`` (float32 SmolLM2; measured bitwise equal on MKL).

    Raises:
        NeuronscopeError: Bad config values, a sample without positions, or a model whose
            bridge bypasses the module hooks.
    """
    cfg = config or AttributionConfig()
    keys = _selected_keys(model, cfg)
    keep = _parse_keep(cfg.keep_tokens, model)
    batch = batch.to(model.device)
    b, pos = batch.input_ids.shape
    valid = batch.attention_mask.bool()
    if cfg.positions == "prompt":
        valid = valid & batch.prompt_mask
    reduce = _Reducer(valid)
    out_max: dict[ModuleKey, Tensor] = {}
    out_min: dict[ModuleKey, Tensor] = {}
    out_tokens: dict[ModuleKey, list[Tensor]] = {}

    def make_fwd_hook(key: ModuleKey):
        def fwd_hook(act: Tensor, hook) -> Tensor:
            # A view of the activation: no copy. Autograd may hold the same storage already.
            h = act.detach()

            def grad_hook(grad: Tensor) -> None:
                if h.dtype in (torch.float16, torch.bfloat16):
                    a = h.float().mul_(grad)
                else:
                    a = h * grad
                a = a.reshape(b, pos, -1)
                out_max[key], out_min[key] = reduce(a)
                if key in keep:
                    out_tokens[key] = reduce.tokens(a)

            act.register_hook(grad_hook)
            # Return the activation: q/k/v hook points hand hooks a reshaped *view* and use
            # the un-reshaped tensor downstream unless the hook returns a value, in which case
            # the returned view is what flows on, and our tensor hook sees its gradient.
            return act

        return fwd_hook

    fwd_hooks = [(model.hook_name(t, layer), make_fwd_hook((t, layer))) for t, layer in keys]

    def embed_hook(act: Tensor, hook) -> Tensor:
        # Weights are frozen, so the graph starts here: activations need gradients, weights not.
        return act.detach().requires_grad_(True)

    with frozen_weights(model), torch.enable_grad(), model.bridge.hooks(
        fwd_hooks=[("hook_embed", embed_hook), *fwd_hooks]
    ):
        logp = answer_logprob(model, batch)
        objective = logp.exp() if cfg.target == "prob" else logp
        # Samples are independent, so d(sum)/dh gives each sample's own gradient.
        objective.sum().backward()
    missing = [k for k in keys if k not in out_max]
    if missing:
        raise NeuronscopeError(f"attribution: no gradient reached hooks {missing[:3]} (the bridge bypassed them)")
    return NeuronAttribution(
        max=_to_cpu(out_max, keys),
        min=_to_cpu(out_min, keys),
        target_value=objective.detach().cpu(),
        tokens={k: out_tokens[k] for k in keys if k in out_tokens},
        meta={"model": model.name, "target": cfg.target, "positions": cfg.positions, "config": asdict(cfg)},
    )


def concat(parts: Sequence[NeuronAttribution]) -> NeuronAttribution:
    """Concatenate attributions of consecutive batches along the sample axis."""
    if not parts:
        raise NeuronscopeError("attribution: no samples")
    keys = parts[0].keys
    tokens: dict[ModuleKey, list[Tensor]] = {}
    for p in parts:
        for k, v in p.tokens.items():
            tokens.setdefault(k, []).extend(v)
    return NeuronAttribution(
        max={k: torch.cat([p.max[k] for p in parts]) for k in keys},
        min={k: torch.cat([p.min[k] for p in parts]) for k in keys},
        target_value=torch.cat([p.target_value for p in parts]),
        tokens=tokens,
        meta=dict(parts[0].meta),
    )


def check_compatible(before: NeuronAttribution, after: NeuronAttribution) -> None:
    """Check that two attributions can be compared neuron by neuron (paper Eq. 2, 4, 5).

    Raises:
        NeuronscopeError: Different data (fingerprint or sample count), modules, target or
            positions, naming the field that differs.
    """
    fb, fa = before.meta.get("data_fingerprint"), after.meta.get("data_fingerprint")
    if fb and fa and fb != fa:
        raise NeuronscopeError(f"attributions are on different data (data_fingerprint {fb} vs {fa})")
    if before.n_samples != after.n_samples:
        raise NeuronscopeError(f"attributions have {before.n_samples} vs {after.n_samples} samples")
    if before.keys != after.keys:
        raise NeuronscopeError("attributions cover different modules/layers")
    for field_name in ("target", "positions"):
        vb = before.meta.get(field_name, before.meta.get("config", {}).get(field_name))
        va = after.meta.get(field_name, after.meta.get("config", {}).get(field_name))
        if vb and va and vb != va:
            raise NeuronscopeError(f"attributions differ in {field_name}: {vb!r} vs {va!r}")


def data_fingerprint(questions: Sequence[str], answers: Sequence[str]) -> str:
    """A short SHA-256 of the (question, answer) pairs, stored with saved attributions."""
    import hashlib

    h = hashlib.sha256()
    for q, a in zip(questions, answers):
        h.update(q.encode())
        h.update(b"\x00")
        h.update(a.encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def attribute(
    model: HookedModel,
    questions: Sequence[str],
    answers: Sequence[str],
    config: AttributionConfig | None = None,
    *,
    progress: bool = True,
) -> NeuronAttribution:
    """Eq. 1 attributions of every (question, answer) pair, batched (SPEC §5).

    Args:
        model: The hooked model.
        questions: Questions x (wrapped in the chat template).
        answers: Answers y.
        config: :class:`AttributionConfig`.
        progress: Show a progress bar.

    Under data parallelism (``accelerate launch``, :mod:`neuronscope.distributed`) each process
    attributes a contiguous share of the items and every process returns the gathered result
    (the same numbers as one process up to floating-point rounding: the batches differ).

    Returns:
        :class:`NeuronAttribution` with ``[n_samples, n_neurons]`` per module, on the CPU, in
        float32 for float32/bfloat16/float16 models (float64 models stay float64).

    Raises:
        NeuronscopeError: Empty input or bad config.
    """
    cfg = config or AttributionConfig()
    if len(questions) == 0:
        raise NeuronscopeError("attribution: no samples (empty split)")
    if len(questions) != len(answers):
        raise NeuronscopeError(f"attribution: {len(questions)} questions but {len(answers)} answers")
    from neuronscope import distributed

    # Data parallelism: each process attributes a contiguous share of the items; the per-sample
    # results are gathered in item order on every process (one process: the whole range).
    lo, hi = distributed.shard_range(len(questions))
    parts = []
    starts = range(lo, hi, cfg.batch_size)
    show = progress and distributed.is_main()
    for s in tqdm(starts, desc="attribution", unit="batch", disable=not show, leave=False):
        e = min(s + cfg.batch_size, hi)
        batch = encode_qa(model.tokenizer, questions[s:e], answers[s:e])
        parts.append(attribute_batch(model, batch, cfg))
    if distributed.active():
        shares = distributed.all_gather_objects(concat(parts) if parts else None)
        parts = [p for p in shares if p is not None]
    result = concat(parts)
    result.meta["data_fingerprint"] = data_fingerprint(questions, answers)
    result.meta["n_samples"] = len(questions)
    return result

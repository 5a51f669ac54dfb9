"""Neuron ablation on bridge hooks: switch chosen neurons off and watch the forgotten answer return.

If unlearning *hid* knowledge behind spurious unlearning neurons (paper §4: neurons whose
negative influence grew, large D̃−), switching those neurons off in the unlearned model should
bring the forget-set accuracy back — the knowledge was still there. If unlearning *erased* it,
ablating them should not.

A neuron is one output feature of a module (SPEC §4), addressed as ``(module type, layer,
index)`` — the same triples :meth:`InfluenceVariation.top_neurons` returns (extra fields are
ignored). For q/k/v the index runs over the flattened ``heads · d_head`` features, in the order
of the HF linear's output rows, exactly as in :mod:`neuronscope.attribution`.

* ``zero`` ablation sets the neuron's output to 0 at every position — the same as zeroing
  that output row (and bias entry) of the module's weight.
* ``mean`` ablation sets it to its mean activation over a reference set of token positions
  (:func:`activation_means`), removing the input-dependent signal but keeping the offset.
* ``patch`` (:func:`patch`) sets it to the value another model (e.g. the model before
  unlearning) computes on the same input: activation patching.

Ablation is a context manager over bridge forward hooks, so anything that runs the bridge
inside it — :func:`neuronscope.evaluation.mcqa_evaluate`, :func:`neuronscope.attribution.attribute`,
:func:`neuronscope.lens.logit_lens` — sees the ablated model; weights are never modified.
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterable, Iterator, Literal, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from neuronscope.attribution import ModuleKey
from neuronscope.errors import NeuronscopeError
from neuronscope.models import HookedModel

Neuron = tuple[str, int, int]
Mode = Literal["zero", "mean"]


def group_neurons(model: HookedModel, neurons: Iterable) -> dict[ModuleKey, list[int]]:
    """``(type, layer, index[, ...])`` triples (or a ``{(type, layer): indices}`` map) grouped per module.

    Raises:
        NeuronscopeError: Unknown module type, layer out of range or index out of range.
    """
    if isinstance(neurons, Mapping):
        items = [(k[0], int(k[1]), int(i)) for k, idx in neurons.items() for i in idx]
    else:
        items = []
        for n in neurons:
            if len(n) < 3:
                raise NeuronscopeError(f"ablation: neuron {n!r} is not (module type, layer, index)")
            items.append((str(n[0]), int(n[1]), int(n[2])))
    out: dict[ModuleKey, list[int]] = {}
    for t, layer, i in items:
        if t not in model.arch.module_types:
            raise NeuronscopeError(f"ablation: unknown module type {t!r} (have {', '.join(model.arch.module_types)})")
        if not 0 <= layer < model.arch.n_layers:
            raise NeuronscopeError(f"ablation: layer {layer} out of range 0..{model.arch.n_layers - 1}")
        n = model.arch.n_neurons(t)
        if not 0 <= i < n:
            raise NeuronscopeError(f"ablation: neuron {t}.{layer}[{i}] out of range (module has {n} neurons)")
        lst = out.setdefault((t, layer), [])
        if i not in lst:
            lst.append(i)
    return out


@contextlib.contextmanager
def ablate(
    model: HookedModel,
    neurons: Iterable,
    *,
    mode: Mode = "zero",
    means: Mapping[ModuleKey, Tensor] | None = None,
) -> Iterator[dict[ModuleKey, list[int]]]:
    """Ablate ``neurons`` for every forward pass of ``model.bridge`` inside the block.

    Args:
        model: The hooked model (its weights are not touched).
        neurons: ``(module type, layer, index, ...)`` tuples — e.g. ``var.top_neurons("-", 20)``
            — or ``{(type, layer): [indices]}``.
        mode: ``"zero"`` (output := 0) or ``"mean"`` (output := ``means[(type, layer)][index]``).
        means: Per-module mean activations ``[n_neurons]`` from :func:`activation_means`
            (required for ``mode="mean"``).

    Yields:
        The ablated neurons grouped per module.

    Raises:
        NeuronscopeError: Bad mode, missing means, or neurons outside the model.

    Example:
        >>> with ablate(unlearned, var.top_neurons("-", 50)):
        ...     fs = mcqa_evaluate(unlearned, forget).accuracy
    """
    if mode not in ("zero", "mean"):
        raise NeuronscopeError(f"ablation: mode must be 'zero' or 'mean', got {mode!r}")
    groups = group_neurons(model, neurons)
    if mode == "mean":
        if means is None:
            raise NeuronscopeError("ablation: mode 'mean' needs means (see activation_means)")
        missing = [f"{t}.{layer}" for t, layer in groups if (t, layer) not in means]
        if missing:
            raise NeuronscopeError(f"ablation: no mean activations for modules {', '.join(missing[:5])}")

    def make_hook(key: ModuleKey, idx: list[int]):
        index = torch.tensor(idx, dtype=torch.long)
        value = None if mode == "zero" else means[key][index].detach()

        def hook(act: Tensor, hook) -> Tensor:
            shape = act.shape
            flat = act.reshape(shape[0], shape[1], -1).clone()
            i = index.to(act.device)
            if value is None:
                flat[..., i] = 0
            else:
                flat[..., i] = value.to(device=act.device, dtype=act.dtype)
            # Return the (possibly reshaped view's) shape: q/k/v hooks see [b, pos, heads, d_head]
            # views and the bridge uses the returned tensor downstream.
            return flat.reshape(shape)

        return hook

    fwd = [(model.hook_name(t, layer), make_hook((t, layer), idx)) for (t, layer), idx in groups.items()]
    with model.bridge.hooks(fwd_hooks=fwd):
        yield groups


@contextlib.contextmanager
def patch(model: HookedModel, source: HookedModel, neurons: Iterable) -> Iterator[dict[ModuleKey, list[int]]]:
    """Activation patching: ``neurons`` of ``model`` take the values ``source`` computes on the same input.

    For every forward pass of ``model`` inside the block (``model.bridge(...)`` or a direct call of
    its HF decoder, as in :mod:`neuronscope.evaluation`), ``source``'s decoder first runs on the
    same inputs (ids, attention mask, position ids), and the chosen neurons' outputs of ``model`` are replaced by
    ``source``'s at every position. With ``source`` the model before unlearning and ``neurons``
    the spurious unlearning neurons, this restores exactly those neurons to their pre-unlearning
    behaviour — the sharpest test of whether they hide the knowledge.

    Args:
        model: The patched model (e.g. unlearned θ').
        source: A model with the same architecture (e.g. the base model θ).
        neurons: As in :func:`ablate`.

    Yields:
        The patched neurons grouped per module.

    Raises:
        NeuronscopeError: Different architectures, neurons outside the model, or incremental
            decoding with a KV cache (HF ``generate``).
    """
    groups = group_neurons(model, neurons)
    if source is model or source.bridge is model.bridge:
        raise NeuronscopeError("patch: the source must be another model (patching a model from itself is a no-op)")
    if source.arch.to_dict() != model.arch.to_dict():
        raise NeuronscopeError("patch: source and model have different architectures")
    cache: dict[ModuleKey, Tensor] = {}
    index = {k: torch.tensor(v, dtype=torch.long) for k, v in groups.items()}

    def capture(key: ModuleKey):
        def hook(act: Tensor, hook) -> None:
            cache[key] = act.reshape(act.shape[0], act.shape[1], -1)[..., index[key].to(act.device)].detach()

        return hook

    def to_source(x):
        return x.to(source.device) if isinstance(x, Tensor) else x

    def pre_hook(module, args, kwargs):
        # The decoder (HF base model) is what every forward path runs — model.bridge(...),
        # evaluation's direct decoder calls with 4-D masks and position ids — so the source
        # replays exactly the same inputs.
        if kwargs.get("past_key_values") is not None or kwargs.get("use_cache"):
            raise NeuronscopeError("patch: incremental decoding (KV cache, e.g. generate) is not supported")
        cache.clear()
        fwd = [(source.hook_name(*k), capture(k)) for k in groups]
        with torch.no_grad(), source.bridge.hooks(fwd_hooks=fwd):
            source.hf_model.base_model(*[to_source(a) for a in args], **{k: to_source(v) for k, v in kwargs.items()})

    def post_hook(module, args, output):
        cache.clear()

    def replace(key: ModuleKey):
        def hook(act: Tensor, hook) -> Tensor:
            if key not in cache:
                raise NeuronscopeError("patch: a forward pass bypassed the decoder's pre-hook")
            shape = act.shape
            flat = act.reshape(shape[0], shape[1], -1).clone()
            value = cache[key]
            if value.shape[:2] != flat.shape[:2]:
                raise NeuronscopeError("patch: activation shapes differ between source and model")
            flat[..., index[key].to(act.device)] = value.to(device=act.device, dtype=act.dtype)
            return flat.reshape(shape)

        return hook

    decoder = model.hf_model.base_model
    h_pre = decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    h_post = decoder.register_forward_hook(post_hook)
    try:
        with model.bridge.hooks(fwd_hooks=[(model.hook_name(*k), replace(k)) for k in groups]):
            yield groups
    finally:
        h_pre.remove()
        h_post.remove()
        cache.clear()


@torch.no_grad()
def activation_means(
    model: HookedModel,
    questions: Sequence[str],
    answers: Sequence[str] | None = None,
    *,
    modules: Iterable[ModuleKey] | None = None,
    batch_size: int = 8,
) -> dict[ModuleKey, Float[Tensor, " n_neurons"]]:
    """Mean output of each neuron over all real token positions of a reference set.

    Args:
        model: The hooked model.
        questions: Questions, wrapped in the chat template.
        answers: Answers appended teacher-forced (as in attribution); None = prompts only.
        modules: ``(type, layer)`` keys to average (default: all modules).
        batch_size: Sequences per forward pass.

    Returns:
        ``(type, layer) -> [n_neurons]`` float32 means over every non-padding position.

    Raises:
        NeuronscopeError: No questions.
    """
    from neuronscope.prompts import chat_prompt, encode_pairs

    if len(questions) == 0:
        raise NeuronscopeError("ablation: no reference samples for the mean activations")
    keys = list(modules) if modules is not None else list(model.arch.modules())
    sums: dict[ModuleKey, Tensor] = {}
    count = 0
    tok = model.tokenizer
    for s in range(0, len(questions), batch_size):
        qs = questions[s : s + batch_size]
        prompts = [chat_prompt(tok, q) for q in qs]
        if answers is not None:
            batch = encode_pairs(tok, prompts, answers[s : s + batch_size]).to(model.device)
            input_ids, attention_mask = batch.input_ids, batch.attention_mask
        else:
            enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
            input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        valid = attention_mask.bool()

        def make(key):
            def hook(act: Tensor, hook) -> None:
                a = act.reshape(act.shape[0], act.shape[1], -1).float()
                part = (a * valid.unsqueeze(-1)).sum((0, 1)).cpu()
                sums[key] = sums[key] + part if key in sums else part

            return hook

        with model.bridge.hooks(fwd_hooks=[(model.hook_name(*k), make(k)) for k in keys]):
            model.bridge(input_ids, attention_mask=attention_mask)
        count += int(valid.sum())
    return {k: sums[k] / count for k in keys}


def random_neurons_like(model: HookedModel, neurons: Iterable, *, seed: int = 0) -> list[Neuron]:
    """A control set: as many random neurons per module as ``neurons`` has, none of them in it.

    Used to check that an ablation effect is specific to the chosen neurons rather than to
    ablating that many neurons in those modules.
    """
    groups = group_neurons(model, neurons)
    rng = random.Random(seed)
    out: list[Neuron] = []
    for (t, layer), idx in groups.items():
        pool = sorted(set(range(model.arch.n_neurons(t))) - set(idx))
        out += [(t, layer, i) for i in rng.sample(pool, min(len(idx), len(pool)))]
    return out


def ablation_sweep(
    model: HookedModel,
    items: Sequence,
    ranked_neurons: Sequence,
    counts: Sequence[int],
    *,
    mode: Literal["zero", "mean", "patch"] = "zero",
    means: Mapping[ModuleKey, Tensor] | None = None,
    source: HookedModel | None = None,
    control_seed: int | None = 0,
    option_seed: int = 0,
) -> dict[str, list]:
    """MCQA accuracy on ``items`` while ablating the top-``c`` of ``ranked_neurons`` for each c.

    Args:
        model: The (unlearned) model.
        items: FaithUn-format items (typically the forget set).
        ranked_neurons: Neurons, most important first (e.g. ``var.top_neurons("-", 200)``).
        counts: Numbers of top neurons to ablate (0 = no ablation).
        mode / means: As in :func:`ablate`; ``mode="patch"`` uses :func:`patch` from ``source``.
        source: The model patched from (``mode="patch"``).
        control_seed: Also ablate a random same-module control set of the same size
            (:func:`random_neurons_like`); None skips the control.
        option_seed: MCQA option order seed.

    Returns:
        ``{"count": [...], "accuracy": [...], "control_accuracy": [...]}`` (fractions in [0, 1]).
    """
    from neuronscope.evaluation import mcqa_evaluate

    if mode == "patch" and source is None:
        raise NeuronscopeError("ablation_sweep: mode 'patch' needs a source model")

    def intervene(chosen):
        if mode == "patch":
            return patch(model, source, chosen)
        return ablate(model, chosen, mode=mode, means=means)

    out: dict[str, list] = {"count": [], "accuracy": [], "control_accuracy": []}
    for c in counts:
        chosen = list(ranked_neurons[:c])
        with intervene(chosen):
            acc = mcqa_evaluate(model, items, option_seed=option_seed).accuracy
        out["count"].append(int(c))
        out["accuracy"].append(acc)
        if control_seed is not None:
            ctrl = random_neurons_like(model, chosen, seed=control_seed) if c else []
            with intervene(ctrl):
                out["control_accuracy"].append(mcqa_evaluate(model, items, option_seed=option_seed).accuracy)
    if control_seed is None:
        del out["control_accuracy"]
    return out

"""Unlearning objectives as losses on the hooked model (SPEC §9, paper App. B.2).

Every method is a :class:`Method`: it chooses the trainable parameters, turns one forget batch
(+ one retain batch) into a scalar loss, and may act after the backward pass (gradient masks)
and after the optimiser step (caches). :func:`neuronscope.unlearning.trainer.unlearn` runs one
training loop for all of them.

Formulas (``NLL`` is the token-averaged answer negative log-likelihood of
:func:`neuronscope.prompts.mean_nll`, in nats/token; ``log π(y|x)`` is the sequence
log-probability of :func:`neuronscope.prompts.sequence_logprob`; both are computed by
:func:`answer_logprobs`, which unembeds only the answer positions):

* **GA** (Jang et al., 2022): ``L = −NLL(forget)``.
* **GD** (Maini et al., 2024): ``L = −NLL(forget) + w_r · NLL(retain)``.
* **DPO** (Rafailov et al., 2023) for unlearning: preferred answer y_w = the refusal
  "I can't answer the question.", rejected y_l = the true answer, reference π_ref = the frozen
  initial model: ``L = −(2/β) · mean log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) −
  log π_ref(y_l))]) + w_r · NLL(retain)``. The ``2/β`` scale is the one of the NPO reference
  code, so DPO and NPO share a scale: at π = π_ref both equal ``(2/β)·log 2``.
* **NPO** (Zhang et al., 2024): ``L = (2/β) · mean log(1 + (π(y|x)/π_ref(y|x))^β) + w_r ·
  NLL(retain)`` on sequence log-probabilities, computed stably as ``(2/β)·softplus(β·(log π −
  log π_ref))``.
* **RMU** (Li et al., 2024): with ``h_l`` the residual stream after block l (bridge hook
  ``blocks.{l}.hook_out``), ``L = mean‖h_l(forget) − c·u‖² + α · mean‖h_l(retain) −
  h_l^ref(retain)‖²`` (means over non-padding positions and the d_model features, as
  ``F.mse_loss`` in the WMDP code), u a random unit vector (``torch.rand`` then normalised, fixed
  by the seed), updating only the MLP down-projections of layers l−2…l.

The frozen reference model of DPO/NPO/RMU is represented by its outputs on the training data,
computed once with the initial weights before the first update (the forget batches are a fixed
partition, so ``π_ref`` of a batch is computed on exactly that batch). This is the same value a
frozen ``clone_model`` copy would give at every step, without holding a second model in memory;
the values are part of the checkpoint, so a resumed run uses the same reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from neuronscope.errors import ConfigError
from neuronscope.models import HookedModel
from neuronscope.prompts import REFUSAL, TokenBatch, encode_qa
from neuronscope.unlearning.config import UnlearningConfig

# ----------------------------------------------------------------------------- formulas


def ga_loss(nll_forget: Tensor) -> Tensor:
    """GA: ``−NLL(forget)`` (nats/token)."""
    return -nll_forget


def gd_loss(nll_forget: Tensor, nll_retain: Tensor, retain_weight: float = 1.0) -> Tensor:
    """GD: ``−NLL(forget) + w_r · NLL(retain)``."""
    return -nll_forget + retain_weight * nll_retain


def npo_loss(logp: Float[Tensor, "batch"], ref_logp: Float[Tensor, "batch"], beta: float) -> Tensor:
    """NPO forget term ``(2/β) · mean_b log(1 + (π/π_ref)^β)``.

    Args:
        logp: Sequence log-probabilities log π(y|x) under the trained model (nats).
        ref_logp: The same under the frozen reference.
        beta: Inverse temperature β > 0.

    Returns:
        Scalar loss; ``(2/β)·log 2`` when ``logp == ref_logp``.
    """
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


def dpo_loss(
    logp_w: Float[Tensor, "batch"],
    ref_logp_w: Float[Tensor, "batch"],
    logp_l: Float[Tensor, "batch"],
    ref_logp_l: Float[Tensor, "batch"],
    beta: float,
) -> Tensor:
    """DPO term ``−(2/β) · mean_b log σ(β[(log π_w − log π_ref,w) − (log π_l − log π_ref,l)])``.

    ``w`` = preferred (refusal), ``l`` = rejected (true answer). Equals ``(2/β)·log 2`` at
    π = π_ref.
    """
    margin = (logp_w - ref_logp_w) - (logp_l - ref_logp_l)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def template_prefix_length(tokenizer) -> int:
    """Number of leading tokens every chat-templated QA prompt shares (system prompt, user header).

    Found as the common token prefix of two prompts whose questions differ in their first
    character, so it is exact for any chat template. 0 when nothing is shared.
    """
    a = encode_qa(tokenizer, ["Alpha?"], ["x"]).input_ids[0].tolist()
    b = encode_qa(tokenizer, ["Zulu?"], ["x"]).input_ids[0].tolist()
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def masked_mse(
    h: Float[Tensor, "batch pos d"], target: Tensor, mask: Tensor
) -> Tensor:
    """Mean of ``(h − target)²`` over the positions where ``mask`` is true and all features.

    ``target`` broadcasts against ``h`` (``[d]`` for RMU's control vector c·u, or
    ``[batch, pos, d]`` for the frozen retain residuals).
    """
    m = mask.to(h.dtype).unsqueeze(-1)
    sq = (h - target) ** 2 * m
    return sq.sum() / (m.sum() * h.shape[-1]).clamp(min=1)


def rmu_direction(d_model: int, seed: int, dtype=torch.float32) -> Float[Tensor, "d_model"]:
    """RMU's random unit vector u: ``torch.rand(d)`` normalised, from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(d_model, generator=g, dtype=torch.float64)
    return (u / u.norm()).to(dtype)


def default_rmu_layer(n_layers: int) -> int:
    """The paper's l = 7 of 28 layers (Llama-3.2-3B) scaled to ``n_layers``: ``round(7/28 · n)``."""
    return min(n_layers - 1, int(round(7 / 28 * n_layers)))


# ----------------------------------------------------------------------------- helpers


def forward_logits(model: HookedModel, batch: TokenBatch) -> Tensor:
    """Logits ``[batch, pos, vocab]`` through the bridge (caller hooks apply; raw HF weights)."""
    return model.bridge(batch.input_ids, attention_mask=batch.attention_mask)


@dataclass
class AnswerLogprobs:
    """Log-probabilities of the answer tokens of a batch (teacher-forced).

    Attributes:
        tok: ``Float[Tensor, "n_answer_tokens"]`` log p(y_j | x, y_<j) of every answer token
            of every example (row-major), in nats.
        rows: ``Int[Tensor, "n_answer_tokens"]`` the example each token belongs to.
        n_examples: Batch size.
    """

    tok: Tensor
    rows: Tensor
    n_examples: int
    _denom: int | None = None

    @property
    def denominator(self) -> int:
        """Answer tokens the NLL averages over: this batch's, or under data parallelism the
        global batch's (summed over processes, :func:`neuronscope.distributed.global_count`)."""
        if self._denom is None:
            from neuronscope.distributed import global_count

            self._denom = global_count(int(self.tok.numel()))
        return self._denom

    @property
    def nll(self) -> Tensor:
        """Token-averaged NLL (equals :func:`neuronscope.prompts.mean_nll`), nats/token.

        Under data parallelism: this process's share ``−Σ_local log p / N_global``; the shares
        (and their gradients) sum to the NLL of the global batch.
        """
        n = self.denominator
        if n == self.tok.numel():
            return -self.tok.mean()
        return -self.tok.sum() / n

    @property
    def seq(self) -> Float[Tensor, "batch"]:
        """log P(y|x) per example (equals :func:`neuronscope.prompts.sequence_logprob`)."""
        return torch.zeros(self.n_examples, dtype=self.tok.dtype, device=self.tok.device).index_add(0, self.rows, self.tok)


def answer_logprobs(model: HookedModel, batch: TokenBatch) -> AnswerLogprobs:
    """Answer-token log-probabilities, unembedding only the answer positions.

    The bridge runs up to the input of the unembedding (hook ``unembed.hook_in``, i.e. after the
    final norm); the output embedding (``hf_model.get_output_embeddings()``) is then applied to
    the answer positions only, so the vocabulary-sized matmul and log-softmax — a fifth of a
    135M model's training FLOPs, and the bulk of the second-order graph of exact SSIUU — cost
    ``n_answer_tokens`` rows instead of ``batch × pos``. Numerically the same logits as the full
    forward (tested); hooks on the unembedding itself are not run.
    """
    rows, cols = batch.target_mask.nonzero(as_tuple=True)
    head = model.hf_model.get_output_embeddings()
    store: dict[str, Tensor] = {}
    if head is not None and "unembed.hook_in" in model.bridge.hook_dict:

        def hook(act: Tensor, hook) -> None:
            store["h"] = act
            raise _StopForward

        try:
            with model.bridge.hooks(fwd_hooks=[("unembed.hook_in", hook)]):
                model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        except _StopForward:
            pass
    if "h" in store:
        logits = head(store["h"][rows, cols])
    else:  # no separable unembedding: full forward, then select
        logits = forward_logits(model, batch)[rows, cols]
    logp = torch.log_softmax(_fp(logits), dim=-1)
    tok = logp.gather(-1, batch.target_ids[rows, cols].unsqueeze(-1)).squeeze(-1)
    return AnswerLogprobs(tok, rows, int(batch.input_ids.shape[0]))


def encode_items(model: HookedModel, items: Sequence, answers: Sequence[str] | None = None) -> TokenBatch:
    """QA items (``.question``/``.answer``) as a chat-templated teacher-forced batch on the model's device."""
    ans = [it.answer for it in items] if answers is None else list(answers)
    return encode_qa(model.tokenizer, [it.question for it in items], ans).to(model.device)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the needed residual is captured."""


def residual(model: HookedModel, batch: TokenBatch, layer: int) -> Float[Tensor, "batch pos d_model"]:
    """Residual stream after block ``layer`` (hook ``blocks.{layer}.hook_out``).

    The forward pass stops right after that block (later blocks cannot affect it), which
    makes RMU's forward cost proportional to ``layer``.
    """
    store: dict[str, Tensor] = {}

    def hook(act: Tensor, hook) -> None:
        store["h"] = act
        raise _StopForward

    try:
        with model.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_out", hook)]):
            model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    except _StopForward:
        pass
    if "h" not in store:
        raise ConfigError(f"rmu_layer: hook blocks.{layer}.hook_out was not reached")
    return store["h"]


def _fp(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ----------------------------------------------------------------------------- methods


class Method:
    """One unlearning objective plugged into the shared training loop.

    Subclasses override :meth:`loss` and, when needed, :meth:`setup`, :meth:`trainable`,
    :meth:`after_backward`, :meth:`after_step`, :meth:`state_dict` / :meth:`load_state_dict`.

    Attributes:
        uses_retain: Whether the loss needs a retain batch each step.
    """

    name = "base"
    uses_retain = True

    def __init__(self, config: UnlearningConfig) -> None:
        self.config = config

    def setup(
        self,
        model: HookedModel,
        forget_batches: dict[int, Sequence],
        retain: Sequence,
        *,
        state: dict | None = None,
        progress: bool = False,
    ) -> None:
        """Prepare with the *initial* weights (reference values, masks), or restore ``state``."""
        if state:
            self.load_state_dict(state)

    def trainable(self, model: HookedModel) -> list[nn.Parameter]:
        """Parameters the optimiser updates (default: every parameter of the HF model)."""
        return list(model.hf_model.parameters())

    def loss(
        self, model: HookedModel, forget: Sequence, retain: Sequence | None, key: int | None
    ) -> tuple[Tensor, dict[str, float]]:
        """The scalar loss of one step and its named terms (floats, for the history).

        Called with the gradients zeroed (:func:`~neuronscope.unlearning.trainer.train_step`). A
        method may accumulate part of the step's gradient into ``.grad`` here and return a loss
        whose backward adds the rest (exact SSIUU with the log P target does, to reuse one backward
        pass); the loss *value* is always the whole step's."""
        raise NotImplementedError

    def after_backward(self, model: HookedModel) -> float | None:
        """Hook between ``backward()`` and the optimiser step (gradient masks, gradients added in
        closed form); may return a loss term (float) computed there, added to the recorded loss."""
        return None

    def after_step(self, key: int | None) -> None:
        """Hook after the optimiser step (e.g. cache updates)."""

    def select_forget(self, items: Sequence, correct_ids: set[str] | None) -> Sequence:
        """Forget items to train on this epoch, given the ids the model still answers correctly."""
        return items

    def state_dict(self) -> dict[str, Any]:
        """Method state saved in checkpoints (tensors allowed)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # shared pieces ------------------------------------------------------------------
    def _retain_nll(self, model: HookedModel, retain: Sequence | None, terms: dict) -> Tensor | None:
        if not retain or self.config.retain_weight == 0:
            return None
        br = encode_items(model, retain)
        nll_r = answer_logprobs(model, br).nll
        terms["nll_retain"] = float(nll_r.detach())
        return nll_r


class NLL(Method):
    """Plain fine-tuning: ``L = NLL(batch)`` (relearning attacks, TOFU fine-tuning)."""

    name = "nll"
    uses_retain = False

    def loss(self, model, forget, retain, key):
        b = encode_items(model, forget)
        nll = answer_logprobs(model, b).nll
        return nll, {"nll": float(nll.detach())}


class GA(Method):
    """Gradient ascent: ``L = −NLL(forget)``."""

    name = "ga"
    uses_retain = False

    def loss(self, model, forget, retain, key):
        bf = encode_items(model, forget)
        nll_f = answer_logprobs(model, bf).nll
        return ga_loss(nll_f), {"nll_forget": float(nll_f.detach())}


class GD(Method):
    """Gradient difference: ``L = −NLL(forget) + w_r · NLL(retain)``."""

    name = "gd"

    def loss(self, model, forget, retain, key):
        terms: dict[str, float] = {}
        bf = encode_items(model, forget)
        nll_f = answer_logprobs(model, bf).nll
        terms["nll_forget"] = float(nll_f.detach())
        nll_r = self._retain_nll(model, retain, terms)
        loss = ga_loss(nll_f) if nll_r is None else gd_loss(nll_f, nll_r, self.config.retain_weight)
        return loss, terms


class _ReferenceMethod(Method):
    """Shared by DPO/NPO: reference log-probabilities of each fixed forget batch."""


    def __init__(self, config: UnlearningConfig) -> None:
        super().__init__(config)
        self.ref: dict[int, dict[str, Tensor]] = {}

    def _reference(self, model: HookedModel, items: Sequence) -> dict[str, Tensor]:
        raise NotImplementedError

    def setup(self, model, forget_batches, retain, *, state=None, progress=False):
        if state:
            self.load_state_dict(state)
            return
        with torch.no_grad():
            for key, items in forget_batches.items():
                self.ref[key] = self._reference(model, items)

    def state_dict(self):
        return {"ref": self.ref}

    def load_state_dict(self, state):
        self.ref = state["ref"]

    def _ref(self, key: int | None, model: HookedModel, items: Sequence) -> dict[str, Tensor]:
        if key is None or key not in self.ref:
            raise ConfigError(f"{self.name}: no reference values for forget batch {key!r}")
        return {k: v.to(model.device) for k, v in self.ref[key].items()}


class NPO(_ReferenceMethod):
    """Negative preference optimisation (β from the config) + retain NLL."""

    name = "npo"

    def _reference(self, model, items):
        b = encode_items(model, items)
        return {"logp": answer_logprobs(model, b).seq.detach().cpu()}

    def loss(self, model, forget, retain, key):
        terms: dict[str, float] = {}
        ref = self._ref(key, model, forget)
        bf = encode_items(model, forget)
        logp = answer_logprobs(model, bf).seq
        lf = npo_loss(logp, ref["logp"].to(logp.dtype), self.config.beta)
        terms["npo"] = float(lf.detach())
        nll_r = self._retain_nll(model, retain, terms)
        loss = lf if nll_r is None else lf + self.config.retain_weight * nll_r
        return loss, terms


class DPO(_ReferenceMethod):
    """DPO with the refusal preferred over the true answer (β from the config) + retain NLL."""

    name = "dpo"

    def _reference(self, model, items):
        bw = encode_items(model, items, [REFUSAL] * len(items))
        bl = encode_items(model, items)
        return {
            "logp_w": answer_logprobs(model, bw).seq.detach().cpu(),
            "logp_l": answer_logprobs(model, bl).seq.detach().cpu(),
        }

    def loss(self, model, forget, retain, key):
        terms: dict[str, float] = {}
        ref = self._ref(key, model, forget)
        bw = encode_items(model, forget, [REFUSAL] * len(forget))
        bl = encode_items(model, forget)
        logp_w = answer_logprobs(model, bw).seq
        logp_l = answer_logprobs(model, bl).seq
        lf = dpo_loss(logp_w, ref["logp_w"].to(logp_w.dtype), logp_l, ref["logp_l"].to(logp_l.dtype), self.config.beta)
        terms["dpo"] = float(lf.detach())
        nll_r = self._retain_nll(model, retain, terms)
        loss = lf if nll_r is None else lf + self.config.retain_weight * nll_r
        return loss, terms


class RMU(Method):
    """Representation misdirection: steer layer-l forget residuals to c·u, keep retain residuals."""

    name = "rmu"

    def __init__(self, config: UnlearningConfig) -> None:
        super().__init__(config)
        self.layer: int | None = config.rmu_layer
        self.u: Tensor | None = None
        self.ref: dict[str, Tensor] = {}  # retain item id -> [n_tokens, d_model] frozen residual
        self.skip: int = 0  # positions of the shared chat-template prefix left out of the MSE

    def _layers(self, model: HookedModel) -> list[int]:
        return list(range(max(0, self.layer - 2), self.layer + 1))

    def setup(self, model, forget_batches, retain, *, state=None, progress=False):
        n = model.arch.n_layers
        if self.layer is None:
            self.layer = default_rmu_layer(n)
        if not 0 <= self.layer < n:
            raise ConfigError(f"rmu_layer: layer {self.layer} out of range 0..{n - 1}")
        if state:
            self.load_state_dict(state)
            return
        self.skip = template_prefix_length(model.tokenizer) if self.config.rmu_skip_template else 0
        self.u = rmu_direction(model.arch.d_model, self.config.seed)
        bs = self.config.batch_size
        with torch.no_grad():
            for s in range(0, len(retain), bs):
                chunk = retain[s : s + bs]
                b = encode_items(model, chunk)
                h = residual(model, b, self.layer).detach()
                for i, it in enumerate(chunk):
                    self.ref[it.id] = h[i, : int(b.attention_mask[i].sum())].cpu()

    def trainable(self, model):
        return [model.linear("down", layer).weight for layer in self._layers(model)]

    def loss(self, model, forget, retain, key):
        cfg = self.config
        terms: dict[str, float] = {}
        bf = encode_items(model, forget)
        hf = _fp(residual(model, bf, self.layer))
        control = cfg.rmu_c * self.u.to(device=hf.device, dtype=hf.dtype)
        lf = masked_mse(hf, control, self._mask(bf))
        terms["rmu_forget"] = float(lf.detach())
        loss = lf
        if retain and cfg.rmu_alpha > 0:
            br = encode_items(model, retain)
            hr = _fp(residual(model, br, self.layer))
            ref = torch.zeros_like(hr)
            for i, it in enumerate(retain):
                r = self.ref[it.id]
                ref[i, : r.shape[0]] = r.to(ref.dtype)
            lr_ = masked_mse(hr, ref, self._mask(br))
            terms["rmu_retain"] = float(lr_.detach())
            loss = lf + cfg.rmu_alpha * lr_
        return loss, terms

    def _mask(self, batch: TokenBatch) -> Bool[Tensor, "batch pos"]:
        mask = batch.attention_mask.bool()
        if self.skip:
            pos = torch.arange(mask.shape[1], device=mask.device)
            mask = mask & (pos >= self.skip).unsqueeze(0)
        return mask

    def state_dict(self):
        return {"layer": self.layer, "u": self.u, "ref": self.ref, "skip": self.skip}

    def load_state_dict(self, state):
        self.layer, self.u, self.ref = state["layer"], state["u"], state["ref"]
        self.skip = int(state.get("skip", 0))

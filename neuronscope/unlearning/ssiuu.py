"""SSIUU: GD with the spurious-negative-influence regulariser of paper Eq. 3 (§5, SPEC §9).

    L(θ^t) = L_GD(θ^t) + λ · Σ_{(x,y)∈C_f} Σ_{i∈I−} ‖A_{θ^{t−1}, i} − A_{θ^t, i}‖₂

with the *parameter* attribution ``A_θ = θ ⊙ ∂P_θ(y|x)/∂θ`` over the weights of the q, k, v,
o, gate, up and down projections (paper §5: "we derive attribution scores by multiplying each
parameter with its gradient").

Decisions (each is a :class:`~neuronscope.unlearning.UnlearningConfig` option):

* **Neuron** ``i`` = one output row of a weight matrix ``W[n_out, n_in]`` (the neuron of SPEC §4);
  ``A_i`` is that row of ``θ ⊙ g`` and ``‖·‖₂`` its Euclidean norm. ``I−`` = the rows whose
  summed attribution ``Σ_j A_{θ^t}[i, j]`` is negative at the current parameters θ^t
  (``ssiuu_granularity="row"``). With ``"element"`` every weight is its own neuron: I− = the
  weights with ``A_{θ^t} < 0`` and the norm is ``|A_prev − A_cur|``. Biases are not included.
* **Objective** ``P(y|x)`` = the probability of the whole answer (teacher-forced product over
  answer tokens, as Eq. 1), or ``log P`` with ``ssiuu_target="logprob"``.
* **Batching**: the regulariser of a step is computed on that step's forget batch ``B`` with
  the batch attribution ``A = θ ⊙ ∂(Σ_{(x,y)∈B} P(y|x))/∂θ`` — the sum of the per-example
  attributions (attribution is linear in the gradient), so one backward pass serves the whole
  batch. With ``batch_size ≥ |C_f|`` this is Eq. 3 with the sum over C_f taken inside the norm.
* **A_{θ^{t−1}}** (``ssiuu_anchor``, SPEC §9 "Anchor of A_{θ^{t−1}}"), always detached (no
  gradient flows through it, paper §5) and never recomputed at θ^t, where the difference would
  be zero:

  - ``"batch"``: the attribution computed on the **same** forget batch at the parameters the
    previous time that batch was used (the forget set is split into a fixed partition of
    batches; only their order is shuffled per epoch), cached per batch. At the first visit of a
    batch there is no previous attribution: A_prev := A_θ^t, so the penalty and its gradient
    are 0 (the zero subgradient of ‖·‖ at 0) and the step is a GD step; with k forget batches
    the regulariser is active from step k + 1.
  - ``"previous_step"``: the paper's Algorithm 1 (v2): one slot holding the attribution stored
    at the previous iteration, compared with the current batch's, whatever batch that was;
    active from step 2.
  - ``"initial"``: the base model's attribution of the same batch (paper §1: negative
    attributions held "at their original levels"), computed for every forget batch in
    :meth:`SSIUU.setup` before the first update and never replaced; active from step 2 (at
    step 1 the parameters are the base model's, and the step's own attribution is used, so
    the penalty is exactly 0).

  With a single forget batch ``"batch"`` and ``"previous_step"`` coincide.
* **Gradient share** recorded per step in the training history: ``gd_grad_norm`` = ‖∇L_GD‖
  over all trainable parameters, ``ssiuu_reg_grad_norm`` = ‖λ∇R‖, ``grad_share`` = their ratio,
  ``ssiuu_penalty`` = R (attribution units) and ``ssiuu_negative`` = |I−|.
* **Gradient through A_θ^t**: ``"exact"`` differentiates θ ⊙ g(θ) completely (double
  backward: ``∂/∂θ = (r ⊙ g) + H_P (r ⊙ θ)`` with ``r = −(A_prev − A_cur)/‖·‖`` on I−);
  ``"first_order"`` treats g as a constant (``∂/∂θ = r ⊙ g``), which needs no second-order
  graph — and no second backward pass either: g is collected during the GD backward by a
  :class:`WeightGradTap` (the forget rows' output cotangents of ΣP and of −NLL differ by a
  per-row factor, so one chain of input gradients serves both).
  The two disagree on real models (cosine ≈ 0 on the tiny model) because the dropped term
  ``H_P (r ⊙ θ)`` is 10²–10³× the kept ``r ⊙ g`` (θ entries are far larger than ∂P/∂θ
  entries); tested: exact − first order equals that Hessian–vector product computed by an
  independent double backward, so this is inherent to the approximation, not a bug.

With the log P target (the default) and a retain loss, exact SSIUU takes the forget part of
∇L_GD from the attribution's own backward pass (Σ log P = −N·NLL_forget, so one ``autograd.grad``
of the objective over every parameter gives both g and, divided by N, that gradient); GD's
backward then covers only the retain loss. One process only: under data parallelism the separate
GD backward is kept (the two sum in different orders: 1.0e-6 of the largest weight apart after 4
steps on the tiny model, tested). Measured on SmolLM2 (8 + 8 pairs, 2 threads, 4
interleaved rounds): 10.8 s per step against 13.0 s with the separate backward (−17 %).

Cost per step (``benchmarks/unlearning.py``, SmolLM2-135M, 8 forget + 8 retain pairs, AdamW;
its docstring holds the runs): with the current defaults (Algorithm-1 anchor, log P) exact 2.86×
and first order 1.43× the GD step (2026-12-03, 2 threads, 3 rounds); with the earlier batch anchor
and P target exact 2.06× CPU (2.00× wall) and first order 1.19× CPU (1.05× wall). Peak resident memory
above the model: GD 1.3 GiB, first order 1.7 GiB, exact 3.4 GiB. The cache holds one copy of
the attributed weights per forget batch (405 MiB for SmolLM2; ``ssiuu_cache_dtype="bfloat16"``
halves it) on the weights' device.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from neuronscope import distributed
from neuronscope.models import HookedModel
from neuronscope.unlearning.losses import GD, answer_logprobs, encode_items


def attributed_weights(model: HookedModel, module_types: Sequence[str]) -> list[nn.Parameter]:
    """The weight matrices ``[n_out, n_in]`` of ``module_types`` in every layer, layer-major."""
    return [
        model.linear(t, layer).weight
        for layer in range(model.arch.n_layers)
        for t in model.arch.module_types
        if t in module_types
    ]


def parameter_attribution(
    objective: Tensor, weights: Sequence[Tensor], *, create_graph: bool
) -> tuple[list[Tensor], list[Tensor]]:
    """``g = ∂objective/∂θ`` and ``A = θ ⊙ g`` for each weight (paper §5).

    Args:
        objective: Scalar (e.g. Σ_batch P(y|x)) whose graph reaches ``weights``.
        weights: Parameters to attribute.
        create_graph: Keep the graph of g (exact SSIUU gradient); otherwise g is a constant.

    Returns:
        ``(grads, attributions)``, each shaped like its weight. The forward graph is retained,
        so the caller can still backpropagate other losses through it.
    """
    grads = torch.autograd.grad(objective, list(weights), retain_graph=True, create_graph=create_graph)
    if not create_graph:
        grads = tuple(g.detach() for g in grads)
    return list(grads), [w * g for w, g in zip(weights, grads)]


def _safe_sqrt(sq: Tensor) -> Tensor:
    """√sq with gradient 0 (not NaN) where sq = 0."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def negative_set(a_cur: Tensor, granularity: str = "row") -> Tensor:
    """I− of one weight matrix: ``[n_out]`` rows with negative summed attribution (``"row"``)
    or ``[n_out, n_in]`` elements with negative attribution (``"element"``)."""
    a = a_cur.detach()
    if granularity == "element":
        return a < 0
    return a.reshape(a.shape[0], -1).sum(dim=1) < 0


def neuron_penalty(
    a_cur: Float[Tensor, "n_out n_in"],
    a_prev: Float[Tensor, "n_out n_in"],
    granularity: str = "row",
    selected: Tensor | None = None,
) -> tuple[Tensor, int]:
    """``Σ_{i∈I−} ‖A_prev,i − A_cur,i‖₂`` for one weight matrix (inner sums of Eq. 3).

    Args:
        a_cur: Attribution at the current parameters (differentiable).
        a_prev: Attribution at the previous parameters (treated as a constant).
        granularity: ``"row"`` — I− = rows with negative summed ``a_cur``; ``"element"`` —
            I− = elements with negative ``a_cur`` and the norm is the absolute difference.
        selected: A fixed I− (from :func:`negative_set`) instead of the one of ``a_cur``.

    Returns:
        ``(penalty, |I−|)``; the penalty has the units of the attribution (probability).
    """
    sel = negative_set(a_cur, granularity) if selected is None else selected.to(a_cur.device)
    diff = a_prev.detach() - a_cur
    if granularity == "element":
        return (_safe_sqrt(diff * diff) * sel).sum(), int(sel.sum())
    sq = (diff * diff).reshape(a_cur.shape[0], -1).sum(dim=1)
    return (_safe_sqrt(sq) * sel).sum(), int(sel.sum())


def ssiuu_regulariser(
    objective: Tensor,
    weights: Sequence[Tensor],
    prev: Sequence[Tensor] | None,
    *,
    granularity: str = "row",
    exact: bool = True,
    selected: Sequence[Tensor] | None = None,
    grads: Sequence[Tensor] | None = None,
) -> tuple[Tensor | None, list[Tensor], int]:
    """The Eq. 3 regulariser on one batch.

    Args:
        objective: Σ_batch P(y|x) (or log P), with its graph to ``weights``.
        weights: The attributed weights θ.
        prev: A_{θ^{t−1}} per weight, or None at a batch's first visit.
        granularity: See :func:`neuron_penalty`.
        exact: Differentiate through g (double backward) or treat it as a constant.
        selected: Fixed I− per weight (default: the negative set at the current parameters).
        grads: ``g = ∂objective/∂θ`` per weight, already computed by the caller (with
            ``create_graph`` for the exact gradient); ``objective`` is then not differentiated.

    Returns:
        ``(penalty or None when prev is None, detached A_θ^t per weight, |I−| summed)``.
        The penalty is None at the first visit: its value and gradient are both 0 there, so
        no second-order graph is built.
    """
    if grads is None:
        grads, attrs = parameter_attribution(objective, weights, create_graph=exact and prev is not None)
    else:
        attrs = [w * g for w, g in zip(weights, grads)]
    detached = [a.detach() for a in attrs]
    if prev is None:
        n_sel = sum(int(negative_set(a, granularity).sum()) for a in detached)
        return None, detached, n_sel
    total: Tensor | None = None
    n_sel = 0
    for j, (a, p) in enumerate(zip(attrs, prev)):
        pen, n = neuron_penalty(
            a, p.to(device=a.device, dtype=a.dtype), granularity, None if selected is None else selected[j]
        )
        total = pen if total is None else total + pen
        n_sel += n
    return total, detached, n_sel


def first_order_step(
    weights: Sequence[Tensor],
    grads: Sequence[Tensor],
    prev: Sequence[Tensor],
    granularity: str = "row",
) -> tuple[float, list[Tensor], list[Tensor], int]:
    """Eq. 3 penalty with ∂P/∂θ held constant, and its gradient in closed form (no autograd).

    With ``A = θ ⊙ g`` and ``d = A_prev − A``: ``∂/∂θ Σ_{i∈I−} ‖d_i‖ = −(d_i/‖d_i‖) ⊙ g_i`` on I−
    rows (``−sign(d) ⊙ g`` on I− elements), 0 elsewhere (and 0 where d_i = 0). Equal to
    differentiating :func:`ssiuu_regulariser` with ``exact=False`` (tested), in fewer passes over
    the weights.

    Returns:
        ``(penalty, ∂penalty/∂θ per weight, A_θ per weight (detached), |I−|)``.
    """
    total, out_grads, attrs, n_sel = 0.0, [], [], 0
    for w, g, p in zip(weights, grads, prev):
        a = w.detach() * g
        sel = negative_set(a, granularity)
        d = p.to(device=a.device, dtype=a.dtype) - a
        if granularity == "element":
            total += float((d.abs() * sel).sum())
            gd = d.sign_().mul_(sel).mul_(g).neg_()
        else:
            norm = torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1)
            total += float((norm * sel).sum())
            coef = torch.where(sel & (norm > 0), -1.0 / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
            gd = d.mul_(coef.to(d.dtype).reshape(-1, *([1] * (d.dim() - 1)))).mul_(g)
        out_grads.append(gd)
        attrs.append(a)
        n_sel += int(sel.sum())
    return total, out_grads, attrs, n_sel


class WeightGradTap:
    """Per-linear weight gradients of a *reweighted* objective, collected during another backward.

    Rows of a batch do not interact in a transformer, so the gradient reaching any activation of
    row s is proportional to that row's cotangent at the output. If the loss being
    backpropagated gives every answer token of row s the cotangent ``u_s`` and we want the weight
    gradient of an objective whose cotangent is ``v_s`` (here ``∂ΣP/∂log p = P_s`` against
    ``∂(−NLL)/∂log p = 1/T``), then for each linear ``W``::

        ∂objective/∂W = Σ_{s,k} (v_s/u_s) · δ_{s,k} x_{s,k}ᵀ

    with ``δ`` the gradient of the loss at the linear's output and ``x`` its input. The tap
    records ``x`` in a forward hook and forms this product in a tensor hook on the output: the
    chain of input gradients is shared with the ordinary backward, and only one extra
    weight-gradient matmul per linear is paid (instead of a second full backward pass).

    Attributes:
        scale: ``Float[Tensor, "batch"]`` the ratios ``v_s/u_s``; set before ``backward()``.
        grads: The collected ``∂objective/∂W`` per module (None until the backward reaches it).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.scale: Tensor | None = None
        self.grads: list[Tensor | None] = [None] * len(self.modules)
        self._handles: list = []

    def __enter__(self) -> "WeightGradTap":
        self._handles = [m.register_forward_hook(self._forward_hook(j)) for j, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _forward_hook(self, j: int):
        def hook(mod, inputs, out):
            if not isinstance(out, Tensor) or not out.requires_grad:
                return
            x = inputs[0].detach()

            def on_grad(grad: Tensor) -> None:
                s = self.scale.to(device=grad.device, dtype=grad.dtype).reshape(-1, *([1] * (grad.dim() - 1)))
                gw = (grad * s).reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
                self.grads[j] = gw if self.grads[j] is None else self.grads[j] + gw

            out.register_hook(on_grad)

        return hook


def batch_objective(model: HookedModel, items: Sequence, target: str = "prob") -> Tensor:
    """``Σ_{(x,y)∈B} P(y|x)`` (``target="prob"``) or ``Σ log P(y|x)`` (``"logprob"``) of a batch.

    The attribution objective of SSIUU (teacher-forced answer probability, paper Eq. 1), with its
    graph to the weights when gradients are enabled.
    """
    seq = answer_logprobs(model, encode_items(model, items)).seq
    return seq.exp().sum() if target == "prob" else seq.sum()


def batch_attribution(
    model: HookedModel, items: Sequence, weights: Sequence[Tensor], target: str = "prob"
) -> list[Tensor]:
    """Detached ``A = θ ⊙ ∂(Σ_B P(y|x))/∂θ`` of ``weights`` on one batch at the current parameters.

    Used for the ``"initial"`` anchor (the base model's attribution of every forget batch,
    computed once before the first update). The weights' ``requires_grad`` flags are restored.
    """
    flags = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            _, attrs = parameter_attribution(batch_objective(model, items, target), weights, create_graph=False)
    finally:
        for w, f in zip(weights, flags):
            w.requires_grad_(f)
    return [a.detach() for a in attrs]


def _norm(tensors: Sequence[Tensor]) -> float:
    """L2 norm of a list of tensors, taken together (float64 accumulation)."""
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach().double()) for t in tensors])))


#: Key of the single slot used by ``ssiuu_anchor="previous_step"``.
PREVIOUS = "previous_step"
#: Exact SSIUU with the log P target in one process: take the forget part of ∇L_GD from the
#: attribution's backward (see :meth:`SSIUU.loss`). False = the separate GD backward, the arithmetic
#: of the data-parallel path (the tests compare 2 processes with 1 process under the same arithmetic).
_SHARE_BACKWARD = True


class SSIUU(GD):
    """GD + λ · Eq. 3 regulariser (see the module docstring for every decision).

    The regulariser's gradient ``λ∇R`` is always formed separately from the GD gradient and added
    to the weights' gradients after the GD backward (:meth:`after_backward`), so every step records
    ``gd_grad_norm`` = ‖∇L_GD‖ (all trainable parameters), ``ssiuu_reg_grad_norm`` = ‖λ∇R‖ and
    ``grad_share`` = their ratio, next to ``ssiuu_penalty`` (R, attribution units) and
    ``ssiuu_negative`` (|I−|). The exact variant obtains ``λ∇R`` by a double backward
    (``torch.autograd.grad`` of λR, graph retained for the GD backward); the first-order variant
    needs ``g = ∂P/∂θ`` only as a constant: a :class:`WeightGradTap` collects it during the
    ordinary backward pass of the GD loss, then the penalty and its closed-form gradient
    (:func:`first_order_step`) are computed. The loss value recorded in the history includes
    ``λ · penalty``.

    The anchor ``A_{θ^{t−1}}`` (``config.ssiuu_anchor``): ``"batch"`` caches the attribution per
    forget batch (first visit of a batch = GD step); ``"previous_step"`` keeps one slot, the
    attribution of the previous step's batch (Algorithm 1 of the paper's v2: the penalty is active
    from step 2 whatever the batches); ``"initial"`` holds the base model's attribution of every
    forget batch, computed in :meth:`setup` before any update and never replaced.
    """

    name = "ssiuu"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.cache: dict[Any, list[Tensor]] = {}
        self._pending: tuple[Any, list[Tensor]] | None = None
        self._fo: dict[str, Any] | None = None
        self._exact: dict[str, Any] | None = None
        self._fresh = False  # "initial": no optimiser step taken yet (the parameters are the base model's)

    @property
    def anchor(self) -> str:
        return getattr(self.config, "ssiuu_anchor", "batch")

    def setup(self, model, forget_batches, retain, *, state=None, progress=False):
        if state:
            self.load_state_dict(state)
            return
        if self.anchor == "initial" and self.config.lam > 0:
            self._fresh = True
            weights = attributed_weights(model, self.config.ssiuu_modules)
            for key, items in forget_batches.items():
                self.cache[key] = self._to_cache(batch_attribution(model, items, weights, self.config.ssiuu_target))

    def _slot(self, key) -> Any:
        """Cache key of the anchor used at a step on batch ``key`` (None: no anchor)."""
        return PREVIOUS if self.anchor == "previous_step" else key

    def _anchor_of(self, slot) -> list[Tensor] | None:
        """A_{θ^{t−1}} for this step. At the very first step of an ``"initial"`` run the
        parameters are the base model's, so the anchor is replaced by this step's own
        attribution (same value, same arithmetic: the penalty and its gradient are exactly 0
        instead of the float rounding between two computations of one attribution, whose
        ‖·‖₂ would have a unit-size gradient in an arbitrary direction)."""
        if slot is None or (self.anchor == "initial" and self._fresh):
            return None
        return self.cache.get(slot)

    def loss(self, model, forget, retain, key):
        cfg = self.config
        terms: dict[str, float] = {}
        bf = encode_items(model, forget)
        self._fo = None
        self._exact = None
        self._pending = None
        slot = self._slot(key)
        if cfg.lam > 0 and cfg.ssiuu_grad == "first_order":
            types = [t for t in model.arch.module_types if t in cfg.ssiuu_modules]
            keys = [(t, layer) for layer in range(model.arch.n_layers) for t in types]
            tap = WeightGradTap([model.linear(t, layer) for t, layer in keys])
            with tap:
                lp = answer_logprobs(model, bf)
            n_tok = lp.denominator  # global answer tokens under data parallelism
            # cotangent ratio per row: ∂ΣP/∂log p_tok = P_s (or 1 for log P) against 1/T from −NLL
            per_row = lp.seq.detach().exp() if cfg.ssiuu_target == "prob" else torch.ones_like(lp.seq.detach())
            tap.scale = per_row * n_tok
            self._fo = {"slot": slot, "tap": tap, "weights": attributed_weights(model, cfg.ssiuu_modules), "terms": terms}
        else:
            lp = answer_logprobs(model, bf)
        nll_f = lp.nll
        terms["nll_forget"] = float(nll_f.detach())
        loss = -nll_f
        forget_grads = False
        if cfg.lam > 0 and self._fo is None:
            logp = lp.seq
            objective = logp.exp().sum() if cfg.ssiuu_target == "prob" else logp.sum()
            weights = attributed_weights(model, cfg.ssiuu_modules)
            prev = self._anchor_of(slot)
            exact = cfg.ssiuu_grad == "exact"
            if distributed.active():
                pen, cur, n_sel = dp_ssiuu_regulariser(
                    objective, weights, prev, granularity=cfg.ssiuu_granularity, exact=exact
                )
            else:
                grads = None
                if _SHARE_BACKWARD and cfg.ssiuu_target == "logprob" and retain and cfg.retain_weight != 0:
                    # Σ log P(y|x) = −N·NLL_forget: one backward of the objective over *every*
                    # parameter gives g for the attribution and, divided by N, the forget part of
                    # ∇L_GD, so GD's backward below only has to cover the retain loss.
                    params = [w for w in model.hf_model.parameters() if w.requires_grad]
                    ids = {id(w) for w in weights}
                    others = [w for w in params if id(w) not in ids]
                    g_all = torch.autograd.grad(
                        objective, list(weights) + others, retain_graph=True,
                        create_graph=exact and prev is not None, allow_unused=True,
                    )
                    g_all = [torch.zeros_like(w) if g is None else g for w, g in zip(list(weights) + others, g_all)]
                    grads = g_all[: len(weights)]
                    # accumulated into .grad now (the trainer zeroed it before loss()); the
                    # backward of the returned loss adds the retain part on top
                    self._add_grads(list(weights) + others, [g.detach() for g in g_all], alpha=1.0 / lp.denominator)
                    forget_grads = True
                pen, cur, n_sel = ssiuu_regulariser(
                    objective, weights, prev, granularity=cfg.ssiuu_granularity, exact=exact, grads=grads
                )
            self._pending = (slot, self._to_cache(cur))
            terms["ssiuu_penalty"] = float(pen.detach()) if pen is not None else 0.0
            terms["ssiuu_negative"] = n_sel
            rgrads = None
            if pen is not None and pen.requires_grad:
                # λ∇R on its own (double backward for "exact"); the forward graph is kept for GD's
                # backward unless that backward no longer needs the forget batch (log P target)
                rgrads = torch.autograd.grad(cfg.lam * pen, weights, retain_graph=not forget_grads, allow_unused=True)
                rgrads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, rgrads)]
            self._exact = {"weights": weights, "grads": rgrads, "terms": terms,
                           "value": cfg.lam * terms["ssiuu_penalty"]}
        nll_r = self._retain_nll(model, retain, terms)
        if forget_grads:
            loss = loss.detach()  # its gradient is already in .grad (above)
        if nll_r is not None:
            loss = loss + cfg.retain_weight * nll_r
        return loss, terms

    def _to_cache(self, cur: list[Tensor]) -> list[Tensor]:
        dtype = getattr(torch, self.config.ssiuu_cache_dtype) if self.config.ssiuu_cache_dtype else None
        return [c.to(dtype) if dtype is not None else c for c in cur]

    @staticmethod
    def _record_share(model, terms: dict, rgrads: Sequence[Tensor] | None, scale: float = 1.0) -> None:
        """Record ‖∇L_GD‖ (every parameter's current ``.grad``), ‖scale · rgrads‖ = ‖λ∇R‖ and
        their ratio ``grad_share`` in ``terms``. Call between the GD backward and adding λ∇R."""
        gd = _norm([p.grad for p in model.hf_model.parameters() if p.grad is not None])
        reg = abs(scale) * _norm(rgrads) if rgrads is not None else 0.0
        terms["gd_grad_norm"] = gd
        terms["ssiuu_reg_grad_norm"] = reg
        terms["grad_share"] = reg / gd if gd > 0 else (0.0 if reg == 0 else math.inf)

    @staticmethod
    def _add_grads(weights: Sequence[Tensor], grads: Sequence[Tensor], alpha: float = 1.0) -> None:
        """``w.grad += alpha · g``; a new ``.grad`` follows autograd's gradient layout contract (the
        parameter's strides when it is dense, else contiguous, e.g. GPT-2's split Conv1D weights)."""
        for w, g in zip(weights, grads):
            if w.grad is None:
                buf = torch.empty_like(w)
                if buf.stride() != w.stride():
                    buf = torch.empty(w.shape, dtype=w.dtype, device=w.device)
                w.grad = buf.copy_(g).mul_(alpha) if alpha != 1.0 else buf.copy_(g)
            else:
                w.grad.add_(g, alpha=alpha)

    def after_backward(self, model) -> float | None:
        ex, self._exact = self._exact, None
        if ex is not None:
            if ex["grads"] is not None and distributed.active():
                # each process holds its share of ∇⟨r, θ⊙g_k⟩; the trainer summed the GD gradients
                # before this call, so the regulariser's shares are summed here
                ex["grads"] = distributed.all_reduce_sum(ex["grads"])
            if distributed.active():  # the value is this process's share of λ·R (see dp_ssiuu_regulariser)
                ex["value"] = float(distributed.all_reduce_sum([torch.tensor(float(ex["value"]), dtype=torch.float64)])[0])
            self._record_share(model, ex["terms"], ex["grads"])
            if ex["grads"] is not None:
                self._add_grads(ex["weights"], ex["grads"])
            return ex["value"]
        fo, self._fo = self._fo, None
        if fo is None:
            return None
        cfg = self.config
        grads = fo["tap"].grads
        if any(g is None for g in grads):
            raise RuntimeError("ssiuu: the backward pass did not reach every attributed linear")
        grads = distributed.all_reduce_sum(grads)  # g of the global batch (no-op in one process)
        weights, slot = fo["weights"], fo["slot"]
        prev = self._anchor_of(slot)
        if prev is None:  # no anchor yet: A_prev := A_θ^t, penalty and gradient 0
            cur = [w.detach() * g for w, g in zip(weights, grads)]
            value, n_sel = 0.0, sum(int(negative_set(a, cfg.ssiuu_granularity).sum()) for a in cur)
            self._record_share(model, fo["terms"], None)
        else:
            value, pgrads, cur, n_sel = first_order_step(weights, grads, prev, cfg.ssiuu_granularity)
            self._record_share(model, fo["terms"], pgrads, cfg.lam)
            self._add_grads(weights, pgrads, alpha=cfg.lam)
        self._pending = (slot, self._to_cache(cur))
        fo["terms"]["ssiuu_penalty"] = value
        fo["terms"]["ssiuu_negative"] = n_sel
        return cfg.lam * value

    def after_step(self, key):
        pending, self._pending = self._pending, None
        fresh, self._fresh = self._fresh, False
        if pending is None or pending[0] is None or (self.anchor == "initial" and not fresh):
            return  # the "initial" anchor stays the base model's attribution
        self.cache[pending[0]] = pending[1]

    def state_dict(self):
        return {"cache": self.cache}

    def load_state_dict(self, state):
        self.cache = state["cache"]


def dp_ssiuu_regulariser(
    objective: Tensor,
    weights: Sequence[Tensor],
    prev: Sequence[Tensor] | None,
    *,
    granularity: str = "row",
    exact: bool = True,
    selected: Sequence[Tensor] | None = None,
) -> tuple[Tensor | None, list[Tensor], int]:
    """Data-parallel :func:`ssiuu_regulariser` (paper Eq. 3; the reduction is :mod:`neuronscope.distributed`'s).

    ``objective`` is this process's Σ_{B_k} P(y|x). The global ``g = Σ_k ∂objective_k/∂θ`` is
    all-reduced; ``A = θ ⊙ g``, I− and the penalty come from it. The returned tensor's value is
    ``penalty / world_size`` (the values of all processes sum to the penalty, as the loss values
    do) and its gradient is that of ``⟨r, θ ⊙ g_k(θ)⟩`` with ``r = ∂penalty/∂A`` held constant
    — summed over processes, the exact gradient of the one-process penalty (module docstring).

    Returns:
        ``(penalty share or None at a batch's first visit, global A_θ^t per weight (detached),
        |I−| of the global A)``.
    """
    weights = list(weights)
    create = exact and prev is not None
    local = torch.autograd.grad(objective, weights, retain_graph=True, create_graph=create)
    g = distributed.all_reduce_sum([x.detach().clone() for x in local])
    cur = [w.detach() * gg for w, gg in zip(weights, g)]
    if prev is None:
        return None, cur, sum(int(negative_set(a, granularity).sum()) for a in cur)
    leaves = [a.clone().requires_grad_(True) for a in cur]
    n_sel = 0
    with torch.enable_grad():
        total: Tensor | None = None
        for j, (a, p) in enumerate(zip(leaves, prev)):
            pen, n = neuron_penalty(
                a, p.to(device=a.device, dtype=a.dtype), granularity, None if selected is None else selected[j]
            )
            total = pen if total is None else total + pen
            n_sel += n
        r = torch.autograd.grad(total, leaves)
    terms = [(rj * w * (lj if create else lj.detach())).sum() for rj, w, lj in zip(r, weights, local)]
    surrogate = torch.stack(terms).sum()
    share = total.detach() / distributed.world_size()
    return share + (surrogate - surrogate.detach()), cur, n_sel

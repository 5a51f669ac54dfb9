"""KLUE — Knowledge-Localized UnlEarning (Yang et al., 2025, FaithUn), our reading (SPEC §9).

No public code exists, so this module implements our reading of the FaithUn paper's
description ("leverages a regularized explainability method to localize contextual knowledge
neurons, updating only these neurons using carefully selected unforgotten samples") with the
hyperparameters of the SSIUU paper, App. B.2 (10 % of FFN neurons, GD, α = 10, N = 5):

1. **Candidate neurons**: every output row of the FFN gate, up and down projections of every
   layer (the FFN neurons of SPEC §4: d_mlp + d_mlp + d_model per layer).
2. **Attribution** (paper Eq. 1 via :func:`neuronscope.attribution.attribute`, target P(y|x),
   per-sample max over tokens): ``S_i(x, y) = max_k A_i,k(x, y)`` for every forget pair.
3. **Superficial-knowledge regularisation**: a neuron that raises P(y) whatever the question
   encodes *superficial* knowledge of the answer string (its frequency, its form), not the
   *contextual* fact (x, y). For each forget pair we draw N questions x̃_1..x̃_N of other
   items (seeded; never one whose answer is y) and attribute the *mismatched* pairs (x̃_n, y).
   The regularised score is

       KS_i = mean_{(x,y)∈C_f} [ S_i(x, y) − α · (1/N) Σ_n S_i(x̃_n, y) ].

4. **Localisation**: the top ``klue_fraction`` (10 %) of all candidate neurons by KS, ranked
   globally across layers and module types.
5. **Update**: GD (``−NLL(forget) + NLL(retain)``) in which only the selected rows change: the
   gradients of all other rows are zeroed after every backward pass and every other parameter
   is frozen (with AdamW and ``weight_decay = 0`` a row whose gradient is always zero never
   moves).
6. **Unforgotten samples**: each epoch trains only on the forget items the model still
   answers correctly at the latest evaluation (``klue_unforgotten``), so already-forgotten
   facts are not pushed further (over-unlearning).

Localisation is done once, with the initial weights, before the first update; the masks are
part of the checkpoint.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
from torch import Tensor

from neuronscope.attribution import AttributionConfig, attribute
from neuronscope.errors import NeuronscopeError
from neuronscope.models import HookedModel
from neuronscope.unlearning.losses import GD

FFN_TYPES: tuple[str, ...] = ("gate", "up", "down")


def superficial_questions(
    forget: Sequence, pool: Sequence, n: int, seed: int
) -> list[list[str]]:
    """For each forget item, ``n`` questions of other pool items whose answer differs (seeded).

    Raises:
        NeuronscopeError: The pool has no question with a different answer.
    """
    rng = random.Random(f"klue-superficial-{seed}")
    out = []
    for it in forget:
        cands = [p.question for p in pool if p.id != it.id and p.answer != it.answer]
        if n and not cands:
            raise NeuronscopeError("klue: no question with a different answer to build superficial pairs")
        out.append([cands[rng.randrange(len(cands))] for _ in range(n)])
    return out


def knowledge_scores(
    model: HookedModel,
    forget: Sequence,
    pool: Sequence,
    *,
    alpha: float = 10.0,
    n: int = 5,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[tuple[str, int], Tensor]:
    """KS_i of every FFN neuron (step 3 of the module docstring).

    Returns:
        ``(module type, layer) -> Float[Tensor, "n_neurons"]`` in probability units.
    """
    cfg = AttributionConfig(module_types=FFN_TYPES, batch_size=batch_size)
    qs = [it.question for it in forget]
    ans = [it.answer for it in forget]
    main = attribute(model, qs, ans, cfg, progress=progress)
    scores = {k: v.mean(dim=0) for k, v in main.max.items()}
    if n > 0 and alpha != 0:
        sup_q = superficial_questions(forget, pool, n, seed)
        flat_q = [q for qs_ in sup_q for q in qs_]
        flat_a = [a for a, qs_ in zip(ans, sup_q) for _ in qs_]
        sup = attribute(model, flat_q, flat_a, cfg, progress=progress)
        for k in scores:
            # mean over the N mismatched questions of each item, then over items = overall mean
            scores[k] = scores[k] - alpha * sup.max[k].mean(dim=0)
    return scores


def localize(scores: dict[tuple[str, int], Tensor], fraction: float) -> dict[tuple[str, int], Tensor]:
    """Boolean row masks selecting the global top ``fraction`` of neurons by score (at least one)."""
    keys = list(scores)
    flat = torch.cat([scores[k].float() for k in keys])
    k_top = max(1, int(round(fraction * flat.numel())))
    idx = torch.topk(flat, k_top).indices
    sel = torch.zeros(flat.numel(), dtype=torch.bool)
    sel[idx] = True
    masks, s = {}, 0
    for k in keys:
        m = scores[k].numel()
        masks[k] = sel[s : s + m].clone()
        s += m
    return masks


class KLUE(GD):
    """GD restricted to the localised FFN rows, trained on unforgotten forget items."""

    name = "klue"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.masks: dict[tuple[str, int], Tensor] = {}

    def setup(self, model, forget_batches, retain, *, state=None, progress=False):
        if state:
            self.load_state_dict(state)
            return
        forget = [it for items in forget_batches.values() for it in items]
        cfg = self.config
        scores = knowledge_scores(
            model, forget, [*forget, *retain], alpha=cfg.klue_alpha, n=cfg.klue_n, seed=cfg.seed,
            batch_size=cfg.batch_size, progress=progress,
        )
        self.masks = localize(scores, cfg.klue_fraction)

    def trainable(self, model):
        return [model.linear(t, layer).weight for (t, layer), m in self.masks.items() if bool(m.any())]

    def after_backward(self, model):
        for (t, layer), m in self.masks.items():
            w = model.linear(t, layer).weight
            if w.grad is not None:
                w.grad.mul_(m.to(device=w.grad.device, dtype=w.grad.dtype).unsqueeze(1))

    def select_forget(self, items, correct_ids):
        if not self.config.klue_unforgotten or correct_ids is None:
            return items
        return [it for it in items if it.id in correct_ids]

    def state_dict(self):
        return {"masks": {f"{t}.{layer}": m for (t, layer), m in self.masks.items()}}

    def load_state_dict(self, state):
        self.masks = {(k.split(".")[0], int(k.split(".")[1])): m for k, m in state["masks"].items()}

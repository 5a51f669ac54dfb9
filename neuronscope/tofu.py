"""TOFU-format evaluation and pipeline: ROUGE-L recall, the threshold τ, fine-tune → unlearn (SPEC §10).

TOFU (Maini et al., 2024) asks questions about fictitious authors, so a model must first be
fine-tuned on them (paper App. B.1: lr 1e-5, 5 epochs) before anything can be unlearned.
Scores are ROUGE-L **recall** (Lin, 2004) of the model's greedy answer against the gold
answer, computed with ``rouge-score`` (``RougeScorer(["rougeL"], use_stemmer=True)``, the
TOFU benchmark's setting): recall = LCS(gold, generation) / |gold| in tokens.

Unlearning stops when the forget-set ROUGE-L recall falls to the threshold τ, the mean
ROUGE-L recall of *mismatched* QA pairs: each gold answer is scored against the gold answer
of a different, randomly chosen (seeded) question (paper §6.1: τ = 0.1971 on TOFU). τ is a
property of the data alone.

Generation is a plain greedy loop through the bridge without a KV cache: the
TransformerBridge replaces the HF attention modules with components that do not support
HF's cache (cached ``generate`` degenerates) nor left padding.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from neuronscope.errors import ConfigError, NeuronscopeError, write_json_atomic
from neuronscope.models import HookedModel
from neuronscope.prompts import chat_prompt

__all__ = [
    "rouge_l_recall",
    "rouge_threshold",
    "generate_answers",
    "RougeResult",
    "rouge_evaluate",
    "rouge_eval_fn",
    "mismatched_pairs",
]


# --------------------------------------------------------------------------------------------
# ROUGE-L recall and τ
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l_recall(prediction: str, reference: str, *, use_stemmer: bool = True) -> float:
    """ROUGE-L recall of ``prediction`` against the gold ``reference`` (rouge-score).

    recall = LCS(reference tokens, prediction tokens) / len(reference tokens), with
    rouge-score's tokenizer (lower-cased, non-alphanumerics dropped, Porter stemming when
    ``use_stemmer``).

    Returns:
        A value in [0, 1]; 0 when the reference has no tokens.
    """
    return float(_scorer(use_stemmer).score(reference, prediction)["rougeL"].recall)


def mismatched_pairs(n: int, seed: int = 0) -> list[int]:
    """For each index i < n, a seeded random index j ≠ i (the "other question" of τ).

    Raises:
        ConfigError: ``n < 2`` (no other question to mismatch with).
    """
    if n < 2:
        raise ConfigError(f"tau: need at least 2 QA pairs to build mismatched pairs, got {n}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        j = rng.randrange(n - 1)
        out.append(j if j < i else j + 1)
    return out


def rouge_threshold(answers: Sequence[str] | Sequence, *, seed: int = 0, use_stemmer: bool = True) -> float:
    """τ: mean ROUGE-L recall of mismatched QA pairs (paper §6.1, App. B.1).

    Each gold answer i is the reference; the gold answer of a random other question
    ``j = mismatched_pairs(n, seed)[i]`` is the prediction.

    Args:
        answers: Gold answer strings, or items with an ``answer`` attribute.
        seed: Seed of the random pairing.
        use_stemmer: Porter stemming in rouge-score.

    Returns:
        τ in [0, 1].

    Raises:
        ConfigError: Fewer than two answers.
    """
    texts = [a if isinstance(a, str) else a.answer for a in answers]
    partner = mismatched_pairs(len(texts), seed)
    return sum(rouge_l_recall(texts[j], texts[i], use_stemmer=use_stemmer) for i, j in enumerate(partner)) / len(texts)


# --------------------------------------------------------------------------------------------
# Generation and ROUGE evaluation
# --------------------------------------------------------------------------------------------


def _stop_ids(tok) -> list[int]:
    ids = {tok.eos_token_id}
    im_end = tok.convert_tokens_to_ids("<|im_end|>") if hasattr(tok, "convert_tokens_to_ids") else None
    if isinstance(im_end, int) and im_end != getattr(tok, "unk_token_id", None):
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_answers(
    model: HookedModel,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers to ``questions`` asked in the model's chat template.

    A plain greedy loop through the bridge (so caller hooks apply): batches are
    right-padded and each step appends one token after each sequence's last real token, so
    real tokens only ever attend to real tokens and a batch decodes exactly like single
    questions. No KV cache (see the module docstring); decoding of a sequence stops at the
    end-of-turn / end-of-sequence token.

    Returns:
        One decoded answer per question (special tokens removed, whitespace stripped).
    """
    tok = model.tokenizer
    was_training = model.bridge.training
    model.bridge.eval()
    stop = set(_stop_ids(tok))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out_texts: list[str] = []
    try:
        for s in tqdm(range(0, len(questions), batch_size), desc=desc, disable=not progress, leave=False):
            prompts = [tok(chat_prompt(tok, q), add_special_tokens=False)["input_ids"] for q in questions[s : s + batch_size]]
            b = len(prompts)
            lengths = torch.tensor([len(p) for p in prompts])
            ids = torch.full((b, int(lengths.max()) + max_new_tokens), pad, dtype=torch.long)
            for i, p in enumerate(prompts):
                ids[i, : len(p)] = torch.tensor(p)
            start = lengths.clone()
            done = torch.zeros(b, dtype=torch.bool)
            rows = torch.arange(b)
            for _ in range(max_new_tokens):
                width = int(lengths.max())
                mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
                logits = model.bridge(ids[:, :width].to(model.device), attention_mask=mask.to(model.device))
                nxt = logits[rows.to(logits.device), (lengths - 1).to(logits.device)].argmax(-1).cpu()
                active = ~done
                ids[rows[active], lengths[active]] = nxt[active]
                lengths = lengths + active.long()
                done = done | torch.tensor([int(t) in stop for t in nxt]) & active
                if bool(done.all()):
                    break
            for i in range(b):
                gen = ids[i, int(start[i]) : int(lengths[i])].tolist()
                if gen and gen[-1] in stop:
                    gen = gen[:-1]
                out_texts.append(tok.decode(gen, skip_special_tokens=True).strip())
    finally:
        model.bridge.train(was_training)
    return out_texts


@dataclass
class RougeResult:
    """ROUGE-L recall of greedy generations on QA items.

    Attributes:
        score: Mean ROUGE-L recall in [0, 1].
        recalls: Per-item recall, in input order.
        generations: Per-item greedy answer.
        ids: Item ids.
    """

    score: float
    recalls: list[float]
    generations: list[str]
    ids: list[str]

    @property
    def accuracy(self) -> float:
        """Alias of :attr:`score`, so ROUGE and MCQA results read alike (FS/RS)."""
        return self.score

    def to_dict(self) -> dict:
        return asdict(self)


def rouge_evaluate(
    model: HookedModel,
    items: Sequence,
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    use_stemmer: bool = True,
    progress: bool = False,
    desc: str = "ROUGE-L",
) -> RougeResult:
    """Mean ROUGE-L recall of the model's greedy answers against the gold answers (TOFU FS/RS).

    Raises:
        NeuronscopeError: ``items`` is empty.
    """
    if len(items) == 0:
        raise NeuronscopeError(f"{desc}: no items to evaluate (empty split)")
    gens = generate_answers(
        model, [it.question for it in items], max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, desc=desc
    )
    recalls = [rouge_l_recall(g, it.answer, use_stemmer=use_stemmer) for g, it in zip(gens, items)]
    return RougeResult(sum(recalls) / len(recalls), recalls, gens, [it.id for it in items])


def rouge_eval_fn(items: Sequence, **kw) -> Callable[[HookedModel], float]:
    """``eval_fn(model) -> mean ROUGE-L recall on items``, for ``finetune``/attacks/stopping rules."""

    def fn(model: HookedModel) -> float:
        return rouge_evaluate(model, items, **kw).score

    return fn

"""Prompt templates and teacher-forced batches (paper §2, App. B.1 Table 3; SPEC §10).

A *QA pair* (x, y) becomes the chat-templated prompt x followed by the answer tokens y. The
model input is ``x ⊕ y[:-1]`` and the targets are ``y`` (SPEC §5): position k of the input
predicts ``target_ids[k]`` where ``target_mask[k]`` is true. Batches are right-padded, so
positions and attention of real tokens are identical to the unpadded sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

#: The MCQA evaluation template of paper Table 3 (FaithUn).
MCQA_TEMPLATE = (
    "Answer the following question by simply selecting a proper answer among the given options. "
    "You must generate only the exact word without an explanation.\n"
    "Question: {question}\nOptions: {options}\nYour Answer:"
)

#: Knowledge protocols (SPEC §10): ``mcqa`` = Table 3 with the options in the prompt (paper);
#: ``cloze`` = the question alone, each option scored as the answer.
PROTOCOLS: tuple[str, ...] = ("mcqa", "cloze")

#: The refusal used as DPO's preferred answer (paper App. B.2).
REFUSAL = "I can't answer the question."


def chat_prompt(tokenizer, user_text: str) -> str:
    """Wrap ``user_text`` as one user turn in the model's chat template, ready for the reply.

    Falls back to ``"Question: ...\\nAnswer:"`` for tokenizers without a chat template.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False
        )
    return f"Question: {user_text}\nAnswer:"


def mcqa_prompt(tokenizer, question: str, options: Sequence[str]) -> str:
    """The Table 3 MCQA prompt (options comma-separated) inside the chat template."""
    return chat_prompt(tokenizer, MCQA_TEMPLATE.format(question=question, options=", ".join(options)))


def cloze_prompt(tokenizer, question: str) -> str:
    """The ``cloze`` protocol prompt: the question alone inside the chat template (SPEC §10).

    The same prompt x the unlearning losses train on (:func:`encode_qa`).
    """
    return chat_prompt(tokenizer, question)


def knowledge_prompt(tokenizer, protocol: str, question: str, options: Sequence[str]) -> str:
    """The prompt of ``question`` under a knowledge protocol (``options`` are shown by ``mcqa`` only).

    Raises:
        ValueError: Unknown ``protocol``.
    """
    if protocol == "mcqa":
        return mcqa_prompt(tokenizer, question, options)
    if protocol == "cloze":
        return cloze_prompt(tokenizer, question)
    raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")


@dataclass
class TokenBatch:
    """A right-padded teacher-forced batch.

    Attributes:
        input_ids: ``x ⊕ y[:-1]`` token ids, padded with the pad id.
        attention_mask: 1 on real tokens.
        target_ids: The token each position must predict (pad elsewhere).
        target_mask: True where ``target_ids`` is an answer token (those terms form log P(y|x)).
        prompt_mask: True on the prompt tokens x.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    target_ids: Int[Tensor, "batch pos"]
    target_mask: Bool[Tensor, "batch pos"]
    prompt_mask: Bool[Tensor, "batch pos"]

    def to(self, device) -> "TokenBatch":
        return TokenBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def encode_pairs(
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    max_length: int | None = None,
) -> TokenBatch:
    """Tokenise (prompt, answer) pairs into a :class:`TokenBatch`.

    Args:
        tokenizer: HF tokenizer; prompts are already chat-templated strings, so no special
            tokens are added.
        prompts: Prompt strings x.
        answers: Answer strings y (non-empty).
        max_length: Context length; longer sequences raise.

    Raises:
        ValueError: Lengths differ, an answer tokenises to nothing, or a sequence is longer
            than ``max_length``.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    seqs: list[tuple[list[int], int]] = []
    for p, a in zip(prompts, answers):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"]
        if not a_ids:
            raise ValueError(f"answer {a!r} tokenises to no tokens")
        ids = p_ids + a_ids
        if max_length is not None and len(ids) - 1 > max_length:
            raise ValueError(f"sequence of {len(ids) - 1} tokens is longer than the context ({max_length}): {p[:40]!r}")
        seqs.append((ids, len(p_ids)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) - 1 for ids, _ in seqs)
    b = len(seqs)
    input_ids = torch.full((b, width), pad, dtype=torch.long)
    target_ids = torch.full((b, width), pad, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    target_mask = torch.zeros((b, width), dtype=torch.bool)
    prompt_mask = torch.zeros((b, width), dtype=torch.bool)
    for i, (ids, n_prompt) in enumerate(seqs):
        n = len(ids) - 1
        input_ids[i, :n] = torch.tensor(ids[:-1])
        target_ids[i, :n] = torch.tensor(ids[1:])
        attention_mask[i, :n] = 1
        target_mask[i, n_prompt - 1 : n] = True
        prompt_mask[i, :n_prompt] = True
    return TokenBatch(input_ids, attention_mask, target_ids, target_mask, prompt_mask)


def encode_qa(tokenizer, questions: Sequence[str], answers: Sequence[str], **kw) -> TokenBatch:
    """Plain QA pairs in the chat template, as used for unlearning and attribution (App. B.1)."""
    return encode_pairs(tokenizer, [chat_prompt(tokenizer, q) for q in questions], list(answers), **kw)


def sequence_logprob(
    logits: torch.Tensor, batch: TokenBatch
) -> torch.Tensor:
    """log P(y|x) per sample: the sum of answer-token log-probabilities.

    Args:
        logits: ``Float[Tensor, "batch pos vocab"]`` model logits on ``batch.input_ids``.
        batch: The batch the logits belong to.

    Returns:
        ``Float[Tensor, "batch"]`` log-probabilities in nats.
    """
    logp = torch.log_softmax(_at_least_fp32(logits), dim=-1)
    tok = logp.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    return (tok * batch.target_mask).sum(-1)


def mean_nll(logits: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """Token-averaged negative log-likelihood of the answers (the NLL of GA/GD), nats/token."""
    logp = torch.log_softmax(_at_least_fp32(logits), dim=-1)
    tok = logp.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    m = batch.target_mask
    return -(tok * m).sum() / m.sum().clamp(min=1)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast bf16/fp16 to float32; keep float64 as is (for exact checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))

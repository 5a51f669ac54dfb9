"""Knowledge evaluation of FaithUn-format items: FS, RS and US (paper §6.2.1, App. B.1 Table 3; SPEC §10).

Two knowledge protocols (SPEC §10), recorded in every result:

* ``"mcqa"`` — the paper's Table 3 template: the question and its three options (in a fixed
  seeded order) inside the model's chat template. The paper's protocol, for instruction-tuned
  3B models; the default, for backward compatibility.
* ``"cloze"`` — the question alone in the chat template (the same prompt the unlearning
  losses train on, :func:`neuronscope.prompts.encode_qa`); each option is scored as the
  answer. Chance is still 1/3.

The prediction is the option with the highest answer likelihood ``log P(option | prompt)``
(sum over the option's tokens, nats; default, SPEC §10), or the option exactly matched by the
greedy generation (the paper's scoring). Accuracy is the fraction predicted correctly. In
likelihood mode every result carries each option's log-likelihood and the *margin*
``log P(gold) − max_wrong log P(wrong)`` (nats), from which :func:`known_facts` selects the facts
the model knows (correct with a margin ≥ δ; for ``mcqa`` under every option order).

* FS — forget-set accuracy (lower is better; unlearning stops at ≤ 0.33, chance for 3 options).
* RS — accuracy on the retain and test sets (higher is better).
* US — accuracy on the utility set.
* TOFU: FS/RS are the ROUGE-L recall of greedy answers against the gold answers (paper §6.1,
  App. B.1), with τ the mean ROUGE-L recall of mismatched QA pairs (:func:`rouge_threshold`).

Evaluation runs through the bridge, so hooks attached by the caller (e.g. neuron ablations)
take effect.
"""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from neuronscope.errors import ConfigError, NeuronscopeError
from neuronscope.models import HookedModel
from neuronscope.prompts import PROTOCOLS, chat_prompt, knowledge_prompt, sequence_logprob

#: Default known-fact margin δ (nats) of :func:`known_facts`; chosen by measurement on the
#: embedded SmolLM2-135M-Instruct (see :func:`known_facts` and ``benchmarks/protocols.py``).
DEFAULT_DELTA: float = 2.0


@dataclass
class MCQAResult:
    """Per-item outcome of a knowledge evaluation (either protocol).

    Attributes:
        accuracy: Fraction of items answered correctly, in [0, 1].
        correct: Per-item correctness, in input order.
        predictions: Predicted option text per item ("" when a generation matched none).
        ids: Item ids.
        option_logprobs: Per-item list of log P(option | prompt) in nats, in the order of
            ``options`` (likelihood mode; empty in generate mode).
        protocol: ``"mcqa"`` or ``"cloze"``.
        options: Per-item option texts in the scored (and, for ``mcqa``, shown) order.
        margins: Per-item ``log P(gold) − max log P(wrong option)`` in nats (> 0 ⇔ the gold
            option ranks first; likelihood mode; empty in generate mode).
    """

    accuracy: float
    correct: list[bool]
    predictions: list[str]
    ids: list[str]
    option_logprobs: list[list[float]] = field(default_factory=list)
    protocol: str = "mcqa"
    options: list[list[str]] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)

    def correct_ids(self) -> set[str]:
        return {i for i, c in zip(self.ids, self.correct) if c}

    def wrong_ids(self) -> set[str]:
        return {i for i, c in zip(self.ids, self.correct) if not c}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)


#: The result of :func:`knowledge_evaluate` (same class; the old name is kept).
KnowledgeResult = MCQAResult


def _normalise(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text).strip().lower()


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise NeuronscopeError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def option_margin(scores: Sequence[float], gold: int) -> float:
    """``scores[gold] − max(scores[j] for j ≠ gold)`` in nats (+inf with a single option).

    Raises:
        NeuronscopeError: ``gold`` is not an index of ``scores``.
    """
    if not 0 <= gold < len(scores):
        raise NeuronscopeError(f"option_margin: gold index {gold} outside {len(scores)} options")
    wrong = [s for j, s in enumerate(scores) if j != gold]
    return float(scores[gold] - max(wrong)) if wrong else math.inf


@torch.no_grad()
def knowledge_evaluate(
    model: HookedModel,
    items: Sequence,
    *,
    protocol: Literal["mcqa", "cloze"] = "mcqa",
    mode: Literal["likelihood", "generate"] = "likelihood",
    batch_size: int = 24,
    option_seed: int = 0,
    options: Sequence[Sequence[str]] | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> MCQAResult:
    """Accuracy of ``model`` on FaithUn-format ``items`` under a knowledge protocol (SPEC §10).

    ``mcqa`` is paper App. B.1 Table 3 (options in the prompt); ``cloze`` asks the question
    alone and scores each option as the answer. In likelihood mode the prediction is
    ``argmax_j log P(option_j | prompt)`` with ``log P(o | x) = Σ_k log softmax(logits)[o_k]``
    over the option's tokens (nats, not length-normalised), computed by
    :func:`packed_option_logprobs`; ties go to the earlier option.

    Args:
        model: The hooked model.
        items: Objects with ``id``, ``question``, ``answer`` and ``options(seed)``.
        protocol: ``"mcqa"`` (default) or ``"cloze"``.
        mode: ``"likelihood"`` (argmax of log P(option | prompt), default) or ``"generate"``
            (greedy decoding, normalised exact match — or prefix match — against the options).
        batch_size: Sequences per forward pass (likelihood mode; one packed row holds the 3
            options of a question).
        option_seed: Seed of the option order (``item.options(option_seed)``).
        options: Explicit option order per item (overrides ``option_seed``; each must contain
            the item's answer), e.g. the rotations of :func:`known_facts`.
        progress: Show a progress bar.
        desc: Progress-bar label (default: the protocol's name).

    Returns:
        :class:`MCQAResult` (alias :data:`KnowledgeResult`) with ``protocol`` set, the option
        log-likelihoods and margins (likelihood mode).

    Raises:
        NeuronscopeError: ``items`` is empty; ``protocol`` or ``mode`` is unknown; ``options``
            has the wrong length or lacks an item's answer; an option tokenises to nothing.
    """
    desc = desc or protocol.upper()
    if len(items) == 0:
        raise NeuronscopeError(f"{desc}: no items to evaluate (empty split)")
    _check_protocol(protocol)
    if mode not in ("likelihood", "generate"):
        raise NeuronscopeError(f"mode: expected 'likelihood' or 'generate', got {mode!r}")
    if options is None:
        options_per_item = [list(it.options(option_seed)) for it in items]
    else:
        if len(options) != len(items):
            raise NeuronscopeError(f"options: {len(options)} option lists for {len(items)} items")
        options_per_item = [list(o) for o in options]
        for it, o in zip(items, options_per_item):
            if it.answer not in o:
                raise NeuronscopeError(f"options: item '{it.id}' lacks its answer {it.answer!r}")
    tok = model.tokenizer
    was_training = model.bridge.training
    model.bridge.eval()
    try:
        prompts = [knowledge_prompt(tok, protocol, it.question, o) for it, o in zip(items, options_per_item)]
        if mode == "generate":
            return _generate_eval(model, items, prompts, options_per_item, protocol, progress, desc)
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        option_ids = [[tok(x, add_special_tokens=False)["input_ids"] for x in o] for o in options_per_item]
        all_scores: list[list[float]] = [[] for _ in items]
        # Rows of similar length together (less padding); each row packs one question.
        order = sorted(range(len(items)), key=lambda i: len(prompt_ids[i]) + sum(map(len, option_ids[i])))
        rows_per_batch = max(1, batch_size // 3)
        for s in tqdm(range(0, len(order), rows_per_batch), desc=desc, disable=not progress, leave=False):
            idx = order[s : s + rows_per_batch]
            scores = packed_option_logprobs(model, [prompt_ids[i] for i in idx], [option_ids[i] for i in idx])
            for i, sc in zip(idx, scores):
                all_scores[i] = sc
        correct, preds, margins = [], [], []
        for it, opts, sc in zip(items, options_per_item, all_scores):
            pred = opts[max(range(len(opts)), key=lambda i: sc[i])]
            preds.append(pred)
            correct.append(pred == it.answer)
            margins.append(option_margin(sc, opts.index(it.answer)))
        return MCQAResult(
            sum(correct) / len(correct), correct, preds, [it.id for it in items], all_scores,
            protocol, options_per_item, margins,
        )
    finally:
        model.bridge.train(was_training)


def mcqa_evaluate(
    model: HookedModel,
    items: Sequence,
    *,
    mode: Literal["likelihood", "generate"] = "likelihood",
    batch_size: int = 24,
    option_seed: int = 0,
    progress: bool = False,
    desc: str = "MCQA",
) -> MCQAResult:
    """MCQA accuracy (paper App. B.1, Table 3): :func:`knowledge_evaluate` with ``protocol="mcqa"``.

    Args:
        model: The hooked model.
        items: Objects with ``id``, ``question``, ``answer`` and ``options(seed)``.
        mode: ``"likelihood"`` (default) or ``"generate"``.
        batch_size: Sequences per forward pass (likelihood mode).
        option_seed: Seed of the option order shown in the prompt.
        progress: Show a progress bar.
        desc: Progress-bar label.

    Returns:
        :class:`MCQAResult`.

    Raises:
        NeuronscopeError: ``items`` is empty or ``mode`` is unknown.
    """
    return knowledge_evaluate(
        model, items, protocol="mcqa", mode=mode, batch_size=batch_size, option_seed=option_seed,
        progress=progress, desc=desc,
    )


def rotations(options: Sequence[str]) -> list[list[str]]:
    """All cyclic rotations of ``options`` (each option once in every position for 3 options)."""
    opts = list(options)
    return [opts[k:] + opts[:k] for k in range(len(opts))]


@dataclass
class KnownFacts:
    """Which facts a model knows under a protocol (:func:`known_facts`, SPEC §10).

    Attributes:
        protocol: ``"mcqa"`` or ``"cloze"``.
        delta: The margin threshold δ in nats.
        ids: Item ids, in input order.
        margins: Per item, the worst margin ``log P(gold) − max log P(wrong)`` in nats over the
            option orders scored (every cyclic rotation for ``mcqa``; the one order for
            ``cloze``, whose prompt does not show the options).
        correct_all_orders: Per item, correct under every option order scored (margin > 0).
        known: Per item, ``correct_all_orders and margin ≥ delta``.
        accuracy: Accuracy under the first order (``options(option_seed)``), in [0, 1].
        n_orders: Option orders scored per item.
        accuracy_by_order: Accuracy under each order scored (rotation k = the first order
            rotated left by k), in [0, 1].
    """

    protocol: str
    delta: float
    ids: list[str]
    margins: list[float]
    correct_all_orders: list[bool]
    known: list[bool]
    accuracy: float
    n_orders: int
    accuracy_by_order: list[float] = field(default_factory=list)

    def known_ids(self) -> set[str]:
        return {i for i, k in zip(self.ids, self.known) if k}

    @property
    def fraction(self) -> float:
        """Fraction of items known, in [0, 1]."""
        return sum(self.known) / len(self.known)

    def fraction_at(self, delta: float) -> float:
        """Fraction of items that would be known at margin threshold ``delta`` (nats)."""
        return sum(_is_known(m, delta) for m in self.margins) / len(self.margins)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (infinite margins become ``None``)."""
        d = asdict(self)
        d["margins"] = [m if math.isfinite(m) else None for m in self.margins]
        return d


def _is_known(margin: float, delta: float) -> bool:
    return margin > 0 and margin >= delta


def known_facts(
    model: HookedModel,
    items: Sequence,
    protocol: Literal["mcqa", "cloze"] = "mcqa",
    delta: float = DEFAULT_DELTA,
    *,
    option_seed: int = 0,
    batch_size: int = 24,
    progress: bool = False,
) -> KnownFacts:
    """The facts ``model`` knows with a clear margin (SPEC §10; forget splits are drawn from them).

    A fact is *known* when the gold option is ranked first with a log-likelihood margin
    ``log P(gold | x) − max_wrong log P(wrong | x) ≥ δ`` (nats) and, for ``mcqa``, this holds
    under every cyclic rotation of its options (each option shown once in every position), so
    position bias alone cannot make a fact known. ``cloze`` does not show the options, so one
    order is scored. Always likelihood mode.

    Default δ (:data:`DEFAULT_DELTA` = 2 nats): the gold answer is ≥ e² ≈ 7.4× as likely as
    each wrong option, i.e. ≥ 79 % of the three options' renormalised probability, so a fact
    counts as known only when the model answers it with confidence and FS ≤ 0.33 after
    unlearning means a real change, not a flipped near-tie. Measured on the embedded
    SmolLM2-135M-Instruct (``benchmarks/protocols.py``, seeded sample of 200 of the 642
    shipped questions, Wilson 95 % intervals): under ``cloze`` 64.5 % [57.7, 70.8] are correct,
    47.0 % [40.2, 53.9] known at δ = 1, 34.5 % [28.3, 41.3] at δ = 2 and 25.5 % [20.0, 32.0] at
    δ = 3; δ = 2 leaves ≈ 220 (≥ 180) known facts, about 7× the demo's 5 % forget split (32
    questions), so the split is still drawn from a broad pool rather than the few easiest facts.
    The large-margin facts are not an artefact of answer length (the log-likelihood is not
    length-normalised): of the 69 sampled facts known at δ = 2, 7 have the strictly shortest
    gold answer (in tokens) and 8 the strictly longest.

    Args:
        model: The hooked model.
        items: FaithUn-format items (``id``, ``question``, ``answer``, ``options(seed)``).
        protocol: ``"mcqa"`` or ``"cloze"``.
        delta: Margin threshold δ ≥ 0 in nats (0 = merely correct).
        option_seed: Seed of the first option order (rotations start from it).
        batch_size: Sequences per forward pass.
        progress: Show a progress bar.

    Returns:
        :class:`KnownFacts`.

    Raises:
        NeuronscopeError: Empty ``items``, unknown protocol, or δ negative / not finite.
    """
    _check_protocol(protocol)
    _check_delta(delta)
    if len(items) == 0:
        raise NeuronscopeError("known facts: no items to evaluate (empty split)")
    orders = option_orders(items, protocol, option_seed)
    results = [
        knowledge_evaluate(model, items, protocol=protocol, options=o, batch_size=batch_size, progress=progress,
                           desc=f"known facts ({protocol}, order {k + 1}/{len(orders)})")
        for k, o in enumerate(orders)
    ]
    return combine_orders(results, delta)


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta) or delta < 0:
        raise NeuronscopeError(f"delta: the known-fact margin must be a finite number ≥ 0 (nats), got {delta!r}")


def option_orders(items: Sequence, protocol: str, option_seed: int = 0) -> list[list[list[str]]]:
    """The option orders :func:`known_facts` scores: ``orders[k][i]`` = item i's options in order k.

    ``mcqa``: every cyclic rotation of ``options(option_seed)`` (k = 0 is that order);
    ``cloze``: that order only (the prompt does not show the options).

    Raises:
        NeuronscopeError: Unknown protocol.
    """
    _check_protocol(protocol)
    first = [list(it.options(option_seed)) for it in items]
    if protocol == "cloze" or not first:
        return [first]
    n = max(len(o) for o in first)
    return [[rotations(o)[k % len(o)] for o in first] for k in range(n)]


def combine_orders(results: Sequence[MCQAResult], delta: float = DEFAULT_DELTA) -> KnownFacts:
    """:class:`KnownFacts` from the likelihood-mode results of every option order of the same items.

    Args:
        results: One :func:`knowledge_evaluate` result per order of :func:`option_orders`
            (same items, same protocol, likelihood mode).
        delta: Margin threshold δ ≥ 0 in nats.

    Raises:
        NeuronscopeError: No results, results of different items or protocols, generate-mode
            results, or a bad δ.
    """
    _check_delta(delta)
    if not results:
        raise NeuronscopeError("known facts: no evaluation results to combine")
    ids, protocol = results[0].ids, results[0].protocol
    for r in results:
        if r.ids != ids or r.protocol != protocol:
            raise NeuronscopeError("known facts: results of different items or protocols cannot be combined")
        if len(r.margins) != len(ids):
            raise NeuronscopeError("known facts: need likelihood-mode results (with margins)")
    margins = [min(r.margins[i] for r in results) for i in range(len(ids))]
    return KnownFacts(
        protocol=protocol,
        delta=float(delta),
        ids=list(ids),
        margins=margins,
        correct_all_orders=[m > 0 for m in margins],
        known=[_is_known(m, delta) for m in margins],
        accuracy=results[0].accuracy,
        n_orders=len(results),
        accuracy_by_order=[r.accuracy for r in results],
    )


def packed_option_logprobs(
    model: HookedModel, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]]
) -> list[list[float]]:
    """log P(option | prompt) for every option of every prompt, the prompt computed once.

    Each row packs ``prompt ⊕ o₁[:-1] ⊕ o₂[:-1] ⊕ …``; a 4-D attention mask lets each option's
    tokens see the prompt and their own earlier tokens only, and position ids restart after
    the prompt for every option, so each option is scored exactly as in its own sequence
    ``prompt ⊕ option`` (tested against unpacked scoring) at roughly 1/n_options of the cost.

    Args:
        model: The hooked model (hooks attached to the bridge fire).
        prompts: Token ids of each prompt.
        options: For each prompt, the token ids of each option (non-empty).

    Returns:
        ``scores[i][j]`` = log P(option j | prompt i) in nats.

    Raises:
        NeuronscopeError: An option tokenises to nothing.
    """
    hf = model.hf_model
    device = model.device
    seqs, owners, positions, targets = [], [], [], []
    for p, opts in zip(prompts, options):
        seq, owner, pos = list(p), [-1] * len(p), list(range(len(p)))
        tgt = []  # per option: (positions predicting its tokens, its tokens)
        for j, o in enumerate(opts):
            if not o:
                raise NeuronscopeError("MCQA: an option tokenises to no tokens")
            start = len(seq)
            seq += o[:-1]
            owner += [j] * (len(o) - 1)
            pos += list(range(len(p), len(p) + len(o) - 1))
            tgt.append(([len(p) - 1] + list(range(start, start + len(o) - 1)), list(o)))
        seqs.append(seq)
        owners.append(owner)
        positions.append(pos)
        targets.append(tgt)
    width = max(map(len, seqs))
    b = len(seqs)
    pad = model.tokenizer.pad_token_id or 0
    input_ids = torch.full((b, width), pad, dtype=torch.long)
    owner_t = torch.full((b, width), -2, dtype=torch.long)  # -2 = padding
    pos_t = torch.zeros((b, width), dtype=torch.long)
    for i, (sq, ow, ps) in enumerate(zip(seqs, owners, positions)):
        input_ids[i, : len(sq)] = torch.tensor(sq)
        owner_t[i, : len(sq)] = torch.tensor(ow)
        pos_t[i, : len(sq)] = torch.tensor(ps)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = owner_t[:, :, None] == owner_t[:, None, :]
    key_is_prompt = (owner_t == -1)[:, None, :]
    key_is_real = (owner_t != -2)[:, None, :]
    allowed = causal & (same | key_is_prompt) & key_is_real
    allowed |= torch.eye(width, dtype=torch.bool)  # padded queries attend to themselves (no NaN)
    dtype = next(hf.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    hidden = hf.base_model(
        input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=pos_t.to(device)
    ).last_hidden_state
    rows, cols, toks, which = [], [], [], []
    for i, tgt in enumerate(targets):
        for j, (ps, ts) in enumerate(tgt):
            rows += [i] * len(ps)
            cols += ps
            toks += ts
            which += [(i, j)] * len(ps)
    logits = hf.get_output_embeddings()(hidden[torch.tensor(rows), torch.tensor(cols)])
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    tok_lp = logp.gather(-1, torch.tensor(toks, device=logp.device)[:, None]).squeeze(-1).tolist()
    out = [[0.0] * len(opts) for opts in options]
    for (i, j), v in zip(which, tok_lp):
        out[i][j] += v
    return out


def answer_logprobs(model: HookedModel, batch) -> torch.Tensor:
    """log P(y|x) per sample (nats), unembedding only the answer positions.

    Runs the HF decoder (whose submodules are the bridge components, so hooks attached to
    the bridge fire) and applies the output embedding to the ``target_mask`` positions only,
    which skips most of the ``[batch, pos, vocab]`` unembedding. Equal to
    ``sequence_logprob(model.bridge(...), batch)``.

    Returns:
        ``Float[Tensor, "batch"]``.
    """
    hf = model.hf_model
    if getattr(hf.config, "final_logit_softcapping", None):
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        return sequence_logprob(logits, batch)
    hidden = hf.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    rows = torch.nonzero(batch.target_mask)[:, 0]
    logits = hf.get_output_embeddings()(hidden[batch.target_mask])
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    tok = logp.gather(-1, batch.target_ids[batch.target_mask].unsqueeze(-1)).squeeze(-1)
    return torch.zeros(len(batch), dtype=tok.dtype, device=tok.device).index_add_(0, rows, tok)


def _generate_eval(model: HookedModel, items, prompts, options_per_item, protocol: str, progress: bool, desc: str) -> MCQAResult:
    tok = model.tokenizer
    correct, preds = [], []
    for it, prompt, opts in tqdm(list(zip(items, prompts, options_per_item)), desc=desc, disable=not progress, leave=False):
        enc = tok(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
        out = model.hf_model.generate(
            **enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id
        )
        text = _normalise(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        match = [o for o in opts if _normalise(o) == text] or [o for o in opts if text.startswith(_normalise(o))]
        pred = match[0] if match else ""
        preds.append(pred)
        correct.append(pred == it.answer)
    return MCQAResult(sum(correct) / len(correct), correct, preds, [it.id for it in items], protocol=protocol,
                      options=[list(o) for o in options_per_item])


def paraphrased(items: Sequence) -> list:
    """Items with the question replaced by its first paraphrase (items without one are dropped)."""
    return [replace(it, question=it.paraphrases[0], id=f"{it.id}~p") for it in items if it.paraphrases]


def evaluate_splits(
    model: HookedModel,
    splits,
    *,
    names: Sequence[str] = ("forget", "retain", "test"),
    mode: Literal["likelihood", "generate"] = "likelihood",
    protocol: Literal["mcqa", "cloze"] = "mcqa",
    progress: bool = False,
) -> dict[str, float]:
    """Accuracy on each named split of a ``FaithUnSplits`` (FS = ``forget``; RS = ``retain``/``test``).

    Args:
        model: The hooked model.
        splits: A ``FaithUnSplits``.
        names: Split names to score.
        mode: ``"likelihood"`` or ``"generate"``.
        protocol: Knowledge protocol, ``"mcqa"`` or ``"cloze"`` (SPEC §10).
        progress: Progress bars.

    Returns:
        ``{split name: accuracy in [0, 1]}``; empty splits are skipped.
    """
    out = {}
    for name in names:
        items = getattr(splits, name)
        if items:
            out[name] = knowledge_evaluate(
                model, items, protocol=protocol, mode=mode, progress=progress, desc=f"eval {name}"
            ).accuracy
    return out


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

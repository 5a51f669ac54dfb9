"""Utility Score (US): general knowledge kept after unlearning (paper §6.2.1, SPEC §11).

Default: accuracy under a knowledge protocol (:func:`neuronscope.evaluation.knowledge_evaluate`;
``mcqa`` = Table 3 template, the default, or ``cloze`` = the question alone, SPEC §10) on the
small general-knowledge set shipped with the package (:func:`neuronscope.data.load_utility`) —
no download, runs on a laptop CPU. The result records the protocol.

Optional, for real models on a GPU: the paper's five benchmarks through ``lm-eval``
(EleutherAI lm-evaluation-harness; ``pip install 'neuronscope[lm-eval]'``): MMLU, GSM8K,
HellaSwag, ARC-Challenge and Winogrande, 500 instances each (paper §6.2.1), zero-shot; US is
the mean of the per-task scores. ``lm-eval`` is imported only when asked for, and its absence
is a clear :class:`~neuronscope.errors.NeuronscopeError`. The benchmarks download their data
from the Hugging Face Hub, so this path needs network access.

Per-task metric: ``acc`` for MMLU and Winogrande, ``acc_norm`` for HellaSwag and
ARC-Challenge (the harness' length-normalised accuracy), ``exact_match`` with the
``strict-match`` filter for GSM8K.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

from neuronscope.errors import NeuronscopeError
from neuronscope.models import HookedModel

__all__ = ["LM_EVAL_TASKS", "UtilityResult", "utility_score", "shipped_utility", "lm_eval_utility"]

#: The paper's utility benchmarks (lm-eval task names) and the metric key read from each.
LM_EVAL_TASKS: dict[str, str] = {
    "mmlu": "acc,none",
    "gsm8k": "exact_match,strict-match",
    "hellaswag": "acc_norm,none",
    "arc_challenge": "acc_norm,none",
    "winogrande": "acc,none",
}

LM_EVAL_MISSING = (
    "lm-eval is not installed; the MMLU/GSM8K/HellaSwag/ARC-Challenge/Winogrande utility score needs it: "
    "pip install 'neuronscope[lm-eval]' (or use the shipped utility set, the default)"
)


@dataclass
class UtilityResult:
    """Utility Score.

    Attributes:
        score: US in [0, 1]: shipped-set accuracy, or the mean over lm-eval tasks.
        per_task: ``{task: score}`` (``{"shipped": accuracy}`` for the default).
        source: ``"shipped"`` or ``"lm-eval"``.
        n_items: Instances evaluated per task.
        protocol: Knowledge protocol of the shipped set (``"mcqa"`` or ``"cloze"``); None for
            lm-eval (each task uses the harness' own protocol).
    """

    score: float
    per_task: dict[str, float] = field(default_factory=dict)
    source: str = "shipped"
    n_items: dict[str, int] = field(default_factory=dict)
    protocol: str | None = "mcqa"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shipped_utility(
    model: HookedModel,
    items: Sequence | None = None,
    *,
    mode: Literal["likelihood", "generate"] = "likelihood",
    option_seed: int = 0,
    progress: bool = False,
    protocol: Literal["mcqa", "cloze"] = "mcqa",
) -> UtilityResult:
    """Accuracy on the shipped general-knowledge set (or on ``items``) under ``protocol`` (SPEC §10).

    Raises:
        NeuronscopeError: ``items`` is empty; unknown protocol; the shipped file is unreadable.
    """
    from neuronscope.data import load_utility
    from neuronscope.evaluation import knowledge_evaluate

    items = load_utility() if items is None else list(items)
    res = knowledge_evaluate(
        model, items, protocol=protocol, mode=mode, option_seed=option_seed, progress=progress, desc="utility"
    )
    return UtilityResult(res.accuracy, {"shipped": res.accuracy}, "shipped", {"shipped": len(items)}, protocol)


def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise NeuronscopeError(LM_EVAL_MISSING) from None
    return lm_eval, HFLM


def plain_hf_copy(model: HookedModel):
    """A plain HF ``PreTrainedModel`` with the same weights (see :func:`neuronscope.models.plain_hf_model`).

    The TransformerBridge replaces the HF attention modules in place (KV-cache generation no
    longer works there); lm-eval's GSM8K generates with the cache, so it gets a rebuilt model.
    """
    from neuronscope.models import plain_hf_model

    return plain_hf_model(model)


def lm_eval_utility(
    model: HookedModel,
    tasks: Sequence[str] = tuple(LM_EVAL_TASKS),
    *,
    limit: int = 500,
    batch_size: int | str = 8,
    num_fewshot: int | None = None,
    seed: int = 0,
) -> UtilityResult:
    """US as the mean over lm-eval benchmarks (paper §6.2.1: 500 instances each).

    Args:
        model: The hooked model (evaluated through a plain HF copy of its weights).
        tasks: lm-eval task names; keys of :data:`LM_EVAL_TASKS` use its metric, others ``acc,none``.
        limit: Instances per task (paper: 500).
        batch_size: lm-eval batch size (``"auto"`` allowed).
        num_fewshot: Few-shot examples (None = the task default).
        seed: Sampling seed passed to lm-eval.

    Raises:
        NeuronscopeError: lm-eval is not installed; a task reports no usable metric.
    """
    lm_eval, HFLM = _import_lm_eval()
    if not tasks:
        raise NeuronscopeError("utility tasks: need at least one lm-eval task")
    lm = HFLM(pretrained=plain_hf_copy(model), tokenizer=model.tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        limit=limit,
        num_fewshot=num_fewshot,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
    )
    return utility_from_lm_eval(out["results"], tasks, limit=limit)


def utility_from_lm_eval(results: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], *, limit: int = 500) -> UtilityResult:
    """Read each task's metric from lm-eval's ``results`` dict and average them.

    Raises:
        NeuronscopeError: A task is missing from the results or lacks its metric.
    """
    per_task: dict[str, float] = {}
    for task in tasks:
        metric = LM_EVAL_TASKS.get(task, "acc,none")
        if task not in results:
            raise NeuronscopeError(f"lm-eval results: task '{task}' is missing")
        value = results[task].get(metric)
        if value is None:
            raise NeuronscopeError(f"lm-eval results: task '{task}' has no metric '{metric}'")
        per_task[task] = float(value)
    return UtilityResult(sum(per_task.values()) / len(per_task), per_task, "lm-eval", {t: limit for t in tasks}, None)


def utility_score(
    model: HookedModel,
    *,
    items: Sequence | None = None,
    tasks: Sequence[str] | None = None,
    limit: int = 500,
    mode: Literal["likelihood", "generate"] = "likelihood",
    option_seed: int = 0,
    progress: bool = False,
    protocol: Literal["mcqa", "cloze"] = "mcqa",
    **lm_eval_kw: Any,
) -> UtilityResult:
    """The Utility Score: the shipped set by default, lm-eval benchmarks when ``tasks`` is given.

    Args:
        model: The hooked model.
        items: MCQA items instead of the shipped set.
        tasks: lm-eval task names (e.g. ``LM_EVAL_TASKS``, or ``["paper"]`` for all five).
        limit: Instances per lm-eval task.
        mode, option_seed, progress: Scoring options for the shipped set.
        protocol: Knowledge protocol of the shipped set, ``"mcqa"`` (default) or ``"cloze"``
            (SPEC §10); recorded in the result. Not used by lm-eval tasks.

    Raises:
        NeuronscopeError: ``tasks`` given and lm-eval not installed.
    """
    if tasks:
        tasks = list(tasks)
        if tasks == ["paper"]:
            tasks = list(LM_EVAL_TASKS)
        return lm_eval_utility(model, tasks, limit=limit, **lm_eval_kw)
    return shipped_utility(model, items, mode=mode, option_seed=option_seed, progress=progress, protocol=protocol)

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

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from neuronscope.errors import ConfigError, NeuronscopeError, write_json_atomic
from neuronscope.evaluation import (  # noqa: F401  (re-exported: TOFU's metrics live with the others)
    RougeResult,
    generate_answers,
    mismatched_pairs,
    rouge_eval_fn,
    rouge_evaluate,
    rouge_l_recall,
    rouge_threshold,
)
from neuronscope.models import HookedModel, clone_model

__all__ = [
    "rouge_l_recall",
    "rouge_threshold",
    "generate_answers",
    "RougeResult",
    "rouge_evaluate",
    "rouge_eval_fn",
    "mismatched_pairs",
    "TofuConfig",
    "TofuResult",
    "tofu_items",
    "run_tofu",
]


# --------------------------------------------------------------------------------------------
# The TOFU pipeline: generate → fine-tune → τ → unlearn to ROUGE-L ≤ τ
# --------------------------------------------------------------------------------------------


@dataclass
class TofuConfig:
    """Configuration of the TOFU-format pipeline (SPEC §10, paper §6.1 / App. B.1).

    Attributes:
        n_authors: Fictitious authors generated (:func:`neuronscope.data.generate_tofu`).
        questions_per_author: QA pairs per author (1–10).
        data_seed: Generation and split seed.
        data: A TOFU-format file or hub name instead of generated profiles.
        forget: Forget fraction (paper: 1 %, whole authors).
        finetune_lr: Fine-tuning learning rate before unlearning (paper: 1e-5).
        finetune_epochs: Fine-tuning epochs (paper: 5).
        finetune_batch_size: Fine-tuning batch size.
        tau: Early-stopping threshold override (None = mean ROUGE-L recall of mismatched pairs).
        tau_seed: Seed of the mismatched pairing.
        method: Unlearning method.
        unlearning: Further :class:`~neuronscope.unlearning.UnlearningConfig` fields (``lr``,
            ``max_epochs``, ``lam`` (paper TOFU: 1e-4), ...); ``stop_metric`` is ``"rouge"`` and
            ``threshold`` is τ.
        retain_limit: Evaluate RS (retain ROUGE-L) on the first N retain items (None = all).
        max_new_tokens: Greedy generation length for ROUGE-L.
    """

    n_authors: int = 20
    questions_per_author: int = 5
    data_seed: int = 0
    data: str | None = None
    forget: float = 0.01
    finetune_lr: float = 1e-5
    finetune_epochs: int = 5
    finetune_batch_size: int = 8
    tau: float | None = None
    tau_seed: int = 0
    method: str = "gd"
    unlearning: dict = field(default_factory=lambda: {"lam": 1e-4})
    retain_limit: int | None = None
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        for name in ("finetune_lr",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"{name}: must be > 0, got {v!r}")
        for name in ("finetune_epochs", "finetune_batch_size", "max_new_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: must be an integer ≥ 1, got {v!r}")
        if self.tau is not None and not 0 <= self.tau <= 1:
            raise ConfigError(f"tau: must be in [0, 1], got {self.tau!r}")
        self.unlearning_config()  # validates method and unlearning fields

    def unlearning_config(self, tau: float = 0.2):
        from neuronscope.unlearning import UnlearningConfig

        d = {**self.unlearning, "method": self.method, "stop_metric": "rouge", "threshold": float(tau)}
        return UnlearningConfig.from_dict(d, source="tofu config: unlearning")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TofuResult:
    """Outcome of :func:`run_tofu` (scores are mean ROUGE-L recall in [0, 1]).

    Attributes:
        tau: The early-stopping threshold τ.
        splits: Item ids per split (``forget``, ``retain``).
        fs_base / rs_base: Before fine-tuning.
        fs_finetuned / rs_finetuned: After fine-tuning (the "Default" row of Table 2).
        fs_unlearned / rs_unlearned: After unlearning.
        finetune: Fine-tuning summary (steps, final loss, seconds).
        unlearning: Unlearning summary (reached, steps, lr, seconds per step).
        seconds: Wall time per stage.
        finetuned / unlearned: The models (not serialised).
    """

    tau: float
    splits: dict
    fs_base: float
    rs_base: float
    fs_finetuned: float
    rs_finetuned: float
    fs_unlearned: float
    rs_unlearned: float
    finetune: dict
    unlearning: dict
    seconds: dict
    finetuned: object = field(default=None, repr=False, compare=False)
    unlearned: object = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("finetuned")
        d.pop("unlearned")
        return d


def tofu_items(config: TofuConfig) -> list:
    """The TOFU-format QA items of ``config`` (generated profiles or a file)."""
    from neuronscope.data import generate_tofu, load_tofu

    if config.data:
        return load_tofu(config.data)
    return generate_tofu(config.n_authors, config.questions_per_author, seed=config.data_seed)


def run_tofu(
    config: TofuConfig,
    model: HookedModel,
    *,
    run_dir: str | Path | None = None,
    progress: bool = True,
    finetune_fn: Callable | None = None,
    unlearn_fn: Callable | None = None,
) -> TofuResult:
    """The TOFU path of SPEC §10: fine-tune on fictitious authors, then unlearn 1 % to ROUGE-L ≤ τ.

    1. items = generated profiles → QA pairs (full-sentence answers); split by whole authors;
    2. τ = :func:`rouge_threshold` of all gold answers (mismatched pairs, seeded);
    3. fine-tune a copy of ``model`` on every item (lr 1e-5, 5 epochs, NLL);
    4. unlearn a copy of the fine-tuned model on the forget authors, retaining the rest, with
       ``stop_metric="rouge"`` and ``threshold = τ``;
    5. FS / RS = ROUGE-L recall on the forget / retain items before fine-tuning, after
       fine-tuning and after unlearning.

    Args:
        config: Pipeline configuration.
        model: The base model (not modified).
        run_dir: Writes ``tofu_config.json``, ``tofu_result.json`` and the unlearning run
            (``unlearn/``) there.
        progress: Progress bars.
        finetune_fn / unlearn_fn: Replacements of :func:`neuronscope.unlearning.finetune` /
            :func:`~neuronscope.unlearning.unlearn` (tests).

    Returns:
        :class:`TofuResult` with the fine-tuned and unlearned models attached.

    Raises:
        DataError: Bad TOFU file or split (e.g. a single author).
        ConfigError: Bad configuration.
    """
    from neuronscope.data import split_tofu

    if finetune_fn is None or unlearn_fn is None:
        from neuronscope.unlearning import finetune, unlearn

        finetune_fn = finetune_fn or finetune
        unlearn_fn = unlearn_fn or unlearn
    rd = Path(run_dir) if run_dir is not None else None
    if rd is not None:
        write_json_atomic(rd / "tofu_config.json", config.to_dict())
    seconds: dict[str, float] = {}
    items = tofu_items(config)
    splits = split_tofu(items, forget=config.forget, seed=config.data_seed)
    retain_eval = splits.retain[: config.retain_limit] if config.retain_limit else splits.retain
    tau = config.tau if config.tau is not None else rouge_threshold(items, seed=config.tau_seed)
    kw = dict(max_new_tokens=config.max_new_tokens, progress=progress)

    def scores(m, tag: str) -> tuple[float, float]:
        t = time.perf_counter()
        fs = rouge_evaluate(m, splits.forget, desc=f"FS {tag}", **kw).score
        rs = rouge_evaluate(m, retain_eval, desc=f"RS {tag}", **kw).score
        seconds[f"eval_{tag}"] = time.perf_counter() - t
        return fs, rs

    fs_base, rs_base = scores(model, "base")
    t = time.perf_counter()
    tuned = clone_model(model)
    hist = finetune_fn(
        tuned, items, lr=config.finetune_lr, epochs=config.finetune_epochs, batch_size=config.finetune_batch_size,
        seed=config.data_seed, progress=progress,
    )
    seconds["finetune"] = time.perf_counter() - t
    fs_ft, rs_ft = scores(tuned, "finetuned")
    t = time.perf_counter()
    unlearned = clone_model(tuned)
    ucfg = config.unlearning_config(tau)
    res = unlearn_fn(unlearned, splits.forget, splits.retain, ucfg, run_dir=rd / "unlearn" if rd else None, progress=progress)
    seconds["unlearn"] = time.perf_counter() - t
    fs_un, rs_un = scores(unlearned, "unlearned")
    losses = hist.get("loss", []) if isinstance(hist, dict) else []
    result = TofuResult(
        tau=tau,
        splits={"forget": [it.id for it in splits.forget], "retain": [it.id for it in splits.retain]},
        fs_base=fs_base, rs_base=rs_base, fs_finetuned=fs_ft, rs_finetuned=rs_ft, fs_unlearned=fs_un, rs_unlearned=rs_un,
        finetune={"steps": hist.get("steps") if isinstance(hist, dict) else None, "final_loss": losses[-1] if losses else None},
        unlearning={
            "method": ucfg.method, "lr": ucfg.lr, "reached": getattr(res, "reached", None),
            "steps": getattr(res, "steps", None), "seconds_per_step": getattr(res, "seconds_per_step", None),
        },
        seconds=seconds,
        finetuned=tuned,
        unlearned=unlearned,
    )
    if rd is not None:
        write_json_atomic(rd / "tofu_result.json", result.to_dict())
    return result

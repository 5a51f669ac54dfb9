"""Relearning attacks on an unlearned model: harmful and benign retraining (paper §3.1, §6.2.2).

**Harmful attack.** A user fine-tunes the unlearned model on a small fraction ``p`` of the
forget set. The attack pool holds the forget items the unlearned model answers *wrongly*
(FaithUn MCQA: items answered correctly by chance are excluded, paper §6.2.2); for a ROUGE
metric (TOFU) every forget item is in the pool. ``n = max(1, round(p·|forget|))`` items (halves
rounded up) are drawn from the pool by seed and the model is retrained on them as plain QA pairs
(NLL fine-tuning, :func:`neuronscope.unlearning.finetune`) with each learning rate in
``{1e-5, 5e-6, 1e-6}``. After every epoch (or every N steps) the Forgetting Score is measured
on the **disjoint remainder** of the forget set (forget minus the retraining items).

**Benign attack.** The unlearned model is fine-tuned on 1,000 Alpaca-format instructions
(:func:`neuronscope.data.load_alpaca`) with each learning rate in ``{1e-5, 1e-6, 1e-7}``;
FS is measured on the whole forget set during retraining.

**Score.** For each (seed, lr) run, the maximum FS over the evaluations made *during*
retraining (the FS before retraining is recorded as ``fs_before`` but not counted); per
seed, the maximum over learning rates; reported: the mean over seeds (paper: 3 runs).
Seeds change which items are drawn (harmful), the batch order, and the Alpaca sample
(benign). Every run starts from a fresh copy of the unlearned model
(:func:`neuronscope.models.clone_model`).

The paper does not state the number of retraining epochs; our defaults (harmful: 10 epochs,
FS after each; benign: 1 epoch over 1,000 items, FS every 25 steps) are choices, recorded in
the saved :class:`AttackConfig`.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from neuronscope.errors import ConfigError, NeuronscopeError, write_json_atomic

__all__ = [
    "HARMFUL_LRS",
    "BENIGN_LRS",
    "AttackConfig",
    "AttackRun",
    "AttackResult",
    "attack_pool",
    "n_attack_items",
    "draw_attack_items",
    "run_attack",
    "harmful_attack",
    "benign_attack",
]

#: Learning rates of the harmful attack (paper §6.2.2).
HARMFUL_LRS: tuple[float, ...] = (1e-5, 5e-6, 1e-6)
#: Learning rates of the benign attack (paper §6.2.2).
BENIGN_LRS: tuple[float, ...] = (1e-5, 1e-6, 1e-7)

_DEFAULT_EPOCHS = {"harmful": 10, "benign": 1}
_DEFAULT_EVAL_EVERY: dict[str, int | str] = {"harmful": "epoch", "benign": 25}


@dataclass
class AttackConfig:
    """Configuration of one relearning attack (serialised into the run directory).

    Attributes:
        kind: ``"harmful"`` (retrain on a fraction p of the forget set) or ``"benign"``
            (retrain on Alpaca-format instructions).
        p: Harmful attack: fraction of the forget set retrained on (paper: 0.1, 0.3); the
            number of items is ``max(1, round(p·|forget|))``. Ignored by the benign attack.
        lrs: Learning rates (default: :data:`HARMFUL_LRS` / :data:`BENIGN_LRS`).
        seeds: Attack seeds; the score is the mean over them (paper: 3 runs).
        epochs: Retraining epochs (default 10 harmful, 1 benign; the paper does not say).
        batch_size: Examples per optimiser step.
        eval_every: ``"epoch"`` or a number of optimiser steps between FS evaluations
            (default ``"epoch"`` harmful, 25 benign).
        n_alpaca: Benign attack: number of Alpaca items (paper: 1,000).
        alpaca_path: Benign attack: an Alpaca-format file or hub name (None = the shipped
            generated set).
        metric: ``"accuracy"`` (MCQA FS, FaithUn) or ``"rouge"`` (ROUGE-L recall, TOFU).
        eval_mode: MCQA scoring, ``"likelihood"`` (default) or ``"generate"``.
        option_seed: Option order of the MCQA prompts.
        protocol: Knowledge protocol of FS (SPEC §10): ``"mcqa"`` (paper Table 3, default) or
            ``"cloze"`` (the question alone, options scored as the answer).
        pool: Harmful attack pool: ``"wrong"`` (forget items the unlearned model answers
            wrongly; paper, FaithUn) or ``"all"`` (every forget item; default for ROUGE).
    """

    kind: Literal["harmful", "benign"] = "harmful"
    p: float = 0.1
    lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    batch_size: int = 8
    eval_every: int | str | None = None
    n_alpaca: int = 1000
    alpaca_path: str | None = None
    metric: Literal["accuracy", "rouge"] = "accuracy"
    eval_mode: Literal["likelihood", "generate"] = "likelihood"
    option_seed: int = 0
    pool: Literal["wrong", "all"] | None = None
    protocol: Literal["mcqa", "cloze"] = "mcqa"

    def __post_init__(self) -> None:
        if self.kind not in ("harmful", "benign"):
            raise ConfigError(f"kind: expected 'harmful' or 'benign', got {self.kind!r}")
        if self.lrs is None:
            self.lrs = HARMFUL_LRS if self.kind == "harmful" else BENIGN_LRS
        if isinstance(self.lrs, (int, float)):
            self.lrs = (self.lrs,)
        self.lrs = tuple(float(x) for x in self.lrs)
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            self.seeds = tuple(range(self.seeds))
        self.seeds = tuple(int(s) for s in self.seeds)
        if self.epochs is None:
            self.epochs = _DEFAULT_EPOCHS[self.kind]
        if self.eval_every is None:
            self.eval_every = _DEFAULT_EVAL_EVERY[self.kind]
        if self.pool is None:
            self.pool = "wrong" if self.metric == "accuracy" else "all"
        self.validate()

    def validate(self) -> None:
        """Check every field.

        Raises:
            ConfigError: One line naming the bad field.
        """
        if self.kind == "harmful":
            p = self.p
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 < p < 1:
                raise ConfigError(f"p={p!r}: the harmful attack fraction must be in (0, 1)")
        if not self.lrs or any(not math.isfinite(x) or x <= 0 for x in self.lrs):
            raise ConfigError(f"lrs: need learning rates > 0, got {list(self.lrs)}")
        if not self.seeds:
            raise ConfigError("seeds: need at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: must be distinct, got {list(self.seeds)}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs: must be an integer ≥ 1, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size: must be an integer ≥ 1, got {self.batch_size!r}")
        ev = self.eval_every
        if ev != "epoch" and (isinstance(ev, bool) or not isinstance(ev, int) or ev < 1):
            raise ConfigError(f"eval_every: must be 'epoch' or an integer ≥ 1, got {ev!r}")
        if isinstance(self.n_alpaca, bool) or not isinstance(self.n_alpaca, int) or self.n_alpaca < 1:
            raise ConfigError(f"n_alpaca: must be an integer ≥ 1, got {self.n_alpaca!r}")
        if self.metric not in ("accuracy", "rouge"):
            raise ConfigError(f"metric: expected 'accuracy' or 'rouge', got {self.metric!r}")
        if self.eval_mode not in ("likelihood", "generate"):
            raise ConfigError(f"eval_mode: expected 'likelihood' or 'generate', got {self.eval_mode!r}")
        if self.protocol not in ("mcqa", "cloze"):
            raise ConfigError(f"protocol: expected 'mcqa' or 'cloze', got {self.protocol!r}")
        if self.pool not in ("wrong", "all"):
            raise ConfigError(f"pool: expected 'wrong' or 'all', got {self.pool!r}")
        if self.pool == "wrong" and self.metric != "accuracy":
            raise ConfigError("pool: 'wrong' needs metric 'accuracy' (ROUGE has no wrong answers; use pool 'all')")

    @property
    def label(self) -> str:
        """Short name, e.g. ``"harmful-p0.1"`` or ``"benign"``."""
        return f"harmful-p{self.p:g}" if self.kind == "harmful" else "benign"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrs"] = list(self.lrs)
        d["seeds"] = list(self.seeds)
        if self.kind == "benign":
            d["p"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "attack config") -> "AttackConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field '{unknown[0]}'")
        d = dict(d)
        if d.get("p") is None:
            d.pop("p", None)
        for k in ("lrs", "seeds"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class AttackRun:
    """One retraining run (one seed, one learning rate).

    Attributes:
        seed: Attack seed.
        lr: Learning rate.
        steps: Optimiser step of each FS evaluation during retraining.
        fs: FS (fraction in [0, 1]) at each of ``steps``.
        fs_before: FS of the unlearned model on the same evaluation items (step 0).
        train_ids: Ids of the retraining items (harmful) — empty for the benign attack.
        eval_ids: Ids of the items FS is measured on.
        seconds: Wall time of the run (fine-tuning + evaluations).
    """

    seed: int
    lr: float
    steps: list[int]
    fs: list[float]
    fs_before: float
    train_ids: list[str] = field(default_factory=list)
    eval_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_fs(self) -> float:
        """Maximum FS observed during retraining (paper §6.2.2); ``fs_before`` if none was made."""
        return max(self.fs) if self.fs else self.fs_before

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_fs"] = self.max_fs
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AttackRun":
        return cls(**{k: v for k, v in d.items() if k != "max_fs"})


@dataclass
class AttackResult:
    """All runs of one attack and the reported score.

    Attributes:
        config: The attack configuration.
        runs: One :class:`AttackRun` per (seed, lr).
        pool_ids: The harmful attack pool (forget items answered wrongly), empty for benign.
        n_forget: Size of the forget set.
    """

    config: AttackConfig
    runs: list[AttackRun] = field(default_factory=list)
    pool_ids: list[str] = field(default_factory=list)
    n_forget: int = 0

    def per_seed(self) -> dict[int, float]:
        """``{seed: max over learning rates of the max FS during retraining}``."""
        out: dict[int, float] = {}
        for r in self.runs:
            out[r.seed] = max(out.get(r.seed, -math.inf), r.max_fs)
        return out

    def per_lr(self) -> dict[float, float]:
        """``{lr: mean over seeds of the max FS during retraining}`` (for Fig. 7b/c)."""
        acc: dict[float, list[float]] = {}
        for r in self.runs:
            acc.setdefault(r.lr, []).append(r.max_fs)
        return {lr: sum(v) / len(v) for lr, v in acc.items()}

    @property
    def score(self) -> float:
        """The reported attack score: mean over seeds of (max over lrs of max FS during retraining).

        Raises:
            NeuronscopeError: No runs.
        """
        per_seed = self.per_seed()
        if not per_seed:
            raise NeuronscopeError(f"{self.config.label}: no attack runs to score")
        return sum(per_seed.values()) / len(per_seed)

    def run_for(self, seed: int, lr: float) -> AttackRun | None:
        for r in self.runs:
            if r.seed == seed and math.isclose(r.lr, lr, rel_tol=1e-12):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "config": self.config.to_dict(),
            "n_forget": self.n_forget,
            "pool_ids": list(self.pool_ids),
            "runs": [r.to_dict() for r in self.runs],
        }
        if self.runs:
            d["score"] = self.score
            d["per_seed"] = {str(k): v for k, v in self.per_seed().items()}
            d["per_lr"] = {f"{k:g}": v for k, v in self.per_lr().items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "attack result") -> "AttackResult":
        try:
            return cls(
                config=AttackConfig.from_dict(d["config"], source=source),
                runs=[AttackRun.from_dict(r) for r in d.get("runs", [])],
                pool_ids=list(d.get("pool_ids", [])),
                n_forget=int(d.get("n_forget", 0)),
            )
        except (KeyError, TypeError) as exc:
            raise NeuronscopeError(f"{source}: malformed attack result ({exc})") from None

    def save(self, path: str | Path) -> Path:
        """Write the result (config, runs, score) as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "AttackResult":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")), source=str(p))
        except FileNotFoundError:
            raise NeuronscopeError(f"{p}: no such attack result") from None
        except json.JSONDecodeError as exc:
            raise NeuronscopeError(f"{p}: not valid JSON (line {exc.lineno})") from None

    def plot(self, title: str = ""):
        """FS over retraining steps, one line per learning rate (mean over seeds), paper Fig. 7b/c.

        Step 0 is the unlearned model. Seeds whose evaluation steps differ from the first seed's
        are averaged by evaluation index.

        Returns:
            A ``plotly.graph_objects.Figure`` (FS in percent).
        """
        import plotly.graph_objects as go

        colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
        fig = go.Figure()
        for k, lr in enumerate(self.config.lrs):
            runs = [r for r in self.runs if math.isclose(r.lr, lr, rel_tol=1e-12)]
            if not runs:
                continue
            n = min(len(r.fs) for r in runs)
            steps = [0, *runs[0].steps[:n]]
            mean = [
                100.0 * sum(([r.fs_before] + r.fs[:n])[i] for r in runs) / len(runs) for i in range(n + 1)
            ]
            fig.add_trace(
                go.Scatter(
                    x=steps, y=mean, mode="lines+markers", name=f"lr = {lr:g}",
                    line=dict(color=colors[k % len(colors)]),
                )
            )
        what = f"harmful attack (p = {self.config.p:g})" if self.config.kind == "harmful" else "benign attack"
        fig.update_layout(
            title=title or f"Forgetting Score during the {what}",
            xaxis_title="retraining step",
            yaxis_title="FS (%)" if self.config.metric == "accuracy" else "FS, ROUGE-L recall (%)",
            template="plotly_white",
            height=380,
        )
        return fig


# --------------------------------------------------------------------------------------------
# Pool and draws
# --------------------------------------------------------------------------------------------


def attack_pool(forget_items: Sequence, wrong_ids: set[str] | Sequence[str]) -> list:
    """The harmful attack pool: forget items the unlearned model answers wrongly, in forget order.

    Args:
        forget_items: The forget set.
        wrong_ids: Ids answered wrongly
            (``knowledge_evaluate(unlearned, forget, protocol=...).wrong_ids()``).
    """
    wrong = set(wrong_ids)
    return [it for it in forget_items if it.id in wrong]


def n_attack_items(p: float, n_forget: int) -> int:
    """``max(1, round(p·n_forget))`` with halves rounded up (0.1·32 → 3, 0.3·32 → 10).

    Raises:
        ConfigError: ``p`` outside (0, 1) — it selects no item (or all of them).
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 < p < 1:
        raise ConfigError(f"p={p!r}: the harmful attack fraction must be in (0, 1)")
    return max(1, int(math.floor(p * n_forget + 0.5 + 1e-9)))


def draw_attack_items(forget_items: Sequence, pool: Sequence, p: float, seed: int) -> tuple[list, list]:
    """Split the forget set into retraining items (drawn from ``pool``) and the disjoint remainder.

    Args:
        forget_items: The forget set C_f.
        pool: The attack pool (a subset of ``forget_items``).
        p: Fraction of the forget set to retrain on.
        seed: Seed of the draw (a ``random.Random(seed)`` sample of the pool in forget order).

    Returns:
        ``(train, remainder)``: ``n_attack_items(p, |forget|)`` retraining items and the forget
        items not among them (FS is measured on the remainder), each in forget order.

    Raises:
        ConfigError: naming ``p``, when it selects no item, more items than the pool holds,
            or every forget item (no remainder to evaluate on).
    """
    n_forget = len(forget_items)
    n = n_attack_items(p, n_forget)
    pool_ids = {it.id for it in pool}
    forget_ids = {it.id for it in forget_items}
    if not pool_ids <= forget_ids:
        raise ConfigError("attack pool: holds items that are not in the forget set")
    if n > len(pool_ids):
        raise ConfigError(
            f"p={p:g}: selects {n} of {n_forget} forget items but the attack pool holds only {len(pool_ids)} "
            "wrongly answered items"
        )
    if n >= n_forget:
        raise ConfigError(f"p={p:g}: selects all {n_forget} forget items, leaving none to evaluate on")
    ordered_pool = [it for it in forget_items if it.id in pool_ids]
    chosen = {it.id for it in random.Random(seed).sample(ordered_pool, n)}
    train = [it for it in forget_items if it.id in chosen]
    rest = [it for it in forget_items if it.id not in chosen]
    return train, rest


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

EvaluateFn = Callable[[Any, Sequence], Any]
FinetuneFn = Callable[..., Any]


def _default_evaluate(config: AttackConfig) -> EvaluateFn:
    if config.metric == "rouge":
        from neuronscope.evaluation import rouge_evaluate

        return lambda model, items: rouge_evaluate(model, items, desc="attack FS")
    from neuronscope.evaluation import knowledge_evaluate

    return lambda model, items: knowledge_evaluate(
        model, items, protocol=config.protocol, mode=config.eval_mode, option_seed=config.option_seed,
        desc="attack FS",
    )


def _default_finetune() -> FinetuneFn:
    from neuronscope.unlearning import finetune

    return finetune


def _steps_from_history(history: Any, n_evals: int) -> list[int] | None:
    """Optimiser steps of the evaluations recorded by ``finetune`` (its ``"eval"`` entries).

    Returns None when the history does not carry them (e.g. a test double), so the caller
    falls back to :func:`_expected_steps`.
    """
    entries = history.get("eval") if isinstance(history, dict) else None
    if not isinstance(entries, list) or len(entries) != n_evals or n_evals == 0:
        return None
    try:
        return [int(e["step"]) for e in entries]
    except (KeyError, TypeError, ValueError):
        return None


def _expected_steps(n_train: int, config: AttackConfig, n_evals: int) -> list[int]:
    per_epoch = math.ceil(n_train / config.batch_size)
    total = per_epoch * config.epochs
    if config.eval_every == "epoch":
        return [per_epoch * (k + 1) for k in range(n_evals)]
    every = int(config.eval_every)
    steps = list(range(every, total + 1, every))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps[:n_evals] if len(steps) >= n_evals else [every * (k + 1) for k in range(n_evals)]


def _benign_pairs(config: AttackConfig, seed: int, alpaca: Sequence | None) -> tuple[list[str], list[str]]:
    if alpaca is None:
        from neuronscope.data import load_alpaca

        alpaca = load_alpaca(config.alpaca_path, n=config.n_alpaca, seed=seed)
    prompts = [f"{a.instruction}\n\n{a.input}" if a.input else a.instruction for a in alpaca]
    return prompts, [a.output for a in alpaca]


def run_attack(
    model,
    forget_items: Sequence,
    config: AttackConfig,
    *,
    run_dir: str | Path | None = None,
    progress: bool = True,
    finetune_fn: FinetuneFn | None = None,
    evaluate_fn: EvaluateFn | None = None,
    clone_fn: Callable[[Any], Any] | None = None,
    alpaca: Sequence | None = None,
) -> AttackResult:
    """Run a harmful or benign relearning attack on an unlearned model (paper §6.2.2).

    For each seed and learning rate: clone the unlearned model, fine-tune the clone with
    ``finetune_fn(clone, prompts_or_items, answers, lr=, epochs=, batch_size=, seed=,
    eval_fn=, eval_every=, progress=)`` and record FS on the evaluation items after each epoch
    (or every ``eval_every`` steps). See the module docstring for the pool, the draws and
    the score.

    Args:
        model: The unlearned :class:`~neuronscope.models.HookedModel` (never modified).
        forget_items: The forget set C_f.
        config: The attack configuration.
        run_dir: If given, ``attack_config.json`` and ``attack.json`` are written there after
            every run; runs already in ``attack.json`` under the same configuration are reused
            (resumable).
        progress: Show progress bars.
        finetune_fn: Fine-tuning function (default :func:`neuronscope.unlearning.finetune`).
        evaluate_fn: ``(model, items) -> result`` with ``.accuracy`` (and ``.wrong_ids()`` for
            the harmful pool); default MCQA (``metric="accuracy"``) or ROUGE-L recall.
        clone_fn: Copy of the unlearned model per run (default :func:`clone_model`).
        alpaca: Benign attack: the instruction items (default ``load_alpaca(config.alpaca_path,
            n=config.n_alpaca, seed=seed)`` per seed).

    Returns:
        :class:`AttackResult`.

    Raises:
        ConfigError: An impossible ``p`` (no item, more than the pool, or the whole forget
            set), an empty forget set.
        NeuronscopeError: From fine-tuning or evaluation (e.g. a diverging loss).
    """
    if len(forget_items) == 0:
        raise ConfigError("attack: the forget set is empty")
    finetune_fn = finetune_fn or _default_finetune()
    evaluate_fn = evaluate_fn or _default_evaluate(config)
    if clone_fn is None:
        from neuronscope.models import clone_model as clone_fn
    run_dir = Path(run_dir) if run_dir is not None else None

    result = AttackResult(config=config, n_forget=len(forget_items))
    from neuronscope import distributed

    def _saved() -> AttackResult | None:
        saved = run_dir / "attack.json"
        if not saved.exists():
            return None
        try:
            prev = AttackResult.load(saved)
        except NeuronscopeError:
            return None
        return prev if prev.config.to_dict() == config.to_dict() else None

    # data parallelism: the main process reads what it saved and every process resumes from it
    previous: AttackResult | None = distributed.from_main(_saved) if run_dir is not None else None

    # The pool (harmful) from the unlearned model's answers on the forget set.
    if config.kind == "harmful":
        if config.pool == "wrong":
            if previous is not None and previous.pool_ids:
                wrong = set(previous.pool_ids)
            else:
                wrong = set(evaluate_fn(model, forget_items).wrong_ids())
            pool = attack_pool(forget_items, wrong)
            if not pool:
                raise ConfigError(
                    f"p={config.p:g}: the unlearned model answers every forget item correctly; the attack pool is empty"
                )
        else:
            pool = list(forget_items)
        result.pool_ids = [it.id for it in pool]

        # Every draw is checked before anything is written or trained (an impossible p fails fast).
        for seed in config.seeds:
            draw_attack_items(forget_items, pool, config.p, seed)
    write = run_dir is not None and distributed.is_main()  # data parallelism: one writer
    if write:
        config.save(run_dir / "attack_config.json")

    fs_before_cache: dict[tuple[str, ...], float] = {}

    def score(m, items) -> float:
        return float(evaluate_fn(m, items).accuracy)

    for seed in config.seeds:
        if config.kind == "harmful":
            train, eval_items = draw_attack_items(forget_items, pool, config.p, seed)
            train_data: tuple = (train, None)
            train_ids = [it.id for it in train]
        else:
            eval_items = list(forget_items)
            train_data = _benign_pairs(config, seed, alpaca)
            train_ids = []
        n_train = len(train_data[0])
        key = tuple(it.id for it in eval_items)
        for lr in config.lrs:
            old = previous.run_for(seed, lr) if previous is not None else None
            if old is not None and old.train_ids == train_ids and old.eval_ids == list(key):
                result.runs.append(old)
                continue
            if key not in fs_before_cache:
                fs_before_cache[key] = score(model, eval_items)
            t0 = time.perf_counter()
            attacked = clone_fn(model)
            values: list[float] = []

            def eval_fn(m, _items=eval_items, _values=values) -> float:
                v = score(m, _items)
                _values.append(v)
                return v

            history = finetune_fn(
                attacked,
                train_data[0],
                train_data[1],
                lr=lr,
                epochs=config.epochs,
                batch_size=config.batch_size,
                seed=seed,
                eval_fn=eval_fn,
                eval_every=config.eval_every,
                progress=progress,
            )
            # Free the attacked copy before the next clone (the bridge holds reference cycles, so
            # without a collection two copies of the model would coexist during the next run).
            del attacked
            distributed.release_memory()
            steps = _steps_from_history(history, len(values)) or _expected_steps(n_train, config, len(values))
            result.runs.append(
                AttackRun(
                    seed=seed,
                    lr=lr,
                    steps=steps,
                    fs=values,
                    fs_before=fs_before_cache[key],
                    train_ids=train_ids,
                    eval_ids=list(key),
                    seconds=time.perf_counter() - t0,
                )
            )
            if write:
                result.save(run_dir / "attack.json")
    if write:
        result.save(run_dir / "attack.json")
    return result


def harmful_attack(model, forget_items: Sequence, *, p: float = 0.1, **kw) -> AttackResult:
    """:func:`run_attack` with ``AttackConfig(kind="harmful", p=p, ...)``; extra config fields via ``kw``."""
    run_kw = {k: kw.pop(k) for k in list(kw) if k in _RUN_KW}
    return run_attack(model, forget_items, AttackConfig(kind="harmful", p=p, **kw), **run_kw)


def benign_attack(model, forget_items: Sequence, **kw) -> AttackResult:
    """:func:`run_attack` with ``AttackConfig(kind="benign", ...)``; extra config fields via ``kw``."""
    run_kw = {k: kw.pop(k) for k in list(kw) if k in _RUN_KW}
    return run_attack(model, forget_items, AttackConfig(kind="benign", **kw), **run_kw)


_RUN_KW = ("run_dir", "progress", "finetune_fn", "evaluate_fn", "clone_fn", "alpaca")

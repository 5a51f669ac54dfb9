"""Learning-rate search and the SSIUU λ sweep (paper §6.1, App. C.1 / Fig. 7a).

* :func:`lr_search` — "we search for the lowest learning rate that still achieves convergence
  to the threshold" (paper §6.1): learning rates are tried in ascending order on fresh copies
  of the model and the first one whose run reaches the threshold wins.
* :func:`lambda_sweep` — SSIUU with λ ∈ {1e-4, 1e-3, 1e-2, 1} (Fig. 7a): one row per λ with the
  forget score (FS) and the retention scores on the retain and test sets (RS); an optional
  callback adds columns (e.g. the accuracy after harmful attacks, paper Fig. 7a).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from neuronscope.distributed import release_memory
from neuronscope.errors import ConfigError, write_json_atomic
from neuronscope.models import HookedModel
from neuronscope.unlearning.config import LAMBDAS, UnlearningConfig
from neuronscope.unlearning.trainer import UnlearningResult, unlearn

#: Default learning-rate grid (ascending), for runs whose config file gives none.
DEFAULT_LRS: tuple[float, ...] = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4)


def _check_lrs(lrs: Sequence[float]) -> list[float]:
    lrs = [float(x) for x in lrs]
    if not lrs:
        raise ConfigError("lrs: the learning-rate grid is empty")
    if any(x <= 0 for x in lrs):
        raise ConfigError(f"lrs: learning rates must be > 0, got {lrs}")
    if lrs != sorted(lrs):
        raise ConfigError(f"lrs: must be ascending (lowest first), got {lrs}")
    return lrs


def lr_search(
    model_factory: Callable[[], HookedModel],
    forget: Sequence,
    retain: Sequence,
    config: UnlearningConfig,
    lrs: Sequence[float] = DEFAULT_LRS,
    *,
    run_dir: str | os.PathLike | None = None,
    eval_items: Sequence | None = None,
    progress: bool = True,
) -> tuple[float | None, UnlearningResult]:
    """The lowest learning rate whose run reaches the threshold (paper §6.1).

    Args:
        model_factory: Returns a fresh copy of the initial model for each try (e.g.
            ``lambda: clone_model(base)``).
        forget / retain: Forget and retain items.
        config: Run configuration; its ``lr`` is replaced by each grid value.
        lrs: Ascending learning rates.
        run_dir: Each try writes into ``run_dir/lr-<lr>``.
        eval_items: Early-stopping items (default: the forget set).
        progress: Progress bars.

    Returns:
        ``(best lr, its result)`` — ``result.model`` is the trained model — or
        ``(None, result of the largest lr)`` when no learning rate reaches the threshold.

    Raises:
        ConfigError: An empty, non-positive or non-ascending grid.
    """
    grid = _check_lrs(lrs)
    last: UnlearningResult | None = None
    for lr in grid:
        if last is not None:
            # Free the previous try's model *before* building the next one: at most one trained
            # copy (beside the caller's base model) exists at a time. The bridge holds reference
            # cycles, so the copy is only freed by a collection.
            last.model = None
            release_memory()
        model = model_factory()
        cfg = config.replace(lr=lr)
        sub = Path(run_dir) / f"lr-{lr:g}" if run_dir is not None else None
        res = unlearn(model, forget, retain, cfg, run_dir=sub, eval_items=eval_items, progress=progress)
        res.model = model
        del model
        if res.reached:
            return lr, res
        last = res
    assert last is not None
    return None, last


def _score(model: HookedModel, items: Sequence, cfg: UnlearningConfig) -> float | None:
    if not items:
        return None
    if cfg.stop_metric == "rouge":
        from neuronscope.evaluation import rouge_evaluate

        return rouge_evaluate(model, items).score
    from neuronscope.evaluation import knowledge_evaluate

    return knowledge_evaluate(
        model, items, protocol=cfg.protocol, mode=cfg.eval_mode, option_seed=cfg.option_seed
    ).accuracy


def lambda_sweep(
    model_factory: Callable[[], HookedModel],
    forget: Sequence,
    retain: Sequence,
    config: UnlearningConfig,
    *,
    lams: Sequence[float] = LAMBDAS,
    lrs: Sequence[float] | None = None,
    test_items: Sequence | None = None,
    extra_fn: Callable[[HookedModel, UnlearningResult], dict[str, Any]] | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """SSIUU λ sweep (paper App. C.1, Fig. 7a): FS and RS for each λ.

    Args:
        model_factory: Fresh initial model per run.
        forget / retain: Forget and retain items (RS on the retain set is reported too).
        config: Base configuration (method forced to ``ssiuu``, λ replaced).
        lams: λ values (default {1e-4, 1e-3, 1e-2, 1}).
        lrs: Optional ascending grid: each λ runs :func:`lr_search`; otherwise ``config.lr``.
        test_items: The unseen test set C_t for RS (optional).
        extra_fn: ``extra_fn(model, result) -> dict`` of extra columns (e.g. attack scores).
        run_dir: Runs go to ``run_dir/lam-<λ>``; the rows to ``run_dir/lambda_sweep.json``.
        progress: Progress bars.

    Returns:
        One row per λ: ``lam, lr, protocol, reached, steps, FS, RS_retain, RS_test`` (+ extra
        columns); scores are accuracies under ``config.protocol`` (or ROUGE-L recall with
        ``stop_metric="rouge"``) in [0, 1].
    """
    rows: list[dict[str, Any]] = []
    for lam in lams:
        cfg = config.replace(method="ssiuu", lam=float(lam))
        sub = Path(run_dir) / f"lam-{lam:g}" if run_dir is not None else None
        if lrs:
            lr, res = lr_search(model_factory, forget, retain, cfg, lrs, run_dir=sub, progress=progress)
            model = res.model
            lr = lr if lr is not None else res.config.lr
        else:
            model = model_factory()
            res = unlearn(model, forget, retain, cfg, run_dir=sub, progress=progress)
            lr = cfg.lr
        row = {
            "lam": float(lam),
            "lr": lr,
            "protocol": cfg.protocol,
            "reached": res.reached,
            "steps": res.steps,
            "FS": _score(model, forget, cfg),
            "RS_retain": _score(model, retain, cfg),
            "RS_test": _score(model, test_items or [], cfg),
        }
        if extra_fn is not None:
            row.update(extra_fn(model, res))
        rows.append(row)
        res.model = None
        del model
        release_memory()
    if run_dir is not None:
        write_json_atomic(Path(run_dir) / "lambda_sweep.json", rows)
    return rows

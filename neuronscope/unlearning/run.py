"""One complete unlearning run on FaithUn-format data, as the ``neuronscope unlearn`` command does it.

load data → split (forget 5 % / retain 10 % / test 70 %, paper App. B.1) → load model →
unlearn (one learning rate, or the lowest of a grid that reaches the threshold) → FS / RS →
save the model (``save_pretrained``), the config, the history and a summary into one directory.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Sequence

from neuronscope.errors import NeuronscopeError, write_json_atomic
from neuronscope.unlearning.config import UnlearningConfig
from neuronscope.unlearning.search import lr_search
from neuronscope.unlearning.trainer import unlearn

_SPLIT_KEYS = {"forget": "FS", "retain": "RS_retain", "test": "RS_test"}


def run_unlearning(
    out: str | os.PathLike,
    config: UnlearningConfig,
    *,
    model: str = "smollm2-135m-instruct",
    lrs: Sequence[float] | None = None,
    data: str | os.PathLike | None = None,
    split_seed: int = 0,
    known_only: bool = False,
    known_candidates: int | None = None,
    splits_file: str | os.PathLike | None = None,
    eval_splits: Sequence[str] = ("forget", "retain", "test"),
    dtype: str = "float32",
    device: str = "cpu",
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Unlearn the forget split of a FaithUn-format set and save everything into ``out``.

    Args:
        out: Output directory: ``model/`` (``save_pretrained``, reloads with ``load_model``),
            ``config.json``, ``history.json``, ``summary.json``, ``splits.json`` (item ids of
            each split, readable by ``neuronscope attack --data``) and the run directories with
            checkpoints (``train/`` or ``search/lr-*``).
        config: The unlearning configuration.
        model: Model name or path.
        lrs: Ascending learning-rate grid: the lowest that reaches the threshold wins
            (paper §6.1); None = ``config.lr`` only.
        data: FaithUn-format file (default: the embedded fact set).
        split_seed: Seed of the forget/retain/test split.
        known_only: Draw the forget set only from facts the base model answers correctly
            (MCQA likelihood, SPEC §10).
        known_candidates: With ``known_only``, score only this many items (a seeded sample) to
            find the known facts, instead of the whole set (cheaper on a CPU).
        splits_file: A ``splits.json`` written by an earlier run: reuse its forget / retain /
            test item ids (the same split for every method; overrides ``split_seed`` and
            ``known_only``).
        eval_splits: Splits scored after unlearning (FS = forget, RS = retain/test).
        dtype / device: Model precision and device.
        progress: Progress bars.
        resume: Continue from checkpoints in ``out``.
        overwrite: Replace a finished run in ``out`` (one with ``summary.json``); without it
            such a directory is refused, so a finished model is never overwritten by accident.

    Returns:
        The summary written to ``summary.json``: method, model, lr, reached, steps, epochs,
        seconds per step, initial FS and the FS/RS scores (accuracy in [0, 1]).

    Raises:
        NeuronscopeError: Bad data file, unknown model, empty split, bad split name.
    """
    from neuronscope import distributed
    from neuronscope.data import load_faithun, split_faithun
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.models import clone_model, load_model

    for name in eval_splits:
        if name not in _SPLIT_KEYS:
            raise NeuronscopeError(f"eval_splits: unknown split {name!r} (expected forget, retain, test)")
    out = Path(out)
    if (out / "summary.json").exists():
        if not overwrite:
            raise NeuronscopeError(f"{out}: output directory already holds a finished run (use --overwrite)")
        if distributed.is_main():
            shutil.rmtree(out)
    distributed.barrier()
    try:  # fail before loading a model when the output cannot be written
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NeuronscopeError(f"{out}: cannot create output directory ({exc.strerror})") from None
    items = load_faithun(data) if data is not None else load_faithun()
    # Split first when the split does not depend on the model: bad fractions fail fast.
    if splits_file is not None:
        splits = _read_splits(splits_file, items)
    else:
        splits = None if known_only else split_faithun(items, seed=split_seed)
    base = load_model(model, dtype=dtype, device=device)
    pool = None
    if splits is None:
        candidates = list(items)
        if known_candidates is not None and known_candidates < len(candidates):
            candidates = random.Random(f"known-{split_seed}").sample(candidates, known_candidates)
        pool = mcqa_evaluate(base, candidates, progress=progress, desc="known facts").correct_ids()
        splits = split_faithun(items, seed=split_seed, forget_pool=pool)
    if lrs:
        best, result = lr_search(
            lambda: clone_model(base), splits.forget, splits.retain, config, lrs, run_dir=out / "search", progress=progress
        )
        trained = result.model
        lr = best if best is not None else result.config.lr
    else:
        result = unlearn(base, splits.forget, splits.retain, config, run_dir=out / "train", progress=progress, resume=resume)
        trained, lr = base, config.lr
    scores = {
        _SPLIT_KEYS[name]: mcqa_evaluate(trained, getattr(splits, name), progress=progress, desc=f"eval {name}").accuracy
        for name in eval_splits
        if getattr(splits, name)
    }
    main = distributed.is_main()  # data parallelism: every process holds the same result; one writes
    if main:
        trained.save(out / "model")
        write_json_atomic(out / "splits.json", {"seed": split_seed, "known_only": known_only, "splits": splits.to_dict()})
        result.config.save(out / "config.json")
        write_json_atomic(out / "history.json", result.history)
    summary = {
        "method": config.method,
        "model": model,
        "lr": lr,
        "reached": result.reached,
        "steps": result.steps,
        "epochs": result.epochs,
        "seconds_per_step": result.seconds_per_step,
        "initial_FS": result.initial_forget_score,
        **scores,
        "splits": {k: len(getattr(splits, k)) for k in ("forget", "retain", "test")},
        "known_pool": len(pool) if pool is not None else None,
        "lr_grid": list(lrs) if lrs else None,
    }
    if main:
        write_json_atomic(out / "summary.json", summary)
    distributed.barrier()
    return summary


def _read_splits(path: str | os.PathLike, items):
    import json

    from neuronscope.data import FaithUnSplits

    p = Path(path)
    if not p.exists():
        raise NeuronscopeError(f"{p}: splits file not found")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise NeuronscopeError(f"{p}: not valid JSON (line {exc.lineno})") from None
    splits = FaithUnSplits.from_dict(raw.get("splits", raw) if isinstance(raw, dict) else {}, items)
    if not splits.forget:
        raise NeuronscopeError(f"{p}: field 'forget' is empty")
    return splits


def resolve_config(
    method: str,
    config_path: str | os.PathLike | None = None,
    *,
    lrs: Sequence[float] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[UnlearningConfig, list[float], str | None, dict[str, Any]]:
    """The configuration of a command-line run: file (if any) → method → explicit overrides.

    Args:
        method: The method name.
        config_path: A JSON file of :class:`UnlearningConfig` fields or a run config
            (``configs/*.json``, see :func:`~neuronscope.unlearning.config.load_run_config`).
        lrs: Learning rates given on the command line (one = a single run; several = an
            ascending grid searched for the lowest that reaches the threshold).
        overrides: Config fields given on the command line (None values are ignored).

    Returns:
        ``(config, lr grid (empty = single run), model named by the file or None, the file's
        runtime {"dtype", "device"} or {})``.

    Raises:
        ConfigError: Bad file, field or value (one line naming it).
    """
    from neuronscope.unlearning.config import _check_lrs, load_run_config

    if config_path is not None:
        rc = load_run_config(config_path, method)
        cfg, grid, model, runtime = rc.config, list(rc.lrs), rc.model, rc.runtime
    else:
        cfg, grid, model, runtime = UnlearningConfig(method=method), [], None, {}
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if lrs:
        grid = _check_lrs(list(lrs), "--lr")
        if len(grid) == 1:
            changes["lr"], grid = grid[0], []
    if len(grid) == 1:
        changes.setdefault("lr", grid[0])
        grid = []
    cfg = cfg.replace(method=method, **changes)
    return cfg, grid, model, runtime

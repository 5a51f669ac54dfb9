"""One complete unlearning run on FaithUn-format data, as the ``neuronscope unlearn`` command does it.

load data → split (forget 5 % / retain 10 % / test 70 %, paper App. B.1) → load model →
unlearn (one learning rate, or the lowest of a grid that reaches the threshold) → FS / RS →
save the model (``save_pretrained``), the config, the history and a summary into one directory.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Sequence

from neuronscope.errors import NeuronscopeError, write_json_atomic
from neuronscope.unlearning.config import UnlearningConfig
from neuronscope.unlearning.search import lr_search
from neuronscope.unlearning.trainer import unlearn

_SPLIT_KEYS = {"forget": "FS", "retain": "RS_retain", "test": "RS_test"}
#: TOFU early-stopping threshold: mean ROUGE-L recall of mismatched QA pairs (paper §6.1).
_TOFU_TAU = 0.1971


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
    known_delta: float | None = None,
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
        data: Any data :func:`neuronscope.data.load_data` reads — FaithUn-format file, the
            FaithUn release (its published splits are used unless ``known_only``), TOFU
            (split by whole authors, forget 1 %; without false options FS/RS are ROUGE-L
            recall and the stop threshold defaults to τ = 0.1971), a Hub name — or None for
            the embedded fact set. ``splits.json`` records where the items came from.
        split_seed: Seed of the forget/retain/test split.
        known_only: Draw the forget set only from facts the base model knows under
            ``config.protocol`` (:func:`neuronscope.evaluation.known_facts`: correct with a
            margin ≥ ``known_delta`` and, for ``mcqa``, under every option order; SPEC §10).
        known_candidates: With ``known_only``, score only this many items (a seeded sample) to
            find the known facts, instead of the whole set (cheaper on a CPU).
        known_delta: Known-fact margin δ in nats (None = :data:`neuronscope.evaluation.DEFAULT_DELTA`).
        splits_file: A ``splits.json`` written by an earlier run: reuse its forget / retain /
            test item ids (the same split for every method; overrides ``split_seed`` and
            ``known_only``).
        eval_splits: Splits scored after unlearning (FS = forget, RS = retain/test).
        dtype / device: Model precision and device.
        progress: Progress bars.
        resume: Continue from checkpoints in ``out``.
        overwrite: Replace a run in ``out`` (a folder marked by neuronscope, see
            :mod:`neuronscope.rundir`). Nothing is deleted up front: the old run is moved aside
            only once data, split and model are loaded, deleted when the new run finishes and
            moved back if it fails. Without it a finished run (``summary.json``) is refused; a
            non-empty folder that is not a neuronscope run is refused either way.

    Returns:
        The summary written to ``summary.json``: method, model, protocol, lr, reached, steps,
        epochs, seconds per step, initial FS and the FS/RS scores (accuracy in [0, 1] under
        ``config.protocol``).

    Raises:
        NeuronscopeError: Bad data file, unknown model, empty split, bad split name, bad
            dtype / absent device / seed out of range, an output folder that is not a
            neuronscope run or is locked by another process (nothing is written in these cases).
    """
    from neuronscope import distributed, validate
    from neuronscope.rundir import follower_run_dir, prepare_run_dir

    for name in eval_splits:
        if name not in _SPLIT_KEYS:
            raise NeuronscopeError(f"eval_splits: unknown split {name!r} (expected forget, retain, test)")
    dtype = validate.dtype("dtype", dtype) if isinstance(dtype, str) else dtype
    device = validate.device("device", device) if isinstance(device, str) else device
    validate.seed("split_seed", split_seed)
    validate.integer("known_candidates", known_candidates, minimum=1)
    validate.numbers("lr", lrs, positive=True)
    if isinstance(model, str):
        validate.model_spec(model, "model")
    out = Path(out)
    # Nothing is written (and an old run is not touched) until the data, the split and the model
    # are loaded: rd.claim() below moves a replaced run aside and writes the run marker.
    if distributed.active() and not distributed.is_main():
        # data parallelism: the main process holds the run folder (marker, lock, replacement);
        # the others write nothing and wait for its claim before reading checkpoints
        with follower_run_dir() as rd:
            return _run(rd, out, config, model=model, lrs=lrs, data=data, split_seed=split_seed,
                        known_only=known_only, known_candidates=known_candidates, known_delta=known_delta,
                        splits_file=splits_file, eval_splits=eval_splits, dtype=dtype, device=device,
                        progress=progress, resume=resume)
    with prepare_run_dir(out, command="unlearn", overwrite=overwrite, finished=("summary.json",)) as rd:
        return _run(rd, out, config, model=model, lrs=lrs, data=data, split_seed=split_seed, known_only=known_only,
                    known_candidates=known_candidates, known_delta=known_delta, splits_file=splits_file,
                    eval_splits=eval_splits, dtype=dtype,
                    device=device, progress=progress, resume=resume)


def _run(rd, out: Path, config: UnlearningConfig, *, model, lrs, data, split_seed, known_only, known_candidates,
         known_delta, splits_file, eval_splits, dtype, device, progress, resume) -> dict[str, Any]:
    from neuronscope import distributed, validate
    from neuronscope.data import load_data, load_source, load_splits_file, split_faithun
    from neuronscope.evaluation import DEFAULT_DELTA, knowledge_evaluate, known_facts
    from neuronscope.models import clone_model, load_model

    # Any supported data (FaithUn, the FaithUn release, TOFU, ...); the splits record its source.
    if splits_file is not None and data is None:
        splits = load_splits_file(splits_file)
        if not splits.forget:
            raise NeuronscopeError(f"{splits_file}: field 'forget' is empty")
        loaded = load_source(splits.source, where=str(splits_file), check=False)
    else:
        loaded = load_data(data)
        splits = None
    if not loaded.is_qa:
        raise NeuronscopeError(f"{loaded.source.location}: is an Alpaca instruction set, not questions to unlearn")
    items = loaded.items
    if not loaded.has_options:  # TOFU question-answer pairs: ROUGE-L recall (SPEC §10-11)
        if known_only:
            raise NeuronscopeError(f"{loaded.source.location}: --known-only needs MCQA options, and these items have none")
        if config.stop_metric != "rouge":
            config = config.replace(stop_metric="rouge", threshold=_TOFU_TAU if config.threshold == 0.33 else config.threshold)
    # Split first when the split does not depend on the model: bad fractions fail fast.
    if splits_file is not None and splits is None:
        splits = loaded.make_splits(_read_splits(splits_file, items))
    elif splits is None:
        splits = None if known_only else loaded.split(seed=split_seed)
    base = load_model(model, dtype=dtype, device=device)
    validate.check_context(base, items, str(data) if data is not None else "embedded FaithUn set")
    pool = None
    if splits is None:
        candidates = list(items)
        if known_candidates is not None and known_candidates < len(candidates):
            candidates = random.Random(f"known-{split_seed}").sample(candidates, known_candidates)
        known_delta = DEFAULT_DELTA if known_delta is None else known_delta
        pool = known_facts(base, candidates, config.protocol, known_delta, option_seed=config.option_seed,
                           progress=progress).known_ids()
        splits = loaded.make_splits(split_faithun(items, seed=split_seed, forget_pool=pool))
    rd.claim()  # first write from here on
    distributed.barrier()
    if lrs:
        best, result = lr_search(
            lambda: clone_model(base), splits.forget, splits.retain, config, lrs, run_dir=out / "search", progress=progress
        )
        trained = result.model
        lr = best if best is not None else result.config.lr
    else:
        result = unlearn(base, splits.forget, splits.retain, config, run_dir=out / "train", progress=progress, resume=resume)
        trained, lr = base, config.lr
    if config.stop_metric == "rouge":
        from neuronscope.evaluation import rouge_evaluate

        def score(m, part, desc):
            return rouge_evaluate(m, part, progress=progress, desc=desc).score
    else:
        def score(m, part, desc):
            return knowledge_evaluate(m, part, protocol=config.protocol, mode=config.eval_mode,
                                      option_seed=config.option_seed, progress=progress, desc=desc).accuracy
    scores = {
        _SPLIT_KEYS[name]: score(trained, getattr(splits, name), f"eval {name}") for name in eval_splits if getattr(splits, name)
    }
    main = distributed.is_main()  # data parallelism: every process holds the same result; one writes
    if main:
        trained.save(out / "model")
        write_json_atomic(out / "splits.json", {"seed": split_seed, "known_only": known_only, "protocol": config.protocol,
                                                "known_delta": known_delta if pool is not None else None,
                                                "splits": splits.to_dict()})
        result.config.save(out / "config.json")
        write_json_atomic(out / "history.json", result.history)
    summary = {
        "method": config.method,
        "model": model,
        "protocol": config.protocol,
        "lr": lr,
        "reached": result.reached,
        "steps": result.steps,
        "epochs": result.epochs,
        "seconds_per_step": result.seconds_per_step,
        "initial_FS": result.initial_forget_score,
        "stop_metric": config.stop_metric,
        "data": loaded.source.to_dict(),
        **scores,
        "splits": {k: len(getattr(splits, k)) for k in ("forget", "retain", "test")},
        "known_pool": len(pool) if pool is not None else None,
        "known_delta": known_delta if pool is not None else None,
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

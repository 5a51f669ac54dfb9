"""The ``neuronscope`` command line: a thin wrapper over the library (SPEC §12).

Every command maps its options onto one library call. Options and input files are checked
(:mod:`neuronscope.validate`) before any output exists or a model is loaded. Exit codes of
:func:`main`:

* 0 success;
* 2 bad input or an unusable environment (a :class:`~neuronscope.errors.NeuronscopeError`, a
  usage error, a disk that is full or read-only): one ``error: ...`` line naming the option,
  file, record or field;
* 3 an internal error (a bug): ``error: internal error: <type>: <message> (run with --debug
  for the traceback)``;
* 130 interrupted (Ctrl-C): one line saying what was kept and how to resume.

Exit code 1 is never used. ``--debug`` shows the traceback instead of the one line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Erase or hide? Neuron attribution, influence variation, SSIUU unlearning and relearning attacks.",
)

_STATE = {"debug": False}


#: Commands that run data-parallel under ``accelerate launch`` (neuronscope.distributed).
_DATA_PARALLEL = {"unlearn", "attack", "attribute", "study", "demo", "diagnose"}


@app.callback()
def _root(ctx: typer.Context, debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug
    from neuronscope import distributed

    if distributed.init_from_env() and ctx.invoked_subcommand not in _DATA_PARALLEL:
        from neuronscope.errors import ConfigError

        raise ConfigError(
            f"{ctx.invoked_subcommand}: does not run data-parallel; run it without accelerate launch "
            f"(data-parallel commands: {', '.join(sorted(_DATA_PARALLEL))})"
        )


#: Help of every ``--data`` option (resolved by :func:`neuronscope.pipeline.load_items`).
_DATA_HELP = (
    "Split name of the embedded set (forget/retain/test/held_out/all), a data file or folder (FaithUn, the FaithUn "
    "release, TOFU; JSON/JSONL/parquet/CSV; FILE:SPLIT for one split), a run's splits.json[:SPLIT], or a Hub name."
)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


_DEVICE_HELP = "Torch device: cpu, cuda or cuda:N (checked before loading)."
_DTYPE_HELP = "Model dtype: float32, bfloat16 or float16."


def _runtime(device: Optional[str], dtype: Optional[str]) -> dict:
    """Validated ``--device`` / ``--dtype`` as ``load_model`` keyword arguments (None = its default)."""
    from neuronscope import validate

    out = {}
    if validate.device("--device", device) is not None:
        out["device"] = device.strip()
    if validate.dtype("--dtype", dtype) is not None:
        out["dtype"] = dtype
    return out


def _items(spec: str, seed: int) -> list:
    """Question items of ``--data`` (:func:`neuronscope.pipeline.load_items`: files, splits, runs, hub names)."""
    from neuronscope.pipeline import load_items

    return load_items(spec, seed=seed)


# ---------------------------------------------------------------- demo / study / report
@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory for the report and JSON."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model name or path."),
    seed: int = typer.Option(0, help="Random seed."),
    quick: bool = typer.Option(False, help="Smaller configuration (for tests)."),
    overwrite: bool = typer.Option(False, help="Replace an existing run directory."),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP),
) -> None:
    """The main job: GD vs SSIUU unlearning, D± curves and heatmaps, logit lens, an attack, one report."""
    from neuronscope import validate
    from neuronscope.study import StudyConfig, run_study

    validate.seed("--seed", seed)
    rt = _runtime(device, dtype)
    validate.model_spec(model)
    cfg = StudyConfig.demo(model=model, seed=seed, quick=quick)
    summary = run_study(cfg.merged(rt) if rt else cfg, out, overwrite=overwrite, command="demo")
    from neuronscope import distributed

    if not distributed.is_main():  # data parallelism: the main process reports
        return
    typer.echo(f"report: {summary['report']}")
    typer.echo(f"summary: {out / 'summary.json'}")


@app.command()
def study(
    config: Optional[Path] = typer.Option(None, "--config", help="Study JSON (configs/*.json; schema: neuronscope.study.StudyConfig); default: the CPU study of the embedded model."),
    out: Path = typer.Option(..., help="Run folder (resumes its finished stages)."),
    model: Optional[str] = typer.Option(None, help="Override the base model."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods to run (default: the config's)."),
    overwrite: bool = typer.Option(False, help="Recompute every stage of a finished run."),
) -> None:
    """Run a study: splits → unlearn → FS/RS/US → attribution → lens → attacks → table + report (SPEC §17)."""
    from neuronscope.study import StudyConfig, run_study

    cfg = StudyConfig.load(config) if config is not None else StudyConfig.cpu_study()
    over: dict = {"model": model} if model else {}
    if methods:
        over["methods"] = {m: cfg.methods.get(m, {}) for m in _csv(methods)}
    summary = run_study(cfg.merged(over, source=str(config or "study")) if over else cfg, out, overwrite=overwrite)
    from neuronscope import distributed

    if not distributed.is_main():  # data parallelism: the main process reports
        return
    typer.echo(_table_markdown(out))
    typer.echo(f"report: {summary.get('report', '-')}")
    typer.echo(f"summary: {out / 'summary.json'}")


@app.command()
def diagnose(
    base: str = typer.Option(..., help="The model before unlearning (HF name or local path)."),
    unlearned: str = typer.Option(..., help="The unlearned checkpoint (HF name or local path)."),
    forget: str = typer.Option(..., help="Forget data: a data file, a shipped split name, or a run's splits.json."),
    out: Path = typer.Option(..., help="Output folder (report.html, verdict.json, summary.json; resumable)."),
    retain: Optional[str] = typer.Option(None, help="Retain data (same forms; a run's splits.json means its retain split), scored for RS."),
    attack: Optional[str] = typer.Option(None, help="'harmful': also run the harmful relearning probe (paper §6.2.2)."),
    protocol: str = typer.Option("auto", help="Knowledge protocol: auto (where the base knows more), mcqa or cloze."),
    known_delta: Optional[float] = typer.Option(None, help="Known-fact margin δ in nats (default: the library's)."),
    p: float = typer.Option(0.3, help="Harmful probe: fraction of the forget set retrained on."),
    lr: Optional[List[float]] = typer.Option(None, "--lr", help="Harmful probe learning rate; repeat for a grid (default 1e-5)."),
    seeds: int = typer.Option(3, help="Harmful probe seeds (0..N-1)."),
    epochs: int = typer.Option(3, help="Harmful probe retraining epochs."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples of the D̃−/D̃+ interval."),
    dtype: str = typer.Option("float32", help="Model dtype."),
    device: str = typer.Option("cpu", help="Torch device."),
    overwrite: bool = typer.Option(False, help="Recompute a finished diagnosis."),
) -> None:
    """Erased or hidden? Diagnose any unlearned checkpoint against its base model (SPEC §14)."""
    from neuronscope.diagnose import DiagnoseConfig, diagnose as run_diagnose, verdict_line
    from neuronscope.errors import ConfigError

    if attack not in (None, "harmful"):
        raise ConfigError(f"--attack: expected 'harmful', got {attack!r}")
    from neuronscope import validate

    validate.number("--known-delta", known_delta, minimum=0.0)
    validate.number("--p", p, minimum=0.0, maximum=1.0, open_min=True)
    validate.numbers("--lr", lr, positive=True)
    validate.integer("--seeds", seeds, minimum=1)
    validate.integer("--epochs", epochs, minimum=1)
    validate.integer("--n-boot", n_boot, minimum=100)
    _runtime(device, dtype)
    validate.model_spec(base, "--base")
    validate.model_spec(unlearned, "--unlearned")
    cfg = DiagnoseConfig(base=base, unlearned=unlearned, forget=forget, retain=retain, protocol=protocol,
                         known_delta=known_delta, attack=attack == "harmful", p=p, lrs=list(lr) if lr else [1e-5],
                         seeds=list(range(seeds)), epochs=epochs, n_boot=n_boot, dtype=dtype, device=device)
    summary = run_diagnose(cfg, out, overwrite=overwrite)
    from neuronscope import distributed

    if not distributed.is_main():  # data parallelism: the main process reports
        return
    typer.echo(verdict_line(summary))
    for label, why in summary.get("attacks", {}).get("unlearned", {}).get("not_run", {}).items():
        typer.echo(f"note: {label} was asked for but did not run ({why}); the verdict rests on the other signals")
    typer.echo(f"report: {summary.get('report')}")
    typer.echo(f"verdict file: {out / 'verdict.json'}")


def _csv(text: str) -> list[str]:
    return [x.strip().lower() for x in text.split(",") if x.strip()]


def _table_markdown(run: Path) -> str:
    from neuronscope.study import table_from_run

    return table_from_run(run).to_markdown()


# ---------------------------------------------------------------- attribution / influence / heatmap
@app.command()
def attribute(
    model: str = typer.Option(..., help="Model name or path."),
    data: str = typer.Option("forget", help=_DATA_HELP),
    out: Path = typer.Option(..., help="Output .safetensors file (metadata in OUT.json)."),
    target: str = typer.Option("prob", help="prob (paper Eq. 1) or logprob."),
    positions: str = typer.Option("all", help="all non-padding input positions, or prompt."),
    batch_size: int = typer.Option(8),
    seed: int = typer.Option(0, help="Split seed."),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP),
) -> None:
    """Per-neuron attribution (Eq. 1), per-sample max/min over tokens, saved to disk."""
    from neuronscope import validate
    from neuronscope.attribution import AttributionConfig, attribute as run_attr
    from neuronscope.models import load_model

    # Validate options and data before the (slow) model load; the output is written atomically.
    validate.integer("--batch-size", batch_size, minimum=1)
    validate.seed("--seed", seed)
    rt = _runtime(device, dtype)
    validate.output_file(out)
    validate.output_file(out.with_suffix(out.suffix + ".json"))
    validate.model_spec(model)
    cfg = AttributionConfig(target=target, positions=positions, batch_size=batch_size)
    items = _items(data, seed)
    if not items:
        _fail(f"attribute: data {data!r} has no items (empty split)")
    m = load_model(model, **rt)
    validate.check_context(m, items, data)
    res = run_attr(m, [i.question for i in items], [i.answer for i in items], cfg)
    res.meta.update(data=data, split_seed=seed)
    from neuronscope import distributed

    if not distributed.is_main():  # the gathered result is written once
        return
    res.save(out)
    typer.echo(f"wrote {out} ({res.n_samples} samples, {len(res.keys)} modules, target {target}, positions {positions})")


@app.command()
def influence(
    before: Path = typer.Option(..., help="Attribution file of the model before unlearning."),
    after: Path = typer.Option(..., help="Attribution file of the unlearned model."),
    out: Path = typer.Option(..., help="Output influence .safetensors file."),
    label: str = typer.Option("", help="Label for plots."),
) -> None:
    """D̃+/D̃− per neuron (Eq. 4–5 with App. A clipping) from two saved attribution files."""
    from neuronscope import validate
    from neuronscope.attribution import NeuronAttribution, check_compatible
    from neuronscope.influence import influence_variation

    validate.output_file(out)
    validate.output_file(out.with_suffix(out.suffix + ".json"))
    a_before, a_after = NeuronAttribution.load(before), NeuronAttribution.load(after)
    check_compatible(a_before, a_after)
    var = influence_variation(a_before, a_after, label=label or str(a_after.meta.get("model", after.stem)))
    var.save(out)
    s = var.summary()
    typer.echo(f"wrote {out}; top-100 ΣD̃+ = {s['sum_top_d_plus']:.4g}, ΣD̃− = {s['sum_top_d_minus']:.4g}")


@app.command()
def heatmap(
    out: Path = typer.Option(..., help="Output HTML file (PNG beside it when kaleido works)."),
    before: Optional[str] = typer.Option(None, help="Model before unlearning (name or path)."),
    after: Optional[str] = typer.Option(None, help="Model after unlearning (name or path)."),
    data: str = typer.Option("forget", help=_DATA_HELP),
    influence_file: Optional[Path] = typer.Option(None, "--influence", help="A saved influence file instead of models."),
    top: int = typer.Option(100, help="Mean of the top-N D̃ per cell."),
    seed: int = typer.Option(0, help="Split seed."),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP),
) -> None:
    """Module×layer maps of D̃+ and D̃− (paper Fig. 5) from two models + data, or a saved file."""
    from neuronscope import validate
    from neuronscope.influence import InfluenceVariation
    from neuronscope.plots import save_figure

    if top < 1:
        _fail(f"heatmap: --top must be ≥ 1, got {top}")
    validate.seed("--seed", seed)
    rt = _runtime(device, dtype)
    validate.output_file(out)
    validate.output_file(out.with_suffix(".png"))
    if influence_file is not None:
        if before or after:
            _fail("heatmap: give --influence FILE or --before/--after models, not both")
        # Draws from the saved D̃± alone: no model is loaded, nothing is recomputed.
        var = InfluenceVariation.load(influence_file)
    else:
        if not before or not after:
            _fail("heatmap: give --before and --after models, or --influence FILE")
        var = _influence_between(before, after, data, seed, rt)
    written = save_figure(var.plot_heatmap(top=top), out)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def _influence_between(before: str, after: str, data: str, seed: int, rt: dict):
    """As ``pipeline.influence_between``, with ``--data`` resolved by :func:`_items` and ``--device``/``--dtype``."""
    from neuronscope import validate
    from neuronscope.attribution import AttributionConfig, attribute
    from neuronscope.influence import influence_variation
    from neuronscope.models import load_model

    validate.model_spec(before, "--before")
    validate.model_spec(after, "--after")
    items = _items(data, seed)
    qs, ans = [i.question for i in items], [i.answer for i in items]
    a_before = attribute(load_model(before, **rt), qs, ans, AttributionConfig(), progress=True)
    a_after = attribute(load_model(after, **rt), qs, ans, AttributionConfig(), progress=True)
    return influence_variation(a_before, a_after, label=Path(after).name or after)


# ---------------------------------------------------------------- logit lens / correlation
@app.command("logit-lens")
def logit_lens_cmd(
    model: List[str] = typer.Option(..., "--model", help="Model name or path; repeat for several (LABEL=PATH to name one)."),
    data: str = typer.Option("forget", help=_DATA_HELP),
    out: Path = typer.Option(..., help="Output directory for logit_lens.html and logit_lens.json."),
    seed: int = typer.Option(0, help="Split seed and distractor seed."),
    batch_size: int = typer.Option(8, help="Prompts per forward pass."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N items (N ≥ 1)."),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP),
) -> None:
    """Logit lens (paper Fig. 4): per-layer accuracy of gold vs. a random distractor, several models in one report."""
    from neuronscope import validate
    from neuronscope.lens import logit_lens_report
    from neuronscope.models import load_model

    validate.seed("--seed", seed)
    validate.integer("--batch-size", batch_size, minimum=1)
    validate.integer("--limit", limit, minimum=1)
    rt = _runtime(device, dtype)
    validate.output_files(out, ("logit_lens.html", "logit_lens.json"))
    items = _items(data, seed)
    if limit is not None:
        items = items[:limit]
    specs = {}
    for spec in model:
        label, path = spec.split("=", 1) if "=" in spec and not Path(spec).exists() else (spec, spec)
        specs[label] = validate.model_spec(path)
    models = {label: load_model(path, **rt) for label, path in specs.items()}
    for m in models.values():
        validate.check_context(m, items, data)
    paths = logit_lens_report(models, items, out, seed=seed, batch_size=batch_size, progress=True)
    import json

    for label, r in json.loads(paths["json"].read_text())["models"].items():
        acc = r["accuracy"]
        typer.echo(f"{label}: {r['n_items']} items; accuracy embed {acc[0]:.2f} … final {acc[-1]:.2f} "
                   f"(min {min(acc):.2f} at layer {acc.index(min(acc))})")
    typer.echo(f"wrote {paths['html']}, {paths['json']}")


@app.command()
def correlate(
    out: Path = typer.Option(..., help="Output directory for correlation.html and correlation.json."),
    before_attr: Optional[Path] = typer.Option(None, "--before-attr", help="Saved attribution file of model a (e.g. before the attack)."),
    after_attr: Optional[Path] = typer.Option(None, "--after-attr", help="Saved attribution file of model b (e.g. after the attack)."),
    model_a: Optional[str] = typer.Option(None, "--model-a", help="Model a (name or path), attributed on --data."),
    model_b: Optional[str] = typer.Option(None, "--model-b", help="Model b (name or path), attributed on --data."),
    data: str = typer.Option("forget", help=_DATA_HELP),
    label_a: str = typer.Option("before", help="Name of model a in the report."),
    label_b: str = typer.Option("after", help="Name of model b in the report."),
    seed: int = typer.Option(0, help="Split seed."),
    batch_size: int = typer.Option(8),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP),
) -> None:
    """Attribution correlation (paper Fig. 6): Pearson/Spearman of per-neuron attributions of two models."""
    from neuronscope import validate
    from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute as run_attr
    from neuronscope.correlation import attribution_correlation, correlation_report
    from neuronscope.errors import NeuronscopeError

    validate.seed("--seed", seed)
    validate.integer("--batch-size", batch_size, minimum=1)
    rt = _runtime(device, dtype)
    validate.output_files(out, ("correlation.html", "correlation.json"))
    if before_attr is not None or after_attr is not None:
        if before_attr is None or after_attr is None:
            raise NeuronscopeError("correlate: give both --before-attr and --after-attr")
        if model_a or model_b:
            raise NeuronscopeError("correlate: give attribution files or models, not both")
        a, b = NeuronAttribution.load(before_attr), NeuronAttribution.load(after_attr)
    elif model_a and model_b:
        from neuronscope.models import load_model

        validate.model_spec(model_a, "--model-a")
        validate.model_spec(model_b, "--model-b")
        items = _items(data, seed)
        qs, ans = [i.question for i in items], [i.answer for i in items]
        cfg = AttributionConfig(batch_size=batch_size)
        a = run_attr(load_model(model_a, **rt), qs, ans, cfg)
        b = run_attr(load_model(model_b, **rt), qs, ans, cfg)
    else:
        raise NeuronscopeError("correlate: give --before-attr and --after-attr, or --model-a and --model-b with --data")
    res = attribution_correlation(a, b, label_a=label_a, label_b=label_b)
    paths = correlation_report(res, out)
    typer.echo(f"{label_a} vs {label_b}: Pearson r = {res.pearson:.4f}, Spearman ρ = {res.spearman:.4f} "
               f"({res.n_neurons} neurons, {res.n_samples} samples)")
    typer.echo(f"wrote {paths['html']}, {paths['json']}")


# ---------------------------------------------------------------- unlearning
@app.command()
def unlearn(
    method: str = typer.Option("ssiuu", help="ga, gd, dpo, npo, rmu, klue or ssiuu (paper §5, App. B.2)."),
    out: Path = typer.Option(..., help="Output directory: model/ (save_pretrained), config.json, history.json, summary.json, splits.json."),
    model: Optional[str] = typer.Option(None, help="Model name or path (default: the config file's model, else the embedded SmolLM2)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of UnlearningConfig fields, or a run config (configs/*.json) with per-method settings and an lr grid."),
    lr: Optional[List[float]] = typer.Option(None, "--lr", help="Learning rate; repeat for an ascending grid (the lowest reaching the threshold wins)."),
    lam: Optional[float] = typer.Option(None, help="SSIUU λ (paper: 1e-3 FaithUn, 1e-4 TOFU)."),
    max_epochs: Optional[int] = typer.Option(None, help="Epochs at most."),
    max_steps: Optional[int] = typer.Option(None, help="Optimiser steps at most."),
    batch_size: Optional[int] = typer.Option(None, help="Forget (and retain) examples per step."),
    threshold: Optional[float] = typer.Option(None, help="Stop when forget accuracy ≤ this (default 0.33)."),
    seed: Optional[int] = typer.Option(None, help="Training seed (batch order, RMU direction, ...)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps (0 = off)."),
    ssiuu_grad: Optional[str] = typer.Option(None, help="SSIUU gradient: exact or first_order."),
    data: Optional[str] = typer.Option(None, help="Data file or folder (FaithUn, FaithUn release with its split files, TOFU; JSON/JSONL/parquet/CSV) or Hub name (default: the --config file's data block, else the embedded fact set)."),
    split_seed: int = typer.Option(0, help="Seed of the forget/retain/test split."),
    known_only: bool = typer.Option(False, help="Forget set only from facts the base model answers correctly."),
    known_candidates: Optional[int] = typer.Option(None, help="With --known-only: score only this many sampled facts."),
    known_delta: Optional[float] = typer.Option(None, help="With --known-only: known-fact margin δ in nats (default: neuronscope.evaluation.DEFAULT_DELTA)."),
    protocol: Optional[str] = typer.Option(None, help="Knowledge protocol of FS/RS and early stopping: mcqa (paper Table 3, default) or cloze (question alone)."),
    splits: Optional[Path] = typer.Option(None, help="Reuse the splits.json of an earlier run (same split for every method)."),
    eval_splits: str = typer.Option("forget,retain,test", help="Splits scored after unlearning (FS, RS)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from checkpoints in OUT."),
    overwrite: bool = typer.Option(
        False, help="Replace the neuronscope run in OUT (kept until the new run has loaded data and model; restored if it fails)."),
    dtype: Optional[str] = typer.Option(None, help="Model dtype: float32, bfloat16 or float16 (default: the config file's runtime, else float32)."),
    device: Optional[str] = typer.Option(None, help="Torch device: cpu, cuda or cuda:N (default: the config file's runtime, else cpu)."),
) -> None:
    """Unlearn the forget split with one method; early stop at FS ≤ threshold; save model + config + history."""
    from neuronscope import validate
    from neuronscope.unlearning.run import resolve_config, run_unlearning

    validate.numbers("--lr", lr)  # finite; > 0 is checked with the grid
    validate.number("--lam", lam, minimum=0)
    validate.number("--threshold", threshold)
    validate.integer("--max-epochs", max_epochs, minimum=1)
    validate.integer("--max-steps", max_steps, minimum=1)
    validate.integer("--batch-size", batch_size, minimum=1)
    validate.integer("--checkpoint-every", checkpoint_every, minimum=0)
    validate.integer("--known-candidates", known_candidates, minimum=1)
    validate.seed("--seed", seed)
    validate.seed("--split-seed", split_seed)
    _runtime(device, dtype)
    if model is not None:
        validate.model_spec(model)
    overrides = dict(lam=lam, max_epochs=max_epochs, max_steps=max_steps, batch_size=batch_size, threshold=threshold,
                     seed=seed, checkpoint_every=checkpoint_every, ssiuu_grad=ssiuu_grad, protocol=protocol)
    cfg, grid, file_model, runtime = resolve_config(method, config, lrs=lr, overrides=overrides)
    if data is None and config is not None:
        data = _config_data(config)
    if device is None:
        validate.device(f"{config}: runtime.device", runtime.get("device"))
    if dtype is None:
        validate.dtype(f"{config}: runtime.dtype", runtime.get("dtype"))
    s = run_unlearning(out, cfg, model=model or file_model or "smollm2-135m-instruct", lrs=grid, data=data,
                       split_seed=split_seed, known_only=known_only, known_candidates=known_candidates, known_delta=known_delta, splits_file=splits,
                       resume=resume, overwrite=overwrite,
                       dtype=dtype or runtime.get("dtype", "float32"), device=device or runtime.get("device", "cpu"),
                       eval_splits=[x.strip() for x in eval_splits.split(",") if x.strip()])
    from neuronscope import distributed

    if not distributed.is_main():
        return
    scores = ", ".join(f"{k} {100 * s[k]:.1f}%" for k in ("FS", "RS_retain", "RS_test") if k in s)
    state = f"reached FS ≤ {cfg.threshold} after {s['steps']} steps" if s["reached"] else f"threshold not reached in {s['steps']} steps"
    typer.echo(f"{cfg.method} lr {s['lr']:g}: {state} ({s['seconds_per_step']:.2f} s/step); {scores}")
    typer.echo(f"wrote {out / 'model'}, {out / 'summary.json'}")


def _config_data(config: Path) -> Optional[str]:
    """The data a run config's ``data`` block names (``file`` / ``path`` / ``hub``); None = the embedded FaithUn set.

    Raises:
        ConfigError: The block names a dataset other than FaithUn (e.g. ``"tofu"``) but no file or Hub name.
    """
    import json

    from neuronscope.errors import ConfigError

    raw = json.loads(Path(config).read_text(encoding="utf-8"))  # already validated by resolve_config
    block = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(block, dict):
        return None
    for key in ("file", "path", "hub"):
        value = block.get(key)
        if isinstance(value, str) and value.strip():
            near = Path(config).parent / value  # a relative file is looked up beside the config too
            return str(near) if key != "hub" and not Path(value).exists() and near.exists() else value
    dataset = block.get("format") or block.get("dataset") or "faithun"
    if dataset != "faithun":
        raise ConfigError(
            f"{config}: field 'data': dataset {dataset!r} names no data; add \"file\" or \"hub\" "
            "(e.g. \"hub\": \"locuslab/TOFU:full\") to the block, or pass --data"
        )
    return None


# ---------------------------------------------------------------- attacks / report
@app.command()
def attack(
    model: str = typer.Option(..., help="Unlearned model directory (save_pretrained) or name."),
    out: Path = typer.Option(..., help="Output directory (attack_config.json, attack.json, attack.html)."),
    kind: str = typer.Option("harmful", help="harmful (retrain on a fraction p of the forget set) or benign (Alpaca)."),
    p: float = typer.Option(0.1, help="Harmful attack: fraction of the forget set retrained on (paper 0.1, 0.3)."),
    lr: Optional[List[float]] = typer.Option(None, "--lr", help="Learning rate; repeat for a grid (default: paper grid of the kind)."),
    seeds: int = typer.Option(3, help="Number of attack seeds (0..N-1); the score is their mean."),
    epochs: Optional[int] = typer.Option(None, help="Retraining epochs (default 10 harmful, 1 benign)."),
    batch_size: int = typer.Option(8, help="Examples per optimiser step."),
    eval_every: Optional[str] = typer.Option(None, help="'epoch' or N steps between FS evaluations."),
    data: str = typer.Option("forget", help=_DATA_HELP),
    split_seed: int = typer.Option(0, help="Split seed (with a split name)."),
    n_alpaca: int = typer.Option(1000, help="Benign attack: number of Alpaca-format items."),
    alpaca: Optional[str] = typer.Option(None, help="Benign attack: Alpaca-format file or hub name (default: shipped set)."),
    protocol: str = typer.Option("mcqa", help="Knowledge protocol of FS: mcqa (paper Table 3) or cloze (question alone)."),
    overwrite: bool = typer.Option(
        False, help="Replace the neuronscope attack run in OUT (kept until the new one has loaded data and model)."),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP),
) -> None:
    """Harmful or benign relearning attack (paper §6.2.2): max FS during retraining, mean over seeds."""
    from neuronscope import validate
    from neuronscope.attacks import AttackConfig, run_attack
    from neuronscope.errors import write_text_atomic
    from neuronscope.models import load_model
    from neuronscope.rundir import prepare_run_dir

    validate.number("--p", p)  # finite; the range is AttackConfig's (p=0 names the fraction)
    validate.numbers("--lr", lr)  # finite; > 0 is checked with the grid
    validate.integer("--seeds", seeds, minimum=1, maximum=validate.SEED_MAX + 1)
    validate.integer("--epochs", epochs, minimum=1)
    validate.integer("--batch-size", batch_size, minimum=1)
    validate.integer("--n-alpaca", n_alpaca, minimum=1)
    validate.seed("--split-seed", split_seed)
    rt = _runtime(device, dtype)
    validate.model_spec(model)
    forget = _forget_items(data, split_seed)
    every = None if eval_every is None else ("epoch" if eval_every == "epoch" else _int_option("eval-every", eval_every))
    # Question-answer data without false options (TOFU) is scored by ROUGE-L recall (SPEC §11).
    metric = "accuracy" if all(i.false_options for i in forget) else "rouge"
    cfg = AttackConfig(
        kind=kind, p=p, lrs=tuple(lr) if lr else None, seeds=seeds, epochs=epochs, batch_size=batch_size,
        eval_every=every, n_alpaca=n_alpaca, alpaca_path=alpaca, protocol=protocol, metric=metric,
    )
    from neuronscope import distributed

    if cfg.kind == "benign":  # the instruction data, before the model load and before any output
        from neuronscope.data import load_alpaca

        load_alpaca(cfg.alpaca_path, n=cfg.n_alpaca, seed=0)
    if distributed.active() and not distributed.is_main():
        # data parallelism: the main process holds the run folder and writes every output
        m = load_model(model, **rt)
        distributed.barrier()  # after the main process claimed the folder
        run_attack(m, forget, cfg, run_dir=out, progress=False)
        return
    with prepare_run_dir(out, command="attack", overwrite=overwrite, finished=("attack.html",),
                         progress=("attack.json",)) as rd:
        if rd.state == "resume":
            _check_same_attack(out, cfg)
        validate.output_files(out, ("attack.html", "attack.json", "attack_config.json"))
        m = load_model(model, **rt)
        validate.check_context(m, forget, data)
        rd.claim()
        distributed.barrier()
        res = run_attack(m, forget, cfg, run_dir=out, progress=True)
        write_text_atomic(out / "attack.html", res.plot().to_html(include_plotlyjs=True, full_html=True))
    for lr_, v in res.per_lr().items():
        typer.echo(f"lr {lr_:g}: max FS during retraining {100 * v:.2f}% (mean over {len(cfg.seeds)} seeds)")
    scored = "ROUGE-L recall" if cfg.metric == "rouge" else cfg.protocol
    typer.echo(f"{cfg.label} attack score ({scored}): {100 * res.score:.2f}% (pool {len(res.pool_ids) or '-'} of {res.n_forget} forget items)")
    typer.echo(f"wrote {out / 'attack.json'}, {out / 'attack.html'}")


def _check_same_attack(out: Path, cfg) -> None:
    """An unfinished attack run is resumed only under the same configuration (else its runs would be replaced)."""
    from neuronscope import validate
    from neuronscope.errors import NeuronscopeError

    saved = out / "attack_config.json"
    if not saved.exists():
        return
    old = validate.json_file(saved, "attack config")
    new = json.loads(json.dumps(cfg.to_dict()))
    if not isinstance(old, dict):
        raise NeuronscopeError(f"{saved}: corrupt attack config (not a JSON object)")
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise NeuronscopeError(
            f"{out}: holds an unfinished attack with another configuration (field {diff[0]!r}: {old.get(diff[0])!r} "
            f"vs {new.get(diff[0])!r}); use --overwrite to replace it or choose another --out"
        )


def _int_option(name: str, value: str) -> int:
    from neuronscope.errors import ConfigError

    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--{name}: expected 'epoch' or an integer, got {value!r}") from None


def _forget_items(data: str, seed: int) -> list:
    from neuronscope.pipeline import load_items

    return load_items(data, seed=seed)


@app.command()
def report(
    runs: Path = typer.Option(..., help="Study run folder."),
    out: Path = typer.Option(..., help="Output directory for table.csv / table.md / table.html / table.json."),
    methods: Optional[str] = typer.Option(
        None, help="Comma-separated methods (e.g. ga,gd,npo,ssiuu): run the study for missing results."
    ),
    config: Optional[Path] = typer.Option(None, help="Study JSON file (with --methods; default: the CPU profile)."),
    profile: str = typer.Option("cpu", help="Built-in configuration with --methods: cpu (1 seed, reduced attacks) or paper."),
    model: Optional[str] = typer.Option(None, help="Base model (with --methods; default: the embedded SmolLM2)."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch default)."),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP + " With --methods (default: the configuration's)."),
    dtype: Optional[str] = typer.Option(None, help=_DTYPE_HELP + " With --methods (default: the configuration's)."),
) -> None:
    """Results table in the paper's Table 1 layout from a study run folder (or run it with --methods).

    With --methods, the study runner computes the missing stages (resumable; a run folder that
    already holds a configuration keeps it, only the method list and model change).
    """
    from neuronscope.errors import NeuronscopeError
    from neuronscope.study import StudyConfig, run_study, table_from_run

    from neuronscope import validate

    validate.integer("--threads", threads, minimum=0)
    rt = _runtime(device, dtype)
    if rt and not methods:
        raise NeuronscopeError("--device/--dtype: only with --methods (a table from saved results loads no model)")
    if methods:
        saved = runs / "study.json"
        if config is not None:
            cfg = StudyConfig.load(config)
        elif saved.exists():
            cfg = StudyConfig.load(saved)
        elif profile == "cpu":
            cfg = StudyConfig.table1_cpu()
        elif profile == "paper":
            cfg = StudyConfig(stages=["evaluate", "attack", "report"])
        else:
            raise NeuronscopeError(f"--profile: expected 'cpu' or 'paper', got {profile!r}")
        names = [m for m in _csv(methods) if m != "default"]
        over = {"methods": {m: cfg.methods.get(m, {}) for m in names}, **({"model": model} if model else {}),
                **({"threads": threads} if threads else {}), **rt}
        run_study(cfg.merged(over, source="--methods"), runs, resume_finished=True, command="study")
    table = table_from_run(runs)
    paths = table.save(out)
    typer.echo(table.to_markdown())
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: one-line errors and the exit codes of the module docstring.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    import click

    from neuronscope.errors import DISK_ERRNOS, NeuronscopeError

    _STATE["debug"] = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        rc = app(args=argv, standalone_mode=False)
        # With standalone_mode=False click returns (not raises) the code of typer.Exit; typer
        # turns KeyboardInterrupt into Exit(130) before it gets here.
        if rc == 130:
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except NeuronscopeError as exc:
        if _STATE["debug"]:
            raise
        from neuronscope import distributed

        if distributed.is_main():  # under accelerate launch every process meets the same error: one line
            typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort (after printing an empty line); say what was kept.
        from neuronscope import rundir

        note = rundir.last_exit_note or "no partial output was left (files are written whole or not at all); run the command again"
        typer.echo(f"error: interrupted (Ctrl-C): {note}", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:  # usage errors: bad option value, missing option
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare command: its help
            exc.show()
            sys.exit(2)
        typer.echo(f"error: {_one_line(exc.format_message())} (see --help)", err=True)
        sys.exit(2)
    except OSError as exc:
        if _STATE["debug"]:
            raise
        if exc.errno in DISK_ERRNOS:
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"error: {where}cannot write ({exc.strerror or exc}); files written before are intact", err=True)
            sys.exit(2)
        _internal(exc)
    except Exception as exc:
        if _STATE["debug"]:
            raise
        _internal(exc)


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _internal(exc: BaseException) -> None:
    typer.echo(f"error: internal error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", err=True)
    sys.exit(3)


if __name__ == "__main__":
    main()

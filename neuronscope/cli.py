"""The ``neuronscope`` command line: a thin wrapper over the library (SPEC §12).

Every command maps its options onto one library call. Bad input raises
:class:`~neuronscope.errors.NeuronscopeError`; :func:`main` prints it as one line
(``error: ...``) and exits with code 2, with the traceback only under ``--debug``.
"""

from __future__ import annotations

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
_DATA_PARALLEL = {"unlearn", "attack", "attribute", "study", "diagnose"}


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


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


# ---------------------------------------------------------------- demo
@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory for the report and JSON."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model name or path."),
    seed: int = typer.Option(0, help="Random seed."),
    quick: bool = typer.Option(False, help="Smaller configuration (for tests)."),
    overwrite: bool = typer.Option(False, help="Replace an existing run directory."),
) -> None:
    """The main job: GD vs SSIUU unlearning, D± curves and heatmaps, logit lens, an attack, one report."""
    from neuronscope.demo import DemoConfig, run_demo

    cfg = DemoConfig(model=model, seed=seed, quick=quick)
    result = run_demo(cfg, out, overwrite=overwrite)
    typer.echo(f"report: {result['report']}")
    typer.echo(f"summary: {result['summary']}")


# ---------------------------------------------------------------- attribution / influence / heatmap
@app.command()
def attribute(
    model: str = typer.Option(..., help="Model name or path."),
    data: str = typer.Option("forget", help="Split name of the embedded set (forget/retain/test) or a FaithUn-format file."),
    out: Path = typer.Option(..., help="Output .safetensors file (metadata in OUT.json)."),
    target: str = typer.Option("prob", help="prob (paper Eq. 1) or logprob."),
    positions: str = typer.Option("all", help="all non-padding input positions, or prompt."),
    batch_size: int = typer.Option(8),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """Per-neuron attribution (Eq. 1), per-sample max/min over tokens, saved to disk."""
    from neuronscope.attribution import AttributionConfig, attribute as run_attr
    from neuronscope.models import load_model
    from neuronscope.pipeline import load_items

    # Validate options and data before the (slow) model load; the output is written atomically.
    cfg = AttributionConfig(target=target, positions=positions, batch_size=batch_size)
    items = load_items(data, seed=seed)
    if not items:
        _fail(f"attribute: data {data!r} has no items (empty split)")
    m = load_model(model)
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
    from neuronscope.attribution import NeuronAttribution, check_compatible
    from neuronscope.influence import influence_variation

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
    data: str = typer.Option("forget", help="Split name or FaithUn-format file (with --before/--after)."),
    influence_file: Optional[Path] = typer.Option(None, "--influence", help="A saved influence file instead of models."),
    top: int = typer.Option(100, help="Mean of the top-N D̃ per cell."),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """Module×layer maps of D̃+ and D̃− (paper Fig. 5) from two models + data, or a saved file."""
    from neuronscope.influence import InfluenceVariation
    from neuronscope.pipeline import influence_between
    from neuronscope.plots import save_figure

    if top < 1:
        _fail(f"heatmap: --top must be ≥ 1, got {top}")
    if influence_file is not None:
        if before or after:
            _fail("heatmap: give --influence FILE or --before/--after models, not both")
        # Draws from the saved D̃± alone: no model is loaded, nothing is recomputed.
        var = InfluenceVariation.load(influence_file)
    else:
        if not before or not after:
            _fail("heatmap: give --before and --after models, or --influence FILE")
        var = influence_between(before, after, data, seed=seed)
    written = save_figure(var.plot_heatmap(top=top), out)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


# ---------------------------------------------------------------- logit lens / correlation
@app.command("logit-lens")
def logit_lens_cmd(
    model: List[str] = typer.Option(..., "--model", help="Model name or path; repeat for several (LABEL=PATH to name one)."),
    data: str = typer.Option("forget", help="Split name of the embedded set (forget/retain/test/held_out/all) or a FaithUn-format file."),
    out: Path = typer.Option(..., help="Output directory for logit_lens.html and logit_lens.json."),
    seed: int = typer.Option(0, help="Split seed and distractor seed."),
    batch_size: int = typer.Option(8, help="Prompts per forward pass."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N items."),
) -> None:
    """Logit lens (paper Fig. 4): per-layer accuracy of gold vs. a random distractor, several models in one report."""
    from neuronscope.lens import logit_lens_report
    from neuronscope.models import load_model
    from neuronscope.pipeline import load_items

    items = load_items(data, seed=seed)
    if limit is not None:
        items = items[:limit]
    specs = {}
    for spec in model:
        label, path = spec.split("=", 1) if "=" in spec and not Path(spec).exists() else (spec, spec)
        specs[label] = path
    models = {label: load_model(path) for label, path in specs.items()}
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
    data: str = typer.Option("forget", help="Split name or FaithUn-format file (with --model-a/--model-b)."),
    label_a: str = typer.Option("before", help="Name of model a in the report."),
    label_b: str = typer.Option("after", help="Name of model b in the report."),
    seed: int = typer.Option(0, help="Split seed."),
    batch_size: int = typer.Option(8),
) -> None:
    """Attribution correlation (paper Fig. 6): Pearson/Spearman of per-neuron attributions of two models."""
    from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute as run_attr
    from neuronscope.correlation import attribution_correlation, correlation_report
    from neuronscope.errors import NeuronscopeError

    if before_attr is not None or after_attr is not None:
        if before_attr is None or after_attr is None:
            raise NeuronscopeError("correlate: give both --before-attr and --after-attr")
        if model_a or model_b:
            raise NeuronscopeError("correlate: give attribution files or models, not both")
        a, b = NeuronAttribution.load(before_attr), NeuronAttribution.load(after_attr)
    elif model_a and model_b:
        from neuronscope.models import load_model
        from neuronscope.pipeline import load_items

        items = load_items(data, seed=seed)
        qs, ans = [i.question for i in items], [i.answer for i in items]
        cfg = AttributionConfig(batch_size=batch_size)
        a = run_attr(load_model(model_a), qs, ans, cfg)
        b = run_attr(load_model(model_b), qs, ans, cfg)
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
    data: Optional[str] = typer.Option(None, help="FaithUn-format file (default: the embedded fact set)."),
    split_seed: int = typer.Option(0, help="Seed of the forget/retain/test split."),
    known_only: bool = typer.Option(False, help="Forget set only from facts the base model answers correctly."),
    known_candidates: Optional[int] = typer.Option(None, help="With --known-only: score only this many sampled facts."),
    splits: Optional[Path] = typer.Option(None, help="Reuse the splits.json of an earlier run (same split for every method)."),
    eval_splits: str = typer.Option("forget,retain,test", help="Splits scored after unlearning (FS, RS)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from checkpoints in OUT."),
    overwrite: bool = typer.Option(False, help="Replace a finished run in OUT (refused otherwise)."),
    dtype: Optional[str] = typer.Option(None, help="Model dtype (default: the config file's runtime, else float32)."),
    device: Optional[str] = typer.Option(None, help="Torch device (default: the config file's runtime, else cpu)."),
) -> None:
    """Unlearn the forget split with one method; early stop at FS ≤ threshold; save model + config + history."""
    from neuronscope.unlearning.run import resolve_config, run_unlearning

    overrides = dict(lam=lam, max_epochs=max_epochs, max_steps=max_steps, batch_size=batch_size, threshold=threshold,
                     seed=seed, checkpoint_every=checkpoint_every, ssiuu_grad=ssiuu_grad)
    cfg, grid, file_model, runtime = resolve_config(method, config, lrs=lr, overrides=overrides)
    s = run_unlearning(out, cfg, model=model or file_model or "smollm2-135m-instruct", lrs=grid, data=data,
                       split_seed=split_seed, known_only=known_only, known_candidates=known_candidates, splits_file=splits,
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
    data: str = typer.Option("forget", help="Forget set: split name of the embedded set, a FaithUn-format file, or a run's splits.json."),
    split_seed: int = typer.Option(0, help="Split seed (with a split name)."),
    n_alpaca: int = typer.Option(1000, help="Benign attack: number of Alpaca-format items."),
    alpaca: Optional[str] = typer.Option(None, help="Benign attack: Alpaca-format file or hub name (default: shipped set)."),
) -> None:
    """Harmful or benign relearning attack (paper §6.2.2): max FS during retraining, mean over seeds."""
    from neuronscope.attacks import AttackConfig, run_attack
    from neuronscope.errors import write_text_atomic
    from neuronscope.models import load_model

    forget = _forget_items(data, split_seed)
    every = None if eval_every is None else ("epoch" if eval_every == "epoch" else _int_option("eval-every", eval_every))
    cfg = AttackConfig(
        kind=kind, p=p, lrs=tuple(lr) if lr else None, seeds=seeds, epochs=epochs, batch_size=batch_size,
        eval_every=every, n_alpaca=n_alpaca, alpaca_path=alpaca,
    )
    m = load_model(model)
    res = run_attack(m, forget, cfg, run_dir=out, progress=True)
    from neuronscope import distributed

    if not distributed.is_main():  # outputs are written once
        return
    write_text_atomic(out / "attack.html", res.plot().to_html(include_plotlyjs=True, full_html=True))
    for lr_, v in res.per_lr().items():
        typer.echo(f"lr {lr_:g}: max FS during retraining {100 * v:.2f}% (mean over {len(cfg.seeds)} seeds)")
    typer.echo(f"{cfg.label} attack score: {100 * res.score:.2f}% (pool {len(res.pool_ids) or '-'} of {res.n_forget} forget items)")
    typer.echo(f"wrote {out / 'attack.json'}, {out / 'attack.html'}")


def _int_option(name: str, value: str) -> int:
    from neuronscope.errors import ConfigError

    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--{name}: expected 'epoch' or an integer, got {value!r}") from None


def _forget_items(data: str, seed: int) -> list:
    import json

    from neuronscope.errors import NeuronscopeError

    path = Path(data)
    if path.name.endswith("splits.json") and path.exists():
        from neuronscope.data import FaithUnSplits, load_faithun

        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise NeuronscopeError(f"{path}: not valid JSON (line {exc.lineno})") from None
        splits = FaithUnSplits.from_dict(raw.get("splits", raw), load_faithun())
        if not splits.forget:
            raise NeuronscopeError(f"{path}: field 'forget' is empty")
        return splits.forget
    from neuronscope.pipeline import load_items

    return load_items(data, seed=seed)


@app.command()
def report(
    runs: Path = typer.Option(..., help="Robustness run directory (methods/<method>/result.json)."),
    out: Path = typer.Option(..., help="Output directory for table.csv / table.md / table.html / table.json."),
    methods: Optional[str] = typer.Option(
        None, help="Comma-separated methods (e.g. default,ga,gd,npo,ssiuu): run the robustness runner for missing results."
    ),
    config: Optional[Path] = typer.Option(None, help="RobustnessConfig JSON file (with --methods; default: the CPU profile)."),
    profile: str = typer.Option("cpu", help="Built-in configuration with --methods: cpu (1 seed, reduced attacks) or paper."),
    model: Optional[str] = typer.Option(None, help="Base model (with --methods; default: the embedded SmolLM2)."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch default)."),
) -> None:
    """Results table in the paper's Table 1 layout from saved results (or run them with --methods).

    With --methods, missing method results are computed by the robustness runner (resumable; a
    run directory that already holds a configuration keeps it, only the method list changes).
    """
    from neuronscope.errors import NeuronscopeError
    from neuronscope.robustness import RobustnessConfig, run_robustness, table_from_run

    if threads:
        import torch

        torch.set_num_threads(threads)
    if methods:
        changes = {"methods": methods, **({"model": model} if model else {})}
        saved = runs / "robustness_config.json"
        if config is not None:
            cfg = RobustnessConfig.from_dict({**RobustnessConfig.load(config).to_dict(), **changes}, source=str(config))
        elif saved.exists():
            cfg = RobustnessConfig.from_dict({**RobustnessConfig.load(saved).to_dict(), **changes}, source=str(saved))
        elif profile == "cpu":
            cfg = RobustnessConfig.cpu_default(**changes)
        elif profile == "paper":
            cfg = RobustnessConfig(**changes)
        else:
            raise NeuronscopeError(f"--profile: expected 'cpu' or 'paper', got {profile!r}")
        table = run_robustness(cfg, runs, progress=True)
    else:
        table = table_from_run(runs)
    paths = table.save(out)
    typer.echo(table.to_markdown())
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def main() -> None:
    """Console-script entry point with one-line errors (exit code 2)."""
    from neuronscope.errors import NeuronscopeError

    try:
        rc = app(standalone_mode=False)
        # With standalone_mode=False click returns (not raises) the code of typer.Exit.
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except NeuronscopeError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

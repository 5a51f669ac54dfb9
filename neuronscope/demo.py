"""``neuronscope demo``: the main job on the embedded default, end to end (SPEC §12).

Stages (each cached in the run directory, so an interrupted demo resumes where it stopped):

1. load SmolLM2-135M-Instruct and the embedded FaithUn-format facts; MCQA accuracy of the base
   model on every question; forget split drawn only from facts the base model answers
   correctly (retain/test from the rest), FS/RS of the base model;
2. unlearn the forget split with GD and with SSIUU (GD + Eq. 3 regulariser), early stopping at
   forget accuracy ≤ 0.33; FS/RS after;
3. attributions (Eq. 1) of the base and both unlearned models on the forget set → D̃+/D̃−,
   cumulative top-m curves (Fig. 3b/c) and module×layer heatmaps (Fig. 5);
4. logit lens of the three models (Fig. 4);
5. one harmful relearning attack per unlearned model (paper §6.2.2) and the attribution
   correlation before/after the attack (Fig. 6);
6. one results table (Table 1 layout), ``report.html`` and ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from neuronscope.errors import NeuronscopeError, write_json_atomic


@dataclass
class DemoConfig:
    """Configuration of the demo run (serialised to ``config.json`` in the run directory).

    Attributes:
        model: Model name or path (default: the embedded SmolLM2-135M-Instruct).
        seed: Seed for splits, option order, training order and attacks.
        quick: Tiny configuration (tiny random model allowed) for tests.
        methods: Unlearning methods compared.
        lr: Learning rate of each method (AdamW).
        max_epochs: Early-stopping budget in epochs over the forget set.
        threshold: Stop when forget accuracy ≤ threshold (0.33 = chance with 3 options).
        lam: SSIUU λ (paper: 1e-3 on FaithUn).
        known_only: Draw the forget split only from facts the base model answers correctly.
        attack_p: Fraction of the forget set used by the harmful attack.
        attack_lr: Learning rate of the harmful attack.
        attack_epochs: Epochs of attack retraining (FS on the remainder after each).
        batch_size: Training batch size (forget and retain each).
        known_candidates: With ``known_only``, the base model is scored on this many questions
            (a seeded sample) and the forget split is drawn from those it answers correctly;
            None = score every question (slow on a CPU).
        test_limit: RS on the test split uses its first N items (seeded split order) to keep
            the CPU demo short; None = all.
        utility_limit: US on the first N items of the shipped utility set; None = all.
        threads: torch CPU threads (0 = torch default).
        targets: Attribution targets for D̃± (SPEC §5): ``"prob"`` = P(y|x) as in paper Eq. 1
            (the first target is the primary one: correlation and the headline table), and
            ``"logprob"`` = log P(y|x). Both are reported because after unlearning the answer
            probability of a small model can collapse towards 0, which shrinks every
            probability attribution with it (see the report's note).
    """

    model: str = "smollm2-135m-instruct"
    seed: int = 0
    quick: bool = False
    methods: tuple[str, ...] = ("gd", "ssiuu")
    lr: dict = field(default_factory=lambda: {"gd": 5e-5, "ssiuu": 5e-5})
    max_epochs: int = 12
    threshold: float = 0.33
    lam: float = 1e-3
    known_only: bool = True
    attack_p: float = 0.3
    attack_lr: float = 1e-5
    attack_epochs: int = 3
    batch_size: int = 8
    known_candidates: int | None = 100
    test_limit: int | None = 60
    utility_limit: int | None = 30
    threads: int = 0
    targets: tuple[str, ...] = ("prob", "logprob")


class _Stages:
    """JSON results of finished stages, stored in ``<run>/stages/<name>.json``."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, name: str):
        p = self.dir / f"{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def put(self, name: str, obj) -> None:
        write_json_atomic(self.dir / f"{name}.json", obj)


def _log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]neuronscope demo[/] {msg}")


def run_demo(config: DemoConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run the demo into ``out`` and return ``{"report": path, "summary": path}``.

    Raises:
        NeuronscopeError: ``out`` holds a finished run and ``overwrite`` is False, or an
            earlier run with a different configuration; bad configuration values.
    """
    from neuronscope.attribution import AttributionConfig, attribute
    from neuronscope.data import load_faithun, split_faithun
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.influence import influence_variation
    from neuronscope.models import clone_model, load_model
    from neuronscope.unlearning import UnlearningConfig, unlearn

    t0 = time.time()
    out = Path(out)
    cfg_dict = asdict(config)
    cfg_dict["methods"] = list(config.methods)
    cfg_dict["targets"] = list(config.targets)
    if not config.targets or any(t not in ("prob", "logprob") for t in config.targets):
        raise NeuronscopeError(f"targets: expected 'prob' and/or 'logprob', got {list(config.targets)}")
    if out.exists() and (out / "summary.json").exists():
        if not overwrite:
            raise NeuronscopeError(f"{out}: run directory already holds a finished run (use --overwrite)")
        shutil.rmtree(out)
    if out.exists() and (out / "config.json").exists():
        old = json.loads((out / "config.json").read_text())
        if old != json.loads(json.dumps(cfg_dict)):
            if not overwrite:
                raise NeuronscopeError(f"{out}: holds an unfinished run with another configuration (use --overwrite)")
            shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NeuronscopeError(f"{out}: cannot create run directory ({exc.strerror})") from None
    write_json_atomic(out / "config.json", cfg_dict)
    stages = _Stages(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    timings: dict[str, float] = {}

    def tick(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 1)
        return time.time()

    # 1. model, data, base accuracy, splits ------------------------------------------------
    t = time.time()
    _log(f"loading {config.model}")
    base = load_model(config.model, seed=config.seed)
    items = load_faithun()
    if config.quick:
        items = items[:60]
    by_id = {it.id: it for it in items}
    t = tick("load", t)
    known = stages.get("base_known")
    if known is None:
        import random

        candidates = list(items)
        if config.known_candidates and config.known_candidates < len(items):
            candidates = random.Random(config.seed).sample(candidates, config.known_candidates)
        _log(f"MCQA accuracy of the base model on {len(candidates)} candidate questions for the forget split")
        res = mcqa_evaluate(base, candidates, progress=progress, desc="base MCQA")
        known = {"accuracy": res.accuracy, "n_candidates": len(candidates), "correct_ids": sorted(res.correct_ids())}
        stages.put("base_known", known)
    pool = set(known["correct_ids"]) if config.known_only else None
    splits = split_faithun(items, seed=config.seed, forget_pool=pool if pool and len(pool) >= 3 else None)
    t = tick("base_eval", t)
    evals: dict[str, dict[str, float]] = {}
    ev = stages.get("eval_default")
    if ev is None:
        ev = _eval_model(base, splits, config, progress)
        stages.put("eval_default", ev)
    evals["default"] = ev
    _log(f"base model: {_fmt(ev)}")

    # 2. unlearning -------------------------------------------------------------------------
    unlearned = {}
    histories = {}
    for method in config.methods:
        model_dir = out / "models" / method
        info = stages.get(f"unlearn_{method}")
        if info is not None and (model_dir / "config.json").exists():
            unlearned[method] = load_model(str(model_dir))
            histories[method] = info
        else:
            _log(f"unlearning with {method.upper()} (lr {config.lr.get(method, 5e-5)}, ≤ {config.max_epochs} epochs)")
            m = clone_model(base)
            ucfg = UnlearningConfig(
                method=method, lr=config.lr.get(method, 5e-5), max_epochs=config.max_epochs,
                batch_size=config.batch_size, threshold=config.threshold, seed=config.seed, lam=config.lam,
            )
            r = unlearn(m, splits.forget, splits.retain, ucfg, run_dir=out / "train" / method, progress=progress)
            m.save(model_dir)
            info = {"reached": r.reached, "steps": r.steps, "epochs": r.epochs,
                    "seconds_per_step": r.seconds_per_step, "history": r.history, "lr": ucfg.lr}
            stages.put(f"unlearn_{method}", info)
            unlearned[method] = m
            histories[method] = info
        ev = stages.get(f"eval_{method}")
        if ev is None:
            ev = _eval_model(unlearned[method], splits, config, progress)
            stages.put(f"eval_{method}", ev)
        evals[method] = ev
        _log(f"{method.upper()}: {_fmt(ev)} after {histories[method]['steps']} steps")
    t = tick("unlearning", t)

    # 3. attribution and influence variation ---------------------------------------------------
    qs, ans = [i.question for i in splits.forget], [i.answer for i in splits.forget]
    attr_dir = out / "attributions"
    from neuronscope.attribution import NeuronAttribution

    variations_by_target: dict[str, dict] = {}
    attrs_by_target: dict[str, dict] = {}
    for target in config.targets:
        tcfg = AttributionConfig(batch_size=config.batch_size, target=target)
        suffix = "" if target == "prob" else f".{target}"
        attrs_t = {}
        for name, m in [("default", base), *unlearned.items()]:
            path = attr_dir / f"{name}{suffix}.safetensors"
            if path.exists():
                attrs_t[name] = NeuronAttribution.load(path)
            else:
                _log(f"attribution (Eq. 1, target {target}) of {name} on the forget set")
                attrs_t[name] = attribute(m, qs, ans, tcfg, progress=progress)
                attrs_t[name].meta["model"] = name
                attrs_t[name].save(path)
        vars_t = {}
        for method in unlearned:
            var = influence_variation(attrs_t["default"], attrs_t[method], label=method.upper())
            var.save(out / "influence" / f"{method}{suffix}.safetensors")
            vars_t[method.upper()] = var
        attrs_by_target[target] = attrs_t
        variations_by_target[target] = vars_t
    primary = config.targets[0]
    acfg = AttributionConfig(batch_size=config.batch_size, target=primary)
    attrs = attrs_by_target[primary]
    variations = variations_by_target[primary]
    t = tick("attribution", t)

    # 4. logit lens ----------------------------------------------------------------------------
    lens_results = _maybe_logit_lens(base, unlearned, splits, config, stages, progress)
    t = tick("logit_lens", t)

    # 5. harmful attack + attribution correlation ------------------------------------------------
    attack_results, correlations = _maybe_attack(unlearned, splits, config, stages, attrs, acfg, qs, ans, out, progress)
    t = tick("attack", t)

    # 6. report --------------------------------------------------------------------------------
    summary = {
        "model": config.model,
        "n_questions": len(items),
        "base_accuracy_candidates": known["accuracy"],
        "n_known_candidates": known.get("n_candidates"),
        "splits": {k: len(getattr(splits, k)) for k in ("forget", "retain", "test", "held_out")},
        "accuracy": evals,
        "unlearning": {k: {**{kk: v[kk] for kk in ("reached", "steps", "epochs", "seconds_per_step", "lr")},
                           **_penalty_share(v["history"], config.lam)}
                       for k, v in histories.items()},
        "attribution_target": primary,
        "influence_top100": {k: v.summary(100) for k, v in variations.items()},
        "influence_top100_by_target": {t: {k: v.summary(100) for k, v in vs.items()}
                                       for t, vs in variations_by_target.items()},
        "answer_probability": {name: {"mean": float(a.target_value.mean()), "median": float(a.target_value.median())}
                               for name, a in attrs_by_target.get("prob", {}).items()},
        "logit_lens": lens_results,
        "harmful_attack": attack_results,
        "attribution_correlation": correlations,
        "timings_s": timings,
    }
    table = _results_table(config, evals, attack_results)
    table_paths = table.save(out, stem="results_table")
    summary["results_table"] = {k: str(v) for k, v in table_paths.items()}
    report_path = _write_report(out, config, summary, variations_by_target, histories, lens_results, attack_results, table)
    timings["report"] = round(time.time() - t, 1)
    timings["total"] = round(time.time() - t0, 1)
    summary_path = write_json_atomic(out / "summary.json", summary)
    _log(f"done in {timings['total']:.0f} s")
    del by_id
    return {"report": report_path, "summary": summary_path, "summary_data": summary}


def _penalty_share(history: list[dict], lam: float) -> dict[str, float]:
    """For SSIUU: mean λ·penalty (Eq. 3's second term) and mean |L_GD| over the training steps.

    Shows how much the regulariser weighs against the GD loss at the configured λ (empty for
    methods without a penalty).
    """
    steps = [h for h in history if h.get("ssiuu_penalty") is not None and h.get("loss") is not None]
    if not steps:
        return {}
    pen = [lam * h["ssiuu_penalty"] for h in steps]
    gd = [abs(h["loss"]) for h in steps]
    return {"mean_lambda_penalty": sum(pen) / len(pen), "mean_abs_gd_loss": sum(gd) / len(gd),
            "steps_with_penalty": sum(p > 0 for p in pen)}


def _eval_model(model, splits, config: DemoConfig, progress: bool) -> dict[str, float]:
    """FS (forget, forget paraphrases), RS (retain, test[:test_limit]) and US (utility[:utility_limit])."""
    from neuronscope.data import load_utility
    from neuronscope.evaluation import mcqa_evaluate, paraphrased

    out = {}
    sets = {
        "forget": splits.forget,
        "forget_paraphrase": paraphrased(splits.forget),
        "retain": splits.retain,
        "test": splits.test[: config.test_limit] if config.test_limit else splits.test,
        "utility": load_utility()[: config.utility_limit] if config.utility_limit else load_utility(),
    }
    for name, items in sets.items():
        if items:
            out[name] = mcqa_evaluate(model, items, progress=progress, desc=f"eval {name}").accuracy
    return out


def _fmt(ev: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in ev.items())


def _maybe_logit_lens(base, unlearned, splits, config, stages, progress):
    from neuronscope.lens import logit_lens

    cached = stages.get("logit_lens")
    if cached is not None:
        return cached
    _log("logit lens (Fig. 4)")
    res = {}
    for name, m in [("Default", base), *((k.upper(), v) for k, v in unlearned.items())]:
        res[name] = logit_lens(m, splits.forget, seed=config.seed, label=name, progress=progress).to_dict()
    stages.put("logit_lens", res)
    return res


def _maybe_attack(unlearned, splits, config, stages, attrs, acfg, qs, ans, out, progress):
    """One harmful attack per method (p, one lr, one seed) and the Fig. 6 correlation."""
    from neuronscope.attacks import harmful_attack
    from neuronscope.attribution import attribute
    from neuronscope.correlation import attribution_correlation
    from neuronscope.models import clone_model

    cached = stages.get("attack")
    if cached is not None:
        return cached["attack"], cached["correlation"]
    attack, corr = {}, {}
    for method, m in unlearned.items():
        _log(f"harmful relearning attack on {method.upper()} (p = {config.attack_p}, lr {config.attack_lr})")
        attacked = []

        def clone_fn(model):
            c = clone_model(model)
            attacked.append(c)
            return c

        res = harmful_attack(
            m, splits.forget, p=config.attack_p, lrs=(config.attack_lr,), seeds=(config.seed,),
            epochs=config.attack_epochs, batch_size=config.batch_size, clone_fn=clone_fn,
            run_dir=out / "attacks" / method, progress=progress,
        )
        attack[method] = res.to_dict()
        if attacked:
            after = attribute(attacked[-1], qs, ans, acfg, progress=progress)
            c = attribution_correlation(attrs[method], after, label_a=f"{method.upper()} unlearned",
                                        label_b=f"{method.upper()} after attack")
            corr[method] = c.to_dict()
    stages.put("attack", {"attack": attack, "correlation": corr})
    return attack, corr


def _results_table(config: DemoConfig, evals: dict, attack_results: dict | None):
    """Table 1 layout: FS = forget accuracy, RS = test accuracy, US = utility accuracy."""
    from neuronscope.tables import TableRow, table_from_rows

    label = "SmolLM2-135M" if config.model == "smollm2-135m-instruct" else config.model
    rows = []
    for name, ev in evals.items():
        harmful = None
        if attack_results and name in attack_results and "score" in attack_results[name]:
            harmful = attack_results[name]["score"]
        kw = {"harmful_p03" if abs(config.attack_p - 0.3) < 1e-9 else "harmful_p01": harmful} if harmful is not None else {}
        rows.append(TableRow(model=label, method="Default" if name == "default" else name.upper(),
                             fs=ev.get("forget"), rs=ev.get("test"), us=ev.get("utility"), **kw))
    note = (f"1 seed on CPU; harmful attack p = {config.attack_p}, lr {config.attack_lr:g}, {config.attack_epochs} epochs; "
            f"RS on {config.test_limit or 'all'} test items, US on {config.utility_limit or 'all'} shipped utility items; "
            "benign attack not run in the demo")
    return table_from_rows(rows, title="neuronscope demo results (Table 1 layout)", note=note)


def _write_report(out, config, summary, variations_by_target, histories, lens_results, attack_results, table) -> Path:
    from neuronscope.plots import cumulative_figure
    from neuronscope.report import HTMLReport

    r = HTMLReport("neuronscope — erase or hide? (demo)")
    r.text(
        f"Model {config.model}; {summary['n_questions']} FaithUn-format questions; splits "
        + ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        + (". The forget split holds only facts the base model answers correctly." if config.known_only else ".")
    )
    r.heading("Results (paper Table 1 layout)")
    r.html(table.to_html())
    r.heading("Forget / retain accuracy (MCQA, option likelihood)")
    names = list(summary["accuracy"])
    cols = ["forget", "forget_paraphrase", "retain", "test", "utility"]
    rows = [[n.upper() if n != "default" else "Default"] + [100 * summary["accuracy"][n].get(c, float("nan")) for c in cols]
            for n in names]
    r.table(["method", "FS forget (%)", "FS paraphrase (%)", "RS retain (%)", "RS test (%)", "US utility (%)"], rows,
            fmt="{:.1f}")
    r.heading("Unlearning runs")
    r.table(["method", "lr", "reached FS ≤ 0.33", "steps", "epochs", "s / step", "mean λ·penalty", "mean |L_GD|"],
            [[k.upper(), f"{v['lr']:.0e}", str(v["reached"]), v["steps"], v["epochs"], f"{v['seconds_per_step']:.2f}",
              f"{v['mean_lambda_penalty']:.3g}" if "mean_lambda_penalty" in v else "-",
              f"{v['mean_abs_gd_loss']:.3g}" if "mean_abs_gd_loss" in v else "-"]
             for k, v in summary["unlearning"].items()])
    r.text(f"SSIUU adds λ·Σ‖A_prev − A‖₂ over spurious (negative) rows to the GD loss (λ = {config.lam:g}); "
           "the penalty is 0 on the first visit of each forget batch (no previous attribution yet). "
           "Where mean λ·penalty is small next to |L_GD|, SSIUU behaves like GD.", note=True)
    r.heading("Influence variation: erased or hidden? (Fig. 3)")
    r.table(["attribution target", "method", "Σ top-100 D̃+", "Σ top-100 D̃−", "D̃− / D̃+"],
            [[t, k, v["sum_top_d_plus"], v["sum_top_d_minus"], v["minus_over_plus"]]
             for t, per in summary["influence_top100_by_target"].items() for k, v in per.items()], fmt="{:.4g}")
    r.text("D̃− > D̃+ means negative influence grew more than positive influence fell: knowledge "
           "hidden behind spurious unlearning neurons rather than erased.", note=True)
    if summary.get("answer_probability"):
        r.text("Mean P(answer | question) on the forget set (the scale of 'prob' attributions): "
               + ", ".join(f"{k} {v['mean']:.3g}" for k, v in summary["answer_probability"].items())
               + ". Attributions to P(y|x) scale with P(y|x) itself, so where unlearning drives it "
               "towards 0 every D̃ of the unlearned model shrinks with it; the log-probability target "
               "(units: nats) is free of that scale.", note=True)
    for target, variations in variations_by_target.items():
        r.text(f"Cumulative top-m influence variation, target {target}:")
        r.figure(cumulative_figure(variations, m=1000))
    r.heading("Influence variation per module and layer (Fig. 5)")
    for target, variations in variations_by_target.items():
        for var in variations.values():
            r.text(f"{var.meta.get('label', '')}, target {target}:")
            r.figure(var.plot_heatmap(top=100))
    if lens_results:
        r.heading("Logit lens (Fig. 4)")
        from neuronscope.lens import LogitLensResult, lens_figure

        r.figure(lens_figure({k: LogitLensResult.from_dict(v) for k, v in lens_results.items()}))
    if attack_results:
        r.heading("Harmful relearning attack (§6.2.2) and attribution correlation (Fig. 6)")
        r.table(["method", "max FS on the remainder (%)"],
                [[k.upper(), 100 * float(v.get("score", v.get("max_fs", float("nan"))))] for k, v in attack_results.items()],
                fmt="{:.1f}")
        if summary.get("attribution_correlation"):
            r.table(["method", "Pearson r", "Spearman ρ"],
                    [[k.upper(), v["stats"]["both"]["pearson"], v["stats"]["both"]["spearman"]]
                     for k, v in summary["attribution_correlation"].items()])
    r.heading("Timings (s)")
    r.table(["stage", "seconds"], [[k, v] for k, v in summary["timings_s"].items()], fmt="{:.1f}")
    return r.write(out / "report.html")

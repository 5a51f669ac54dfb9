"""The robustness runner: unlearn with several methods, score FS/RS/US and both attacks → Table 1.

For each method (``default`` = the base model, no unlearning; ``ga``, ``gd``, ``dpo``, ``npo``,
``rmu``, ``klue``, ``ssiuu``):

1. unlearn a fresh copy of the base model on the forget split with early stopping at forget
   accuracy ≤ 0.33 (paper §6.1; optionally the lowest learning rate of a grid that reaches it);
2. evaluate FS (forget accuracy), RS (test accuracy, paper App. B.1; the retain accuracy is
   kept in the JSON) and US (shipped utility set, or lm-eval benchmarks);
3. run the harmful attack for each p (default {0.1, 0.3}) and the benign attack
   (:mod:`neuronscope.attacks`);
4. write ``methods/<method>/result.json``.

Rows are collected into a :class:`~neuronscope.tables.ResultsTable` written to
``table.{csv,md,html,json}`` in the run directory. The run is **resumable**: a method whose
``result.json`` exists (under the same configuration) is reused as is, and a method that was
interrupted during its attacks reuses its finished attack runs (unlearning is deterministic
given the seed, so it is re-run to the same weights).

All data is the embedded FaithUn-format set unless ``data`` names a file; nothing is read
outside the package.
"""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from neuronscope.attacks import BENIGN_LRS, HARMFUL_LRS
from neuronscope.errors import ConfigError, NeuronscopeError, write_json_atomic
from neuronscope.tables import ResultsTable, TableRow

__all__ = ["RobustnessConfig", "run_robustness", "table_from_run", "METHOD_LABELS"]

#: Display names of methods in the table.
METHOD_LABELS = {
    "default": "Default",
    "ga": "GA",
    "gd": "GD",
    "dpo": "DPO",
    "npo": "NPO",
    "rmu": "RMU",
    "klue": "KLUE",
    "ssiuu": "SSIUU",
}

_MODEL_LABELS = {"smollm2-135m-instruct": "SmolLM2-135M"}


@dataclass
class RobustnessConfig:
    """Configuration of a robustness run (saved as ``robustness_config.json``).

    Attributes:
        model: Base model name or path.
        model_label: Model name shown in the table (default: a short name of ``model``).
        methods: Methods, in row order; ``"default"`` is the base model without unlearning.
        data: FaithUn-format file or hub name (None = the embedded set).
        split_seed: Seed of the forget/retain/test split.
        forget_from_correct: Draw the forget split only from facts the base model answers
            correctly (SPEC §10).
        unlearning: :class:`~neuronscope.unlearning.UnlearningConfig` fields for every method
            (``lr``, ``max_epochs``, ``batch_size``, ``threshold``, ``seed``, ...).
        method_overrides: Per-method fields on top of ``unlearning`` (e.g. ``{"npo": {"beta": 0.1}}``).
        lrs: Optional ascending learning-rate grid per method (``{"gd": [1e-5, 5e-5]}``) — the
            lowest that reaches the threshold wins (paper §6.1); without one, ``lr`` is used.
        harmful_ps: Fractions p of the harmful attack (paper {0.1, 0.3}); columns exist for
            0.1 and 0.3 only.
        harmful: :class:`~neuronscope.attacks.AttackConfig` fields of the harmful attacks.
        benign: :class:`~neuronscope.attacks.AttackConfig` fields of the benign attack;
            ``None`` skips it.
        test_limit: RS on the first N test items (None = all).
        utility_limit: US on the first N shipped utility items (None = all).
        utility_tasks: lm-eval tasks for US instead of the shipped set (needs ``lm-eval``).
        eval_mode: MCQA scoring (``"likelihood"`` or ``"generate"``).
        note: Extra text for the table caption (appended to the generated description).
        title: Table caption title.
        device: Torch device of the models (``"cpu"``, ``"cuda"``).
        dtype: Parameter dtype (``"float32"``, ``"bfloat16"``).
    """

    model: str = "smollm2-135m-instruct"
    model_label: str | None = None
    methods: tuple[str, ...] = ("default", "ga", "gd", "npo", "ssiuu")
    data: str | None = None
    split_seed: int = 0
    forget_from_correct: bool = True
    unlearning: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    lrs: dict[str, list[float]] = field(default_factory=dict)
    harmful_ps: tuple[float, ...] = (0.1, 0.3)
    harmful: dict[str, Any] = field(default_factory=dict)
    benign: dict[str, Any] | None = field(default_factory=dict)
    test_limit: int | None = None
    utility_limit: int | None = None
    utility_tasks: tuple[str, ...] | None = None
    eval_mode: str = "likelihood"
    note: str = ""
    title: str = "Experimental results on the FaithUn-format set (paper Table 1 layout)"
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        self.methods = tuple(m.lower() for m in self.methods)
        self.harmful_ps = tuple(float(p) for p in self.harmful_ps)
        if self.utility_tasks is not None:
            self.utility_tasks = tuple(self.utility_tasks)
        self.validate()

    def validate(self) -> None:
        """Check the method names and build every sub-configuration once.

        Raises:
            ConfigError: Unknown method, bad unlearning / attack field, bad p.
        """
        from neuronscope.attacks import AttackConfig

        if not self.methods:
            raise ConfigError("methods: need at least one method")
        for m in self.methods:
            if m not in METHOD_LABELS:
                raise ConfigError(f"methods: unknown method {m!r} (expected {', '.join(METHOD_LABELS)})")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: listed twice in {','.join(self.methods)}")
        for m in self.methods:
            if m != "default":
                self.unlearning_config(m)
        for p in self.harmful_ps:
            AttackConfig(kind="harmful", p=p, **self.harmful)
        if self.benign is not None:
            AttackConfig(kind="benign", **self.benign)
        for name in ("test_limit", "utility_limit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}: must be a positive integer or None, got {v!r}")

    def unlearning_config(self, method: str):
        """The :class:`UnlearningConfig` of ``method`` (``unlearning`` + its overrides)."""
        from neuronscope.unlearning import UnlearningConfig

        fields_ = {**self.unlearning, **self.method_overrides.get(method, {}), "method": method}
        return UnlearningConfig.from_dict(fields_, source=f"robustness config: method {method}")

    def attack_configs(self) -> list:
        from neuronscope.attacks import AttackConfig

        out = [AttackConfig(kind="harmful", p=p, eval_mode=self.eval_mode, **self.harmful) for p in self.harmful_ps]
        if self.benign is not None:
            out.append(AttackConfig(kind="benign", eval_mode=self.eval_mode, **self.benign))
        return out

    @property
    def label(self) -> str:
        return self.model_label or _MODEL_LABELS.get(self.model.lower(), Path(self.model).name or self.model)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["harmful_ps"] = list(self.harmful_ps)
        if self.utility_tasks is not None:
            d["utility_tasks"] = list(self.utility_tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "robustness config") -> "RobustnessConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field '{unknown[0]}'")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "RobustnessConfig":
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: invalid JSON at line {exc.lineno}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a JSON object")
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def cpu_default(cls, **changes: Any) -> "RobustnessConfig":
        """A configuration that finishes on a 2-core CPU with the embedded SmolLM2 (hours, not days).

        One seed; unlearning lr 5e-5 (AdamW), ≤ 12 epochs, batch 8; harmful attacks with one lr
        (1e-5) and 5 epochs; benign attack with one lr (1e-5) on 200 Alpaca items, FS every 5
        steps; RS on 150 test items, US on the 137-question shipped utility set. Every reduction
        is written into the table note.
        """
        base = dict(
            unlearning={"lr": 5e-5, "max_epochs": 12, "batch_size": 8, "threshold": 0.33, "seed": 0},
            harmful={"lrs": (1e-5,), "seeds": (0,), "epochs": 5, "batch_size": 8},
            benign={"lrs": (1e-5,), "seeds": (0,), "epochs": 1, "batch_size": 8, "n_alpaca": 200, "eval_every": 5},
            test_limit=150,
        )
        base.update(changes)
        return cls(**base)

    def describe(self) -> str:
        """The generated table note: seeds, attack grids, data sizes, reductions."""
        atk = self.attack_configs()
        harmful = [a for a in atk if a.kind == "harmful"]
        benign = [a for a in atk if a.kind == "benign"]
        seeds = {len(a.seeds) for a in atk} or {1}
        where = "CPU" if self.device == "cpu" else self.device
        parts = [f"{'/'.join(str(s) for s in sorted(seeds))} seed{'s' if max(seeds) > 1 else ''} per attack on {where}"]
        if harmful:
            h = harmful[0]
            parts.append(
                f"harmful attack: lr {_grid(h.lrs)}, {h.epochs} epoch{'s' if h.epochs > 1 else ''}, "
                f"FS on the disjoint remainder after every {_every(h.eval_every)}"
                + _paper_diff(h.lrs, HARMFUL_LRS, len(h.seeds))
            )
        if benign:
            b = benign[0]
            parts.append(
                f"benign attack: {b.n_alpaca} Alpaca-format items, lr {_grid(b.lrs)}, "
                f"{b.epochs} epoch{'s' if b.epochs > 1 else ''}, FS after every {_every(b.eval_every)}"
                + _paper_diff(b.lrs, BENIGN_LRS, len(b.seeds), b.n_alpaca)
            )
        else:
            parts.append("benign attack not run")
        parts.append(f"RS on {f'the first {self.test_limit}' if self.test_limit else 'all'} test items")
        parts.append(
            "US on lm-eval " + ", ".join(self.utility_tasks)
            if self.utility_tasks
            else f"US on {f'the first {self.utility_limit}' if self.utility_limit else 'all'} shipped utility questions"
        )
        if self.forget_from_correct:
            parts.append("forget split drawn from facts the base model answers correctly")
        u = {**self.unlearning}
        if "lr" in u and not self.lrs:
            parts.append(f"unlearning lr {u['lr']:g}, early stop at FS ≤ {u.get('threshold', 0.33)}")
        text = "; ".join(parts)
        return f"{text}; {self.note}" if self.note else text


def _grid(lrs) -> str:
    return "{" + ", ".join(f"{x:g}" for x in lrs) + "}"


def _paper_diff(lrs, paper_lrs, n_seeds: int, n_items: int | None = None) -> str:
    """`` (reduced from the paper's ...)`` when the attack grid is smaller than paper §6.2.2."""
    diffs = []
    if tuple(lrs) != tuple(paper_lrs):
        diffs.append(f"lr {_grid(paper_lrs)}")
    if n_seeds < 3:
        diffs.append("3 seeds")
    if n_items is not None and n_items != 1000:
        diffs.append("1,000 items")
    return f" (paper: {', '.join(diffs)})" if diffs else ""


def _every(ev) -> str:
    if ev == "epoch":
        return "epoch"
    return "step" if ev == 1 else f"{ev} steps"


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


def _log(msg: str, progress: bool) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]neuronscope robustness[/] {msg}")


def _splits(config: RobustnessConfig, get_base: Callable, items, run_dir: Path, progress: bool):
    from neuronscope.data import FaithUnSplits, split_faithun
    from neuronscope.evaluation import mcqa_evaluate

    path = run_dir / "splits.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return FaithUnSplits.from_dict(saved["splits"], items), saved.get("base_accuracy")
    base_acc = None
    pool = None
    if config.forget_from_correct:
        _log(f"MCQA accuracy of the base model on all {len(items)} questions (forget pool)", progress)
        res = mcqa_evaluate(get_base(), items, mode=config.eval_mode, progress=progress, desc="base MCQA")
        base_acc = res.accuracy
        pool = res.correct_ids()
    splits = split_faithun(items, seed=config.split_seed, forget_pool=pool)
    write_json_atomic(path, {"splits": splits.to_dict(), "base_accuracy": base_acc})
    return splits, base_acc


def _evaluate(model, splits, config: RobustnessConfig, progress: bool) -> dict[str, float]:
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.utility import utility_score

    test = splits.test[: config.test_limit] if config.test_limit else splits.test
    out = {
        "fs": mcqa_evaluate(model, splits.forget, mode=config.eval_mode, progress=progress, desc="FS forget").accuracy,
        "rs": mcqa_evaluate(model, test, mode=config.eval_mode, progress=progress, desc="RS test").accuracy,
        "rs_retain": mcqa_evaluate(model, splits.retain, mode=config.eval_mode, progress=progress, desc="RS retain").accuracy,
    }
    if config.utility_tasks:
        us = utility_score(model, tasks=config.utility_tasks)
    else:
        from neuronscope.data import load_utility

        uitems = load_utility()
        if config.utility_limit:
            uitems = uitems[: config.utility_limit]
        us = utility_score(model, items=uitems, mode=config.eval_mode, progress=progress)
    out["us"] = us.score
    out["us_per_task"] = us.per_task
    return out


def _unlearn(base, splits, config: RobustnessConfig, method: str, mdir: Path, progress: bool, clone_fn):
    from neuronscope.unlearning import lr_search, unlearn

    ucfg = config.unlearning_config(method)
    grid = config.lrs.get(method)
    if grid:
        lr, res = lr_search(lambda: clone_fn(base), splits.forget, splits.retain, ucfg, grid, run_dir=mdir / "unlearn",
                            progress=progress)
        return res.model, res, (lr if lr is not None else res.config.lr)
    model = clone_fn(base)
    res = unlearn(model, splits.forget, splits.retain, ucfg, run_dir=mdir / "unlearn", progress=progress)
    return model, res, ucfg.lr


def _method_result(
    method: str, base, splits, config: RobustnessConfig, run_dir: Path, progress: bool, clone_fn
) -> dict[str, Any]:
    from neuronscope.attacks import run_attack

    mdir = run_dir / "methods" / method
    t0 = time.perf_counter()
    info: dict[str, Any] = {"method": method}
    if method == "default":
        model = base
    else:
        _log(f"unlearning with {METHOD_LABELS[method]}", progress)
        model, res, lr = _unlearn(base, splits, config, method, mdir, progress, clone_fn)
        info["unlearning"] = {
            "lr": lr,
            "reached": res.reached,
            "steps": res.steps,
            "epochs": res.epochs,
            "seconds_per_step": res.seconds_per_step,
            "forget_score": res.forget_score,
        }
    t1 = time.perf_counter()
    info["seconds_unlearning"] = t1 - t0
    _log(f"{METHOD_LABELS[method]}: evaluating FS / RS / US", progress)
    info["scores"] = _evaluate(model, splits, config, progress)
    t2 = time.perf_counter()
    info["seconds_evaluation"] = t2 - t1
    info["attacks"] = {}
    if method != "default":
        for acfg in config.attack_configs():
            _log(f"{METHOD_LABELS[method]}: {acfg.label} attack", progress)
            ta = time.perf_counter()
            try:
                ares = run_attack(model, splits.forget, acfg, run_dir=mdir / f"attack-{acfg.label}", progress=progress,
                                  clone_fn=clone_fn)
            except ConfigError as exc:
                # e.g. an unlearning run that did not reach the threshold leaves too small a pool
                _log(f"[yellow]{METHOD_LABELS[method]}: {acfg.label} attack not run: {exc}[/]", progress)
                info["attacks"][acfg.label] = {"score": None, "error": str(exc)}
                continue
            info["attacks"][acfg.label] = {
                "score": ares.score,
                "per_seed": {str(k): v for k, v in ares.per_seed().items()},
                "per_lr": {f"{k:g}": v for k, v in ares.per_lr().items()},
                "seconds": time.perf_counter() - ta,
            }
    info["seconds_attacks"] = time.perf_counter() - t2
    info["seconds_total"] = time.perf_counter() - t0
    return info


def _row(config: RobustnessConfig, info: dict[str, Any]) -> TableRow:
    s = info["scores"]
    atk = info.get("attacks", {})

    def harmful(p: float) -> float | None:
        a = atk.get(f"harmful-p{p:g}")
        return a.get("score") if a else None

    benign = atk.get("benign")
    return TableRow(
        model=config.label,
        method=METHOD_LABELS[info["method"]],
        fs=s["fs"],
        rs=s["rs"],
        us=s["us"],
        harmful_p01=harmful(0.1),
        harmful_p03=harmful(0.3),
        benign=benign.get("score") if benign else None,
    )


def table_from_run(run_dir: str | Path, config: RobustnessConfig | None = None) -> ResultsTable:
    """The results table from the method JSONs saved in ``run_dir`` (``neuronscope report``).

    Rows follow ``config.methods`` (default: the saved ``robustness_config.json``); methods
    without a saved result are left out.

    Raises:
        NeuronscopeError: No configuration or no method result in ``run_dir``.
    """
    run_dir = Path(run_dir)
    if config is None:
        cfg_path = run_dir / "robustness_config.json"
        if not cfg_path.exists():
            raise NeuronscopeError(f"{run_dir}: not a robustness run directory (robustness_config.json missing)")
        config = RobustnessConfig.load(cfg_path)
    rows = []
    skipped: list[str] = []
    for method in config.methods:
        p = run_dir / "methods" / method / "result.json"
        if p.exists():
            try:
                info = json.loads(p.read_text(encoding="utf-8"))
                rows.append(_row(config, info))
                for label, a in info.get("attacks", {}).items():
                    if a.get("error"):
                        skipped.append(f"{METHOD_LABELS[method]} {label} ({a['error']})")
                u = info.get("unlearning")
                if u and not u.get("reached"):
                    skipped.append(f"{METHOD_LABELS[method]} did not reach the FS threshold in {u['steps']} steps")
            except (json.JSONDecodeError, KeyError) as exc:
                raise NeuronscopeError(f"{p}: malformed method result ({exc})") from None
    if not rows:
        raise NeuronscopeError(f"{run_dir}: no method results (methods/<method>/result.json) to tabulate")
    note = config.describe()
    if skipped:
        note += "; notes: " + "; ".join(skipped)
    return ResultsTable(rows, title=config.title, note=note)


def run_robustness(
    config: RobustnessConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    base=None,
    clone_fn: Callable | None = None,
) -> ResultsTable:
    """Run every method of ``config`` into ``run_dir`` and write the results table.

    Args:
        config: The run configuration.
        run_dir: Run directory; created if missing. An existing one must hold the same
            configuration (``robustness_config.json``; only ``methods`` may differ); finished
            methods are reused.
        progress: Progress bars and log lines.
        base: An already loaded base model (default: ``load_model(config.model)``, loaded only
            when some result is missing).
        clone_fn: Model copier (default: the attacks' clone, over :func:`clone_model`).

    Returns:
        The :class:`ResultsTable` (also written to ``run_dir/table.{csv,md,html,json}``).

    Raises:
        NeuronscopeError: ``run_dir`` holds a run with another configuration; bad data or model.
        ConfigError: Bad configuration values (impossible p, unknown method, ...).
    """
    from neuronscope.attacks import _default_clone
    from neuronscope.data import load_faithun

    run_dir = Path(run_dir)
    clone_fn = clone_fn or _default_clone
    cfg_path = run_dir / "robustness_config.json"
    cfg_dict = json.loads(json.dumps(config.to_dict()))
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        # Fields added after a run was saved take their defaults.
        old = {**{f.name: cfg_dict[f.name] for f in fields(RobustnessConfig) if f.name not in old and
                  f.default is not MISSING and cfg_dict[f.name] == f.default}, **old}
        # The method list may change between invocations: each method's result is independent.
        changed = sorted(k for k in set(old) | set(cfg_dict) if k != "methods" and old.get(k) != cfg_dict.get(k))
        if changed:
            raise NeuronscopeError(
                f"{run_dir}: holds a robustness run with another configuration (field '{changed[0]}' differs); "
                "use a new run directory"
            )
    write_json_atomic(cfg_path, cfg_dict)

    t0 = time.perf_counter()
    loaded = [base]

    def get_base():
        if loaded[0] is None:
            from neuronscope.models import load_model

            _log(f"loading {config.model}", progress)
            loaded[0] = load_model(config.model, dtype=config.dtype, device=config.device)
        return loaded[0]

    items = load_faithun(config.data)
    splits, base_acc = _splits(config, get_base, items, run_dir, progress)
    _log(f"splits: {splits.summary()}", progress)
    for method in config.methods:
        path = run_dir / "methods" / method / "result.json"
        if path.exists():
            _log(f"{METHOD_LABELS[method]}: reusing {path}", progress)
            continue
        info = _method_result(method, get_base(), splits, config, run_dir, progress, clone_fn)
        write_json_atomic(path, info)
        table = table_from_run(run_dir, config)
        table.save(run_dir)
    table = table_from_run(run_dir, config)
    table.save(run_dir)
    summary = {
        "base_accuracy_all": base_acc,
        "splits": {k: len(v) for k, v in splits.to_dict().items()},
        "seconds_this_invocation": time.perf_counter() - t0,
        "table": table.to_dict(),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return table

"""One study runner and one configuration format for every multi-stage job (SPEC §17).

A *study* takes a base model and a FaithUn-format fact set through the paper's pipeline, one
stage after the other; ``neuronscope demo``, ``neuronscope study``, ``neuronscope report`` and the
figure/table scripts in ``analyses/`` are presets or stage selections of it::

    splits ─► known-fact probe ─► unlearn (lr search) per method ─► evaluate (FS/RS/US)
           ─► attribute (Eq. 1) ─► influence (D̃±) ─► logit lens ─► attacks ─► correlation
           ─► table (Table 1 layout) ─► report.html + summary.json

Every stage is cached in the run folder under a **key of its inputs** (the configuration fields
it reads and the keys of the stages it consumes): a rerun resumes from the finished stages, and a
changed input recomputes exactly the stages that depend on it.

Run-folder layout (the only one)::

    RUN/study.json                       the StudyConfig (one JSON schema, see configs/)
    RUN/splits.json                      forget/retain/test ids (readable by ``attack --data``)
    RUN/stages/<stage>.json              {"key": ..., "value": ...} per finished stage
    RUN/models/<method>/                 unlearned models (save_pretrained; ``load_model(dir)``)
    RUN/train/<method>/                  unlearning checkpoints and lr-search tries
    RUN/attributions/<model>[.<target>].safetensors   Eq. 1 attributions (prob has no suffix)
    RUN/influence/<method>[.<target>].safetensors     D̃± per neuron
    RUN/attacks/<method>/<attack label>/ relearning-attack runs
    RUN/table.{csv,md,html,json}, RUN/report.html, RUN/summary.json

Example::

    from neuronscope.study import Study, StudyConfig
    cfg = StudyConfig.load("configs/llama-3.2-3b-faithun.json")
    summary = Study(cfg, "runs/llama").run()
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from neuronscope.errors import ConfigError, NeuronscopeError, write_json_atomic

__all__ = ["StudyConfig", "Study", "run_study", "table_from_run", "METHOD_LABELS", "STAGES"]

#: Display names of methods (``default`` = the base model without unlearning).
METHOD_LABELS = {"default": "Default", "ga": "GA", "gd": "GD", "dpo": "DPO", "npo": "NPO", "rmu": "RMU",
                 "klue": "KLUE", "ssiuu": "SSIUU"}
#: Stages of :meth:`Study.run`, in order.
STAGES = ("evaluate", "attribute", "lens", "attack", "report")
_MODEL_LABELS = {"smollm2-135m-instruct": "SmolLM2-135M"}


# ------------------------------------------------------------------------------------ config


@dataclass
class DataConfig:
    """Which facts, and how they are split (paper App. B.1; SPEC §10).

    Attributes:
        file: FaithUn-format file or hub name (None = the embedded fact set).
        limit: Use only the first N questions (None = all).
        forget / retain / test: Split fractions (paper: 5 % / 10 % / 70 %).
        known_only: Draw the forget split only from facts the base model answers correctly.
        known_candidates: Score only a seeded sample of N questions for the known-fact pool
            (None = all; cheaper on a CPU).
        known_delta: Known-fact margin δ in nats (:func:`neuronscope.evaluation.known_facts`;
            None = :data:`neuronscope.evaluation.DEFAULT_DELTA`).
        seed: Split seed (None = the study seed).
        format: ``"faithun"`` (the study runner's) or ``"tofu"`` (read by ``neuronscope unlearn
            --config``; the TOFU pipeline is :mod:`neuronscope.tofu`).
        finetune: TOFU: fine-tuning before unlearning (``lr``, ``epochs``, ``batch_size``).
    """

    file: str | None = None
    limit: int | None = None
    forget: float = 0.05
    retain: float = 0.10
    test: float = 0.70
    known_only: bool = True
    known_candidates: int | None = None
    seed: int | None = None
    known_delta: float | None = None
    format: str = "faithun"
    finetune: dict[str, Any] | None = None


@dataclass
class EvalConfig:
    """FS/RS/US scoring (paper §6.2; SPEC §11).

    Attributes:
        test_limit: RS on the first N test items (None = all).
        utility_limit: US on the first N shipped utility items (None = all); with
            ``utility_tasks``, instances per lm-eval task.
        utility_tasks: lm-eval tasks for US instead of the shipped set (needs ``lm-eval``).
        mode: MCQA scoring, ``"likelihood"`` (option likelihood) or ``"generate"``.
        paraphrase: Also score the forget split's paraphrased questions.
        protocol: Knowledge protocol of every FS/RS/US, early stop, known-fact probe and attack
            (SPEC §10): ``"mcqa"`` (paper Table 3, options in the prompt) or ``"cloze"`` (the
            question alone, options ranked by their likelihood as the answer).
    """

    test_limit: int | None = None
    utility_limit: int | None = None
    utility_tasks: list[str] | None = None
    mode: str = "likelihood"
    paraphrase: bool = True
    protocol: str = "mcqa"


@dataclass
class AttributionSettings:
    """Eq. 1 attribution of the forget split (SPEC §5).

    Attributes:
        targets: ``"prob"`` = P(y|x) (paper) and/or ``"logprob"``; the first is the primary
            one (correlation, headline numbers).
        batch_size: Items per forward/backward.
        n_boot: Bootstrap resamples of the D̃−/D̃+ confidence interval over forget items
            (:func:`neuronscope.influence.influence_ci`; SPEC §16).
    """

    targets: list[str] = field(default_factory=lambda: ["prob"])
    batch_size: int = 8
    n_boot: int = 1000


@dataclass
class AttackSettings:
    """Relearning attacks (paper §6.2.2): :class:`~neuronscope.attacks.AttackConfig` fields.

    Attributes:
        harmful: Harmful-attack fields plus ``ps`` (the fractions p, paper {0.1, 0.3}); None = off.
        benign: Benign-attack fields; None = off.
        correlation: Attribute the model after the first harmful attack and correlate it with
            the unlearned model's attributions (paper Fig. 6).
    """

    harmful: dict[str, Any] | None = field(default_factory=lambda: {"ps": [0.1, 0.3]})
    benign: dict[str, Any] | None = field(default_factory=dict)
    correlation: bool = True


_SECTIONS = {"data": DataConfig, "evaluation": EvalConfig, "attribution": AttributionSettings,
             "attacks": AttackSettings}


@dataclass
class StudyConfig:
    """The one configuration of a study run (serialised to ``RUN/study.json``).

    Attributes:
        model: Base model name or path.
        model_label: Model name in the table (default: a short form of ``model``).
        dtype / device: Parameter dtype and torch device of every model.
        seed: Seed of splits, option orders, training and attacks.
        threads: torch CPU threads (0 = torch default).
        data / evaluation / attribution / attacks: The sections above.
        methods: ``{method: UnlearningConfig overrides}``, in row order; ``"lr"`` or an ascending
            ``"lrs"`` grid (the lowest reaching the threshold wins, paper §6.1).
        unlearning: UnlearningConfig fields shared by every method.
        lens: Run the logit lens (Fig. 4).
        checkpoints: ``{name: path or hub name}`` of already unlearned models to analyse like the
            methods' models (``neuronscope diagnose``); they are loaded, not trained.
        stages: Stages :meth:`Study.run` runs (subset of :data:`STAGES`; splits and unlearning
            always run).
        title / note: Table caption and an extra note appended to the generated one.
        figures: Per-script options of ``analyses/`` (``{"fig3": {...}, ...}``).
    """

    model: str = "smollm2-135m-instruct"
    model_label: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: {"gd": {}, "ssiuu": {}})
    unlearning: dict[str, Any] = field(default_factory=dict)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    lens: bool = True
    attacks: AttackSettings = field(default_factory=AttackSettings)
    checkpoints: dict[str, str] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    title: str = "Experimental results on the FaithUn-format set (paper Table 1 layout)"
    note: str = ""
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            v = getattr(self, name)
            if isinstance(v, dict):
                setattr(self, name, _from_dict(cls, v, name))
        self.methods = {str(m).lower(): dict(v or {}) for m, v in dict(self.methods).items()}
        self.validate()

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field and build every sub-configuration once.

        Raises:
            ConfigError: Unknown method or stage, bad unlearning/attack field, bad fraction, bad target.
        """
        for m in self.checkpoints:
            if m in self.methods or m == "default":
                raise ConfigError(f"checkpoints: name {m!r} is taken by a method or the base model")
        for m in self.methods:
            if m not in METHOD_LABELS or m == "default":
                raise ConfigError(f"methods: unknown method {m!r} (expected {', '.join(list(METHOD_LABELS)[1:])})")
            self.unlearning_config(m)
        for s in self.stages:
            if s not in STAGES:
                raise ConfigError(f"stages: unknown stage {s!r} (expected {', '.join(STAGES)})")
        if self.evaluation.protocol not in ("mcqa", "cloze"):
            raise ConfigError(f"evaluation.protocol: expected 'mcqa' or 'cloze', got {self.evaluation.protocol!r}")
        t = self.attribution.targets
        if not t or any(x not in ("prob", "logprob") for x in t):
            raise ConfigError(f"attribution.targets: expected 'prob' and/or 'logprob', got {list(t)}")
        for name in ("limit", "known_candidates"):
            _positive_or_none(getattr(self.data, name), f"data.{name}")
        for name in ("test_limit", "utility_limit"):
            _positive_or_none(getattr(self.evaluation, name), f"evaluation.{name}")
        self.attack_configs()

    def check_data_parallel(self) -> None:
        """Under several processes, refuse a method that does not run data-parallel (SPEC §15).

        Raises:
            ConfigError: One line naming the method (DPO, NPO, RMU, KLUE) when
                :func:`neuronscope.distributed.active`.
        """
        from neuronscope import distributed

        for m in self.methods:
            distributed.check_method(self.unlearning_config(m).method)

    def unlearning_config(self, method: str):
        """The :class:`~neuronscope.unlearning.UnlearningConfig` of ``method`` (shared fields + overrides)."""
        from neuronscope.unlearning import UnlearningConfig

        over = {k: v for k, v in self.methods.get(method, {}).items() if k not in ("lrs", "lams")}
        d = {"seed": self.seed, "protocol": self.evaluation.protocol, **self.unlearning, **over, "method": method}
        return UnlearningConfig.from_dict(d, source=f"methods.{method}")

    def lrs(self, method: str) -> list[float] | None:
        """The method's ascending learning-rate grid, or None (use its ``lr``)."""
        return self.methods.get(method, {}).get("lrs") or None

    def attack_configs(self) -> list:
        """The :class:`~neuronscope.attacks.AttackConfig` of every configured attack, harmful first."""
        from neuronscope.attacks import AttackConfig

        out = []
        h = self.attacks.harmful
        if h is not None:
            fields_ = {k: v for k, v in h.items() if k != "ps"}
            for p in h.get("ps", [0.1, 0.3]):
                out.append(AttackConfig.from_dict({"eval_mode": self.evaluation.mode, "protocol": self.evaluation.protocol,
                                                   **fields_, "kind": "harmful",
                                                   "p": p}, source="attacks.harmful"))
        if self.attacks.benign is not None:
            out.append(AttackConfig.from_dict({"eval_mode": self.evaluation.mode, "protocol": self.evaluation.protocol,
                                               **self.attacks.benign,
                                               "kind": "benign"}, source="attacks.benign"))
        return out

    @property
    def unlearned(self) -> list[str]:
        """Names of every unlearned model: the methods, then the given checkpoints."""
        return [*self.methods, *self.checkpoints]

    @property
    def label(self) -> str:
        return self.model_label or _MODEL_LABELS.get(self.model.lower(), Path(self.model).name or self.model)

    @property
    def split_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "study config") -> "StudyConfig":
        """Build from the JSON schema; keys starting with ``_`` are comments.

        Raises:
            ConfigError: Unknown field (named with ``source``) or a bad value.
        """
        d = {k: v for k, v in d.items() if not k.startswith("_")}
        try:
            return _from_dict(cls, d, source)
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None

    @classmethod
    def load(cls, path: str | Path) -> "StudyConfig":
        """Read a study JSON file (``configs/*.json``).

        Raises:
            ConfigError: Missing file, invalid JSON, not an object, unknown field, bad value.
        """
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: invalid JSON ({getattr(exc, 'lineno', '')} {exc.__class__.__name__})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a JSON object")
        return cls.from_dict(raw, source=str(p))

    def merged(self, over: dict[str, Any], *, source: str = "override") -> "StudyConfig":
        """A copy with ``over`` deep-merged (dicts merge, ``methods`` and lists replace)."""
        return StudyConfig.from_dict(deep_merge(self.to_dict(), over), source=source)

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def demo(cls, model: str = "smollm2-135m-instruct", seed: int = 0, quick: bool = False) -> "StudyConfig":
        """``neuronscope demo``: GD vs SSIUU on the embedded default in ≤ 15 min on a 2-core CPU.

        The smaller version of :meth:`cpu_study`: knowledge protocol ``cloze`` (the embedded
        SmolLM2-135M-Instruct does not know its facts under the paper's MCQA template: 38–43 % at
        chance 33 %, 14 % under every option order, SPEC §10), a seeded sample of 200 questions
        probed for known facts (margin ≥ δ); RS on the first 60 test items, US on 30 shipped
        utility items; both attribution targets with bootstrap CIs; one harmful attack (p = 0.3,
        lr 1e-5, 3 epochs) over 3 seeds with the Fig. 6 correlation; no benign attack; a verdict
        per method. ``quick`` uses the first 60 questions (for tests on tiny models).
        """
        return cls(
            model=model, seed=seed,
            data=DataConfig(limit=60 if quick else None, known_candidates=200),
            methods={"gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5}},
            unlearning={"max_epochs": 12, "batch_size": 8, "threshold": 0.33},
            evaluation=EvalConfig(test_limit=60, utility_limit=30, protocol="cloze"),
            attribution=AttributionSettings(targets=["prob", "logprob"]),
            attacks=AttackSettings(harmful={"ps": [0.3], "lrs": [1e-5], "seeds": [seed, seed + 1, seed + 2], "epochs": 3,
                                            "batch_size": 8}, benign=None),
            title="neuronscope demo results (Table 1 layout)",
        )

    @classmethod
    def cpu_study(cls, model: str = "smollm2-135m-instruct", seed: int = 0) -> "StudyConfig":
        """``neuronscope study`` without ``--config``: erase or hide, measured on the embedded default.

        GA, GD, NPO and SSIUU on the same split (protocol ``cloze``, known facts only), FS/RS/US
        with Wilson intervals, both attribution targets with bootstrap CIs, logit lens, harmful
        attacks at p = 0.1 and 0.3 (lr 1e-5, 3 epochs) and the benign attack (100 Alpaca-format
        items, lr 1e-5, 1 epoch) over 3 seeds each, GD vs SSIUU paired by seed, and a verdict per
        method; sized for about an hour on a 2-core CPU. Every reduction from the paper's grids
        is written into the table note.
        """
        seeds = [seed, seed + 1, seed + 2]
        return cls(
            model=model, seed=seed,
            data=DataConfig(known_candidates=200),
            methods={"ga": {}, "gd": {}, "npo": {}, "ssiuu": {}},
            unlearning={"lr": 5e-5, "max_epochs": 12, "batch_size": 8, "threshold": 0.33},
            evaluation=EvalConfig(test_limit=150, protocol="cloze"),
            attribution=AttributionSettings(targets=["prob", "logprob"]),
            attacks=AttackSettings(
                harmful={"ps": [0.1, 0.3], "lrs": [1e-5], "seeds": seeds, "epochs": 3, "batch_size": 8},
                benign={"lrs": [1e-5], "seeds": seeds, "epochs": 1, "batch_size": 8, "n_alpaca": 100, "eval_every": 5}),
            title="Erase or hide? GA, GD, NPO and SSIUU on SmolLM2-135M-Instruct (paper Table 1 layout)",
        )

    @classmethod
    def table1_cpu(cls, **changes: Any) -> "StudyConfig":
        """Table 1 on a 2-core CPU with the embedded SmolLM2 (``neuronscope report --profile cpu``).

        One seed; unlearning lr 5e-5 (AdamW), ≤ 12 epochs, batch 8; harmful attacks with one lr
        (1e-5) and 5 epochs; benign attack with one lr (1e-5) on 200 Alpaca items, FS every 5
        steps; RS on 150 test items, US on the shipped utility set. No attribution or lens.
        """
        cfg = cls(
            methods={"ga": {}, "gd": {}, "npo": {}, "ssiuu": {}},
            unlearning={"lr": 5e-5, "max_epochs": 12, "batch_size": 8, "threshold": 0.33},
            evaluation=EvalConfig(test_limit=150, paraphrase=False),
            attacks=AttackSettings(
                harmful={"ps": [0.1, 0.3], "lrs": [1e-5], "seeds": [0], "epochs": 5, "batch_size": 8},
                benign={"lrs": [1e-5], "seeds": [0], "epochs": 1, "batch_size": 8, "n_alpaca": 200, "eval_every": 5},
                correlation=False),
            stages=["evaluate", "attack", "report"],
        )
        return cfg.merged(changes) if changes else cfg

    def describe(self) -> str:
        """The generated table note: seeds, attack grids, data sizes, every reduction from the paper."""
        from neuronscope.attacks import BENIGN_LRS, HARMFUL_LRS

        atk = self.attack_configs() if "attack" in self.stages else []
        harmful = [a for a in atk if a.kind == "harmful"]
        benign = [a for a in atk if a.kind == "benign"]
        seeds = {len(a.seeds) for a in atk} or {1}
        where = "CPU" if self.device == "cpu" else self.device
        parts = [f"{'/'.join(str(s) for s in sorted(seeds))} seed{'s' if max(seeds) > 1 else ''} per attack on {where}"]
        if harmful:
            h = harmful[0]
            parts.append(f"harmful attack: lr {_grid(h.lrs)}, {h.epochs} epoch{'s' if h.epochs > 1 else ''}, FS on the "
                         f"disjoint remainder after every {_every(h.eval_every)}" + _paper_diff(h.lrs, HARMFUL_LRS, len(h.seeds)))
        if benign:
            b = benign[0]
            parts.append(f"benign attack: {b.n_alpaca} Alpaca-format items, lr {_grid(b.lrs)}, {b.epochs} epoch"
                         f"{'s' if b.epochs > 1 else ''}, FS after every {_every(b.eval_every)}"
                         + _paper_diff(b.lrs, BENIGN_LRS, len(b.seeds), b.n_alpaca))
        else:
            parts.append("benign attack not run")
        ev = self.evaluation
        parts.append(f"RS on {f'the first {ev.test_limit}' if ev.test_limit else 'all'} test items")
        parts.append("US on lm-eval " + ", ".join(ev.utility_tasks) if ev.utility_tasks else
                     f"US on {f'the first {ev.utility_limit}' if ev.utility_limit else 'all'} shipped utility questions")
        if self.data.known_only:
            parts.append("forget split drawn from facts the base model answers correctly")
        u = self.unlearning
        if "lr" in u and not any(self.lrs(m) for m in self.methods):
            parts.append(f"unlearning lr {u['lr']:g}, early stop at FS ≤ {u.get('threshold', 0.33)}")
        text = "; ".join(parts)
        return f"{text}; {self.note}" if self.note else text


def _from_dict(cls, d: dict[str, Any], source: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected an object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(k for k in d if k not in known and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"{source}: unknown field '{unknown[0]}'")
    try:
        return cls(**{k: v for k, v in d.items() if k in known})
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _positive_or_none(v: Any, name: str) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ConfigError(f"{name}: must be a positive integer or null, got {v!r}")


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated recursively with ``over`` (dicts merge; ``methods`` and everything else replace)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "methods":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _grid(lrs) -> str:
    return "{" + ", ".join(f"{x:g}" for x in lrs) + "}"


def _paper_diff(lrs, paper_lrs, n_seeds: int, n_items: int | None = None) -> str:
    diffs = []
    if tuple(lrs) != tuple(paper_lrs):
        diffs.append(f"lr {_grid(paper_lrs)}")
    if n_seeds < 3:
        diffs.append("3 seeds")
    if n_items is not None and n_items != 1000:
        diffs.append("1,000 items")
    return f" (paper: {', '.join(diffs)})" if diffs else ""


def _every(ev) -> str:
    return "epoch" if ev == "epoch" else ("step" if ev == 1 else f"{ev} steps")


def _label(name: str) -> str:
    """Display name of a model: the method's label, or the checkpoint's own name."""
    return METHOD_LABELS.get(name, name)


def _fingerprint(path: str) -> str:
    """Size and mtime of a local checkpoint's files (a hub name is its own fingerprint)."""
    p = Path(path)
    if not p.exists():
        return path
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    return _key([(str(f.relative_to(p) if p.is_dir() else f.name), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in files if f.is_file()])


def _key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable stage inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ runner


class Study:
    """The resumable stage runner of one :class:`StudyConfig` in one run folder.

    Each stage method computes its result once, stores it under ``RUN/stages`` (or as a file)
    with the key of its inputs, and returns the cached value on the next call with the same
    key. Models other than the base are reloaded from ``RUN/models`` when needed, and at most
    one of them is kept in memory besides the base.

    Args:
        config: The study configuration.
        out: Run folder (created; ``study.json`` is written on the first stage).
        progress: Progress bars and log lines.
        base: An already loaded base model (default: ``load_model(config.model)`` on first use).
    """

    def __init__(self, config: StudyConfig, out: str | Path, *, progress: bool = True, base=None) -> None:
        from neuronscope import distributed

        self.config = config
        self.out = Path(out)
        # Data parallelism (SPEC §15): every process runs every stage (training and attribution
        # sharded, evaluation replicated); the main process alone reads the cache, writes and logs.
        self._main = distributed.is_main()
        self.progress = progress and self._main
        self._base = base
        self._loaded: tuple[str, Any] | None = None
        self._keys: dict[str, str] = {}
        self.known: dict | None = None
        self._items = None
        self._splits = None
        self.timings: dict[str, float] = {}

    # -- plumbing --------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.progress:
            from rich.console import Console

            Console(stderr=True).print(f"[bold cyan]neuronscope[/] {msg}")

    def _get(self, name: str, key: str):
        """The cached value of stage ``name`` under ``key`` (None: compute it); every process gets the main's."""
        from neuronscope import distributed

        return distributed.from_main(lambda: self._read_stage(name, key))

    def _read_stage(self, name: str, key: str):
        p = self.out / "stages" / f"{name}.json"
        if p.exists():
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None  # a damaged cache entry is recomputed
            if isinstance(d, dict) and d.get("key") == key:
                return d["value"]
        return None

    def _put(self, name: str, key: str, value):
        if self._main:
            write_json_atomic(self.out / "stages" / f"{name}.json", {"key": key, "value": value})
        return value

    @property
    def base(self):
        """The base model (loaded on first use)."""
        if self._base is None:
            from neuronscope.models import load_model

            c, t = self.config, time.perf_counter()
            self._base = load_model(c.model, dtype=c.dtype, device=c.device, seed=c.seed)
            self.log(f"loaded {c.model} ({time.perf_counter() - t:.0f} s)")
        return self._base

    @property
    def items(self) -> list:
        """The configured fact set (first ``data.limit`` questions)."""
        if self._items is None:
            if self.config.data.format != "faithun":
                raise ConfigError(f"data.format: the study runner reads FaithUn-format data, got "
                                  f"{self.config.data.format!r} (TOFU runs: neuronscope unlearn --config)")
            from neuronscope.data import load_data

            self._data = load_data(self.config.data.file)
            if not self._data.has_options:
                raise ConfigError(f"data.file: {self.config.data.file} has no false options: the study runner scores "
                                  "knowledge by ranking options (TOFU runs: neuronscope unlearn --config)")
            items = self._data.items
            self._items = items[: self.config.data.limit] if self.config.data.limit else items
        return self._items

    def model_key(self, name: str) -> str:
        """The key of a model: the base's configuration, or the unlearning stage that makes it."""
        c = self.config
        if name == "default":
            return _key("model", c.model, c.dtype, c.device, c.seed)
        if name in c.checkpoints and name not in self._keys:
            self._keys[name] = _key("checkpoint", c.checkpoints[name], _fingerprint(c.checkpoints[name]), c.dtype, c.device)
        if name not in self._keys:
            self.splits()
            self._keys[name] = _key("unlearn", self._keys["splits"], self.model_key("default"),
                                    c.unlearning_config(name).to_dict(), c.lrs(name))
        return self._keys[name]

    def model(self, name: str):
        """The base (``"default"``) or an unlearned model (trained or reloaded from ``RUN/models``)."""
        if name == "default":
            return self.base
        if self._loaded and self._loaded[0] == name:
            return self._loaded[1]
        return self.unlearned(name)

    def _release(self) -> None:
        """Drop the kept unlearned model (at most one is held besides the base)."""
        self._loaded = None
        gc.collect()

    # -- stages ----------------------------------------------------------------------------
    def splits(self):
        """Forget/retain/test splits; with ``data.known_only`` the forget split holds known facts only.

        The known-fact probe scores the base model (MCQA) on all questions or a seeded sample of
        ``data.known_candidates``; the pool is used when it holds ≥ 3 facts. Cached as stage
        ``splits`` and written to ``RUN/splits.json``.
        """
        if self._splits is not None:
            return self._splits
        from neuronscope.data import FaithUnSplits, split_faithun
        from neuronscope.evaluation import DEFAULT_DELTA, known_facts

        d, c = self.config.data, self.config
        key = _key("splits", asdict(d), c.split_seed, c.evaluation.mode, c.evaluation.protocol,
                   self.model_key("default") if d.known_only else None, [i.id for i in self.items])
        self._keys["splits"] = key
        v = self._get("splits", key)
        if v is None:
            known = None
            if d.known_only:
                cands = list(self.items)
                if d.known_candidates and d.known_candidates < len(cands):
                    cands = random.Random(c.split_seed).sample(cands, d.known_candidates)
                delta = DEFAULT_DELTA if d.known_delta is None else d.known_delta
                self.log(f"known-fact probe ({c.evaluation.protocol}, margin ≥ {delta:g} nats) of the base model on "
                         f"{len(cands)} candidate questions (forget pool)")
                kf = known_facts(self.base, cands, c.evaluation.protocol, delta, progress=self.progress)
                known = {**{k: v for k, v in kf.to_dict().items() if k in ("protocol", "delta", "accuracy", "fraction")},
                         "n_candidates": len(cands), "correct_ids": sorted(kf.known_ids())}
            pool = set(known["correct_ids"]) if known and len(known["correct_ids"]) >= 3 else None
            sp = self._data.make_splits(split_faithun(self.items, forget=d.forget, retain=d.retain, test=d.test,
                                                      seed=c.split_seed, forget_pool=pool))
            v = self._put("splits", key, {"splits": sp.to_dict(), "known": known})
            self._main and write_json_atomic(self.out / "splits.json", {"seed": c.split_seed, "protocol": c.evaluation.protocol,
                                                          "known": {k: x for k, x in (known or {}).items()
                                                                    if k != "correct_ids"} or None,
                                                          "splits": sp.to_dict()})
        self.known = v["known"]
        self._splits = FaithUnSplits.from_dict(v["splits"], self.items)
        self.log(f"splits: {self._splits.summary()}")
        return self._splits

    def use_splits(self, splits, known: dict | None = None) -> None:
        """Use given splits instead of drawing them (``neuronscope diagnose``: the user's forget set).

        The splits' key is the ids of their items, so every cached stage stays tied to them.
        """
        self._splits = splits
        self._items = [*splits.forget, *splits.retain, *splits.test, *splits.held_out]
        self._keys["splits"] = _key("given-splits", {k: [i.id for i in getattr(splits, k)]
                                                     for k in ("forget", "retain", "test", "held_out")})
        self.known = known

    def unlearned(self, method: str):
        """The base model unlearned with ``method`` (stage ``unlearn_<method>``; model in ``RUN/models``).

        With an ``lrs`` grid the lowest learning rate reaching the threshold wins (paper §6.1).
        """
        from neuronscope.models import clone_model, load_model
        from neuronscope.unlearning import lr_search, unlearn

        if method in self.config.checkpoints:
            if not (self._loaded and self._loaded[0] == method):
                self._release()
                c = self.config
                self.log(f"loading {method}: {c.checkpoints[method]}")
                self._loaded = (method, load_model(c.checkpoints[method], dtype=c.dtype, device=c.device))
            return self._loaded[1]
        sp = self.splits()
        ucfg = self.config.unlearning_config(method)
        grid = self.config.lrs(method)
        key = self.model_key(method)
        mdir = self.out / "models" / method
        from neuronscope import distributed

        info = distributed.from_main(lambda: (self._read_stage(f"unlearn_{method}", key)
                                              if (mdir / "config.json").exists() else None))
        if info is not None:
            if not (self._loaded and self._loaded[0] == method):
                self._release()
                c = self.config
                self._loaded = (method, load_model(str(mdir), dtype=c.dtype, device=c.device))
            return self._loaded[1]
        self._release()
        self.log(f"unlearning with {_label(method)} ({'lr grid ' + _grid(grid) if grid else f'lr {ucfg.lr:g}'}, "
                 f"≤ {ucfg.max_epochs} epochs)")
        t = time.perf_counter()
        if grid:
            lr, res = lr_search(lambda: clone_model(self.base), sp.forget, sp.retain, ucfg, grid,
                                run_dir=self.out / "train" / method, progress=self.progress)
            model, lr = res.model, (lr if lr is not None else res.config.lr)
        else:
            model = clone_model(self.base)
            res = unlearn(model, sp.forget, sp.retain, ucfg, run_dir=self.out / "train" / method, progress=self.progress)
            lr = ucfg.lr
        if self._main:
            model.save(mdir)
        info = {"reached": res.reached, "steps": res.steps, "epochs": res.epochs, "seconds_per_step": res.seconds_per_step,
                "lr": lr, "forget_score": res.forget_score, "initial_forget_score": res.initial_forget_score,
                "seconds": round(time.perf_counter() - t, 1), "history": res.history}
        self._put(f"unlearn_{method}", key, info)
        self._loaded = (method, model)
        return model

    def unlearning_info(self, method: str) -> dict:
        """The unlearning stage's record of ``method`` (lr, reached, steps, history, ...); trains if missing."""
        if method in self.config.checkpoints:
            return {"reached": None, "steps": None, "epochs": None, "seconds_per_step": None, "lr": None, "history": [],
                    "checkpoint": self.config.checkpoints[method]}
        info = self._get(f"unlearn_{method}", self.model_key(method))
        if info is None:
            self.unlearned(method)
            info = self._get(f"unlearn_{method}", self.model_key(method))
        return info

    def evaluate(self, name: str) -> dict[str, Any]:
        """FS (forget, forget paraphrases), RS (retain, test) and US of a model (paper §6.2; stage ``eval_<name>``).

        Returns:
            Accuracies in [0, 1] by set: ``forget``, ``forget_paraphrase``, ``retain``, ``test``,
            ``utility`` (+ ``utility_per_task`` with lm-eval tasks); ``intervals``: the Wilson 95 %
            interval of each (:func:`neuronscope.stats.accuracy_interval`); ``protocol``.
        """
        from neuronscope.data import load_utility
        from neuronscope.evaluation import knowledge_evaluate, paraphrased
        from neuronscope.stats import accuracy_interval
        from neuronscope.utility import utility_score

        sp, ev = self.splits(), self.config.evaluation
        key = _key("eval", self.model_key(name), self._keys["splits"], asdict(ev))
        v = self._get(f"eval_{name}", key)
        if v is not None:
            return v
        model = self.model(name)
        uitems = load_utility()
        sets = {"forget": sp.forget, "forget_paraphrase": paraphrased(sp.forget) if ev.paraphrase else [],
                "retain": sp.retain, "test": sp.test[: ev.test_limit] if ev.test_limit else sp.test,
                "utility": [] if ev.utility_tasks else (uitems[: ev.utility_limit] if ev.utility_limit else uitems)}
        v, ci = {}, {}
        for s_, items in sets.items():
            if items:
                r = knowledge_evaluate(model, items, protocol=ev.protocol, mode=ev.mode, progress=self.progress,
                                       desc=f"eval {s_}")
                v[s_], ci[s_] = r.accuracy, accuracy_interval(r.correct).to_dict()
        if ev.utility_tasks:
            us = utility_score(model, tasks=ev.utility_tasks, limit=ev.utility_limit or 500)
            v["utility"], v["utility_per_task"] = us.score, us.per_task
        v["intervals"], v["protocol"] = ci, ev.protocol
        self.log(f"{_label(name)} ({ev.protocol}): " + ", ".join(
            f"{k} {100 * x:.1f}%" for k, x in v.items() if isinstance(x, float)))
        return self._put(f"eval_{name}", key, v)

    def attribution(self, name: str, target: str | None = None, *, model=None, model_key: str | None = None):
        """Eq. 1 attributions of a model on the forget split (``RUN/attributions/<name>[.<target>].safetensors``).

        Args:
            name: ``"default"``, a method, or any label when ``model`` and ``model_key`` are given.
            target: ``"prob"`` or ``"logprob"`` (default: the first configured target).
        """
        from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute

        target = target or self.config.attribution.targets[0]
        sp = self.splits()
        key = _key("attr", model_key or self.model_key(name), self._keys["splits"], target, self.config.attribution.batch_size)
        path = self.out / "attributions" / f"{name}{'' if target == 'prob' else '.' + target}.safetensors"
        from neuronscope import distributed

        if distributed.from_main(lambda: path.exists() and NeuronAttribution.load(path).meta.get("study_key") == key):
            return NeuronAttribution.load(path)
        self.log(f"attribution (Eq. 1, target {target}) of {name} on the forget set")
        a = attribute(model if model is not None else self.model(name), [i.question for i in sp.forget],
                      [i.answer for i in sp.forget], AttributionConfig(batch_size=self.config.attribution.batch_size,
                                                                       target=target), progress=self.progress)
        a.meta["model"], a.meta["study_key"] = name, key
        if self._main:
            a.save(path)
        return a

    def influence(self, method: str, target: str | None = None):
        """D̃± of ``method`` against the base (paper Eq. 2, 4, 5), saved to ``RUN/influence``."""
        from neuronscope.influence import influence_variation

        target = target or self.config.attribution.targets[0]
        var = influence_variation(self.attribution("default", target), self.attribution(method, target),
                                  label=_label(method))
        if self._main:
            var.save(self.out / "influence" / f"{method}{'' if target == 'prob' else '.' + target}.safetensors")
        return var

    def lens(self, name: str) -> dict:
        """Logit lens of a model on the forget split (paper Fig. 4; stage ``lens_<name>``)."""
        from neuronscope.lens import logit_lens

        label = _label(name)
        sp = self.splits()
        key = _key("lens", self.model_key(name), self._keys["splits"], self.config.seed)
        v = self._get(f"lens_{name}", key)
        if v is None:
            self.log(f"logit lens (Fig. 4) of {label}")
            v = self._put(f"lens_{name}", key, logit_lens(self.model(name), sp.forget, seed=self.config.seed,
                                                          label=label, progress=self.progress).to_dict())
        return v

    def attack(self, method: str, acfg, *, correlate: bool = False, tag: str = "") -> dict:
        """A relearning attack on an unlearned model (paper §6.2.2; stage ``attack_<method>_<label>``).

        With ``correlate``, the model after the last attack run is attributed (``RUN/attributions/
        <method>-attacked``) and correlated with the unlearned model's attributions (Fig. 6). ``tag``
        names a second attack of the same kind and p (e.g. another lr grid) apart.

        Returns:
            ``{"result": AttackResult dict, "score", "per_seed", "per_lr", "seconds", "correlation"}``;
            ``{"score": None, "error": msg}`` when the attack cannot run (e.g. too small a pool).
        """
        from neuronscope.attacks import run_attack
        from neuronscope.correlation import attribution_correlation
        from neuronscope.models import clone_model

        sp = self.splits()
        key = _key("attack", self.model_key(method), self._keys["splits"], acfg.to_dict(), correlate,
                   self.config.attribution if correlate else None)
        label = acfg.label + (f"-{tag}" if tag else "")
        name = f"attack_{method}_{label}"
        v = self._get(name, key)
        if v is not None:
            return v
        self.log(f"{_label(method)}: {acfg.label} attack")
        attacked: list = []

        def clone_fn(m):
            c = clone_model(m)
            attacked[:] = [c]
            return c

        t = time.perf_counter()
        try:
            res = run_attack(self.model(method), sp.forget, acfg, run_dir=self.out / "attacks" / method / label,
                             progress=self.progress, clone_fn=clone_fn)
        except ConfigError as exc:  # e.g. an unlearning run that left too small a pool
            self.log(f"[yellow]{_label(method)}: {acfg.label} attack not run: {exc}[/]")
            return self._put(name, key, {"score": None, "error": str(exc)})
        v = {"result": res.to_dict(), "score": res.score, "per_seed": {str(k): x for k, x in res.per_seed().items()},
             "per_lr": {f"{k:g}": x for k, x in res.per_lr().items()}, "seconds": round(time.perf_counter() - t, 1),
             "correlation": None}
        if correlate and attacked:
            after = self.attribution(f"{method}-attacked{'-' + tag if tag else ''}", model=attacked[-1], model_key=key)
            v["attacked_attribution"] = after.meta["study_key"]
            v["correlation"] = attribution_correlation(
                self.attribution(method), after, label_a=f"{_label(method)} unlearned",
                label_b=f"{_label(method)} after attack").to_dict()
        attacked.clear()
        return self._put(name, key, v)

    # -- the whole run ---------------------------------------------------------------------
    def influence_interval(self, method: str, target: str | None = None) -> dict:
        """Bootstrap CI over forget items of Σ top-100 D̃+, D̃− and D̃−/D̃+ (SPEC §16; stage ``influence_ci_*``)."""
        from neuronscope.influence import influence_ci

        target = target or self.config.attribution.targets[0]
        a = self.config.attribution
        key = _key("influence_ci", self.model_key(method), self._keys["splits"], target, a.batch_size, a.n_boot,
                   self.config.seed)
        name = f"influence_ci_{method}_{target}"
        v = self._get(name, key)
        if v is None:
            self.log(f"bootstrap CI of D̃−/D̃+ ({a.n_boot} resamples over forget items) for {_label(method)}, {target}")
            ci = influence_ci(self.attribution("default", target), self.attribution(method, target), n_boot=a.n_boot,
                              seed=self.config.seed, label=_label(method))
            v = self._put(name, key, {**ci.to_dict(), "meta": {**ci.to_dict().get("meta", {}), "target": target}})
        return v

    def verdicts(self, evals: dict, cis: dict, lens: dict, attacks: dict) -> dict:
        """``erased`` / ``hidden`` / ``inconclusive`` per method from the rule of :mod:`neuronscope.verdict`.

        Influence evidence uses the ``logprob`` target when it was attributed (the verdict's
        documented choice), else the primary target.
        """
        from neuronscope.attacks import AttackResult
        from neuronscope.verdict import collect_evidence, verdict

        target = "logprob" if "logprob" in cis else (next(iter(cis)) if cis else None)
        out = {}
        for m in self.config.unlearned:
            harmful = [AttackResult.from_dict(a["result"]) for a in attacks.get(m, {}).values()
                       if a.get("result") and a["result"]["config"]["kind"] == "harmful"]
            corr = next((a["correlation"] for a in attacks.get(m, {}).values() if a.get("correlation")), None)
            not_run = {label: a.get("error") or "not run" for label, a in attacks.get(m, {}).items()
                       if not a.get("result") and label.startswith("harmful")}
            ev = collect_evidence(
                m, attacks_not_run=not_run, influence=cis[target][m] if target else None, lens=lens.get(_label(m)),
                lens_base=lens.get("Default"), attacks=harmful,
                fs_base=(evals.get("default") or {}).get("forget"),
                fs_unlearned=(evals.get(m) or {}).get("intervals", {}).get("forget"), correlation=corr)
            out[m] = verdict(ev)
        return out

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> dict:
        """Run the configured stages and write ``table.*``, ``verdict.json``, ``report.html``, ``summary.json``.

        Returns:
            The summary (also in ``RUN/summary.json``; its contract is in the README).

        Raises:
            NeuronscopeError: Bad data or model. A run folder holding another configuration is
                *not* an error: changed inputs recompute the stages that depend on them.
        """
        c, t0 = self.config, time.time()
        if c.threads:
            import torch

            torch.set_num_threads(c.threads)
        from neuronscope import distributed

        c.check_data_parallel()
        if self._main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out / "study.json", c.to_dict())
        stages = set(c.stages)
        t = self._tick(None, t0)
        self.splits()
        t = self._tick("splits", t)
        names = ["default", *c.unlearned]
        evals = {n: self.evaluate(n) for n in names} if "evaluate" in stages else {}
        if not evals:  # unlearning always runs
            for m in c.unlearned:
                self.unlearning_info(m)
        t = self._tick("unlearning_and_evaluation", t)
        by_target: dict[str, dict] = {}
        cis: dict[str, dict] = {}
        if "attribute" in stages:
            for target in c.attribution.targets:
                by_target[target] = {_label(m): self.influence(m, target) for m in c.unlearned}
                cis[target] = {m: self.influence_interval(m, target) for m in c.unlearned}
        t = self._tick("attribution", t)
        lens = {_label(n): self.lens(n) for n in names} if "lens" in stages and c.lens else {}
        t = self._tick("logit_lens", t)
        attacks: dict[str, dict] = {}
        if "attack" in stages:
            for m in c.unlearned:
                first_harmful = True
                for acfg in c.attack_configs():
                    corr = c.attacks.correlation and acfg.kind == "harmful" and first_harmful and "attribute" in stages
                    first_harmful = first_harmful and acfg.kind != "harmful"
                    attacks.setdefault(m, {})[acfg.label] = self.attack(m, acfg, correlate=corr)
        t = self._tick("attacks", t)
        verdicts = self.verdicts(evals, cis, lens, attacks) if (evals or cis or lens or attacks) else {}
        table = self.table(evals, attacks)
        summary = self.summary(evals, by_target, cis, lens, attacks, verdicts, table)
        if not self._main:  # data parallelism: the main process writes the results
            distributed.barrier()
            return summary
        if verdicts:
            from neuronscope.verdict import write_verdicts

            write_verdicts(self.out / "verdict.json", verdicts)
        table.save(self.out)
        if "report" in stages:
            summary["report"] = str(_write_report(self, summary, by_target, lens, table, verdicts))
        self._tick("report", t)
        self.timings["total"] = round(time.time() - t0, 1)
        write_json_atomic(self.out / "summary.json", summary)
        distributed.barrier()
        for m, v in verdicts.items():
            self.log(f"verdict {_label(m)}: [bold]{v.label}[/] ({v.rule})")
        self.log(f"done in {self.timings['total']:.0f} s")
        return summary

    def _tick(self, name: str | None, since: float) -> float:
        if name:
            self.timings[name] = round(time.time() - since, 1)
        return time.time()

    def table(self, evals: dict, attacks: dict):
        """The results table (paper Table 1 layout): FS = forget, RS = test, US = utility accuracy."""
        from neuronscope.tables import ResultsTable, TableRow

        rows, notes = [], []
        for name, ev in evals.items():
            atk = attacks.get(name, {})
            score = lambda label: (atk.get(label) or {}).get("score")  # noqa: E731
            rows.append(TableRow(model=self.config.label, method=_label(name), fs=ev.get("forget"),
                                 rs=ev.get("test"), us=ev.get("utility"), harmful_p01=score("harmful-p0.1"),
                                 harmful_p03=score("harmful-p0.3"), benign=score("benign")))
            notes += [f"{_label(name)} {k} ({a['error']})" for k, a in atk.items() if a.get("error")]
            if name != "default":
                u = self.unlearning_info(name)
                if u["reached"] is False:
                    notes.append(f"{_label(name)} did not reach the FS threshold in {u['steps']} steps")
        note = (f"knowledge protocol {self.config.evaluation.protocol}; " + self.config.describe()
                + ("; notes: " + "; ".join(notes) if notes else ""))
        return ResultsTable(rows, title=self.config.title, note=note)

    def summary(self, evals, by_target, cis, lens, attacks, verdicts, table) -> dict:
        """The machine-readable summary (``RUN/summary.json``; contract in the README)."""
        from neuronscope.attacks import AttackResult
        from neuronscope.stats import attack_summary, compare_attacks

        c = self.config
        primary = c.attribution.targets[0]
        known = self.known or {}
        unl = {}
        for m in c.unlearned:
            u = self.unlearning_info(m)
            unl[m] = {**{k: u[k] for k in ("reached", "steps", "epochs", "seconds_per_step", "lr")},
                      **_penalty_share(u["history"], c.unlearning_config(m).lam if m == "ssiuu" else 0.0)}
        atk_summary: dict[str, dict] = {}
        results: dict[str, dict] = {}
        for m, per in attacks.items():
            for label, a in per.items():
                if a.get("result"):
                    res = AttackResult.from_dict(a["result"])
                    results.setdefault(m, {})[label] = res
                    atk_summary.setdefault(m, {}).setdefault(res.config.kind, {})[label] = attack_summary(res)
                else:
                    atk_summary.setdefault(m, {}).setdefault("not_run", {})[label] = a.get("error")
        comparisons = {}
        if "gd" in results and "ssiuu" in results:
            for label in results["gd"]:
                common = set(results["gd"][label].per_seed()) & set(results["ssiuu"].get(label, None).per_seed()) \
                    if label in results["ssiuu"] else set()
                if len(common) >= 2:  # a paired test needs at least two seeds
                    comparisons[f"gd_vs_ssiuu:{label}"] = compare_attacks(
                        results["gd"][label], results["ssiuu"][label], label_a="GD", label_b="SSIUU",
                        alternative="greater", seed=c.seed).to_dict()
        return {
            "model": c.model,
            "protocol": c.evaluation.protocol,
            "n_questions": len(self.items),
            "known_facts": {k: v for k, v in known.items() if k != "correct_ids"},
            "splits": {k: len(getattr(self._splits, k)) for k in ("forget", "retain", "test", "held_out")},
            "accuracy": {n: {s: {"value": v, **ev["intervals"].get(s, {})} for s, v in ev.items() if isinstance(v, float)}
                         for n, ev in evals.items()},
            "unlearning": unl,
            "attribution_target": primary,
            "influence_top100": {k: v.summary(100) for k, v in by_target.get(primary, {}).items()},
            "influence_top100_by_target": {t: {k: v.summary(100) for k, v in vs.items()} for t, vs in by_target.items()},
            "influence_ci": cis,
            "answer_probability": {n: {"mean": float(a.target_value.mean()), "median": float(a.target_value.median())}
                                   for n in (["default", *c.unlearned] if "prob" in by_target else [])
                                   for a in [self.attribution(n, "prob")]},
            "logit_lens": lens,
            "attacks": atk_summary,
            "attack_comparisons": comparisons,
            "attribution_correlation": {m: a["correlation"] for m, per in attacks.items() for a in per.values()
                                        if a.get("correlation")},
            "verdict": {m: {"label": v.label, "rule": v.rule, "reasons": v.reasons,
                            "evidence": v.evidence.to_dict()} for m, v in verdicts.items()},
            "timings_s": self.timings,
            "table": table.to_dict(),
        }


def _penalty_share(history: list[dict], lam: float) -> dict[str, Any]:
    """For SSIUU: mean λ·penalty (Eq. 3's second term), mean |L_GD| and the gradient share.

    ``grad_share`` is :func:`neuronscope.unlearning.trainer.grad_share` (mean, min, max of
    ‖λ∇R‖/‖∇L_GD‖ over the steps where the regulariser was active; SPEC §9).
    """
    from neuronscope.unlearning.trainer import grad_share

    steps = [h for h in history if h.get("ssiuu_penalty") is not None and h.get("loss") is not None]
    if not steps:
        return {}
    pen = [lam * h["ssiuu_penalty"] for h in steps]
    gd = [abs(h["loss"]) for h in steps]
    return {"mean_lambda_penalty": sum(pen) / len(pen), "mean_abs_gd_loss": sum(gd) / len(gd),
            "steps_with_penalty": sum(p > 0 for p in pen), "grad_share": grad_share(history)}


def run_study(config: StudyConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True,
              base=None, command: str = "study", resume_finished: bool = False) -> dict:
    """Run ``config`` into the run folder ``out`` (resuming its finished stages) and return the summary.

    The folder is handled by :func:`neuronscope.rundir.prepare_run_dir`: it must be new, empty or
    a neuronscope run folder; it is locked while this process writes; nothing is written (and a
    run being replaced is not touched) until the data and the base model are loaded.

    Args:
        config: The study configuration.
        out: Run folder. A finished run (``summary.json``) is refused unless ``overwrite``
            (which replaces it whole) or ``resume_finished`` (which adds to it: ``neuronscope
            report --methods``); an unfinished one resumes, and a changed configuration
            recomputes only the stages whose inputs changed.
        overwrite: Replace the run in ``out``; the old one is kept until the new one starts
            writing and restored if the new one fails.
        progress: Progress bars.
        base: An already loaded base model.
        command: The command recorded in the folder's marker.
        resume_finished: Continue a finished run (its cached stages are reused).

    Raises:
        NeuronscopeError: A finished run without ``overwrite``; a folder that is not a
            neuronscope run or is locked; bad data, model or configuration.
    """
    from neuronscope import distributed
    from neuronscope.rundir import follower_run_dir, prepare_run_dir

    config.check_data_parallel()  # before the folder is touched
    # data parallelism: the main process holds the run folder (marker, lock, replacement)
    ctx = follower_run_dir() if not distributed.is_main() else prepare_run_dir(
        out, command=command, overwrite=overwrite, finished=() if resume_finished else ("summary.json",),
        progress=("stages/*.json",))
    with ctx as rd:
        study = Study(config, out, progress=progress, base=base)
        study.items  # noqa: B018  (data errors before anything is written)
        study.base  # noqa: B018  (so are model errors)
        rd.claim()
        distributed.barrier()  # the others read the folder only after the main process claimed it
        return study.run()


def table_from_run(run_dir: str | Path):
    """The results table of a finished or partial study run folder (``neuronscope report``).

    Raises:
        NeuronscopeError: ``run_dir`` is not a study run folder (no ``table.json``).
    """
    from neuronscope.tables import ResultsTable

    p = Path(run_dir) / "table.json"
    if not p.exists():
        raise NeuronscopeError(f"{run_dir}: not a study run folder (table.json missing)")
    return ResultsTable.load(p)


def _write_report(study: Study, summary: dict, by_target: dict, lens: dict, table, verdicts: dict) -> Path:
    """``RUN/report.html``: one self-contained page with every stage's tables and figures."""
    from neuronscope.plots import cumulative_figure
    from neuronscope.report import HTMLReport

    c = study.config
    r = HTMLReport(f"neuronscope — erase or hide? ({c.title})")
    r.text(f"Model {c.model}; {summary['n_questions']} FaithUn-format questions; splits "
           + ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
           + (". The forget split holds only facts the base model knows." if c.data.known_only else ".")
           + f" Knowledge protocol: {c.evaluation.protocol}"
           + (" (the question alone in the chat template; options ranked by their likelihood as the answer)."
              if c.evaluation.protocol == "cloze" else " (paper Table 3: options listed in the prompt)."))
    kf = summary.get("known_facts") or {}
    if kf.get("n_candidates"):
        r.text(f"Known-fact probe of the base model: {len(study.known['correct_ids'])} of {kf['n_candidates']} candidate "
               f"questions known ({c.evaluation.protocol}, margin ≥ {kf.get('delta', '-')} nats over the best wrong option"
               + (", correct under every option order" if c.evaluation.protocol == "mcqa" else "")
               + f"; base accuracy on the candidates {100 * kf.get('accuracy', float('nan')):.1f} %).", note=True)
    if verdicts:
        from neuronscope.verdict import verdicts_html

        r.opening(verdicts_html(verdicts))
    r.heading("Results (paper Table 1 layout)")
    r.html(table.to_html())
    if summary["accuracy"]:
        from neuronscope.stats import Proportion, format_interval

        r.heading(f"Forget / retain accuracy ({c.evaluation.protocol}, option likelihood; Wilson 95 % intervals)")
        cols = ["forget", "forget_paraphrase", "retain", "test", "utility"]

        def cell(ev: dict, k: str) -> str:
            x = ev.get(k)
            if not x:
                return "-"
            return format_interval(Proportion.from_dict({kk: vv for kk, vv in x.items() if kk != "value"})) if "n" in x \
                else f"{100 * x['value']:.1f}"

        r.table(["method", "FS forget (%)", "FS paraphrase (%)", "RS retain (%)", "RS test (%)", "US utility (%)"],
                [[_label(n)] + [cell(ev, k) for k in cols] for n, ev in summary["accuracy"].items()])
    r.heading("Unlearning runs")
    r.table(["method", "lr", "reached FS ≤ threshold", "steps", "epochs", "s / step", "mean λ·penalty", "mean |L_GD|",
             "‖λ∇R‖ / ‖∇L_GD‖ (mean)"],
            [[_label(k), f"{v['lr']:.0e}", str(v["reached"]), v["steps"], v["epochs"], f"{v['seconds_per_step']:.2f}",
              f"{v['mean_lambda_penalty']:.3g}" if "mean_lambda_penalty" in v else "-",
              f"{v['mean_abs_gd_loss']:.3g}" if "mean_abs_gd_loss" in v else "-",
              f"{v['grad_share']['mean']:.3g}" if v.get("grad_share") else "-"]
             for k, v in summary["unlearning"].items() if v.get("reached") is not None])
    if "ssiuu" in c.methods:
        u = c.unlearning_config("ssiuu")
        r.text(f"SSIUU adds λ·Σ‖A_prev − A‖₂ over spurious (negative) rows to the GD loss (λ = {u.lam:g}, target "
               f"{u.ssiuu_target}, anchor {u.ssiuu_anchor}, {u.ssiuu_grad} gradient). The last column is the share of "
               "the regulariser in the update: where it is far below 1 %, SSIUU behaves like GD.", note=True)
    if by_target:
        r.heading("Influence variation: erased or hidden? (Fig. 3)")
        r.table(["attribution target", "method", "Σ top-100 D̃+", "Σ top-100 D̃−", "D̃− / D̃+"],
                [[t, k, v["sum_top_d_plus"], v["sum_top_d_minus"], v["minus_over_plus"]]
                 for t, per in summary["influence_top100_by_target"].items() for k, v in per.items()], fmt="{:.4g}")
        r.text("D̃− > D̃+ means negative influence grew more than positive influence fell: knowledge "
               "hidden behind spurious unlearning neurons rather than erased.", note=True)
        if summary.get("influence_ci"):
            r.table(["attribution target", "method", "D̃− / D̃+ (95 % bootstrap CI over forget items)"],
                    [[t, _label(m), _fmt_ci(ci.get("minus_over_plus", {}))]
                     for t, per in summary["influence_ci"].items() for m, ci in per.items()])
        if summary.get("answer_probability"):
            r.text("Mean P(answer | question) on the forget set (the scale of 'prob' attributions): "
                   + ", ".join(f"{k} {v['mean']:.3g}" for k, v in summary["answer_probability"].items())
                   + ". Attributions to P(y|x) scale with P(y|x) itself, so where unlearning drives it towards 0 every "
                   "D̃ of the unlearned model shrinks with it; the log-probability target (units: nats) is free of that "
                   "scale.", note=True)
        for target, variations in by_target.items():
            r.text(f"Cumulative top-m influence variation, target {target}:")
            r.figure(cumulative_figure(variations, m=1000))
        r.heading("Top spurious neurons (largest D̃−: negative influence gained on the forget set)")
        for target, variations in by_target.items():
            for label, var in variations.items():
                r.text(f"{label}, target {target}:")
                r.table(["module", "layer", "neuron", "D̃−", "D̃+ of the same neuron"],
                        [[t, layer, i, x, float(var.d_plus[(t, layer)][i])] for t, layer, i, x in var.top_neurons("-", 10)],
                        fmt="{:.4g}")
        r.heading("Influence variation per module and layer (Fig. 5)")
        for target, variations in by_target.items():
            for var in variations.values():
                r.text(f"{var.meta.get('label', '')}, target {target}:")
                r.figure(var.plot_heatmap(top=100))
    if lens:
        from neuronscope.lens import LogitLensResult, lens_figure

        r.heading("Logit lens (Fig. 4)")
        r.figure(lens_figure({k: LogitLensResult.from_dict(v) for k, v in lens.items()}))
    if summary["attacks"]:
        r.heading("Harmful and benign relearning attacks (§6.2.2) and attribution correlation (Fig. 6)")
        rows = []
        for m, kinds in summary["attacks"].items():
            for kind, per in kinds.items():
                for label, a in per.items():
                    if kind == "not_run":
                        rows.append([_label(m), label, f"not run: {a}", "-"])
                        continue
                    mf = a["max_fs"]
                    rows.append([_label(m), label, f"{100 * mf['mean']:.1f} ± {100 * (mf.get('sd') or 0):.1f}",
                                 ", ".join(f"{100 * v:.1f}" for v in mf["per_seed"].values())])
        r.table(["method", "attack", "max FS during retraining (%), mean ± sd over seeds", "per seed (%)"], rows)
        for name, cmp_ in summary.get("attack_comparisons", {}).items():
            r.text(f"{name}: {_fmt_comparison(cmp_)}", note=True)
        if summary.get("attribution_correlation"):
            r.table(["method", "Pearson r", "Spearman ρ"],
                    [[_label(k), v["stats"]["both"]["pearson"], v["stats"]["both"]["spearman"]]
                     for k, v in summary["attribution_correlation"].items()])
    r.heading("Timings (s)")
    r.table(["stage", "seconds"], [[k, v] for k, v in summary["timings_s"].items()], fmt="{:.1f}")
    return r.write(study.out / "report.html")


def _fmt_ci(x: dict) -> str:
    if not x or x.get("estimate") is None:
        return "-"
    return f"{x['estimate']:.3g} [{x.get('low', float('nan')):.3g}, {x.get('high', float('nan')):.3g}]"


def _fmt_comparison(d: dict) -> str:
    """One line: mean paired difference, its CI, the test's p-value and n."""
    ci = d.get("mean_diff") or {}
    diff = ci.get("estimate")
    p = d.get("p_value")
    return (f"mean paired difference {diff if diff is None else f'{diff:.3g}'}"
            + (f" [{ci.get('low'):.3g}, {ci.get('high'):.3g}]" if ci.get("low") is not None else "")
            + (f", p = {p:.3g}" if p is not None else "") + f" ({d.get('test', d.get('method', 'paired test'))}, "
            f"n = {d.get('n', '?')}, Cohen's d_z {d.get('cohens_dz')})")

"""Configuration of one unlearning run (SPEC §9, paper §6.1 and App. B.2).

:class:`UnlearningConfig` holds every knob of the shared training loop and of each method's
loss. It validates itself on construction (a bad value raises :class:`ConfigError` with one
line naming the field) and round-trips through JSON (``to_dict`` / ``from_dict`` /
``save`` / ``load``); :func:`neuronscope.unlearning.unlearn` writes it into the run
directory, and a checkpoint only resumes under the same configuration.

Run-config files (``configs/*.json``, the paper's full runs) hold a ``defaults`` block of
config fields, per-method overrides under ``methods`` and a learning-rate grid ``lrs`` per
method; :func:`load_run_config` resolves one method from such a file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from neuronscope.errors import ConfigError, write_json_atomic

#: Unlearning methods (paper §6.1 baselines + SSIUU); the loss classes live in ``METHODS``.
METHOD_NAMES: tuple[str, ...] = ("ga", "gd", "dpo", "npo", "rmu", "klue", "ssiuu")

#: The module types whose weights carry SSIUU's parameter attribution (paper §5).
SSIUU_MODULES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

#: λ values of the paper's sweep (Fig. 7a, App. C.1).
LAMBDAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1.0)


@dataclass
class UnlearningConfig:
    """Every option of one unlearning run.

    Training loop (shared by all methods):
        method: One of ``ga, gd, dpo, npo, rmu, klue, ssiuu`` (``nll`` is the plain fine-tuning
            loss used by :func:`~neuronscope.unlearning.finetune`).
        lr: Learning rate (> 0).
        max_epochs: Passes over the forget set at most. One step = one forget batch (+ one
            retain batch).
        batch_size: Forget (and retain) examples per step.
        threshold: Early-stopping threshold on the forget score: accuracy ≤ 0.33 (FaithUn MCQA
            with three options) or ROUGE-L recall ≤ τ (TOFU, τ = 0.1971 in the paper).
        seed: Seeds parameters-independent randomness: batch partition and order, the RMU
            direction u, KLUE's superficial questions, and ``torch.manual_seed``.
        checkpoint_every: Write a resumable checkpoint every N optimiser steps (0 = off).
        max_steps: Stop after this many optimiser steps (None = no limit).
        stop_metric: ``"accuracy"`` (MCQA, :func:`neuronscope.evaluation.mcqa_evaluate`) or
            ``"rouge"`` (ROUGE-L recall of greedy answers, :func:`neuronscope.evaluation.rouge_evaluate`).
        eval_every: Evaluate the forget score every N steps; 0 = after every epoch.
        eval_mode: MCQA scoring, ``"likelihood"`` (default) or ``"generate"`` (paper).
        option_seed: Option order of the MCQA prompts.
        protocol: Knowledge protocol of the early-stopping forget score (SPEC §10): ``"mcqa"``
            (paper Table 3, options in the prompt; default) or ``"cloze"`` (question alone).
        optimizer: ``"adamw"`` (default; FaithUn/TOFU-style Adam without weight decay) or ``"sgd"``.
        weight_decay: AdamW weight decay (0 keeps untouched rows untouched, see KLUE).
        retain_weight: Weight of the retain term (GD, DPO, NPO, KLUE, SSIUU).

    Method parameters:
        lam: SSIUU λ of paper Eq. 3 (≥ 0): 1e-3 FaithUn, 1e-4 TOFU.
        ssiuu_grad: ``"exact"`` (double backward through A_θ^t = θ ⊙ ∂P/∂θ) or
            ``"first_order"`` (∂P/∂θ treated as a constant).
        ssiuu_granularity: ``"row"`` (neuron = output row; I− = rows with negative summed
            attribution) or ``"element"`` (every weight its own neuron).
        ssiuu_target: ``"logprob"`` (log P(y|x), default) or ``"prob"`` (P(y|x), paper).
        ssiuu_anchor: What ``A_{θ^{t−1}}`` of Eq. 3 is (SPEC §9): ``"batch"`` — the attribution
            cached for the same forget batch at its previous visit (first visit = GD step);
            ``"previous_step"`` — the attribution stored at the previous step, whatever batch
            that was (the paper's Algorithm 1, v2; active from step 2); ``"initial"`` — the
            base model's attribution of the same batch (paper §1: negative attributions held
            "at their original levels"), computed once before the first update.
        ssiuu_modules: Module types whose weights enter the regulariser.
        ssiuu_cache_dtype: dtype of the cached A_θ^{t−1} (None = the weights' dtype;
            ``"bfloat16"`` halves the memory of large models).
        beta: NPO/DPO inverse temperature β (paper searches [0.1, 0.5]).
        rmu_layer: RMU layer l (None = ``round(7/28 · n_layers)``: the paper's l = 7 of a
            28-layer Llama-3.2-3B scaled to the model depth; 8 for 30-layer SmolLM2).
        rmu_c: RMU steering coefficient c (20).
        rmu_alpha: RMU retain weight α (searched in {20, 50, 100, 150, 200, 300}).
        rmu_skip_template: Leave the chat template's shared prefix (system prompt, user header)
            out of both RMU terms. Those positions are identical for every forget and retain
            item, so their residuals are too (causal attention): the forget term (→ c·u) and the
            retain term (→ frozen residual) contradict each other there, and the first token's
            massive activation dominates the MSE (SmolLM2: 24 of ~38 prompt tokens shared,
            first-token mean square 693 vs ~30 elsewhere at layer 8). Measured on SmolLM2 with
            α = 100: neither setting reaches FS ≤ 0.33 in 12 epochs at lr ≤ 1e-3 (FS 0.97–1.0).
        klue_fraction: Fraction of FFN neurons KLUE updates (0.10).
        klue_alpha: KLUE superficial-knowledge regularisation weight α (10).
        klue_n: KLUE number N of superficial (mismatched) questions per forget item (5).
        klue_unforgotten: KLUE trains only on forget items still answered correctly.

    SSIUU defaults (``lam=1e-3``, ``ssiuu_grad="exact"``, ``ssiuu_target="logprob"``,
    ``ssiuu_anchor="previous_step"``), chosen by measurement so that the regulariser acts
    (issue 12; ``benchmarks/ssiuu_sweep.py share``): the gradient share ‖λ∇R‖/‖∇L_GD‖ at
    λ = 1e-3 on SmolLM2-135M-Instruct and the demo's forget split (31 items, batches of 8, lr 5e-5,
    AdamW; one seed; first active step, the run being GD before it) was 2.42 for this reading
    (2.52 with ``"initial"``), 0.0028 with the first-order gradient, 0.0099 with the target
    P(y|x) (exact) and 3.6e-6 with P(y|x) and the first-order gradient. Reasons:

    * **target log P, not P**: ∂P/∂θ = P·∂log P/∂θ, so every attribution, R and ∇R scale with the
      answer probability (multi-token answers: P ≪ 1, and → 1e-13 after unlearning, so the
      share at the start, 1 %, only falls); with log P it is 240× larger;
    * **exact, not first order**: the first-order gradient drops ``H_P(r ⊙ θ)``, which is
      10²–10³× the kept ``r ⊙ g`` (cosine with the exact gradient ≈ 0), so it is a different,
      ~10³× weaker force; the exact gradient costs ~2× a GD step;
    * **previous_step**: the paper's Algorithm 1 (v2); active from the second step, where
      ``"batch"`` is a GD step for the whole first epoch (k forget batches → active from step
      k + 1);
    * **λ = 1e-3** (the paper's FaithUn value) gives a share ≥ 1 % with this reading; the share
      is linear in λ at fixed parameters, so λ = 1e-4 gives ~24 %. The paper configs
      (``configs/*.json``) keep the paper's λ. The Fig. 7a λ sweep of this reading is the
      check that the regulariser does not stop unlearning (``benchmarks/ssiuu_sweep.py sweep``).
    """

    method: str = "gd"
    lr: float = 1e-5
    max_epochs: int = 10
    batch_size: int = 8
    threshold: float = 0.33
    seed: int = 0
    checkpoint_every: int = 0
    lam: float = 1e-3
    ssiuu_grad: str = "exact"
    ssiuu_granularity: str = "row"
    ssiuu_target: str = "logprob"
    ssiuu_anchor: str = "previous_step"
    ssiuu_modules: tuple[str, ...] = SSIUU_MODULES
    ssiuu_cache_dtype: str | None = None
    beta: float = 0.1
    rmu_layer: int | None = None
    rmu_c: float = 20.0
    rmu_alpha: float = 100.0
    rmu_skip_template: bool = True
    klue_fraction: float = 0.10
    klue_alpha: float = 10.0
    klue_n: int = 5
    klue_unforgotten: bool = True
    retain_weight: float = 1.0
    max_steps: int | None = None
    stop_metric: str = "accuracy"
    eval_every: int = 0
    eval_mode: str = "likelihood"
    option_seed: int = 0
    protocol: str = "mcqa"
    optimizer: str = "adamw"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self.ssiuu_modules = tuple(self.ssiuu_modules)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field.

        Raises:
            ConfigError: One line naming the first bad field, e.g. ``lr: must be > 0, got 0``.
        """

        def num(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name}: must be a finite number, got {v!r}")
            return float(v)

        def integer(name: str, lo: int, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name}: must be an integer ≥ {lo}, got {v!r}")

        def choice(name: str, options: tuple) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(f"{name}: expected one of {', '.join(map(str, options))}, got {v!r}")

        choice("method", METHOD_NAMES + ("nll",))
        if num("lr") <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if num("lam") < 0:
            raise ConfigError(f"lam: must be ≥ 0 (SSIUU λ), got {self.lam}")
        integer("max_epochs", 1)
        integer("batch_size", 1)
        integer("seed", 0)
        integer("checkpoint_every", 0)
        integer("max_steps", 1, allow_none=True)
        integer("eval_every", 0)
        integer("option_seed", 0)
        integer("klue_n", 0)
        integer("rmu_layer", 0, allow_none=True)
        num("threshold")
        choice("ssiuu_grad", ("exact", "first_order"))
        choice("ssiuu_granularity", ("row", "element"))
        choice("ssiuu_target", ("prob", "logprob"))
        choice("ssiuu_anchor", ("batch", "previous_step", "initial"))
        choice("ssiuu_cache_dtype", (None, "float32", "float64", "bfloat16", "float16"))
        for t in self.ssiuu_modules:
            if t not in SSIUU_MODULES:
                raise ConfigError(f"ssiuu_modules: unknown module type {t!r} (have {', '.join(SSIUU_MODULES)})")
        if not self.ssiuu_modules:
            raise ConfigError("ssiuu_modules: must name at least one module type")
        if num("beta") <= 0:
            raise ConfigError(f"beta: must be > 0, got {self.beta}")
        num("rmu_c")
        if num("rmu_alpha") < 0:
            raise ConfigError(f"rmu_alpha: must be ≥ 0, got {self.rmu_alpha}")
        if not 0 < num("klue_fraction") <= 1:
            raise ConfigError(f"klue_fraction: must be in (0, 1], got {self.klue_fraction}")
        if num("klue_alpha") < 0:
            raise ConfigError(f"klue_alpha: must be ≥ 0, got {self.klue_alpha}")
        if num("retain_weight") < 0:
            raise ConfigError(f"retain_weight: must be ≥ 0, got {self.retain_weight}")
        if num("weight_decay") < 0:
            raise ConfigError(f"weight_decay: must be ≥ 0, got {self.weight_decay}")
        choice("stop_metric", ("accuracy", "rouge"))
        choice("eval_mode", ("likelihood", "generate"))
        choice("protocol", ("mcqa", "cloze"))
        choice("optimizer", ("adamw", "sgd"))
        if not isinstance(self.rmu_skip_template, bool):
            raise ConfigError(f"rmu_skip_template: must be true or false, got {self.rmu_skip_template!r}")
        if not isinstance(self.klue_unforgotten, bool):
            raise ConfigError(f"klue_unforgotten: must be true or false, got {self.klue_unforgotten!r}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        d = asdict(self)
        d["ssiuu_modules"] = list(self.ssiuu_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "UnlearningConfig":
        """Build from a dict; keys starting with ``_`` (comments) are ignored.

        Raises:
            ConfigError: An unknown key (named) or a bad value.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object of config fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        kw = {}
        for k, v in d.items():
            if k.startswith("_"):
                continue
            if k not in known:
                raise ConfigError(f"{source}: unknown field {k!r}")
            kw[k] = v
        return cls(**kw)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UnlearningConfig":
        """Read a config written by :meth:`save` (or any JSON object of config fields).

        Raises:
            ConfigError: Missing file, invalid JSON, unknown field or bad value.
        """
        return cls.from_dict(_read_json(path), source=str(path))

    def replace(self, **changes: Any) -> "UnlearningConfig":
        """A validated copy with ``changes`` applied."""
        d = self.to_dict()
        d.update(changes)
        return UnlearningConfig.from_dict(d)


def _read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None


@dataclass
class RunConfig:
    """One method resolved from a run-config file (``configs/*.json``).

    Attributes:
        config: The :class:`UnlearningConfig` (defaults merged with the method's overrides).
        lrs: Ascending learning-rate grid for :func:`~neuronscope.unlearning.lr_search`
            (empty = use ``config.lr``).
        model: Model name or path of the run (None when the file does not name one).
        data: Free-form data description (``{"dataset": "faithun", ...}``).
        lams: λ grid for the SSIUU sweep (Fig. 7a), if the file gives one.
        runtime: ``{"dtype": ..., "device": ...}`` for loading the model, if the file gives them.
    """

    config: UnlearningConfig
    lrs: list[float] = field(default_factory=list)
    model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    lams: list[float] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)


def load_run_config(path: str | os.PathLike, method: str | None = None) -> RunConfig:
    """Resolve one method of a run-config file.

    The file is either a plain JSON object of :class:`UnlearningConfig` fields, or a study
    configuration (the one schema of ``configs/*.json``, :class:`neuronscope.study.StudyConfig`)::

        {"model": "...", "dtype": "bfloat16", "device": "cuda", "seed": 0, "data": {...},
         "unlearning": {<config fields shared by every method>},
         "methods": {"gd": {"lrs": [...], <config overrides>}, "ssiuu": {..., "lams": [...]}, ...}}

    Args:
        path: The JSON file.
        method: The method to resolve (default: the only method).

    Raises:
        ConfigError: Missing/invalid file, unknown field, a method the file does not
            configure, or a learning-rate grid that is not ascending positive numbers.
    """
    raw = _read_json(path)
    src = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: expected a JSON object")
    if not {"methods", "unlearning", "defaults"} & set(raw):
        d = dict(raw)
        lrs = d.pop("lrs", [])
        if method is not None:
            d["method"] = method
        return RunConfig(UnlearningConfig.from_dict(d, source=src), _check_lrs(lrs, src))
    for old, new in (("defaults", "unlearning"), ("runtime", "top-level dtype/device")):
        if old in raw:
            raise ConfigError(f"{src}: field '{old}' is the old run-config schema; use '{new}' (configs/*.json)")
    defaults = dict(raw.get("unlearning", {}))
    if "seed" in raw:
        defaults.setdefault("seed", raw["seed"])
    methods = raw.get("methods", {})
    if not isinstance(methods, dict):
        raise ConfigError(f"{src}: field 'methods' must be an object of method name -> overrides")
    name = method or (next(iter(methods)) if len(methods) == 1 else None)
    if name is None:
        raise ConfigError(f"{src}: several methods configured; choose one ({', '.join(methods)})")
    if methods and name not in methods:
        raise ConfigError(f"{src}: method {name!r} is not configured (have {', '.join(methods)})")
    over = dict(methods.get(name, {}))
    lrs = over.pop("lrs", defaults.pop("lrs", []))
    lams = over.pop("lams", defaults.pop("lams", []))
    merged = {**{k: v for k, v in defaults.items() if not k.startswith("_")}, **over, "method": name}
    cfg = UnlearningConfig.from_dict(merged, source=f"{src}: methods.{name}")
    runtime = {k: raw[k] for k in ("dtype", "device") if k in raw}
    return RunConfig(
        cfg, _check_lrs(lrs, src), raw.get("model"), dict(raw.get("data", {})), [float(x) for x in lams], dict(runtime)
    )


def _check_lrs(lrs: Any, src: str) -> list[float]:
    if not isinstance(lrs, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in lrs):
        raise ConfigError(f"{src}: field 'lrs' must be a list of numbers, got {lrs!r}")
    lrs = [float(x) for x in lrs]
    if any(x <= 0 for x in lrs):
        raise ConfigError(f"{src}: field 'lrs' must hold learning rates > 0, got {lrs}")
    if lrs != sorted(lrs):
        raise ConfigError(f"{src}: field 'lrs' must be ascending (lowest learning rate first), got {lrs}")
    return lrs

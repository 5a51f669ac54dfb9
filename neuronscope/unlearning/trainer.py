"""The one training loop of every unlearning method and of plain fine-tuning (SPEC §9).

:func:`unlearn` trains the real HF weights of a :class:`~neuronscope.models.HookedModel`
(forward passes go through its TransformerLens bridge, which shares those parameters) with the
loss of the chosen method (:mod:`.losses`, :mod:`.klue`, :mod:`.ssiuu`), evaluates the forget
score after every epoch (or every ``eval_every`` steps) and stops as soon as it is ≤ the
threshold — accuracy ≤ 0.33 on FaithUn MCQA, ROUGE-L recall ≤ τ on TOFU (paper §6.1).
:func:`finetune` runs plain NLL training through the same loop (relearning attacks, TOFU
fine-tuning).

Loop decisions:

* **Steps and epochs.** The forget set is split once into a fixed partition of batches
  (seeded permutation, ``batch_size`` items each); every epoch visits all batches in a seeded
  order that depends only on ``(seed, epoch)``. One optimiser step = one forget batch plus the
  next ``batch_size`` items of the retain stream (a concatenation of seeded permutations of the
  retain set; step s uses items ``s·B … s·B+B−1``). Data order is thus a pure function of the
  step counter, which makes checkpoints exactly resumable.
* **Optimiser.** AdamW (β = (0.9, 0.999), ε = 1e-8, ``weight_decay = 0`` by default) —
  the Adam family used by the FaithUn / TOFU reference training code the paper follows; plain
  SGD is an option. No learning-rate schedule, no gradient clipping. The model stays in eval
  mode (no dropout), so a run is deterministic given the seed.
* **Evaluation** happens before the first step (step 0, recorded in the history) and after
  every epoch (or every ``eval_every`` steps, and always after the last step).
* **Checkpoints** (``checkpoint_every`` steps, into ``run_dir/checkpoint``): all HF weights
  (safetensors), the optimiser state, the RNG states, the loop position, the history and the
  method state (SSIUU cache, KLUE masks, reference values), written to a temporary directory
  and swapped in, so a kill never leaves a half-written checkpoint. ``unlearn(..., resume=True)``
  on the *initial* model continues from it and ends with the same weights as an uninterrupted
  run. A NaN/inf loss (or gradient norm) raises :class:`DivergenceError` before the bad step
  is applied; the last good checkpoint stays in place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from neuronscope import distributed
from neuronscope.errors import ConfigError, DivergenceError, NeuronscopeError, write_json_atomic
from neuronscope.models import HookedModel
from neuronscope.unlearning.config import UnlearningConfig
from neuronscope.unlearning.klue import KLUE
from neuronscope.unlearning.losses import DPO, GA, GD, NLL, NPO, RMU, Method
from neuronscope.unlearning.ssiuu import SSIUU

#: Method name -> loss class (paper §6.1 baselines and SSIUU).
METHODS: dict[str, type[Method]] = {
    "ga": GA,
    "gd": GD,
    "dpo": DPO,
    "npo": NPO,
    "rmu": RMU,
    "klue": KLUE,
    "ssiuu": SSIUU,
}
_ALL_METHODS: dict[str, type[Method]] = {**METHODS, "nll": NLL}

#: Config fields that may change between a checkpoint and its resumption.
_RESUMABLE_CHANGES = {"max_epochs", "max_steps", "checkpoint_every"}

CHECKPOINT_DIR = "checkpoint"


# ----------------------------------------------------------------------------- result


@dataclass
class UnlearningResult:
    """Outcome of :func:`unlearn`.

    Attributes:
        reached: The forget score reached the threshold.
        steps: Optimiser steps taken (forget batches).
        epochs: Epochs started (the last may be partial).
        history: One record per step — ``step``, ``epoch`` (1-based), ``loss`` and the method's
            loss terms (floats, nats or attribution units), ``grad_norm`` (of all trainable
            gradients, regulariser included), ``seconds`` (wall time of the step) — plus
            ``forget_score`` and ``forget_acc`` (or ``forget_rouge``) on evaluated steps; the
            first record (step 0) holds the score before unlearning. SSIUU steps also record
            ``ssiuu_penalty`` (R of Eq. 3), ``ssiuu_negative`` (|I−|), ``gd_grad_norm``
            (‖∇L_GD‖), ``ssiuu_reg_grad_norm`` (‖λ∇R‖) and ``grad_share`` (their ratio; see
            :func:`grad_share` for the run's mean).
        seconds_per_step: Mean wall time of a training step (evaluation excluded), seconds.
        config: The configuration of the run.
        forget_score: The last evaluated forget score.
        initial_forget_score: The forget score before unlearning.
        model: Set by :func:`~neuronscope.unlearning.lr_search` to the trained model (not serialised).
    """

    reached: bool
    steps: int
    epochs: int
    history: list[dict]
    seconds_per_step: float
    config: UnlearningConfig
    forget_score: float | None = None
    initial_forget_score: float | None = None
    model: HookedModel | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the model)."""
        return {
            "reached": self.reached,
            "steps": self.steps,
            "epochs": self.epochs,
            "seconds_per_step": self.seconds_per_step,
            "forget_score": self.forget_score,
            "initial_forget_score": self.initial_forget_score,
            "config": self.config.to_dict(),
            "history": self.history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())


def grad_share(history: Sequence[dict]) -> dict[str, float] | None:
    """Summary of SSIUU's per-step gradient share ‖λ∇R‖/‖∇L_GD‖ over the steps where the
    regulariser was active (``ssiuu_penalty > 0``; SPEC §9, issue 12: the regulariser acts when
    the mean is ≥ 1 %).

    Args:
        history: :attr:`UnlearningResult.history` (or ``history.json``) of an SSIUU run.

    Returns:
        ``{"mean", "min", "max", "n_steps"}`` (ratios, dimensionless), or None when no step
        recorded a share (not SSIUU, or the regulariser never became active).
    """
    vals = [float(r["grad_share"]) for r in history if "grad_share" in r and r.get("ssiuu_penalty", 0) > 0]
    if not vals:
        return None
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n_steps": len(vals)}


# ----------------------------------------------------------------------------- data order


def _seed_of(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big") % (2**63)


def _perm(n: int, *parts: Any) -> list[int]:
    g = torch.Generator().manual_seed(_seed_of(*parts))
    return torch.randperm(n, generator=g).tolist()


class _Plan:
    """Batch order of the loop; a pure function of (seed, epoch, step)."""

    def __init__(self, forget: Sequence, retain: Sequence, batch_size: int, seed: int, *, fixed: bool) -> None:
        self.forget, self.retain, self.bs, self.seed, self.fixed = list(forget), list(retain), batch_size, seed, fixed
        order = _perm(len(self.forget), seed, "partition")
        self.batches: dict[int, list] = {
            k: [self.forget[i] for i in order[s : s + batch_size]]
            for k, s in enumerate(range(0, len(order), batch_size))
        }
        self._retain_perms: dict[int, list[int]] = {}

    @property
    def n_batches(self) -> int:
        return len(self.batches)

    def batch_sizes(self) -> list[int]:
        """Sizes of the forget batches any epoch can produce (and of the retain batches)."""
        n = len(self.forget)
        sizes = [self.bs] * (n // self.bs) + ([n % self.bs] if n % self.bs else [])
        return sizes + ([self.bs] if self.retain else [])

    def epoch_batches(self, epoch: int, select: Callable[[list], list]) -> list[tuple[int | None, list]]:
        if self.fixed:
            keys = _perm(self.n_batches, self.seed, "epoch", epoch)
            out = [(k, select(self.batches[k])) for k in keys]
        else:
            order = _perm(len(self.forget), self.seed, "shuffle", epoch)
            out = [(None, select([self.forget[i] for i in order[s : s + self.bs]])) for s in range(0, len(order), self.bs)]
        return [(k, items) for k, items in out if items]

    def retain_batch(self, step: int) -> list:
        if not self.retain:
            return []
        r = len(self.retain)
        out = []
        for pos in range(step * self.bs, (step + 1) * self.bs):
            cycle, i = divmod(pos, r)
            if cycle not in self._retain_perms:
                self._retain_perms = {cycle: _perm(r, self.seed, "retain", cycle)}
            out.append(self.retain[self._retain_perms[cycle][i]])
        return out


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class _State:
    step: int = 0
    epoch: int = 0  # index of the current epoch (0-based)
    pos: int = 0  # next batch position within the epoch
    history: list[dict] = field(default_factory=list)
    correct_ids: list[str] | None = None  # forget ids still answered correctly (latest eval)
    epoch_ids: list[str] | None = None  # the selection used for the current epoch
    reached: bool = False
    last_score: float | None = None
    initial_score: float | None = None
    train_seconds: float = 0.0


def _checkpoint_path(run_dir: Path) -> Path | None:
    for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
        p = run_dir / name
        if (p / "state.pt").exists() and (p / "model.safetensors").exists():
            return p
    return None


def _save_checkpoint(run_dir: Path, model: HookedModel, opt, method: Method, state: _State, cfg: UnlearningConfig) -> Path:
    from neuronscope.models import save_weights

    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / CHECKPOINT_DIR
    old = run_dir / f".{CHECKPOINT_DIR}.old"
    tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_DIR}.", dir=run_dir))
    try:
        save_weights(model, tmp / "model.safetensors")  # plain HF names: fused/Conv1D families too
        torch.save(
            {
                "optimizer": opt.state_dict(),
                "method": method.state_dict(),
                "state": asdict(state),
                "config": cfg.to_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "py_rng": random.getstate(),
            },
            tmp / "state.pt",
        )
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise NeuronscopeError(f"{path / 'state.pt'}: unreadable checkpoint ({exc})") from None


def _check_same_config(saved: dict, cfg: UnlearningConfig, path: Path) -> None:
    now = cfg.to_dict()
    for k, v in now.items():
        if k in _RESUMABLE_CHANGES:
            continue
        if saved.get(k) != v:
            raise ConfigError(
                f"{path}: checkpoint was written with {k}={saved.get(k)!r}, not {v!r} "
                "(use another run directory, or resume=False to start over)"
            )


# ----------------------------------------------------------------------------- the loop


def _optimizer(params: list[torch.nn.Parameter], cfg: UnlearningConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(
    model: HookedModel,
    method: Method,
    opt: torch.optim.Optimizer,
    forget: Sequence,
    retain: Sequence | None,
    key: int | None,
) -> tuple[float, dict[str, float]]:
    """One optimiser step of the loop: loss → backward → method hook → step → method hook.

    ``method.after_backward`` may return a loss contribution computed after the backward pass
    (first-order SSIUU's penalty), which is added to the recorded loss value.

    Under data parallelism (:mod:`neuronscope.distributed`) ``forget`` / ``retain`` are the
    global batches: each process takes its contiguous share, the gradients are summed over
    processes between the backward pass and ``method.after_backward``, and the returned loss
    and terms are those of the global batch (identical on every process).

    Returns:
        ``(loss value, loss terms + "grad_norm")`` (the L2 norm of all trainable gradients).

    Raises:
        DivergenceError: The loss or the gradient norm is NaN or infinite (nothing was updated).
    """
    opt.zero_grad(set_to_none=True)
    dp = distributed.active()
    if dp:
        forget = distributed.shard(forget)
        retain = distributed.shard(retain) if retain is not None else None
    loss, terms = method.loss(model, forget, retain, key)
    lv = float(loss.detach())
    local_terms = terms
    if dp:  # global values (partial sums added up); every process then takes the same branch
        lv, terms = distributed.reduce_terms(lv, terms)
    if not math.isfinite(lv):
        raise DivergenceError(f"loss is {lv}")
    loss.backward()
    del loss
    if dp:
        distributed.all_reduce_grads([p for group in opt.param_groups for p in group["params"]])
    extra = method.after_backward(model)
    if dp:  # terms added after the backward pass (first-order SSIUU) are global already
        terms = {**terms, **{k: v for k, v in local_terms.items() if k not in terms}}
    if extra:
        lv += float(extra)
        if not math.isfinite(lv):
            raise DivergenceError(f"loss is {lv}")
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if grads:
        norm = float(torch.nn.utils.get_total_norm(grads))
        if not math.isfinite(norm):
            raise DivergenceError(f"gradient norm is {norm} (loss {lv})")
        terms = {**terms, "grad_norm": norm}
    opt.step()
    method.after_step(key)
    return lv, terms


def _run(
    model: HookedModel,
    method: Method,
    cfg: UnlearningConfig,
    plan: _Plan,
    evaluate: Callable[[HookedModel], tuple[float, set[str] | None]] | None,
    *,
    run_dir: Path | None,
    resume: bool,
    progress: bool,
    desc: str,
    early_stop: bool,
    score_keys: tuple[str, ...],
    retain: Sequence,
) -> _State:
    """The shared loop; returns the final loop state (see the module docstring)."""
    ckpt_path = _checkpoint_path(run_dir) if (run_dir is not None and resume) else None
    ckpt = _load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        _check_same_config(ckpt["config"], cfg, ckpt_path)
    if distributed.active():
        distributed.check_method(cfg.method)
        distributed.check_batch_sizes(plan.batch_sizes(), "batch_size")
    method.setup(model, plan.batches, list(retain), state=ckpt["method"] if ckpt else None, progress=progress)

    params = method.trainable(model)
    if not params:
        raise ConfigError(f"{cfg.method}: no parameters to train")
    train_ids = {id(p) for p in params}
    all_params = list(model.hf_model.parameters())
    flags = [p.requires_grad for p in all_params]
    was_training = model.bridge.training
    try:
        for p in all_params:
            p.requires_grad_(id(p) in train_ids)
        model.bridge.eval()
        opt = _optimizer(params, cfg)
        if ckpt is not None:
            from neuronscope.models import load_weights

            load_weights(model, ckpt_path / "model.safetensors")
            opt.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["torch_rng"])
            if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
            random.setstate(ckpt["py_rng"])
            state = _State(**ckpt["state"])
            # The optimiser copied its state to the weights' device; drop the CPU copy now
            # instead of holding it (2× the weights for AdamW) for the whole run.
            ckpt = None
        else:
            torch.manual_seed(cfg.seed)
            state = _State()
            if evaluate is not None and early_stop:
                score, correct = evaluate(model)
                state.initial_score = state.last_score = score
                state.correct_ids = sorted(correct) if correct is not None else None
                rec = {"step": 0, "epoch": 0, "seconds": 0.0}
                rec.update({k: score for k in score_keys})
                state.history.append(rec)
                state.reached = score <= cfg.threshold
        distributed.broadcast_params(list(model.hf_model.parameters()))  # identical start on every process
        return _loop(model, method, cfg, plan, evaluate, opt, state, run_dir, progress, desc, early_stop, score_keys)
    finally:
        for p, f in zip(all_params, flags):
            p.requires_grad_(f)
        model.hf_model.zero_grad(set_to_none=True)
        model.bridge.train(was_training)


def _loop(model, method, cfg, plan, evaluate, opt, state: _State, run_dir, progress, desc, early_stop, score_keys) -> _State:
    every = cfg.checkpoint_every if run_dir is not None else 0
    total = cfg.max_epochs * plan.n_batches
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    bar = tqdm(
        total=total, initial=min(state.step, total), desc=desc, unit="step",
        disable=not progress or not distributed.is_main(), leave=False,
    )

    def selector(ids):
        if ids is None:
            return lambda items: items
        chosen = set(ids)
        return lambda items: list(method.select_forget(items, chosen))

    def stop_now() -> bool:
        return state.reached or (cfg.max_steps is not None and state.step >= cfg.max_steps)

    try:
        while not stop_now() and state.epoch < cfg.max_epochs:
            if state.pos == 0:
                state.epoch_ids = list(state.correct_ids) if state.correct_ids is not None else None
            batches = plan.epoch_batches(state.epoch, selector(state.epoch_ids))
            if not batches:
                break
            while state.pos < len(batches) and not stop_now():
                key, f_items = batches[state.pos]
                r_items = plan.retain_batch(state.step) if method.uses_retain else None
                t0 = time.perf_counter()
                try:
                    lv, terms = train_step(model, method, opt, f_items, r_items, key)
                except DivergenceError as exc:
                    where = _checkpoint_path(run_dir) if run_dir is not None else None
                    raise DivergenceError(
                        f"{cfg.method}: {exc} at step {state.step + 1} (lr {cfg.lr}); last good checkpoint: "
                        f"{where if where is not None else 'none (checkpoint_every=0 or no run_dir)'}"
                    ) from None
                dt = time.perf_counter() - t0
                state.train_seconds += dt
                state.step += 1
                state.pos += 1
                rec = {"step": state.step, "epoch": state.epoch + 1, "loss": lv, **terms, "seconds": dt}
                end_of_epoch = state.pos == len(batches)
                last = end_of_epoch and state.epoch + 1 >= cfg.max_epochs
                last = last or (cfg.max_steps is not None and state.step >= cfg.max_steps)
                due = (cfg.eval_every and state.step % cfg.eval_every == 0) or (not cfg.eval_every and end_of_epoch) or last
                if evaluate is not None and due:
                    score, correct = evaluate(model)
                    rec.update({k: score for k in score_keys})
                    state.last_score = score
                    if correct is not None:
                        state.correct_ids = sorted(correct)
                    if early_stop and score <= cfg.threshold:
                        state.reached = True
                state.history.append(rec)
                if end_of_epoch:
                    state.epoch += 1
                    state.pos = 0
                bar.update(1)
                bar.set_postfix({"loss": f"{lv:.4g}", **({"FS": f"{state.last_score:.3f}"} if state.last_score is not None else {})})
                if every and (state.step % every == 0 or stop_now()):
                    if distributed.is_main():  # one writer; identical state on every process
                        _save_checkpoint(run_dir, model, opt, method, state, cfg)
                    distributed.barrier()
                if end_of_epoch:
                    break
    finally:
        bar.close()
    return state


# ----------------------------------------------------------------------------- public API


def _evaluator(cfg: UnlearningConfig, forget: Sequence, eval_items: Sequence | None, eval_fn, progress: bool):
    if eval_fn is not None:
        return lambda m: (float(eval_fn(m)), None)
    items = list(eval_items) if eval_items is not None else list(forget)
    covers_forget = {it.id for it in forget} <= {it.id for it in items}

    if cfg.stop_metric == "rouge":
        from neuronscope.evaluation import rouge_evaluate

        def ev(m):
            r = rouge_evaluate(m, items, progress=False, desc="forget ROUGE-L")
            above = {i for i, rec in zip(r.ids, r.recalls) if rec > cfg.threshold}
            return float(r.score), (above if covers_forget else None)

        return ev

    from neuronscope.evaluation import knowledge_evaluate

    def ev(m):
        r = knowledge_evaluate(m, items, protocol=cfg.protocol, mode=cfg.eval_mode, option_seed=cfg.option_seed,
                               progress=False, desc=f"forget {cfg.protocol}")
        return float(r.accuracy), (r.correct_ids() if covers_forget else None)

    return ev


def unlearn(
    model: HookedModel,
    forget_items: Sequence,
    retain_items: Sequence,
    config: UnlearningConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    eval_items: Sequence | None = None,
    progress: bool = True,
    resume: bool = True,
    eval_fn: Callable[[HookedModel], float] | None = None,
) -> UnlearningResult:
    """Unlearn ``forget_items`` from ``model`` in place with one method (SPEC §9, paper §6.1).

    Args:
        model: The hooked model; its HF weights are trained **in place** (clone it first with
            :func:`neuronscope.models.clone_model` to keep the original).
        forget_items: The forget set C_f (QA items: ``id``, ``question``, ``answer``,
            ``options(seed)``).
        retain_items: The retain set C_r (may be empty for GA).
        config: :class:`UnlearningConfig` (default GD, lr 1e-5).
        run_dir: Directory for ``config.json``, checkpoints, ``history.json`` and
            ``result.json``; None keeps nothing on disk.
        eval_items: Items whose score decides early stopping (default: the forget set).
        progress: Show progress bars.
        resume: Continue from ``run_dir/checkpoint`` when one exists (pass the *initial* model).
        eval_fn: Custom forget score ``eval_fn(model) -> float`` (replaces MCQA/ROUGE).

    Returns:
        :class:`UnlearningResult`; the forget score is evaluated before training and after every
        epoch, and training stops at the first score ≤ ``config.threshold``.

    Raises:
        ConfigError: Bad config value, empty forget set, missing retain set for a method that
            needs one, or a checkpoint written under another configuration.
        DivergenceError: The loss or its gradient became NaN/inf (the last good checkpoint is kept).
    """
    cfg = config if config is not None else UnlearningConfig()
    if cfg.method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {cfg.method!r}")
    forget_items, retain_items = list(forget_items), list(retain_items)
    if not forget_items:
        raise ConfigError("forget_items: the forget set is empty")
    method = METHODS[cfg.method](cfg)
    if method.uses_retain and not retain_items:
        weight, name = (cfg.rmu_alpha, "rmu_alpha") if cfg.method == "rmu" else (cfg.retain_weight, "retain_weight")
        if weight > 0:
            raise ConfigError(f"retain_items: method {cfg.method} needs a retain set (or {name}=0)")
    rd = Path(run_dir) if run_dir is not None else None
    distributed.check_method(cfg.method)
    if rd is not None and not (resume and _checkpoint_path(rd) is not None) and distributed.is_main():
        # A resumed run rewrites config.json only at the end, once the checkpoint's
        # configuration has been checked: a refused resume leaves the directory untouched.
        cfg.save(rd / "config.json")
    evaluate = _evaluator(cfg, forget_items, eval_items, eval_fn, progress)
    plan = _Plan(forget_items, retain_items, cfg.batch_size, cfg.seed, fixed=True)
    keys = ("forget_score", "forget_rouge" if cfg.stop_metric == "rouge" and eval_fn is None else "forget_acc")
    state = _run(
        model, method, cfg, plan, evaluate, run_dir=rd, resume=resume, progress=progress,
        desc=f"unlearn {cfg.method}", early_stop=True, score_keys=keys, retain=retain_items,
    )
    result = UnlearningResult(
        reached=state.reached,
        steps=state.step,
        epochs=state.epoch + (1 if state.pos > 0 else 0),
        history=state.history,
        seconds_per_step=state.train_seconds / state.step if state.step else 0.0,
        config=cfg,
        forget_score=state.last_score,
        initial_forget_score=state.initial_score,
    )
    if rd is not None and distributed.is_main():
        cfg.save(rd / "config.json")
        write_json_atomic(rd / "history.json", result.history)
        result.save(rd / "result.json")
    return result


@dataclass(frozen=True)
class _Pair:
    id: str
    question: str
    answer: str


def _as_pairs(prompts_or_items: Sequence, answers: Sequence[str] | None) -> list:
    items = list(prompts_or_items)
    if not items:
        raise ConfigError("finetune: no training examples")
    if answers is not None:
        if len(answers) != len(items):
            raise ConfigError(f"finetune: {len(items)} prompts but {len(answers)} answers")
        return [_Pair(f"ft{i}", str(p), str(a)) for i, (p, a) in enumerate(zip(items, answers))]
    out = []
    for i, it in enumerate(items):
        if hasattr(it, "question") and hasattr(it, "answer"):
            out.append(it)
        elif hasattr(it, "instruction") and hasattr(it, "output"):
            extra = getattr(it, "input", "") or ""
            out.append(_Pair(f"ft{i}", it.instruction + (f"\n\n{extra}" if extra else ""), it.output))
        else:
            raise ConfigError(f"finetune: example {i} has no question/answer (or instruction/output); pass answers=")
    return out


def finetune(
    model: HookedModel,
    prompts_or_items: Sequence,
    answers: Sequence[str] | None = None,
    *,
    lr: float,
    epochs: int,
    batch_size: int = 8,
    seed: int = 0,
    eval_fn: Callable[[HookedModel], float] | None = None,
    eval_every: str | int = "epoch",
    progress: bool = True,
    optimizer: str = "adamw",
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
) -> dict[str, Any]:
    """Plain NLL fine-tuning through the unlearning loop (relearning attacks §6.2, TOFU fine-tuning).

    Args:
        model: Trained in place.
        prompts_or_items: QA items (``question``/``answer``), Alpaca items
            (``instruction``/``input``/``output``; the user turn is the instruction, then the
            input after a blank line), or user-turn strings together with ``answers``. Every
            prompt is wrapped in the model's chat template.
        answers: Target answers when ``prompts_or_items`` are strings.
        lr: Learning rate (> 0).
        epochs: Passes over the data (each a fresh seeded shuffle).
        batch_size: Examples per step.
        seed: Data-order seed.
        eval_fn: ``eval_fn(model) -> float`` recorded after every epoch (or every N steps).
        eval_every: ``"epoch"`` or a number of steps N.
        progress: Progress bar.
        optimizer: ``"adamw"`` or ``"sgd"``.
        run_dir / checkpoint_every / resume: Checkpointing as in :func:`unlearn`.

    Returns:
        ``{"steps", "epochs", "loss": [per-step NLL], "eval": [{"step", "epoch", "value"}],
        "max_eval", "seconds_per_step", "history"}``.

    Raises:
        ConfigError: lr ≤ 0, epochs < 1, a bad ``eval_every`` or no examples.
    """
    if eval_every == "epoch":
        every = 0
    elif isinstance(eval_every, int) and not isinstance(eval_every, bool) and eval_every >= 1:
        every = eval_every
    else:
        raise ConfigError(f"eval_every: expected 'epoch' or a number of steps ≥ 1, got {eval_every!r}")
    cfg = UnlearningConfig(
        method="nll", lr=lr, max_epochs=epochs, batch_size=batch_size, seed=seed, eval_every=every,
        optimizer=optimizer, checkpoint_every=checkpoint_every,
    )
    items = _as_pairs(prompts_or_items, answers)
    plan = _Plan(items, [], batch_size, seed, fixed=False)
    evaluate = (lambda m: (float(eval_fn(m)), None)) if eval_fn is not None else None
    state = _run(
        model, NLL(cfg), cfg, plan, evaluate, run_dir=Path(run_dir) if run_dir is not None else None, resume=resume,
        progress=progress, desc="finetune", early_stop=False, score_keys=("eval",), retain=[],
    )
    evals = [{"step": r["step"], "epoch": r["epoch"], "value": r["eval"]} for r in state.history if "eval" in r]
    return {
        "steps": state.step,
        "epochs": state.epoch + (1 if state.pos > 0 else 0),
        "loss": [r["loss"] for r in state.history if "loss" in r],
        "eval": evals,
        "max_eval": max((e["value"] for e in evals), default=None),
        "seconds_per_step": state.train_seconds / state.step if state.step else 0.0,
        "history": state.history,
    }


def load_history(run_dir: str | os.PathLike) -> list[dict]:
    """The ``history.json`` of a finished run directory."""
    p = Path(run_dir) / "history.json"
    if not p.exists():
        raise NeuronscopeError(f"{p}: no history (run not finished?)")
    return json.loads(p.read_text())

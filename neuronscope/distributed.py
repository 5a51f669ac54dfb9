"""Data parallelism across processes, launched with Accelerate (SPEC §15, issue 15).

``accelerate launch [--num_processes N] -m neuronscope unlearn|attack|attribute|study|demo|diagnose ...`` starts N
copies of the command; :func:`init_from_env` (called by the CLI) joins them into one
``torch.distributed`` process group through ``accelerate.PartialState`` (NCCL on GPUs, gloo on
CPUs; each process on its own GPU). Library calls made inside an initialised process group
(``torch.distributed`` with more than one process, however it was started) run
data-parallel too: :func:`neuronscope.unlearning.unlearn`, :func:`~neuronscope.unlearning.finetune`
(hence the relearning attacks) and :func:`neuronscope.attribution.attribute`.

**Training (unlearning, fine-tuning).** Every process holds the whole model and the same
data plan (the batch order is a pure function of the seed and the step). One optimiser step
takes the same *global* forget batch (and retain batch) as a one-process run; each process
works on its contiguous share (:func:`shard`). Gradients are **summed** over processes
(:func:`all_reduce_grads`) before the optimiser step, and the token-averaged NLL of every
batch divides by the *global* number of answer tokens (:func:`global_count`, used by
:class:`~neuronscope.unlearning.losses.AnswerLogprobs`), so the summed gradient is exactly the
gradient of the one-process loss on the global batch — not a mean of per-process means, which
differs when processes hold different numbers of answer tokens. All processes apply the same
update to the same weights, so they stay identical (the parameters are also broadcast from
process 0 when a run starts or resumes).

**SSIUU (paper Eq. 3).** The penalty is *not* additive over examples: ``A = θ ⊙ ∂(Σ_B P)/∂θ``
needs the gradient of the whole global batch B before the negative set I− and the norm
``‖A_prev,i − A_i‖`` are formed. Each process computes its share ``g_k = ∂(Σ_{B_k} P)/∂θ``;
``g = Σ_k g_k`` is all-reduced, and A, I−, the penalty value and ``r = ∂penalty/∂A`` are
computed from the global g (identical on every process). The gradient is then distributed:
``∂penalty/∂θ = r ⊙ g + H (r ⊙ θ)`` with ``H = Σ_k H_k`` (Hessian of Σ_B P), so each process
backpropagates the surrogate ``⟨r, θ ⊙ g_k(θ)⟩`` (r constant), whose gradient
``r ⊙ g_k + H_k (r ⊙ θ)`` sums over processes to the exact one-process gradient
(:func:`neuronscope.unlearning.ssiuu.dp_ssiuu_regulariser`). First-order SSIUU all-reduces the tapped ``g_k`` and adds the
closed-form ``r ⊙ g`` after the (already summed) GD gradient, identically on every process.
The cached A_{θ^{t−1}} is the global attribution, so every process holds the same cache.

**Writes.** Checkpoints, ``config.json`` / ``history.json`` / ``result.json``, the saved model,
summaries and attack results are written by the main process only (:func:`is_main`); the
others wait at a barrier after each checkpoint. Resuming works as in one process: every process
reads the main process's checkpoint.

**Attribution.** :func:`neuronscope.attribution.attribute` gives each process a contiguous
share of the items (:func:`shard_range`) and gathers the per-sample max/min (and target
values) in item order on every process (:func:`all_gather_objects`); the CLI writes the file
once.

**Evaluation** (forget score for early stopping, MCQA after unlearning, FS during attacks) is
replicated: every process scores all items on identical weights, so early-stopping decisions
agree without communication.

**Studies** (``study``, ``demo``, ``diagnose``: :class:`neuronscope.study.Study`). Every process
runs every stage: unlearning, attribution and the attacks through the data-parallel paths above,
evaluation, the known-fact probe and the logit lens replicated. Whether a stage is already cached
(a stage file, a saved model or attribution, an attack's saved seeds) is read by the main process
alone and handed to the others (:func:`from_main`), so every process takes the same branch and
meets the same collectives even while the main process is writing; the main process alone writes
the folder and logs. Methods that do not run data-parallel are refused before the first stage.

**Supported.** Data parallelism (DDP-style, one full model per process) for the methods GA,
GD and SSIUU (exact and first order) and for fine-tuning (relearning attacks). DPO/NPO (means
over examples), RMU (means over positions of a residual) and KLUE (per-process gradient
masks) are refused with one line under several processes. **FSDP and DeepSpeed ZeRO-3**
(parameters sharded across processes) are refused: SSIUU's parameter attribution needs the
full gradient ``∂P/∂θ`` of every attributed weight matrix and its product with the full θ —
under ZeRO-3/FSDP each process holds only a flat shard of θ and of the gradient after the
reduce-scatter, and row-wise I− and row norms ``‖A_i‖`` cut across shard boundaries (they would
need an all-gather of every attributed matrix per step, i.e. no memory saving); the
TransformerLens hook points used by attribution also need unsharded modules. A model that does
not fit one GPU therefore has no supported route yet (see the README section "Scaling"). Accelerate
``mixed_precision`` (autocast) is refused too: the weights' dtype is chosen with ``--dtype``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import Tensor

from neuronscope.errors import ConfigError

T = TypeVar("T")

#: Methods that run data-parallel (their losses are sums of per-token terms, or SSIUU).
DP_METHODS: tuple[str, ...] = ("ga", "gd", "ssiuu", "nll")

#: History terms whose value is global (identical on every process): averaged, not summed.
GLOBAL_TERMS: frozenset[str] = frozenset({"ssiuu_negative", "grad_norm"})

_BUCKET = 1 << 24  # elements per coalesced all-reduce


def _dist():
    import torch.distributed as dist

    return dist


def active() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return _dist().get_world_size() if active() else 1


def rank() -> int:
    """This process's index (0 without a process group)."""
    return _dist().get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process writes outputs (process 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if active():
        _dist().barrier()


def check_launch_env(environ: dict[str, str] | None = None) -> None:
    """Refuse Accelerate configurations neuronscope does not implement (one line each).

    Raises:
        ConfigError: FSDP or DeepSpeed is configured (parameter sharding is not supported: SSIUU
            needs each attributed weight's full gradient), or Accelerate mixed precision
            (use ``--dtype``).
    """
    env = os.environ if environ is None else environ
    truthy = ("1", "true", "yes")
    if env.get("ACCELERATE_USE_FSDP", "").lower() in truthy:
        raise ConfigError(
            "accelerate: FSDP is not supported (SSIUU and attribution need every attributed weight and its full "
            "gradient unsharded); launch with plain data parallelism (no --use_fsdp)"
        )
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in truthy:
        raise ConfigError(
            "accelerate: DeepSpeed/ZeRO is not supported (SSIUU needs each attributed weight's full gradient); "
            "launch with plain data parallelism (no --use_deepspeed)"
        )
    mp = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mp not in ("", "no"):
        raise ConfigError(
            f"accelerate: mixed_precision={mp} is not used by neuronscope; launch with --mixed_precision no and "
            "choose the weights' dtype with --dtype"
        )


def init_from_env() -> bool:
    """Join the process group of ``accelerate launch`` / ``torchrun`` (no-op for one process).

    Reads ``WORLD_SIZE``; with more than one process, checks the launch configuration
    (:func:`check_launch_env`) and initialises ``torch.distributed`` through
    ``accelerate.PartialState`` (which also selects this process's GPU).

    Returns:
        Whether this process is one of several.

    Raises:
        ConfigError: An unsupported Accelerate configuration.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    check_launch_env()
    if not active():
        from accelerate import PartialState

        PartialState()
    return active()


def check_method(method: str) -> None:
    """Refuse a training method that does not run data-parallel, when several processes run.

    Raises:
        ConfigError: ``method`` is not one of :data:`DP_METHODS` and ``world_size() > 1``.
    """
    if active() and method not in DP_METHODS:
        raise ConfigError(
            f"method: {method} does not run data-parallel (supported across processes: "
            f"{', '.join(m for m in DP_METHODS if m != 'nll')}); run it in one process"
        )


def shard_range(n: int) -> tuple[int, int]:
    """``[lo, hi)`` of this process's contiguous share of ``n`` items (sizes differ by ≤ 1)."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def shard(items: Sequence[T]) -> list[T]:
    """This process's contiguous share of ``items`` (all of them in one process)."""
    lo, hi = shard_range(len(items))
    return list(items[lo:hi])


def check_batch_sizes(sizes: Sequence[int], what: str = "batch_size") -> None:
    """Every global batch must give every process at least one item.

    Raises:
        ConfigError: Some batch holds fewer items than processes, naming its size.
    """
    w = world_size()
    small = [s for s in sizes if s < w]
    if small:
        raise ConfigError(
            f"{what}: a batch of {min(small)} item(s) cannot be split across {w} processes; "
            f"choose a batch size (and data size) that gives every batch ≥ {w} items"
        )


def all_reduce_sum(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Sum each tensor over processes, in place, in coalesced buckets (no-op in one process).

    Args:
        tensors: Same shapes and dtypes, in the same order, on every process.

    Returns:
        The same tensors (now holding the sums).
    """
    tensors = list(tensors)
    if not active() or not tensors:
        return tensors
    dist = _dist()
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        bucket: list[Tensor] = []
        size = 0
        for t in group + [None]:
            if t is not None and (size + t.numel() <= _BUCKET or not bucket):
                bucket.append(t)
                size += t.numel()
                continue
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            off = 0
            for b in bucket:
                b.copy_(flat[off : off + b.numel()].view_as(b))
                off += b.numel()
            bucket, size = ([t], t.numel()) if t is not None else ([], 0)
    return tensors


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum the ``.grad`` of ``params`` over processes (a parameter without a gradient on some
    process counts as zero there; one without a gradient anywhere keeps ``None``)."""
    if not active():
        return
    params = list(params)
    dev = params[0].device if params else torch.device("cpu")
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    _dist().all_reduce(has)
    for p, h in zip(params, has.tolist()):
        if h and p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_sum([p.grad for p in params if p.grad is not None])


def broadcast_params(params: Sequence[Tensor]) -> None:
    """Copy process 0's values of ``params`` to every process (no-op in one process)."""
    if not active():
        return
    dist = _dist()
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def global_count(n: int) -> int:
    """``n`` summed over processes (e.g. answer tokens of the global batch); ``n`` in one process."""
    if not active():
        return n
    dev = torch.device("cuda", torch.cuda.current_device()) if _dist().get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([n], dtype=torch.float64, device=dev)
    _dist().all_reduce(t)
    return int(t.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in process order (``[obj]`` in one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def from_main(fn: "Callable[[], T]") -> T:
    """``fn()`` evaluated on the main process only, its (picklable) value handed to every process.

    Used where processes must take the same branch on what is on disk (a cached stage, a saved
    model): only the main process reads, so a file it writes a moment later cannot make another
    process decide differently. In one process: ``fn()``.
    """
    if not active():
        return fn()
    box = [fn() if is_main() else None]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def reduce_terms(loss_value: float, terms: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Global loss value and history terms from this process's partial values.

    Partial values (each process's share of a sum over the global batch) are summed; the
    terms in :data:`GLOBAL_TERMS` are already global and are averaged (they are equal).
    Every process must pass the same keys.
    """
    if not active():
        return loss_value, dict(terms)
    keys = sorted(terms)
    vals = torch.tensor([loss_value] + [float(terms[k]) for k in keys], dtype=torch.float64)
    dev = torch.device("cuda", torch.cuda.current_device()) if _dist().get_backend() == "nccl" else torch.device("cpu")
    vals = vals.to(dev)
    _dist().all_reduce(vals)
    vals = vals.cpu().tolist()
    w = world_size()
    out = {}
    for k, v in zip(keys, vals[1:]):
        if k in GLOBAL_TERMS:
            v = v / w
            out[k] = int(round(v)) if isinstance(terms[k], int) and not isinstance(terms[k], bool) else v
        else:
            out[k] = v
    return vals[0], out


def release_memory() -> None:
    """Collect unreachable objects now and return cached GPU blocks to the driver.

    A dropped :class:`~neuronscope.models.HookedModel` is not freed by reference counting
    alone: the TransformerBridge holds reference cycles (measured: a dropped ``clone_model``
    copy stays alive until ``gc.collect()``), so without a collection a loop that clones a
    model per run keeps two copies at once. Called between runs by the learning-rate search,
    the λ sweep and the relearning attacks.
    """
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

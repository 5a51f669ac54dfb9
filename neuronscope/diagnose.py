"""``neuronscope diagnose``: erased or hidden, for any pair of checkpoints (SPEC §14, §16).

Given a base model, an unlearned checkpoint of it and the forget set it was unlearned on:

1. check that both have the same architecture (module map, widths, layers) and tokenizer;
2. probe which forget items the base model *knows* (:func:`neuronscope.evaluation.known_facts`,
   margin ≥ δ; ``protocol="auto"`` picks the protocol under which the base knows more of them)
   and keep only those — a forget item the base never knew cannot tell erasing from hiding;
3. run the study stages on the pair (:class:`neuronscope.study.Study` with the unlearned model as
   a *checkpoint*): FS/RS with Wilson intervals, Eq. 1 attribution of both → D̃± with bootstrap
   CIs, cumulative curves and module×layer maps, the top spurious (D̃−) neurons, logit lens of
   both, optionally the harmful relearning probe (seeds × lr grid × p) with the attribution
   correlation before/after it;
4. decide ``erased`` / ``hidden`` / ``inconclusive`` with the documented rule of
   :mod:`neuronscope.verdict` and write ``report.html`` (opening with the verdict) and
   ``verdict.json``.

Every stage is cached in the output folder (the study run-folder layout), so an interrupted
diagnosis resumes. With the same forget items, protocol and attack settings, the verdict equals
the one ``neuronscope demo`` printed for its saved model (``--forget RUN/splits.json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuronscope.errors import ConfigError, ModelError, NeuronscopeError, write_json_atomic

__all__ = ["DiagnoseConfig", "diagnose", "check_compatible"]


@dataclass
class DiagnoseConfig:
    """What ``neuronscope diagnose`` compares and how (saved as ``diagnose.json``).

    Attributes:
        base: The model before unlearning (HF name or local path).
        unlearned: The unlearned checkpoint (HF name or local path).
        forget: Forget data: a data file, a split name of the shipped set, or a run's
            ``splits.json`` (its forget split) — see :func:`neuronscope.pipeline.load_items`.
        retain: Optional retain data (same forms; a run's ``splits.json`` means its retain
            split here), scored for RS.
        protocol: ``"auto"`` (the protocol under which the base knows more forget items),
            ``"mcqa"`` or ``"cloze"`` (SPEC §10).
        known_delta: Known-fact margin δ in nats (None = the library default).
        attack: Run the harmful relearning probe (paper §6.2.2).
        p / lrs / seeds / epochs: The probe's fraction of the forget set, learning rates, seeds
            and retraining epochs (defaults = the demo's: p 0.3, lr 1e-5, 3 seeds, 3 epochs).
        n_boot: Bootstrap resamples of the D̃−/D̃+ CI.
        batch_size: Items per attribution/training batch.
        dtype / device: Of both models.
        seed: Seed of option orders, the lens distractors and the bootstrap.
    """

    base: str
    unlearned: str
    forget: str
    retain: str | None = None
    protocol: str = "auto"
    known_delta: float | None = None
    attack: bool = False
    p: float = 0.3
    lrs: list[float] = field(default_factory=lambda: [1e-5])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 3
    n_boot: int = 1000
    batch_size: int = 8
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in ("auto", "mcqa", "cloze"):
            raise ConfigError(f"--protocol: expected auto, mcqa or cloze, got {self.protocol!r}")
        if not self.seeds:
            raise ConfigError("--seeds: need at least one attack seed")
        if self.n_boot < 100:
            raise ConfigError(f"--n-boot: need at least 100 bootstrap resamples, got {self.n_boot}")

    def study_config(self, protocol: str):
        """The :class:`~neuronscope.study.StudyConfig` of the diagnosis (no training, one checkpoint)."""
        from neuronscope.study import StudyConfig

        return StudyConfig.from_dict({
            "model": self.base, "dtype": self.dtype, "device": self.device, "seed": self.seed,
            "methods": {}, "checkpoints": {"unlearned": self.unlearned},
            "data": {"known_only": False, "known_delta": self.known_delta},
            "evaluation": {"protocol": protocol, "paraphrase": False, "utility_limit": 30},
            "attribution": {"targets": ["prob", "logprob"], "batch_size": self.batch_size, "n_boot": self.n_boot},
            "attacks": {"harmful": ({"ps": [self.p], "lrs": list(self.lrs), "seeds": list(self.seeds),
                                     "epochs": self.epochs, "batch_size": self.batch_size} if self.attack else None),
                        "benign": None},
            "title": f"diagnose {Path(self.unlearned).name or self.unlearned} against {Path(self.base).name or self.base}",
        }, source="diagnose")


def check_compatible(base, unlearned) -> None:
    """Raise one line unless two hooked models share architecture and tokenizer.

    Raises:
        ModelError: Different architecture (HF ``model_type``), module map, widths, layer or head
            counts, or tokenizer vocabulary.
    """
    ta, tb = base.hf_model.config.model_type, unlearned.hf_model.config.model_type
    if ta != tb:
        raise ModelError(f"{unlearned.name}: architecture {tb} differs from the base model's {ta} ({base.name}); "
                         "not an unlearned copy of it")
    a, b = base.arch, unlearned.arch
    for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp"):
        if getattr(a, name) != getattr(b, name):
            raise ModelError(f"{unlearned.name}: {name} {getattr(b, name)} differs from the base model's "
                             f"{getattr(a, name)} ({base.name}); not an unlearned copy of it")
    if sorted(a.hook_names) != sorted(b.hook_names):
        raise ModelError(f"{unlearned.name}: module map differs from the base model's ({base.name})")
    if base.tokenizer.get_vocab() != unlearned.tokenizer.get_vocab():
        raise ModelError(f"{unlearned.name}: tokenizer vocabulary differs from the base model's ({base.name})")


def diagnose(config: DiagnoseConfig, out: str | Path, *, progress: bool = True, overwrite: bool = False) -> dict:
    """Diagnose one unlearned checkpoint against its base model into the folder ``out``.

    Args:
        config: What to compare (see :class:`DiagnoseConfig`).
        out: Output folder (study run-folder layout + ``diagnose.json``, ``verdict.json``,
            ``report.html``); finished stages are reused.
        progress: Progress bars.
        overwrite: Recompute a finished diagnosis.

    Returns:
        The summary (``summary.json``) with ``verdict.unlearned`` and ``known_facts``.

    Raises:
        NeuronscopeError: Bad data, a model that cannot be loaded, incompatible models, fewer
            than 3 forget items known by the base model, or a finished diagnosis without
            ``overwrite``.
    """
    from neuronscope import distributed
    from neuronscope.rundir import follower_run_dir, prepare_run_dir

    # data parallelism (SPEC §15): the main process holds and writes the folder; attribution and the
    # harmful probe are sharded over the processes, the knowledge probe and evaluations replicated
    ctx = follower_run_dir() if not distributed.is_main() else prepare_run_dir(
        out, command="diagnose", overwrite=overwrite, progress=("stages/*.json",))
    with ctx as rd:
        return _diagnose(rd, config, Path(out), progress and distributed.is_main())


def _diagnose(rd, config: DiagnoseConfig, out: Path, progress: bool) -> dict:
    from neuronscope.data import FaithUnSplits
    from neuronscope.evaluation import DEFAULT_DELTA, known_facts
    from neuronscope.models import load_model
    from neuronscope.pipeline import load_items
    from neuronscope.study import Study

    forget = load_items(config.forget, seed=config.seed)
    retain = load_items(config.retain, seed=config.seed, default_split="retain") if config.retain else []
    if not all(it.false_options for it in forget):
        raise NeuronscopeError(f"{config.forget}: forget items without false options cannot be probed for knowledge")
    base = load_model(config.base, dtype=config.dtype, device=config.device, seed=config.seed)
    unl = load_model(config.unlearned, dtype=config.dtype, device=config.device)
    check_compatible(base, unl)
    del unl

    delta = DEFAULT_DELTA if config.known_delta is None else config.known_delta
    probes = {}
    for protocol in (("cloze", "mcqa") if config.protocol == "auto" else (config.protocol,)):
        probes[protocol] = known_facts(base, forget, protocol, delta, progress=progress)
    protocol = max(probes, key=lambda k: len(probes[k].known_ids()))
    known_ids = probes[protocol].known_ids()
    known = [it for it in forget if it.id in known_ids]
    if len(known) < 3:
        raise NeuronscopeError(
            f"{config.forget}: the base model knows only {len(known)} of {len(forget)} forget items "
            f"(margin ≥ {delta:g} nats; {', '.join(f'{k}: {len(v.known_ids())}' for k, v in probes.items())}); "
            "nothing to diagnose — there is no knowledge to erase or hide")

    from neuronscope import distributed

    study = Study(config.study_config(protocol), out, progress=progress, base=base)
    rd.claim()  # first write from here on
    if distributed.is_main():
        write_json_atomic(out / "diagnose.json", asdict(config))
    distributed.barrier()
    study.use_splits(
        FaithUnSplits(forget=known, retain=list(retain), test=[], held_out=[]),
        known={"protocol": protocol, "delta": delta, "n_candidates": len(forget),
               "fraction": len(known) / len(forget), "accuracy": probes[protocol].to_dict().get("accuracy"),
               "by_protocol": {k: len(v.known_ids()) / len(forget) for k, v in probes.items()},
               "correct_ids": sorted(known_ids)})
    summary = study.run()
    v = summary["verdict"].get("unlearned", {})
    study.log(f"known forget items: {len(known)} of {len(forget)} ({protocol}); verdict: {v.get('label')}")
    return summary


def verdict_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: the verdict and the rule that decided it."""
    v = summary["verdict"]["unlearned"]
    return f"verdict: {v['label']} — {v['rule']}"

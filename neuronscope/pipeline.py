"""Small compositions used by the CLI and the runners: resolve data specs, model → attribution → influence."""

from __future__ import annotations

from pathlib import Path

from neuronscope.errors import NeuronscopeError

SPLIT_NAMES = ("forget", "retain", "test", "held_out")


def load_items(spec: str, *, seed: int = 0) -> list:
    """FaithUn-format items from a split name of the embedded set or a file path.

    Args:
        spec: ``forget`` / ``retain`` / ``test`` / ``held_out`` (embedded set split with ``seed``),
            ``all`` (the whole embedded set), or a FaithUn-format JSON/JSONL file.
        seed: Split seed.

    Raises:
        NeuronscopeError: Unknown split name or missing/malformed file.
    """
    from neuronscope.data import load_faithun, split_faithun

    if spec in SPLIT_NAMES:
        return list(getattr(split_faithun(load_faithun(), seed=seed), spec))
    if spec == "all":
        return load_faithun()
    path = Path(spec)
    if not path.exists():
        raise NeuronscopeError(f"{spec}: no such file (or split name; expected one of {', '.join(SPLIT_NAMES)}, all)")
    return load_faithun(path)


def influence_between(before: str, after: str, data: str, *, seed: int = 0, batch_size: int = 8, progress: bool = True):
    """Load two models, attribute both on ``data`` and return their :class:`InfluenceVariation`."""
    from neuronscope.attribution import AttributionConfig, attribute
    from neuronscope.influence import influence_variation
    from neuronscope.models import load_model

    items = load_items(data, seed=seed)
    qs, ans = [i.question for i in items], [i.answer for i in items]
    cfg = AttributionConfig(batch_size=batch_size)
    a_before = attribute(load_model(before), qs, ans, cfg, progress=progress)
    a_after = attribute(load_model(after), qs, ans, cfg, progress=progress)
    return influence_variation(a_before, a_after, label=Path(after).name or after)

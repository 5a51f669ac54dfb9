"""Small compositions used by the CLI and the runners: resolve data specs, model → attribution → influence."""

from __future__ import annotations

from pathlib import Path

from neuronscope.errors import NeuronscopeError

SPLIT_NAMES = ("forget", "retain", "test", "held_out")


def load_items(spec: str, *, seed: int = 0, default_split: str = "forget") -> list:
    """Question items for a ``--data`` value: a split name, a data file, a run's splits, a Hub name.

    Accepted ``spec`` values:

    * ``forget`` / ``retain`` / ``test`` / ``held_out``: that split of the embedded set
      (seeded by ``seed``); ``all``: the whole embedded set.
    * A data file or folder in any format :func:`neuronscope.data.load_data` reads
      (FaithUn-format, the FaithUn release, TOFU incl. ``*_perturbed``; JSON, JSON Lines,
      parquet, CSV): all its questions (for the release: the base questions, one per cluster).
    * ``FILE:SPLIT``: one split of that data — the published split of the FaithUn release,
      else the seeded split (:meth:`~neuronscope.data.LoadedData.split`); ``FILE:SPLIT/SET``
      picks an extra evaluation set of the split (release: ``paraphrase``, ``multihop``,
      ``same_answer``).
    * A run's ``splits.json`` (or its run folder): its ``default_split`` (the forget split
      unless asked otherwise), reloaded from the data source it records
      (:func:`neuronscope.data.load_splits_file`); ``splits.json:retain`` picks another split
      (``:test/paraphrase`` an extra set).
    * A Hugging Face Hub name ``owner/name[:config]`` (tried like ``unlearn`` does; offline
      gives one line).

    Args:
        spec: The data specification.
        seed: Split seed (split names and ``FILE:SPLIT`` without published splits).
        default_split: The split a run's ``splits.json`` given without ``:SPLIT`` stands for
            (``diagnose --retain RUN/splits.json`` means its retain split).

    Returns:
        The items (:class:`~neuronscope.data.QAItem`), never empty.

    Raises:
        NeuronscopeError: Unknown split name, missing/malformed file, an Alpaca instruction
            set (not questions), an empty split — one line naming the file or split.
    """
    from neuronscope.data import DataError, is_splits_file, load_data, load_faithun, load_splits_file, split_faithun

    if spec in SPLIT_NAMES:
        return list(getattr(split_faithun(load_faithun(), seed=seed), spec))
    if spec == "all":
        return load_faithun()
    path, part = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if Path(head).exists() and tail.split("/", 1)[0] in SPLIT_NAMES:
            path, part = Path(head), tail
    if path.is_dir() and (path / "splits.json").is_file():  # a run folder
        from neuronscope.data import _release_json

        if _release_json(path) is None:
            path = path / "splits.json"
    if path.exists() and is_splits_file(path):
        splits = load_splits_file(path)
        return _pick(splits, part or default_split, str(path))
    if not path.exists() and part is None and not _looks_like_hub(spec):
        raise NeuronscopeError(
            f"{spec}: no such file (or split name; expected one of {', '.join(SPLIT_NAMES)}, all, "
            "a data file, a run's splits.json, or a Hub name owner/name[:config])"
        )
    data = load_data(path if path.exists() else spec)
    if not data.is_qa:
        raise DataError(
            f"{_name(spec)}: is an Alpaca instruction set (instruction, input, output), not questions; "
            "use it with `attack --kind benign --alpaca FILE`"
        )
    if part is None:
        return list(data.items)
    return _pick(data.split(seed=seed), part, _name(str(path)))


def _name(spec: str) -> str:
    return Path(spec).name if Path(spec).exists() else spec


def _looks_like_hub(spec: str) -> bool:
    from neuronscope.data import _HUB_NAME

    return bool(_HUB_NAME.match(spec)) and not Path(spec).suffix and not Path(spec).parent.exists()


def _pick(splits, part: str, where: str) -> list:
    """The items of ``part`` (``forget`` or ``forget/paraphrase``) of ``splits``; never empty."""
    name, _, extra = part.partition("/")
    if name not in SPLIT_NAMES:
        raise NeuronscopeError(f"{where}: unknown split {name!r} (expected one of {', '.join(SPLIT_NAMES)})")
    if extra:
        sets = splits.extra.get(name, {})
        if extra not in sets:
            have = ", ".join(sets) or "none"
            raise NeuronscopeError(f"{where}: split '{name}' has no extra set {extra!r} (have: {have})")
        items = sets[extra]
    else:
        items = getattr(splits, name)
    if not items:
        raise NeuronscopeError(f"{where}: field '{name}' is empty")
    return list(items)


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

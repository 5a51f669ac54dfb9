"""Shared plumbing of the figure/table scripts: arguments, configs, cached runs.

Every script in ``analyses/`` is a thin caller of the library. It takes

* ``--quick`` — the embedded default (SmolLM2-135M-Instruct + the shipped FaithUn-format facts)
  at tiny sizes, for a laptop CPU, or
* ``--config FILE`` — a JSON config for the paper's full runs (``analyses/configs/``), merged
  over the script's quick defaults (so a config only names what it changes),

plus ``--model`` (override the base model), ``--out`` (run directory) and ``--seed``.

Config keys (all optional in a ``--config`` file):

``model``, ``dtype``, ``device``
    Base model name/path, parameter dtype, torch device.
``data``
    ``file`` (FaithUn-format file or hub name; null = the shipped set), ``limit`` (first N
    questions), ``forget``/``retain``/``test`` fractions, ``known_only`` (draw the forget split
    from facts the base model answers correctly), ``seed``.
``methods``
    ``{method: {UnlearningConfig overrides, "lrs": [ascending grid] or "lr": value}}``.
``unlearning``
    UnlearningConfig fields shared by every method (``max_epochs``, ``batch_size``, ...).
``attribution``
    ``batch_size``.
``attacks``
    ``harmful``/``benign``: :class:`neuronscope.attacks.AttackConfig` fields.
``utility``
    ``tasks`` (lm-eval tasks; null = the shipped utility set), ``limit``.

Runs are cached in the output directory (unlearned models, attributions, attack results), so a
rerun resumes. Fresh copies of the base model are reloaded from its name or path (no second
copy is kept in memory).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Defaults every script starts from; scripts override parts of it.
BASE_QUICK: dict[str, Any] = {
    "model": "smollm2-135m-instruct",
    "dtype": "float32",
    "device": "cpu",
    "data": {"file": None, "limit": 80, "forget": 0.1, "retain": 0.1, "test": 0.2, "known_only": True, "seed": 0},
    "methods": {"gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5, "lam": 1e-3}},
    "unlearning": {"max_epochs": 8, "batch_size": 8, "threshold": 0.33},
    "attribution": {"batch_size": 8},
    "attacks": {
        "harmful": {"p": 0.3, "lrs": [1e-5], "seeds": [0], "epochs": 3, "batch_size": 8},
        "benign": {"lrs": [1e-5], "seeds": [0], "epochs": 1, "n_alpaca": 64, "eval_every": 4, "batch_size": 8},
    },
    "utility": {"tasks": None, "limit": 500},
}


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated recursively with ``over`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "methods":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parser(description: str) -> argparse.ArgumentParser:
    """The common command line (``--quick`` | ``--config FILE``, ``--model``, ``--out``, ``--seed``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="embedded default (SmolLM2 + shipped facts), tiny sizes")
    mode.add_argument("--config", type=Path, metavar="FILE", help="JSON config of a full run (see analyses/configs/)")
    p.add_argument("--model", help="override the base model (name or path, e.g. tiny-llama)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<script>)")
    p.add_argument("--seed", type=int, help="override data.seed and the unlearning seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def load_config(args: argparse.Namespace, quick: dict, script: str) -> dict:
    """The run configuration: the script's quick defaults, a ``--config`` file over them, CLI overrides.

    Raises:
        SystemExit: The config file is missing or not a JSON object (one line, exit code 2).
    """
    cfg = deep_merge(BASE_QUICK, quick)
    if args.config is not None:
        try:
            over = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except FileNotFoundError:
            fail(f"{args.config}: config file not found")
        except json.JSONDecodeError as exc:
            fail(f"{args.config}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})")
        if not isinstance(over, dict):
            fail(f"{args.config}: expected a JSON object")
        cfg = deep_merge(cfg, over)
    if args.model:
        cfg["model"] = args.model
    if args.seed is not None:
        cfg["data"]["seed"] = args.seed
        cfg["unlearning"]["seed"] = args.seed
    cfg["out"] = str(args.out or Path("runs") / script)
    cfg["progress"] = not args.no_progress
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return cfg


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def run(main: Callable[[dict], dict], description: str, quick: dict, script: str, argv=None) -> dict:
    """Parse arguments, build the config, call ``main(cfg)`` and turn library errors into one line."""
    from neuronscope.errors import NeuronscopeError

    args = parser(description).parse_args(argv)
    cfg = load_config(args, quick, script)
    out = Path(cfg["out"])
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {k: v for k, v in cfg.items() if k not in ("progress",)})
        result = main(cfg)
    except NeuronscopeError as exc:
        fail(str(exc))
    for name, path in (result or {}).items():
        print(f"{name}: {path}")
    return result


# ------------------------------------------------------------------------------- building blocks


def write_json(path: Path, obj: Any) -> Path:
    from neuronscope.errors import write_json_atomic

    return write_json_atomic(path, obj)


def log(msg: str) -> None:
    print(f"[analyses] {msg}", file=sys.stderr, flush=True)


def load_base(cfg: dict, path: str | None = None):
    """Load the base model (or ``path``) with the configured dtype/device."""
    from neuronscope.models import load_model

    return load_model(path or cfg["model"], dtype=cfg.get("dtype", "float32"), device=cfg.get("device", "cpu"),
                      seed=cfg["data"].get("seed", 0))


def model_factory(cfg: dict) -> Callable:
    """A fresh copy of the base model per call (reloaded from its name/path)."""
    return lambda: load_base(cfg)


def splits(cfg: dict, base) -> Any:
    """Forget/retain/test splits of the configured FaithUn-format data (cached in ``out/splits.json``).

    With ``known_only``, the forget split is drawn from the facts the base model answers
    correctly (MCQA, option likelihood) when at least 3 are known, else from all facts.
    """
    from neuronscope.data import FaithUnSplits, load_faithun, split_faithun
    from neuronscope.evaluation import mcqa_evaluate

    d = cfg["data"]
    items = load_faithun(d.get("file"))
    if d.get("limit"):
        items = items[: int(d["limit"])]
    cache = Path(cfg["out"]) / "splits.json"
    if cache.exists():
        return FaithUnSplits.from_dict(json.loads(cache.read_text()), items)
    pool = None
    if d.get("known_only"):
        log(f"MCQA accuracy of the base model on {len(items)} questions (forget pool = known facts)")
        res = mcqa_evaluate(base, items, progress=cfg["progress"], desc="base MCQA")
        known = res.correct_ids()
        pool = known if len(known) >= 3 else None
    sp = split_faithun(items, forget=d.get("forget", 0.05), retain=d.get("retain", 0.1), test=d.get("test", 0.7),
                       seed=d.get("seed", 0), forget_pool=pool)
    write_json(cache, sp.to_dict())
    return sp


def unlearning_config(cfg: dict, method: str, **extra):
    """:class:`UnlearningConfig` for ``method``: shared ``unlearning`` fields + the method's overrides."""
    from neuronscope.unlearning import UnlearningConfig

    over = {k: v for k, v in cfg["methods"].get(method, {}).items() if k != "lrs"}
    fields = {**cfg["unlearning"], **over, **extra, "method": method}
    fields.setdefault("seed", cfg["data"].get("seed", 0))
    return UnlearningConfig.from_dict(fields, source=f"methods.{method}")


def unlearned(cfg: dict, method: str, splits_, *, tag: str = "", **extra):
    """The model unlearned with ``method`` (trained once, then reloaded from ``out/models``).

    With ``lrs`` in the method's config, the lowest learning rate reaching the threshold wins
    (:func:`neuronscope.unlearning.lr_search`); otherwise the method's ``lr``.

    Returns:
        ``(model, info)``; ``info`` holds ``reached``, ``steps``, ``lr``.
    """
    from neuronscope.unlearning import lr_search, unlearn

    name = f"{method}{tag}"
    out = Path(cfg["out"])
    mdir, info_path = out / "models" / name, out / "models" / f"{name}.json"
    if (mdir / "config.json").exists() and info_path.exists():
        return load_base(cfg, str(mdir)), json.loads(info_path.read_text())
    ucfg = unlearning_config(cfg, method, **extra)
    lrs = cfg["methods"].get(method, {}).get("lrs")
    log(f"unlearning with {name.upper()}")
    if lrs:
        lr, res = lr_search(model_factory(cfg), splits_.forget, splits_.retain, ucfg, lrs,
                            run_dir=out / "train" / name, progress=cfg["progress"])
        model, lr = res.model, (lr if lr is not None else res.config.lr)
    else:
        model = load_base(cfg)
        res = unlearn(model, splits_.forget, splits_.retain, ucfg, run_dir=out / "train" / name,
                      progress=cfg["progress"])
        lr = ucfg.lr
    model.save(mdir)
    info = {"method": method, "lr": lr, "reached": res.reached, "steps": res.steps,
            "forget_score": res.forget_score, "initial_forget_score": res.initial_forget_score}
    write_json(info_path, info)
    return model, info


def attribution(cfg: dict, name: str, model, items):
    """Eq. 1 attributions of ``model`` on ``items`` (cached in ``out/attributions/<name>``)."""
    from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute

    path = Path(cfg["out"]) / "attributions" / f"{name}.safetensors"
    if path.exists():
        return NeuronAttribution.load(path)
    log(f"attribution (Eq. 1) of {name} on {len(items)} items")
    a = attribute(model, [i.question for i in items], [i.answer for i in items],
                  AttributionConfig(batch_size=cfg["attribution"].get("batch_size", 8)), progress=cfg["progress"])
    a.meta["model"] = name
    a.save(path)
    return a


def attack(cfg: dict, name: str, model_dir: str | Path, model, forget, kind: str = "harmful",
           keep_model: bool = False, **over):
    """Run a relearning attack on the unlearned model saved at ``model_dir`` (cached result).

    Each run starts from a fresh reload of ``model_dir``. With ``keep_model`` the last attacked
    model (last seed and learning rate, end of retraining) is returned too, and cached in
    ``out/models/<name>``.

    Returns:
        ``(AttackResult, attacked model or None)``.
    """
    from neuronscope.attacks import AttackConfig, AttackResult, run_attack

    acfg = AttackConfig.from_dict({**cfg["attacks"][kind], **over, "kind": kind}, source=f"attacks.{kind}")
    out = Path(cfg["out"])
    rdir = out / "attacks" / name
    kept_dir = out / "models" / name
    cached = rdir / "attack.json"
    if cached.exists():
        res = AttackResult.load(cached)
        complete = len(res.runs) == len(acfg.seeds) * len(acfg.lrs) and res.config.to_dict() == acfg.to_dict()
        if complete and not keep_model:
            return res, None
        if complete and (kept_dir / "config.json").exists():
            return res, load_base(cfg, str(kept_dir))
    kept: list = []

    def clone(_m):
        m = load_base(cfg, str(model_dir))
        kept[:] = [m]
        return m

    log(f"{acfg.label} attack on {name}")
    # run_attack resumes finished runs from run_dir; to get the attacked model back, rerun them.
    res = run_attack(model, forget, acfg, run_dir=None if keep_model else rdir, progress=cfg["progress"],
                     clone_fn=clone)
    res.save(cached)
    if keep_model and kept:
        kept[0].save(kept_dir)
        return res, kept[0]
    return res, None


def save_figures(out: Path, figs: dict) -> dict[str, Path]:
    """Write each figure as ``out/<name>.html`` (PNG beside it when kaleido works)."""
    from neuronscope.plots import save_figure

    return {name: save_figure(fig, out / f"{name}.html")[0] for name, fig in figs.items()}

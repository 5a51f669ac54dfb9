"""Shared plumbing of the figure/table scripts: arguments → a :class:`neuronscope.study.StudyConfig`.

Every script in ``analyses/`` is a study configuration plus the stages it needs
(:class:`neuronscope.study.Study`) plus its figure. It takes

* ``--quick`` — the embedded default (SmolLM2-135M-Instruct + the shipped facts) at tiny sizes, or
* ``--config FILE`` — a study JSON (``configs/*.json``, the one schema of SPEC §17), merged over
  the quick defaults (so a file only names what it changes),

plus ``--model``, ``--out`` (run folder, default ``runs/<script>``), ``--seed``, ``--threads``.
Every stage is cached in the run folder, so a rerun resumes and several scripts can share one
``--out`` to reuse each other's models and attributions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The quick defaults every script starts from (study JSON schema); scripts override parts of it.
BASE_QUICK: dict[str, Any] = {
    "data": {"limit": 80, "forget": 0.1, "retain": 0.1, "test": 0.2, "known_only": True},
    "methods": {"gd": {"lr": 5e-5}, "ssiuu": {"lr": 5e-5, "lam": 1e-3}},
    "unlearning": {"max_epochs": 8, "batch_size": 8, "threshold": 0.33},
    "evaluation": {"utility_limit": 500, "paraphrase": False},
    "attacks": {"harmful": {"ps": [0.3], "lrs": [1e-5], "seeds": [0], "epochs": 3, "batch_size": 8},
                "benign": {"lrs": [1e-5], "seeds": [0], "epochs": 1, "n_alpaca": 64, "eval_every": 4, "batch_size": 8}},
}


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def log(msg: str) -> None:
    print(f"[analyses] {msg}", file=sys.stderr, flush=True)


def run(main: Callable, description: str, quick: dict, script: str, argv=None) -> dict:
    """Parse arguments, build the study, call ``main(study, options)`` and print the written paths.

    ``options`` is the script's block of ``figures`` (``figures.<script>``). Library errors become
    one ``error:`` line and exit code 2.
    """
    from neuronscope.errors import NeuronscopeError
    from neuronscope.study import Study, StudyConfig, deep_merge

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="embedded default (SmolLM2 + shipped facts), tiny sizes")
    mode.add_argument("--config", type=Path, metavar="FILE", help="study JSON of a full run (see configs/)")
    p.add_argument("--model", help="override the base model (name or path, e.g. tiny-llama)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<script>)")
    p.add_argument("--seed", type=int, help="override the study seed (splits, training, attacks)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    try:
        cfg = StudyConfig().merged(deep_merge(BASE_QUICK, quick), source=f"{script} defaults")
        if args.config is not None:
            cfg = cfg.merged(_read(args.config), source=str(args.config))
        over = {k: v for k, v in {"model": args.model, "seed": args.seed, "threads": args.threads or None}.items()
                if v is not None}
        cfg = cfg.merged(over) if over else cfg
        from neuronscope.rundir import prepare_run_dir

        out = args.out or Path("runs") / script
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        # the run folder of `neuronscope study`: several scripts (and the study) may share it
        with prepare_run_dir(out, command="study", finished=(), progress=("stages/*.json",)) as rd:
            study = Study(cfg, out, progress=not args.no_progress)
            study.items  # noqa: B018  (data errors before anything is written)
            rd.claim()
            write_json(study.out / "study.json", cfg.to_dict())
            result = main(study, cfg.figures.get(script, {}))
    except NeuronscopeError as exc:
        fail(str(exc))
    for name, path in (result or {}).items():
        print(f"{name}: {path}")
    return result


def _read(path: Path) -> dict:
    """A config file as a dict (validated when merged), or one ``error:`` line."""
    import json

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{path}: config file not found")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{path}: invalid JSON ({exc})")
    if not isinstance(raw, dict):
        fail(f"{path}: expected a JSON object")
    return raw


def write_json(path: Path, obj: Any) -> Path:
    from neuronscope.errors import write_json_atomic

    return write_json_atomic(path, obj)


def save_figures(out: Path, figs: dict) -> dict[str, Path]:
    """Write each figure as ``out/<name>.html`` (PNG beside it when kaleido works)."""
    from neuronscope.plots import save_figure

    return {name: save_figure(fig, out / f"{name}.html")[0] for name, fig in figs.items()}


def attack_config(study, kind: str = "harmful", **over):
    """An :class:`~neuronscope.attacks.AttackConfig` from the study's ``attacks.<kind>`` block plus ``over``."""
    from neuronscope.attacks import AttackConfig

    block = {k: v for k, v in (getattr(study.config.attacks, kind) or {}).items() if k != "ps"}
    if kind == "harmful":
        block.setdefault("p", (study.config.attacks.harmful or {}).get("ps", [0.1])[0])
    return AttackConfig.from_dict({**block, **over, "kind": kind}, source=f"attacks.{kind}")

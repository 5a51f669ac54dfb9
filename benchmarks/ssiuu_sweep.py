"""Measurement: which SSIUU reading acts on the embedded default (issue 12, SPEC §9).

Run (one at a time, on a shared CPU)::

    OMP_NUM_THREADS=2 nice -n 5 .venv/bin/python benchmarks/ssiuu_sweep.py share --out runs/ssiuu_sweep
    OMP_NUM_THREADS=2 nice -n 5 .venv/bin/python benchmarks/ssiuu_sweep.py sweep --out runs/ssiuu_sweep \\
        --anchor initial --target logprob --grad first_order

``share``: for each reading (``ssiuu_anchor`` × ``ssiuu_target`` × ``ssiuu_grad``, 12 in all) a
few SSIUU steps at λ = 1e-3 (lr 5e-5, batch 8, AdamW, the demo's forget split) from the base
model, recording per step ``grad_share = ‖λ∇R‖/‖∇L_GD‖``; reported are the mean and range over
the steps where an anchor exists (``batch``: the second visit of a batch; the first visits are
GD steps), and ``λ*`` = the λ at which the mean share would be 1 % (∇R does not depend on λ, so
the share is linear in λ at fixed parameters). For the exact readings the last step's exact and
first-order ``∇R`` are compared (cosine, and ‖exact − first order‖/‖first order‖: the dropped
Hessian term ``H_P(r ⊙ θ)``).

``sweep``: paper Fig. 7a for one reading: for λ in {1e-4, 1e-3, 1e-2, 1e-1, 1} unlearn to the
threshold (FS ≤ 0.33, ≤ 12 epochs, lr 5e-5), then RS (retain split), test accuracy (first 60
test items), and the harmful attack FS at p = 0.1 and 0.3 (the demo's attack: lr 1e-5, 3
epochs, one seed). ``--protocol`` is passed to the evaluation when it supports one.

The forget split is the demo's (``StudyConfig.demo``): seed 0, 200 candidate questions scored
by the base model, forget drawn from those answered correctly. Results are written (atomically)
to ``<out>/share.json`` and ``<out>/sweep_<reading>.json``; finished readings / λ are reused.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402

import torch  # noqa: E402

ANCHORS = ("batch", "previous_step", "initial")
TARGETS = ("prob", "logprob")
GRADS = ("exact", "first_order")
LAMS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _evaluate(model, items, protocol: str | None):
    from neuronscope.evaluation import knowledge_evaluate

    return knowledge_evaluate(model, items, protocol=protocol or "mcqa")


def demo_splits(base, out: Path, protocol: str | None, seed: int = 0, candidates: int = 100):
    """The demo's splits (known-only forget split from a seeded sample of candidates)."""
    from neuronscope.data import load_faithun, split_faithun
    from neuronscope.errors import write_json_atomic

    items = load_faithun()
    cache = out / f"known_{protocol or 'default'}{'' if candidates == 100 else f'_{candidates}'}.json"
    known = _read(cache)
    if not known:
        cand = random.Random(seed).sample(list(items), candidates)
        if protocol is None:  # the demo as it was: correct under MCQA, one option order
            res = _evaluate(base, cand, protocol)
            known = {"accuracy": res.accuracy, "correct_ids": sorted(res.correct_ids())}
        else:  # SPEC §10: known = margin ≥ δ (and every option order for mcqa)
            from neuronscope.evaluation import known_facts

            kf = known_facts(base, cand, protocol)
            known = {"accuracy": kf.accuracy, "correct_ids": sorted(i for i, k in zip(kf.ids, kf.known) if k)}
        write_json_atomic(cache, known)
    pool = set(known["correct_ids"])
    return split_faithun(items, seed=seed, forget_pool=pool if len(pool) >= 3 else None), known


def _reading(anchor: str, target: str, grad: str) -> str:
    return f"{anchor}.{target}.{grad}"


def _cosine_exact_vs_first_order(model, method, items, key) -> dict:
    """∇R exact vs first order at the current parameters, with the method's anchor for ``key``."""
    from neuronscope.unlearning.ssiuu import attributed_weights, batch_objective, ssiuu_regulariser

    cfg = method.config
    prev = method.cache.get(method._slot(key))
    if prev is None:
        return {}
    ws = attributed_weights(model, cfg.ssiuu_modules)
    flags = [p.requires_grad for p in model.hf_model.parameters()]
    for p in model.hf_model.parameters():
        p.requires_grad_(False)
    for w in ws:
        w.requires_grad_(True)
    try:
        out = {}
        for exact in (True, False):
            pen = ssiuu_regulariser(batch_objective(model, items, cfg.ssiuu_target), ws, prev,
                                    granularity=cfg.ssiuu_granularity, exact=exact)[0]
            out[exact] = [g.detach() for g in torch.autograd.grad(pen, ws)]
    finally:
        for p, f in zip(model.hf_model.parameters(), flags):
            p.requires_grad_(f)
    e = torch.cat([g.flatten().double() for g in out[True]])
    f = torch.cat([g.flatten().double() for g in out[False]])
    return {
        "cosine": float(torch.dot(e, f) / (e.norm() * f.norm())),
        "norm_exact": float(e.norm()),
        "norm_first_order": float(f.norm()),
        "hessian_term_rel": float((e - f).norm() / f.norm()),
    }


def cmd_share(args) -> None:
    from neuronscope.errors import write_json_atomic
    from neuronscope.models import clone_model, load_model
    from neuronscope.unlearning import UnlearningConfig
    from neuronscope.unlearning.ssiuu import SSIUU
    from neuronscope.unlearning.trainer import _optimizer, _Plan, train_step

    out = Path(args.out)
    path = out / "share.json"
    results = _read(path) or {"reading": name}
    base = load_model(args.model, seed=0)
    splits, known = demo_splits(base, out, args.protocol, candidates=args.candidates)
    _log(f"forget {len(splits.forget)} items, retain {len(splits.retain)}; base candidates acc {known['accuracy']:.3f}")
    for anchor in args.anchors:
        for target in args.targets:
            for grad in args.grads:
                name = _reading(anchor, target, grad)
                if name in results and results[name]["steps"] and len(results[name]["steps"]) >= (
                    args.steps_batch if anchor == "batch" else args.steps
                ):
                    continue
                n_steps = args.steps_batch if anchor == "batch" else args.steps
                cfg = UnlearningConfig(method="ssiuu", lr=args.lr, lam=args.lam, batch_size=8, seed=0,
                                       ssiuu_anchor=anchor, ssiuu_target=target, ssiuu_grad=grad)
                m = clone_model(base)
                method = SSIUU(cfg)
                plan = _Plan(splits.forget, splits.retain, cfg.batch_size, cfg.seed, fixed=True)
                t0 = time.perf_counter()
                method.setup(m, plan.batches, splits.retain)
                for p in m.hf_model.parameters():
                    p.requires_grad_(True)
                m.bridge.eval()
                opt = _optimizer(list(m.hf_model.parameters()), cfg)
                torch.manual_seed(0)
                order = [k for e in range(8) for k, _ in plan.epoch_batches(e, lambda x: x)][:n_steps]
                steps, cos = [], None
                for s, key in enumerate(order):
                    if grad == "exact" and s == n_steps - 1 and args.cosine:
                        cos = _cosine_exact_vs_first_order(m, method, plan.batches[key], key)
                    lv, terms = train_step(m, method, opt, plan.batches[key], plan.retain_batch(s), key)
                    steps.append({"step": s + 1, "key": key, "loss": lv, **terms})
                    results[name] = _share_record(anchor, target, grad, args, steps, t0, cos)
                    write_json_atomic(path, results)  # after every step: a killed run keeps what it measured
                    _log(f"{name} step {s + 1}: share {terms['grad_share']:.3g} pen {terms['ssiuu_penalty']:.3g} |I-| {terms['ssiuu_negative']}")
                del m, method, opt
    print_share(results)


def _share_record(anchor, target, grad, args, steps, t0, cos) -> dict:
    active = [r["grad_share"] for r in steps if r["ssiuu_penalty"] > 0]
    mean = statistics.fmean(active) if active else 0.0
    return {
        "anchor": anchor, "target": target, "grad": grad, "lam": args.lam, "lr": args.lr,
        "mean_share": mean, "min_share": min(active, default=0.0), "max_share": max(active, default=0.0),
        "n_active": len(active),
        "first_active_step": next((r["step"] for r in steps if r["ssiuu_penalty"] > 0), None),
        "lam_for_1pct": (0.01 * args.lam / mean) if mean > 0 else math.inf,
        "seconds": time.perf_counter() - t0, "steps": steps,
        **({"exact_vs_first_order": cos} if cos else {}),
    }


def print_share(results: dict) -> None:
    print("| reading (anchor · target · grad) | mean ‖λ∇R‖/‖∇L_GD‖ | range over active steps | active steps | λ for 1 % |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {r['anchor']} · {r['target']} · {r['grad']} | {r['mean_share']:.3g} | {r['min_share']:.3g} – "
              f"{r['max_share']:.3g} | {r['n_active']} (from step {r['first_active_step']}) | {r['lam_for_1pct']:.3g} |")
    for name, r in results.items():
        c = r.get("exact_vs_first_order")
        if c:
            print(f"{name}: cos(exact, first order) {c['cosine']:.3f}; ‖exact−fo‖/‖fo‖ {c['hessian_term_rel']:.3g}")


def cmd_sweep(args) -> None:
    """Fig. 7a for one reading through :func:`neuronscope.unlearning.lambda_sweep` (one λ per call,
    so finished λ are reused), with the mean grad share and the harmful attacks as extra columns."""
    from neuronscope.attacks import harmful_attack
    from neuronscope.errors import ConfigError, write_json_atomic
    from neuronscope.models import clone_model, load_model
    from neuronscope.unlearning import UnlearningConfig
    from neuronscope.unlearning.search import lambda_sweep

    out = Path(args.out)
    name = _reading(args.anchor, args.target, args.grad)
    path = out / f"sweep_{name}.{args.protocol or 'mcqa'}.json"
    results = _read(path) or {"reading": name}
    base = load_model(args.model, seed=0)
    splits, known = demo_splits(base, out, args.protocol, candidates=args.candidates)
    test = splits.test[:60]
    _log(f"forget {len(splits.forget)}, retain {len(splits.retain)}, test {len(test)}, protocol {args.protocol or 'mcqa'}")
    if "base" not in results:
        results["base"] = {"FS": _evaluate(base, splits.forget, args.protocol).accuracy,
                           "RS": _evaluate(base, splits.retain, args.protocol).accuracy,
                           "test": _evaluate(base, test, args.protocol).accuracy}
        write_json_atomic(path, results)
    cfg = UnlearningConfig(method="ssiuu", lr=args.lr, batch_size=8, seed=0, max_epochs=args.max_epochs,
                           protocol=args.protocol or "mcqa", ssiuu_anchor=args.anchor, ssiuu_target=args.target, ssiuu_grad=args.grad)

    def extra(m, res):
        shares = [h["grad_share"] for h in res.history if h.get("ssiuu_penalty", 0) > 0]
        row = {"mean_share": statistics.fmean(shares) if shares else 0.0}
        for p in (0.1, 0.3):
            try:
                a = harmful_attack(m, splits.forget, p=p, lrs=(1e-5,), seeds=(0,), epochs=3, batch_size=8, progress=False,
                                    protocol=args.protocol or "mcqa")
                row[f"attack_p{p}"] = a.score
            except ConfigError as exc:  # e.g. too few forget items answered wrongly for this p
                row[f"attack_p{p}"] = None
                row[f"attack_p{p}_error"] = str(exc)
        return row

    for lam in args.lams:
        k = f"{lam:g}"
        if k in results:
            continue
        t0 = time.perf_counter()
        (row,) = lambda_sweep(lambda: clone_model(base), splits.forget, splits.retain, cfg, lams=[lam],
                              test_items=test, extra_fn=extra, progress=False)
        row["seconds"] = time.perf_counter() - t0
        results[k] = row
        write_json_atomic(path, results)
        _log(f"{name} λ={k}: {row}")
    print_sweep(results, name)


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def print_sweep(results: dict, name: str) -> None:
    print(f"λ sweep, reading {name} (one seed)")
    print("| λ | steps | reached | mean grad share | FS | RS | test | FS after harmful p=0.1 | p=0.3 |")
    print("|---|---|---|---|---|---|---|---|---|")
    b = results.get("base")
    if b:
        print(f"| base | – | – | – | {b['FS']:.3f} | {b['RS']:.3f} | {b['test']:.3f} | – | – |")
    for k, r in results.items():
        if k in ("base", "reading"):
            continue
        print(f"| {k} | {r['steps']} | {r['reached']} | {r['mean_share']:.3g} | {r['FS']:.3f} | {r['RS_retain']:.3f} | "
              f"{r['RS_test']:.3f} | {_f(r['attack_p0.1'])} | {_f(r['attack_p0.3'])} |")


def cmd_table(args) -> None:
    """One markdown table of every swept reading: ``<out>/sweep_<reading>.<protocol>.json`` (or ``--files``)."""
    files = [Path(f) for f in args.files] if args.files else sorted(Path(args.out).glob(f"sweep_*.{args.protocol or 'mcqa'}.json"))
    share = _read(Path(args.share)) if args.share else {}
    rows = []
    for f in files:
        d = _read(f)
        m = re.search(r"(batch|previous_step|initial)\.(prob|logprob)\.(exact|first_order)", f.name)
        name = d.get("reading") or (m.group(0) if m else None)
        if name is None:
            raise SystemExit(f"error: {f}: reading: no 'reading' field and no <anchor>.<target>.<grad> in the file name")
        rows.append((name, d))
    order = {(a, t, g): i for i, (a, t, g) in enumerate((a, t, g) for a in ANCHORS for t in TARGETS for g in GRADS)}
    rows.sort(key=lambda r: order.get(tuple(r[0].split(".")), 99))
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}"  # noqa: E731
    print("| anchor | target | gradient | λ | steps | reached | mean grad share | FS | retain split | RS test | "
          "harmful p=0.1 | p=0.3 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, d in rows:
        a, t, g = name.split(".")
        for k, r in sorted(((k, r) for k, r in d.items() if k not in ("base", "reading")), key=lambda kr: float(kr[0])):
            print(f"| {a} | {'log P' if t == 'logprob' else 'P'} | {g.replace('_', ' ')} | {k} | {r['steps']} | "
                  f"{'yes' if r['reached'] else 'no'} | {r['mean_share']:.2g} | {pct(r['FS'])} | {pct(r['RS_retain'])} | "
                  f"{pct(r['RS_test'])} | {pct(r['attack_p0.1'])} | {pct(r['attack_p0.3'])} |")
    if share:
        print(f"\n(gradient share at λ = 1e-3 from {args.share}: "
              + "; ".join(f"{k} {v['mean_share']:.2g}" for k, v in share.items() if isinstance(v, dict) and "mean_share" in v) + ")")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tb = sub.add_parser("table", help="one markdown table of every swept reading")
    tb.add_argument("--out", default="runs/ssiuu_sweep")
    tb.add_argument("--protocol", default=None, choices=("mcqa", "cloze"))
    tb.add_argument("--files", nargs="*", help="sweep JSON files (default: <out>/sweep_*.<protocol>.json)")
    tb.add_argument("--share", default=None, help="a share.json to quote")
    for name in ("share", "sweep"):
        s = sub.add_parser(name)
        s.add_argument("--out", default="runs/ssiuu_sweep")
        s.add_argument("--model", default="smollm2-135m-instruct")
        s.add_argument("--lr", type=float, default=5e-5)
        s.add_argument("--protocol", default=None, choices=("mcqa", "cloze"),
                       help="knowledge protocol (default: the demo's MCQA split and scoring)")
        s.add_argument("--threads", type=int, default=0)
        s.add_argument("--candidates", type=int, default=200,
                       help="questions probed for the known-only forget split (the demo's: 200)")
    sh = sub.choices["share"]
    sh.add_argument("--lam", type=float, default=1e-3)
    sh.add_argument("--steps", type=int, default=4, help="steps per reading (previous_step, initial)")
    sh.add_argument("--steps-batch", type=int, default=6, help="steps for the batch anchor (active from the 2nd visit)")
    sh.add_argument("--cosine", action="store_true", help="exact readings: compare exact and first-order ∇R at the last step")
    sh.add_argument("--anchors", nargs="+", default=list(ANCHORS), choices=ANCHORS)
    sh.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    sh.add_argument("--grads", nargs="+", default=list(GRADS), choices=GRADS)
    sw = sub.choices["sweep"]
    sw.add_argument("--anchor", default="initial", choices=ANCHORS)
    sw.add_argument("--target", default="logprob", choices=TARGETS)
    sw.add_argument("--grad", default="first_order", choices=GRADS)
    sw.add_argument("--lams", nargs="+", type=float, default=list(LAMS))
    sw.add_argument("--max-epochs", type=int, default=12, help="unlearning budget (early stop at FS ≤ 0.33)")
    args = ap.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    {"share": cmd_share, "sweep": cmd_sweep, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()

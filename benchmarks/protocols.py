"""Measurement: what the base model knows under each knowledge protocol (SPEC §10).

Run: ``OMP_NUM_THREADS=2 nice -n 5 .venv/bin/python benchmarks/protocols.py --out protocols.json``
(options: ``--model``, ``--sample N`` for a seeded sample of the shipped questions, ``--seed``,
``--no-resume``).

For the shipped FaithUn-format questions ("facts") and the shipped utility set, under
``mcqa`` (paper Table 3, options in the prompt; every cyclic rotation of the options is one
*option order*) and ``cloze`` (the question alone; one order), with
:func:`neuronscope.evaluation.option_orders` / :func:`~neuronscope.evaluation.combine_orders`
(what :func:`~neuronscope.evaluation.known_facts` does, one order per stage):

* accuracy under each option order and, for ``mcqa``, the fraction correct under all of them;
* the known fraction (correct — under every order for ``mcqa`` — with margin ≥ δ) for
  δ ∈ {0, 0.5, 1, 2, 3} nats (a threshold on the same worst-order margins), and the number of
  facts known under both protocols;
* quartiles of the worst-order margin (nats);
* last, for the facts: of the facts known at δ, the fraction whose first paraphrase is
  answered correctly too (order ``options(0)``), and the same among the facts not known.

Every proportion carries a Wilson 95 % interval
(``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``). Stages run in order of
importance (facts cloze, utility cloze, facts mcqa order 0, utility mcqa order 0, the other
mcqa orders, paraphrases); the JSON (``--out``) is rewritten after each, holds the raw
per-order results under ``stages``, and a rerun resumes from them. A protocol whose orders are
not all scored is reported as ``incomplete`` with its per-order accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DELTAS = (0.0, 0.5, 1.0, 2.0, 3.0)
FORGET_FRACTION = 0.05  # the demo's forget split (paper App. B.1: 5 %)


def wilson(k: int, n: int) -> dict:
    """``{"k", "n", "p", "ci95"}`` with the Wilson 95 % interval (scipy)."""
    from scipy.stats import binomtest

    if n == 0:
        return {"k": 0, "n": 0, "p": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"k": k, "n": n, "p": k / n, "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def quartiles(xs: list[float]) -> list[float]:
    return [round(q, 3) for q in statistics.quantiles(xs, n=4)]


def summarise(kf) -> dict:
    """Accuracy, all-orders accuracy, margin quartiles and the known fraction by δ of a ``KnownFacts``."""
    n = len(kf.ids)
    return {
        "protocol": kf.protocol,
        "n": n,
        "accuracy": wilson(round(kf.accuracy * n), n),
        "accuracy_by_order": [wilson(round(a * n), n) for a in kf.accuracy_by_order],
        "correct_all_orders": wilson(sum(kf.correct_all_orders), n),
        "margin_quartiles_nats": quartiles(kf.margins),
        "known_by_delta": {f"{d:g}": {"known": wilson(sum(m > 0 and m >= d for m in kf.margins), n)} for d in DELTAS},
        "margins": {i: round(m, 4) for i, m in zip(kf.ids, kf.margins)},
    }


def score_order(model, items, protocol: str, k: int, stages: dict, save) -> None:
    """Score option order ``k`` of ``protocol`` (:func:`~neuronscope.evaluation.option_orders`) once; kept in ``stages``."""
    from neuronscope.evaluation import knowledge_evaluate, option_orders

    key = f"{protocol}-order{k}"
    if key in stages:
        return
    t0 = time.perf_counter()
    opts = option_orders(items, protocol)[k]
    r = knowledge_evaluate(model, items, protocol=protocol, options=opts, progress=True, desc=key)
    stages[key] = {**r.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    save()


def summary(items, protocol: str, stages: dict) -> dict | None:
    """The :func:`summarise` dict once every order of ``protocol`` is scored; else the orders so far."""
    from neuronscope.evaluation import MCQAResult, combine_orders, option_orders

    n_orders = len(option_orders(items, protocol))
    results = []
    for k in range(n_orders):
        d = stages.get(f"{protocol}-order{k}")
        if d is not None:
            results.append(MCQAResult(**{k2: v for k2, v in d.items() if k2 != "seconds"}))
    if len(results) == n_orders:
        return summarise(combine_orders(results, 0.0))
    n = len(items)
    return {"protocol": protocol, "n": n, "incomplete": f"{len(results)} of {n_orders} option orders scored",
            "accuracy_by_order": [wilson(sum(r.correct), n) for r in results]}


def add_paraphrase_rows(res: dict, paraphrase_correct: dict[str, bool]) -> None:
    """Per δ: paraphrase accuracy among the facts known at δ and among the others."""
    margins = res["margins"]
    for key, row in res["known_by_delta"].items():
        d = float(key)
        known = {i: m > 0 and m >= d for i, m in margins.items()}
        kp = [c for i, c in paraphrase_correct.items() if i in known and known[i]]
        up = [c for i, c in paraphrase_correct.items() if i in known and not known[i]]
        row["paraphrase_correct_if_known"] = wilson(sum(kp), len(kp))
        row["paraphrase_correct_if_not_known"] = wilson(sum(up), len(up))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--sample", type=int, default=None, help="Seeded sample of the shipped questions (default: all).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="Continue from the finished option orders stored in --out (default on).")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from neuronscope.data import load_faithun, load_utility
    from neuronscope.evaluation import knowledge_evaluate, paraphrased
    from neuronscope.models import load_model

    t0 = time.perf_counter()
    model = load_model(args.model)
    facts = list(load_faithun())
    n_total = len(facts)
    if args.sample is not None and args.sample < n_total:
        facts = random.Random(args.seed).sample(facts, args.sample)
    utility = list(load_utility())
    result: dict = {
        "model": args.model,
        "n_questions_shipped": n_total,
        "n_questions_measured": len(facts),
        "sample_seed": args.seed if len(facts) < n_total else None,
        "deltas_nats": list(DELTAS),
        "demo_forget_split_size": round(FORGET_FRACTION * n_total),
        "facts": {},
        "utility": {},
    }

    stages: dict = {}
    if args.out and os.path.exists(args.out) and args.resume:
        with open(args.out) as fh:
            prev = json.load(fh)
        if prev.get("n_questions_measured") == len(facts) and prev.get("sample_seed") == result["sample_seed"]:
            stages = prev.get("stages", {})
    result["stages"] = stages  # raw per-order results (resumable)

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if args.out:
            from neuronscope.errors import write_json_atomic

            write_json_atomic(args.out, result)

    # Stages in order of importance; the JSON is rewritten after each option order (a slow
    # machine keeps what finished, and --resume continues from it).
    sets = {"facts": facts, "utility": utility}
    plan = [("facts", "cloze", 0), ("utility", "cloze", 0), ("facts", "mcqa", 0), ("utility", "mcqa", 0),
            ("facts", "mcqa", 1), ("facts", "mcqa", 2), ("utility", "mcqa", 1), ("utility", "mcqa", 2)]

    def refresh() -> None:
        for part, items in sets.items():
            for protocol in ("cloze", "mcqa"):
                result[part][protocol] = summary(items, protocol, stages.setdefault(part, {}))
        f = result["facts"]
        if all("margins" in (f[p] or {}) for p in ("mcqa", "cloze")):
            m, c = f["mcqa"]["margins"], f["cloze"]["margins"]
            result["facts_known_under_both"] = {
                f"{d:g}": sum(1 for i in m if m[i] > 0 and m[i] >= d and c[i] > 0 and c[i] >= d) for d in DELTAS
            }

    for part, protocol, k in plan:
        score_order(model, sets[part], protocol, k, stages.setdefault(part, {}), lambda: (refresh(), save()))
    refresh()
    save()
    para_items = paraphrased(facts)
    for protocol in ("cloze", "mcqa"):
        pr = knowledge_evaluate(model, para_items, protocol=protocol, progress=True, desc=f"paraphrases {protocol}")
        add_paraphrase_rows(result["facts"][protocol], {i.removesuffix("~p"): ok for i, ok in zip(pr.ids, pr.correct)})
        result["facts"][protocol]["paraphrase_accuracy"] = wilson(sum(pr.correct), len(pr.correct))
        save()
    save()
    short = {k: v for k, v in result.items() if k not in ("facts", "utility")}
    for part in ("facts", "utility"):
        short[part] = {p: {k: v for k, v in r.items() if k != "margins"} for p, r in result[part].items()}
    short.pop("stages", None)
    print(json.dumps(short, indent=1), file=sys.stdout)
    return result


if __name__ == "__main__":
    main()

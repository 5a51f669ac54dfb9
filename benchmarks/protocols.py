"""Measurement: what the base model knows under each knowledge protocol (SPEC §10).

Run: ``OMP_NUM_THREADS=2 nice -n 5 .venv/bin/python benchmarks/protocols.py --out protocols.json``
(options: ``--model``, ``--sample N`` for a seeded sample of the shipped questions, ``--seed``).

For the shipped FaithUn-format questions and the shipped utility set, under ``mcqa`` (paper
Table 3, options in the prompt) and ``cloze`` (the question alone), with
:func:`neuronscope.evaluation.known_facts` at δ = 0 (one evaluation; every other δ is a
threshold on the same worst-order margins):

* accuracy (option order ``options(0)``) and, for ``mcqa``, the accuracy under each cyclic
  rotation of the options and the fraction correct under all of them;
* the known fraction (correct — under every order for ``mcqa`` — with margin ≥ δ) for
  δ ∈ {0, 0.5, 1, 2, 3} nats, with the count and, for the facts, how many the demo's 5 %
  forget split needs;
* for the facts: of the facts known at δ, the fraction whose first paraphrase is answered
  correctly too (same protocol, order ``options(0)``) — knowledge rather than luck should
  carry over to a rewording — and the same fraction among the facts not known at δ;
* quartiles of the margin (nats).

Every proportion carries a Wilson 95 % interval
(``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``). The JSON goes to ``--out``
and to stdout.
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


def measure(model, items, protocol: str) -> dict:
    """Accuracy, all-orders accuracy, margins and the known fraction by δ of one protocol."""
    from neuronscope.evaluation import known_facts

    t0 = time.perf_counter()
    kf = known_facts(model, items, protocol, 0.0, progress=True)
    n = len(items)
    out = {
        "protocol": protocol,
        "n": n,
        "accuracy": wilson(round(kf.accuracy * n), n),
        "accuracy_by_order": [wilson(round(a * n), n) for a in kf.accuracy_by_order],
        "correct_all_orders": wilson(sum(kf.correct_all_orders), n),
        "margin_quartiles_nats": quartiles(kf.margins),
        "known_by_delta": {f"{d:g}": {"known": wilson(sum(m > 0 and m >= d for m in kf.margins), n)} for d in DELTAS},
        "margins": {i: round(m, 4) for i, m in zip(kf.ids, kf.margins)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return out


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

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if args.out:
            from neuronscope.errors import write_json_atomic

            write_json_atomic(args.out, result)

    # Stages in order of importance; the JSON is rewritten after each (a slow machine keeps
    # what finished).
    for protocol in ("cloze", "mcqa"):
        result["facts"][protocol] = measure(model, facts, protocol)
        save()
    m, c = (result["facts"][p]["margins"] for p in ("mcqa", "cloze"))
    result["facts_known_under_both"] = {
        f"{d:g}": sum(1 for i in m if m[i] > 0 and m[i] >= d and c[i] > 0 and c[i] >= d) for d in DELTAS
    }
    for protocol in ("cloze", "mcqa"):
        result["utility"][protocol] = measure(model, utility, protocol)
        save()
    para_items = paraphrased(facts)
    for protocol in ("cloze", "mcqa"):
        pr = knowledge_evaluate(model, para_items, protocol=protocol, progress=True, desc=f"paraphrases {protocol}")
        add_paraphrase_rows(result["facts"][protocol], {i.removesuffix("~p"): ok for i, ok in zip(pr.ids, pr.correct)})
        result["facts"][protocol]["paraphrase_accuracy"] = wilson(sum(pr.correct), len(pr.correct))
        save()
    short = {k: v for k, v in result.items() if k not in ("facts", "utility")}
    for part in ("facts", "utility"):
        short[part] = {p: {k: v for k, v in r.items() if k != "margins"} for p, r in result[part].items()}
    print(json.dumps(short, indent=1), file=sys.stdout)
    return result


if __name__ == "__main__":
    main()

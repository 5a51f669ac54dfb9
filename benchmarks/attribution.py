"""Benchmark: all-module attribution (paper Eq. 1) ÷ one plain forward+backward (SPEC §13).

Run: ``.venv/bin/python benchmarks/attribution.py [--lengths 64 128 256] [--repeats 7]``.

For each sequence length L, a batch of 8 sequences × L tokens (the last 4 tokens of each are
the answer, so P(y|x) is a product over 4 tokens) goes through:

* ``baseline`` — the raw HF model (no bridge), all parameters requiring grad, loss = sum of
  answer log-probs (:func:`neuronscope.prompts.sequence_logprob` on the full logits),
  ``backward()``: one plain training-style forward+backward.
* ``engine`` — :func:`neuronscope.attribution.attribute_batch` over all 7 module types × all
  layers (max/min per sample), through the TransformerBridge hooks.

With ``--detail`` two reference points are added: ``hf_frozen`` (raw HF, frozen weights,
input gradients only, unembedding at answer rows only — the floor the engine could reach
without hooks) and ``bridge_frozen`` (the same through the bridge, no per-module hooks).

Timing: ``torch.set_num_threads(2)``; configurations run interleaved (round-robin), one
warm-up round, then ``--repeats`` rounds; each round gives a paired ratio engine/baseline.
Reported: the median wall time per configuration, the median CPU time (``process_time``,
less sensitive to other processes sharing the two cores, which inflates wall times), and the
median of the per-round ratios. Goal: engine/baseline ≤ 1.25.

Memory (measured after all timings): the peak resident set size above the resident size just
before the call, sampled every 0.5 ms by a thread (``benchmarks/peak_memory.py``; on a GPU
``torch.cuda.max_memory_allocated``), median of 3 calls. (It used to read ``VmHWM`` after a
reset through ``/proc/self/clear_refs``, which these machines' kernels ignore: most rows
printed 0 MiB.) Before measuring, glibc's ``mallopt(M_MMAP_THRESHOLD, 64 KiB)`` makes every
tensor its own mapping, so freed tensors go back to the OS and per-call peaks are not hidden
by a cached heap (timings run with the default allocator settings). Also reported: what
autograd saves for the backward pass (``saved_tensors_hooks``, parameters excluded) and how
much of the engine's references to module outputs autograd does *not* already hold (the
engine's only extra activation memory).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peak_memory import PeakMemory, return_freed_memory  # noqa: E402

from neuronscope.attribution import AttributionConfig, answer_logprob, attribute_batch, frozen_weights  # noqa: E402
from neuronscope.models import load_model  # noqa: E402
from neuronscope.prompts import TokenBatch, sequence_logprob  # noqa: E402

BATCH = 8
N_ANSWER = 4
TEXT = (
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
    "She was the first woman to win a Nobel Prize, the first person to win a Nobel Prize twice, and "
    "the only person to win a Nobel Prize in two scientific fields. Her husband, Pierre Curie, was a "
    "co-winner of her first Nobel Prize. The city of Paris, on the river Seine, has been the capital "
    "of France for many centuries and is known for its museums, its cafes and its architecture. "
)


def make_batch(tokenizer, length: int, batch: int = BATCH) -> TokenBatch:
    """``batch`` different windows of ``length`` input tokens; the last N_ANSWER targets are the answer."""
    ids = tokenizer(TEXT * (1 + (length + 8 * batch) // 60), add_special_tokens=False)["input_ids"]
    rows = [ids[7 * i : 7 * i + length + 1] for i in range(batch)]
    assert all(len(r) == length + 1 for r in rows)
    x = torch.tensor([r[:-1] for r in rows])
    y = torch.tensor([r[1:] for r in rows])
    target = torch.zeros_like(x, dtype=torch.bool)
    target[:, length - N_ANSWER :] = True
    prompt = torch.zeros_like(x, dtype=torch.bool)
    prompt[:, : length - N_ANSWER + 1] = True
    return TokenBatch(x, torch.ones_like(x), y, target, prompt)


def run_baseline(model, batch: TokenBatch) -> None:
    hf = model.hf_model
    for p in hf.parameters():
        p.requires_grad_(True)
    try:
        logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        sequence_logprob(logits, batch).sum().backward()
        del logits
    finally:
        hf.zero_grad(set_to_none=True)
        for p in hf.parameters():
            p.requires_grad_(False)


def run_engine(model, batch: TokenBatch) -> None:
    attribute_batch(model, batch, AttributionConfig())


def run_hf_frozen(model, batch: TokenBatch) -> None:
    hf = model.hf_model
    with frozen_weights(model), torch.enable_grad():
        emb = hf.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
        logits = hf(inputs_embeds=emb, attention_mask=batch.attention_mask, logits_to_keep=batch.target_mask).logits
        logits.float().log_softmax(-1).gather(-1, batch.target_ids[batch.target_mask].unsqueeze(-1)).exp().sum().backward()


def run_bridge_frozen(model, batch: TokenBatch) -> None:
    def embed_hook(act, hook):
        return act.detach().requires_grad_(True)

    with frozen_weights(model), torch.enable_grad(), model.bridge.hooks(fwd_hooks=[("hook_embed", embed_hook)]):
        answer_logprob(model, batch).exp().sum().backward()


def measure_mem(fn, model, batch) -> float | None:
    """Peak memory above the start of one call, MiB (None where it cannot be measured)."""
    with PeakMemory(model.device) as pm:
        fn(model, batch)
    return pm.delta


def measure_time(fn, model, batch) -> tuple[float, float]:
    """(wall s, CPU s) of one call."""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    fn(model, batch)
    return time.perf_counter() - w0, time.process_time() - c0


def autograd_memory(model, batch) -> dict[str, float]:
    """MiB saved by autograd (parameters excluded) for baseline and engine, and the engine's extra references."""
    params = {p.untyped_storage().data_ptr() for p in model.hf_model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            saved[s.data_ptr()] = s.nbytes()
        return t

    out = {}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_baseline(model, batch)
    out["baseline_saved"] = sum(saved.values()) / 2**20
    saved.clear()
    held: dict[int, int] = {}

    def cap(act, hook):
        held[act.untyped_storage().data_ptr()] = act.untyped_storage().nbytes()

    caps = [(model.hook_name(t, layer), cap) for t, layer in model.arch.modules()]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), model.bridge.hooks(fwd_hooks=caps):
        run_engine(model, batch)
    out["engine_saved"] = sum(saved.values()) / 2**20
    out["engine_extra"] = sum(n for p, n in held.items() if p not in saved) / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--detail", action="store_true", help="Also time hf_frozen and bridge_frozen.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("smollm2-135m-instruct")
    configs = {"baseline": run_baseline, "engine": run_engine}
    if args.detail:
        configs |= {"hf_frozen": run_hf_frozen, "bridge_frozen": run_bridge_frozen}
    print(f"SmolLM2-135M float32, batch {BATCH}, {N_ANSWER}-token answers, {args.threads} threads, "
          f"{args.repeats} interleaved rounds (+1 warm-up), load average {os.getloadavg()[0]:.1f}")
    batches = {length: make_batch(model.tokenizer, length) for length in args.lengths}
    timing = {}
    for length, batch in batches.items():
        res = {k: {"wall": [], "cpu": []} for k in configs}
        for rnd in range(args.repeats + 1):
            for name, fn in configs.items():
                wall, cpu = measure_time(fn, model, batch)
                if rnd > 0:
                    res[name]["wall"].append(wall)
                    res[name]["cpu"].append(cpu)
        timing[length] = res
        print(f"  L={length}: timed (load average {os.getloadavg()[0]:.1f})", flush=True)
    fixed = return_freed_memory()
    rows = []
    for length, batch in batches.items():
        res = timing[length]
        for name, fn in configs.items():
            fn(model, batch)
            res[name]["mem"] = [m for m in (measure_mem(fn, model, batch) for _ in range(3)) if m is not None]
        saved = autograd_memory(model, batch)
        med = {k: {m: (statistics.median(v[m]) if v[m] else float("nan")) for m in v} for k, v in res.items()}
        paired_wall = statistics.median(e / b for e, b in zip(res["engine"]["wall"], res["baseline"]["wall"]))
        paired_cpu = statistics.median(e / b for e, b in zip(res["engine"]["cpu"], res["baseline"]["cpu"]))
        rows.append((length, med, paired_wall, paired_cpu, saved))
    if not fixed:
        print("  (mallopt unavailable: peak RSS deltas may be understated by a cached heap)")

    print()
    head = f"{'tokens':>6} | {'config':<13} | {'wall s':>7} | {'cpu s':>7} | {'peak MiB':>8}"
    print(head)
    print("-" * len(head))
    for length, med, _, _, _ in rows:
        for name in configs:
            m = med[name]
            print(f"{length:>6} | {name:<13} | {m['wall']:7.3f} | {m['cpu']:7.3f} | {m['mem']:8.0f}")
    print()
    head = (f"{'tokens':>6} | {'engine/baseline wall':>20} | {'engine/baseline cpu':>19} | {'peak MiB eng/base':>17} "
            f"| {'autograd MiB base':>17} | {'autograd MiB eng':>16} | {'eng extra MiB':>13}")
    print(head)
    print("-" * len(head))
    for length, med, pw, pc, saved in rows:
        print(f"{length:>6} | {pw:20.3f} | {pc:19.3f} | {med['engine']['mem']:7.0f}/{med['baseline']['mem']:<9.0f} "
              f"| {saved['baseline_saved']:17.0f} | {saved['engine_saved']:16.0f} | {saved['engine_extra']:13.0f}")
    print("\nratios: median over rounds of the paired ratio engine/baseline; goal ≤ 1.25")


if __name__ == "__main__":
    main()

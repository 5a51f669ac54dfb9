"""Benchmark: what a paper-scale run costs (issue 15, SPEC §15).

Run: ``python benchmarks/scale.py --tiny`` (CPU, a few minutes) or, on a GPU,
``python benchmarks/scale.py --device cuda --dtype bfloat16`` (the real configs).

Models: random-weight models built from the real configurations of **Llama-3.2-3B**,
**Qwen2.5-3B** and **SmolLM2-135M** (values copied below from their ``config.json``; nothing is
downloaded), booted into the same TransformerBridge as a loaded model. ``--tiny`` keeps each
architecture (GQA ratio, MLP ratio, tied embeddings, RoPE θ) but shrinks it to 2 layers and a
hidden size of 128–192, so it runs on a CPU; the vocabulary stays that of the SmolLM2 tokenizer
used to encode the questions (49,152 rows) for the tiny variants.

Measured per step on one batch of ``--batch`` forget and ``--batch`` retain questions of the
embedded FaithUn-format set (median of ``--repeats`` after one warm-up):

* ``attr``: attribution of all 7 module types × all layers (:func:`attribute_batch`, Eq. 1);
* ``floor``: the frozen-weight forward+backward it cannot beat (same bridge, activations need
  gradients, no module hooks); reported ratio ``attr / floor``;
* ``gd``, ``ssiuu_exact``, ``ssiuu_fo``: one optimiser step (AdamW) of GD and of SSIUU with the
  Eq. 3 penalty active (the batch was visited once before, so A_prev exists); ratios ÷ GD;
* ``nll_qa``, ``nll_alpaca``: one fine-tuning step on QA pairs (harmful attack) and on Alpaca
  items (benign attack); ``eval``: MCQA likelihood scoring, seconds per item;
* peak memory of each (``torch.cuda.max_memory_allocated`` on a GPU; sampled RSS on a CPU —
  see ``benchmarks/peak_memory.py``), absolute and above the level before the step.

**Projection of one Table 1 row** (paper §6.1–6.2, App. B.1; FaithUn: 664 facts → forget 5 %
= 33, retain 10 % = 66, test 70 % = 465): unlearning ``--epochs`` epochs of ⌈33/8⌉ steps with
an MCQA evaluation of the forget set after each epoch, then FS/RS on forget+retain+test; the
harmful attack for p ∈ {0.1, 0.3} (3 and 10 items) × 3 seeds × 3 learning rates, 10 epochs
(our default; the paper does not say), FS on the remaining forget items after each epoch;
the benign attack, 3 seeds × 3 learning rates × 1,000 Alpaca items (125 steps), FS every 25
steps. A learning-rate grid for the unlearning multiplies its part by the number of rates tried.

Measured ``--tiny`` (CPU, 1 thread, CPU time, median of 3, shared 2-core machine at load
average 10.6; 2 December 2026)::

    model         | attr/floor | exact/GD | FO/GD | GD s  | attr s | eval s/item | peak MiB attr | GD        | exact      | FO
    llama-3.2-3b  |       1.33 |     1.50 |  1.00 | 0.436 |  0.095 |      0.0119 |   1027 (+12) | 1296 (+84) | 1351 (+134) | 1301 (+85)
    qwen2.5-3b    |       1.19 |     1.42 |  0.95 | 0.352 |  0.083 |      0.0119 |   1034 (+14) | 1212 (+61) | 1254 (+100) | 1211 (+58)
    smollm2-135m  |       1.36 |     1.72 |  1.16 | 0.326 |  0.081 |      0.0113 |   1036 (+10) | 1229 (+64) | 1270 (+103) | 1231 (+65)

(the tiny variants are dominated by their 49,152-row embedding, so GD's AdamW update weighs
more than in the real models; the full configurations need a GPU and have not been run.)
"""

from __future__ import annotations

import argparse
import math
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
from neuronscope.prompts import encode_qa  # noqa: E402

#: Real configurations (config.json of the HF releases), architecture fields only.
CONFIGS: dict[str, dict] = {
    "llama-3.2-3b": dict(
        arch="llama", hub="meta-llama/Llama-3.2-3B-Instruct", vocab_size=128256, hidden_size=3072,
        intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
        head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
        tie_word_embeddings=True,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    ),
    "qwen2.5-3b": dict(
        arch="qwen2", hub="Qwen/Qwen2.5-3B-Instruct", vocab_size=151936, hidden_size=2048,
        intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
        rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=True,
    ),
    "smollm2-135m": dict(
        arch="llama", hub="HuggingFaceTB/SmolLM2-135M-Instruct", vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True,
    ),
}

#: ``--tiny``: the same architectures shrunk (2 layers; GQA and MLP ratios kept).
TINY: dict[str, dict] = {
    "llama-3.2-3b": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=2, head_dim=32, vocab_size=49152),
    "qwen2.5-3b": dict(hidden_size=128, intermediate_size=688, num_hidden_layers=2, num_attention_heads=8,
                       num_key_value_heads=1, vocab_size=49152),
    "smollm2-135m": dict(hidden_size=144, intermediate_size=384, num_hidden_layers=2, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152),
}

# Paper sizes (FaithUn, App. B.1; attacks §6.2.2) and our attack defaults (neuronscope.attacks).
N_FACTS = 664
N_FORGET, N_RETAIN, N_TEST = round(0.05 * N_FACTS), round(0.10 * N_FACTS), round(0.70 * N_FACTS)
HARMFUL_PS, HARMFUL_EPOCHS, N_LRS, N_SEEDS = (0.1, 0.3), 10, 3, 3
N_ALPACA, BENIGN_EVERY = 1000, 25


def build(name: str, tiny: bool, dtype: torch.dtype, device: str):
    """A random-weight :class:`~neuronscope.models.HookedModel` of one configuration."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from neuronscope.models import HookedModel, _boot_bridge, default_tokenizer, resolve_architecture

    spec = dict(CONFIGS[name])
    arch, hub = spec.pop("arch"), spec.pop("hub")
    if tiny:
        spec.update(TINY[name])
        spec.pop("rope_scaling", None)
    tok = default_tokenizer()
    spec.update(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg = (LlamaConfig if arch == "llama" else Qwen2Config)(**spec)
    torch.manual_seed(0)
    with torch.device(device):
        hf = (LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM)(cfg).to(dtype).eval()
    bridge = _boot_bridge(f"{name}-random" if tiny else hub, hf, tok, device)
    return HookedModel(bridge=bridge, tokenizer=tok, arch=resolve_architecture(bridge), name=name)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> dict:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up, and peak memory.

    ``s`` is wall time on a GPU and **CPU time** (``process_time``) on a CPU: on a shared
    machine wall times inflate by the load, CPU times do not (with one thread, CPU time is the
    wall time of an idle machine). ``wall`` is recorded too.
    """
    fn()
    cpu = torch.device(device).type != "cuda"
    times, walls = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - t0)
        times.append(time.process_time() - c0 if cpu else walls[-1])
    with PeakMemory(device) as pm:
        fn()
    return {"s": statistics.median(times), "wall": statistics.median(walls), "peak": pm.peak, "delta": pm.delta}


def measure(model, forget, retain, alpaca, device: str, repeats: int) -> dict:
    from neuronscope.evaluation import mcqa_evaluate
    from neuronscope.unlearning import UnlearningConfig
    from neuronscope.unlearning.trainer import METHODS, _optimizer, train_step
    from neuronscope.unlearning.losses import NLL

    batch = encode_qa(model.tokenizer, [i.question for i in forget], [i.answer for i in forget]).to(model.device)
    out: dict[str, dict] = {}

    def floor():
        def embed_hook(act, hook):
            return act.detach().requires_grad_(True)

        with frozen_weights(model), torch.enable_grad(), model.bridge.hooks(fwd_hooks=[("hook_embed", embed_hook)]):
            answer_logprob(model, batch).exp().sum().backward()

    out["floor"] = timed(floor, device, repeats)
    out["attr"] = timed(lambda: attribute_batch(model, batch, AttributionConfig()), device, repeats)

    initial = {k: v.detach().clone() for k, v in model.hf_model.state_dict().items()}

    def training(name: str, method, f_items, r_items, key) -> None:
        params = method.trainable(model)
        flags = [p.requires_grad for p in model.hf_model.parameters()]
        for p in model.hf_model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = _optimizer(params, method.config)
        try:
            # the first step allocates the optimiser state (and SSIUU's cache: A_prev exists after it)
            out[name] = timed(lambda: train_step(model, method, opt, f_items, r_items, key), device, repeats)
            out[name]["state_mib"] = sum(
                t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
            ) / 2**20
        finally:
            del opt
            model.hf_model.zero_grad(set_to_none=True)
            for p, f in zip(model.hf_model.parameters(), flags):
                p.requires_grad_(f)
            model.hf_model.load_state_dict(initial)

    lr = 1e-7  # tiny steps: the timing does not depend on the value, the weights stay sane
    for name, cfg in (
        ("gd", UnlearningConfig(method="gd", lr=lr)),
        ("ssiuu_exact", UnlearningConfig(method="ssiuu", lr=lr, ssiuu_grad="exact")),
        ("ssiuu_fo", UnlearningConfig(method="ssiuu", lr=lr, ssiuu_grad="first_order")),
    ):
        method = METHODS[cfg.method](cfg)
        method.setup(model, {0: forget}, list(retain))
        training(name, method, forget, retain, 0)
        if hasattr(method, "cache"):
            out[name]["cache_mib"] = sum(t.numel() * t.element_size() for t in method.cache.get(0, [])) / 2**20
        del method
    nll_cfg = UnlearningConfig(method="nll", lr=lr)
    training("nll_qa", NLL(nll_cfg), forget, None, None)
    pairs = [type("P", (), {"question": a.instruction + (f"\n\n{a.input}" if a.input else ""), "answer": a.output})()
             for a in alpaca]
    training("nll_alpaca", NLL(nll_cfg), pairs, None, None)
    with torch.no_grad():
        ev = timed(lambda: mcqa_evaluate(model, forget + retain, progress=False), device, max(1, repeats // 2))
    ev["s"] /= len(forget) + len(retain)
    out["eval"] = ev
    return out


def project(m: dict, method: str, epochs: int, batch: int) -> dict[str, float]:
    """Seconds of one Table 1 row (see the module docstring) from the measured step times."""
    t_eval = m["eval"]["s"]
    unlearn = epochs * (math.ceil(N_FORGET / batch) * m[method]["s"] + N_FORGET * t_eval)
    final_eval = (N_FORGET + N_RETAIN + N_TEST) * t_eval
    harmful = 0.0
    for p in HARMFUL_PS:
        n = max(1, int(math.floor(p * N_FORGET + 0.5)))
        per_run = HARMFUL_EPOCHS * (math.ceil(n / batch) * m["nll_qa"]["s"] + (N_FORGET - n) * t_eval)
        harmful += N_SEEDS * N_LRS * per_run
    steps = math.ceil(N_ALPACA / batch)
    benign = N_SEEDS * N_LRS * (steps * m["nll_alpaca"]["s"] + math.ceil(steps / BENIGN_EVERY) * N_FORGET * t_eval)
    total = unlearn + final_eval + harmful + benign
    return {"unlearn": unlearn, "eval": final_eval, "harmful": harmful, "benign": benign, "total": total}


def _fmt_s(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="Shrunk architectures (CPU, minutes).")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 (default on CPU) or bfloat16 (default on GPU).")
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--batch", type=int, default=8, help="Forget (and retain) questions per step (paper configs: 8).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10, help="Unlearning epochs assumed to reach the threshold.")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU time = idle wall time).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = ap.parse_args()
    from neuronscope.data import load_alpaca, load_faithun

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    if not args.device.startswith("cuda"):
        return_freed_memory()
    facts = load_faithun()
    forget, retain = facts[: args.batch], facts[args.batch : 2 * args.batch]
    alpaca = load_alpaca(n=args.batch, seed=0)
    where = (torch.cuda.get_device_name() + ", wall time" if args.device.startswith("cuda")
             else f"CPU, {args.threads} thread(s), CPU time")
    print(f"scale benchmark: {'tiny ' if args.tiny else ''}random-weight models, {str(dtype).replace('torch.', '')}, "
          f"{where}, batch {args.batch}+{args.batch}, median of {args.repeats}"
          + (f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""), flush=True)
    results = {}
    for name in args.models:
        t0 = time.perf_counter()
        model = build(name, args.tiny, dtype, args.device)
        n_params = sum(p.numel() for p in model.hf_model.parameters())
        weights_mib = sum(p.numel() * p.element_size() for p in model.hf_model.parameters()) / 2**20
        m = measure(model, forget, retain, alpaca, args.device, args.repeats)
        m["params"], m["weights_mib"] = n_params, weights_mib
        m["projection"] = {k: project(m, k, args.epochs, args.batch) for k in ("gd", "ssiuu_exact", "ssiuu_fo")}
        results[name] = m
        print(f"  {name}: {n_params / 1e6:.1f} M parameters, {weights_mib:.0f} MiB; measured in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        del model
        import gc

        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def mem(r):
        return "-" if r.get("peak") is None else f"{r['peak']:.0f} (+{r['delta']:.0f})"

    print()
    head = (f"{'model':<13} | {'attr/floor':>10} | {'exact/GD':>8} | {'FO/GD':>6} | {'GD s':>7} | {'attr s':>7} | "
            f"{'eval s/item':>11} | {'peak MiB attr':>15} | {'peak MiB GD':>15} | {'peak MiB exact':>15} | {'peak MiB FO':>15}")
    print(head)
    print("-" * len(head))
    for name, m in results.items():
        print(f"{name:<13} | {m['attr']['s'] / m['floor']['s']:10.2f} | {m['ssiuu_exact']['s'] / m['gd']['s']:8.2f} | "
              f"{m['ssiuu_fo']['s'] / m['gd']['s']:6.2f} | {m['gd']['s']:7.3f} | {m['attr']['s']:7.3f} | "
              f"{m['eval']['s']:11.4f} | {mem(m['attr']):>15} | {mem(m['gd']):>15} | {mem(m['ssiuu_exact']):>15} | "
              f"{mem(m['ssiuu_fo']):>15}")
    print("\npeak: absolute (GPU: allocated tensors; CPU: process RSS) and (+ above the level before the step, "
          "which holds the weights and, for training, the optimiser state)")
    print(f"\nprojected Table 1 row ({args.epochs} unlearning epochs to threshold, one learning rate; "
          f"harmful p∈{{0.1,0.3}} + benign, 3 seeds × 3 lrs):")
    for name, m in results.items():
        parts = []
        for method, p in m["projection"].items():
            parts.append(f"{method} {_fmt_s(p['total'])} (unlearn {_fmt_s(p['unlearn'])}, harmful {_fmt_s(p['harmful'])}, "
                         f"benign {_fmt_s(p['benign'])}, eval {_fmt_s(p['eval'])})")
        print(f"  {name}: " + "; ".join(parts))
    if args.json is not None:
        from neuronscope.errors import write_json_atomic

        write_json_atomic(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Logit lens: does an intermediate representation still hold the forgotten answer? (paper §6.3, Fig. 4; SPEC §7)

For every residual-stream point — the token embeddings (``hook_embed``) and the output of
every transformer block (``blocks.L.hook_out``) — the model's *own* final norm and unembedding
(the HF modules wrapped by the bridge's ``ln_final`` and ``unembed``; for Llama/Qwen2
``model.norm`` and ``lm_head``) map the residual vector at the **last prompt position** to
vocabulary logits. There the gold answer's first token competes with the first token of one
distractor, a wrong option drawn at random per item with a fixed seed. A layer's accuracy is
the fraction of items whose gold logit is larger than the distractor's (binary choice, so
chance is 0.5). Comparing logits is the same as comparing the two probabilities under the
layer's softmax, as in the paper.

Prompt: the plain QA chat prompt used for unlearning and attribution,
``chat_prompt(tokenizer, question)`` (the question as one user turn, with the assistant turn
opened), so the last prompt position is the one that predicts the first answer token. The
answer's first token is its first token when tokenised on its own without special tokens —
exactly how :func:`neuronscope.prompts.encode_pairs` appends answers to prompts.

Items where no wrong option has a first token different from the gold answer's first token
cannot be scored (gold and distractor logits would be equal) and are listed in
``LogitLensResult.skipped``; the distractor is drawn among the wrong options whose first token
differs.

Layer indices follow the HF ``hidden_states`` convention: index 0 is the embeddings and index
``l`` (1 ≤ l ≤ n_layers) is the output of block ``l − 1``. The last index is the final residual
stream; there the lens reproduces the model's own logits, which every run checks
(``final_layer_max_abs_diff``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from neuronscope.errors import ModelError, NeuronscopeError, write_json_atomic, write_text_atomic
from neuronscope.models import HookedModel
from neuronscope.prompts import chat_prompt

CHANCE = 0.5

#: How the lens prompt is built (stored with every result).
PROMPT_DESCRIPTION = "chat_prompt(tokenizer, question): the question as one user turn, assistant turn opened"


@dataclass
class LogitLensResult:
    """Per-layer logit-lens accuracy of one model on a set of items (paper Fig. 4).

    Attributes:
        label: Model label shown in plots.
        layers: Layer indices ``0..n_layers`` (0 = embeddings, l = output of block l−1).
        hooks: The bridge hook read for each layer index.
        accuracy: ``[n_layers + 1]`` fraction of scored items with gold logit > distractor
            logit, in [0, 1]; chance 0.5.
        logit_diff: ``[n_items, n_layers + 1]`` gold minus distractor logit (logit units) of
            each scored item at each layer.
        ids: Ids of the scored items (rows of ``logit_diff``).
        gold_tokens: First token id of each scored item's gold answer.
        distractor_tokens: First token id of each scored item's distractor.
        distractors: The distractor option text of each scored item.
        skipped: Ids of items that could not be scored (no wrong option with a different
            first token).
        seed: Seed of the distractor choice.
        final_layer_max_abs_diff: Largest |lens logit − model logit| at the last layer over
            all scored items and the whole vocabulary (should be ~0).
        meta: Model name, prompt description.
    """

    label: str
    layers: list[int]
    hooks: list[str]
    accuracy: np.ndarray
    logit_diff: np.ndarray
    ids: list[str]
    gold_tokens: list[int]
    distractor_tokens: list[int]
    distractors: list[str]
    skipped: list[str] = field(default_factory=list)
    seed: int = 0
    final_layer_max_abs_diff: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @property
    def chance(self) -> float:
        return CHANCE

    def accuracy_by_layer(self) -> dict[int, float]:
        """``{layer index: accuracy}``."""
        return {int(layer): float(a) for layer, a in zip(self.layers, self.accuracy)}

    def to_dict(self) -> dict:
        """JSON-ready dict (inverse: :meth:`from_dict`)."""
        return {
            "kind": "logit_lens",
            "label": self.label,
            "layers": [int(x) for x in self.layers],
            "hooks": list(self.hooks),
            "accuracy": [float(x) for x in self.accuracy],
            "chance": CHANCE,
            "n_items": self.n_items,
            "ids": list(self.ids),
            "gold_tokens": [int(x) for x in self.gold_tokens],
            "distractor_tokens": [int(x) for x in self.distractor_tokens],
            "distractors": list(self.distractors),
            "logit_diff": np.asarray(self.logit_diff, dtype=float).tolist(),
            "skipped": list(self.skipped),
            "seed": int(self.seed),
            "final_layer_max_abs_diff": float(self.final_layer_max_abs_diff),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "LogitLensResult":
        """Rebuild from :meth:`to_dict` output.

        Raises:
            NeuronscopeError: A required field is missing.
        """
        try:
            n_layers = len(d["layers"])
            diff = np.asarray(d.get("logit_diff", []), dtype=float).reshape(-1, n_layers)
            return cls(
                label=str(d.get("label", "")),
                layers=[int(x) for x in d["layers"]],
                hooks=list(d.get("hooks", [])),
                accuracy=np.asarray(d["accuracy"], dtype=float),
                logit_diff=diff,
                ids=list(d.get("ids", [])),
                gold_tokens=[int(x) for x in d.get("gold_tokens", [])],
                distractor_tokens=[int(x) for x in d.get("distractor_tokens", [])],
                distractors=list(d.get("distractors", [])),
                skipped=list(d.get("skipped", [])),
                seed=int(d.get("seed", 0)),
                final_layer_max_abs_diff=float(d.get("final_layer_max_abs_diff", 0.0)),
                meta=dict(d.get("meta", {})),
            )
        except KeyError as exc:
            raise NeuronscopeError(f"logit lens: field {exc.args[0]!r} missing") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LogitLensResult":
        """Read a file written by :meth:`save`.

        Raises:
            NeuronscopeError: Missing file or not a logit-lens JSON.
        """
        path = Path(path)
        if not path.exists():
            raise NeuronscopeError(f"{path}: logit-lens file not found")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise NeuronscopeError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        try:
            return cls.from_dict(d)
        except NeuronscopeError as exc:
            raise NeuronscopeError(f"{path}: {exc}") from None

    def plot(self, others: Mapping[str, "LogitLensResult"] | None = None, title: str = ""):
        """Plotly figure of accuracy per layer with the chance line; ``others`` share the figure."""
        results = {self.label or "model": self, **dict(others or {})}
        return lens_figure(results, title=title)


def lens_figure(results: Mapping[str, LogitLensResult], title: str = ""):
    """Several models' logit-lens accuracy per layer in one figure, chance at 0.5 (Fig. 4)."""
    from neuronscope.plots import logit_lens_figure

    return logit_lens_figure(results, title=title)


def final_norm_and_unembed(model: HookedModel) -> tuple[nn.Module, nn.Module]:
    """The model's own final norm and unembedding modules (the HF ones the forward pass uses).

    Returns:
        ``(norm, unembed)``: applied as ``unembed(norm(resid))`` they give the model's logits.

    Raises:
        ModelError: The bridge exposes neither ``ln_final``/``unembed`` nor an HF output
            embedding.
    """
    bridge = model.bridge
    norm = getattr(getattr(bridge, "ln_final", None), "original_component", None)
    unembed = getattr(getattr(bridge, "unembed", None), "original_component", None)
    if norm is None or unembed is None:
        hf = model.hf_model
        inner = getattr(hf, "model", None)
        if norm is None:
            norm = getattr(inner, "norm", None)
        if unembed is None:
            unembed = hf.get_output_embeddings()
    if norm is None or unembed is None:
        raise ModelError(f"{model.name}: cannot find the final norm and unembedding for the logit lens")
    return norm, unembed


def residual_hooks(model: HookedModel) -> list[str]:
    """Bridge hooks of the embeddings and every block's residual output, in layer order.

    Raises:
        ModelError: A hook is missing from ``bridge.hook_dict``.
    """
    hd = model.bridge.hook_dict
    names = ["hook_embed" if "hook_embed" in hd else "embed.hook_out"]
    for layer in range(model.arch.n_layers):
        for cand in (f"blocks.{layer}.hook_out", f"blocks.{layer}.hook_resid_post"):
            if cand in hd:
                names.append(cand)
                break
        else:
            raise ModelError(f"{model.name}: no residual-output hook for block {layer} (blocks.{layer}.hook_out)")
    if names[0] not in hd:
        raise ModelError(f"{model.name}: no embedding hook (hook_embed)")
    return names


def _stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def first_token(tokenizer, text: str) -> int:
    """The first token id of ``text`` tokenised alone, without special tokens.

    Raises:
        NeuronscopeError: ``text`` tokenises to nothing.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise NeuronscopeError(f"logit lens: answer {text!r} tokenises to no tokens")
    return int(ids[0])


def choose_distractor(tokenizer, item, seed: int = 0) -> tuple[str, int, int] | None:
    """Gold first token and a random wrong option with a different first token (seeded per item).

    Returns:
        ``(distractor text, gold first token, distractor first token)`` or None when every wrong
        option starts with the gold answer's first token (or there is none).
    """
    gold = first_token(tokenizer, item.answer)
    eligible = []
    for opt in item.false_options:
        tok = first_token(tokenizer, opt)
        if tok != gold:
            eligible.append((opt, tok))
    if not eligible:
        return None
    opt, tok = random.Random(_stable_seed("lens-distractor", seed, item.id)).choice(eligible)
    return opt, gold, tok


@torch.no_grad()
def lens_logits(
    model: HookedModel, prompts: Sequence[str]
) -> tuple[Float[Tensor, "batch n_points vocab"], Float[Tensor, "batch vocab"]]:
    """Logit-lens logits at the last position of each prompt, and the model's own logits there.

    Args:
        model: The hooked model.
        prompts: Already templated prompt strings (tokenised without special tokens).

    Returns:
        ``(lens, logits)``: ``lens[:, j]`` is ``unembed(norm(resid_j))`` for residual point j
        (0 = embeddings, l = output of block l−1); ``logits`` the model's output logits at the
        same positions. Both in the model's dtype.
    """
    tok = model.tokenizer
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(len(e) == 0 for e in enc):
        raise NeuronscopeError("logit lens: empty prompt")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    width = max(len(e) for e in enc)
    b = len(enc)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    dev = model.device
    ids, mask = ids.to(dev), mask.to(dev)
    last = mask.sum(1) - 1
    rows = torch.arange(b, device=dev)
    hooks = residual_hooks(model)
    captured: dict[str, Tensor] = {}

    def make(name: str):
        def hook(act: Tensor, hook) -> None:
            captured[name] = act[rows, last].detach()

        return hook

    with model.bridge.hooks(fwd_hooks=[(h, make(h)) for h in hooks]):
        logits = model.bridge(ids, attention_mask=mask)
    missing = [h for h in hooks if h not in captured]
    if missing:
        raise ModelError(f"{model.name}: residual hooks {missing[:3]} did not fire")
    norm, unembed = final_norm_and_unembed(model)
    resid = torch.stack([captured[h] for h in hooks], dim=1)  # [batch, n_points, d_model]
    lens = unembed(norm(resid))
    return lens, logits[rows, last]


def logit_lens(
    model: HookedModel,
    items: Sequence,
    *,
    seed: int = 0,
    batch_size: int = 8,
    label: str | None = None,
    progress: bool = False,
) -> LogitLensResult:
    """Per-layer logit-lens accuracy of gold vs. a seeded random distractor (paper Fig. 4, SPEC §7).

    Args:
        model: The hooked model.
        items: FaithUn-format items (``id``, ``question``, ``answer``, ``false_options``).
        seed: Seed of the distractor choice (per item, independent of item order).
        batch_size: Prompts per forward pass.
        label: Plot label (default: the model name).
        progress: Show a progress bar.

    Returns:
        :class:`LogitLensResult` with ``n_layers + 1`` accuracies.

    Raises:
        NeuronscopeError: No items, or no item can be scored.
        ModelError: The model's residual hooks, final norm or unembedding cannot be found.
    """
    from tqdm.auto import tqdm

    if len(items) == 0:
        raise NeuronscopeError("logit lens: no items (empty split)")
    tok = model.tokenizer
    scored, skipped = [], []
    for it in items:
        choice = choose_distractor(tok, it, seed)
        if choice is None:
            skipped.append(it.id)
        else:
            scored.append((it, *choice))
    if not scored:
        raise NeuronscopeError(f"logit lens: none of the {len(items)} items has a distractor with a different first token")
    diffs, max_err = [], 0.0
    starts = range(0, len(scored), batch_size)
    for s in tqdm(starts, desc="logit lens", unit="batch", disable=not progress, leave=False):
        chunk = scored[s : s + batch_size]
        lens, logits = lens_logits(model, [chat_prompt(tok, it.question) for it, *_ in chunk])
        gold = torch.tensor([g for _, _, g, _ in chunk], device=lens.device)
        dist = torch.tensor([d for _, _, _, d in chunk], device=lens.device)
        idx = torch.arange(len(chunk), device=lens.device)
        d = lens[idx, :, gold] - lens[idx, :, dist]  # [chunk, n_points]
        diffs.append(d.double().cpu())
        max_err = max(max_err, float((lens[:, -1].double() - logits.double()).abs().max()))
    diff = torch.cat(diffs).numpy()
    hooks = residual_hooks(model)
    return LogitLensResult(
        label=label if label is not None else model.name,
        layers=list(range(len(hooks))),
        hooks=hooks,
        accuracy=(diff > 0).mean(axis=0),
        logit_diff=diff,
        ids=[it.id for it, *_ in scored],
        gold_tokens=[g for _, _, g, _ in scored],
        distractor_tokens=[d for _, _, _, d in scored],
        distractors=[o for _, o, _, _ in scored],
        skipped=skipped,
        seed=seed,
        final_layer_max_abs_diff=max_err,
        meta={"model": model.name, "prompt": PROMPT_DESCRIPTION, "n_layers": model.arch.n_layers},
    )


def logit_lens_report(
    models: Mapping[str, HookedModel],
    items: Sequence,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    batch_size: int = 8,
    title: str = "Logit lens (paper Fig. 4)",
    progress: bool = False,
) -> dict[str, Path]:
    """Run :func:`logit_lens` for several models and write a scripted report (SPEC §12).

    Writes, atomically, ``out_dir/logit_lens.json`` (``{"models": {label: result dict}}``) and
    ``out_dir/logit_lens.html`` (the figure plus a per-layer table).

    Args:
        models: ``label -> HookedModel``.
        items: FaithUn-format items shared by all models.
        out_dir: Output directory (created).
        seed: Distractor seed (same distractors for every model sharing a tokenizer).

    Returns:
        ``{"json": path, "html": path}``.

    Raises:
        NeuronscopeError: No models or no items; the output directory cannot be written.
    """
    if not models:
        raise NeuronscopeError("logit lens: no models given")
    results = {
        label: logit_lens(m, items, seed=seed, batch_size=batch_size, label=label, progress=progress)
        for label, m in models.items()
    }
    return write_lens_report(results, out_dir, title=title)


def write_lens_report(
    results: Mapping[str, LogitLensResult], out_dir: str | os.PathLike, *, title: str = "Logit lens (paper Fig. 4)"
) -> dict[str, Path]:
    """Write ``logit_lens.json`` and ``logit_lens.html`` for already computed results (atomic)."""
    from neuronscope.report import HTMLReport

    out = Path(out_dir)
    payload = {"kind": "logit_lens_report", "chance": CHANCE, "models": {k: r.to_dict() for k, r in results.items()}}
    rep = HTMLReport(title)
    first = next(iter(results.values()))
    rep.text(
        f"Prompt: {PROMPT_DESCRIPTION}. At the last prompt position each layer's residual stream is mapped "
        "through the model's final norm and unembedding; accuracy is the fraction of items whose gold answer's "
        f"first token outscores a random wrong option's first token (seed {first.seed}); chance = 0.5. "
        "Layer 0 = embeddings, layer l = output of block l−1."
    )
    rep.figure(lens_figure(results, title=title))
    n_max = max(len(r.layers) for r in results.values())
    header = ["model", "items", "skipped", "final-layer |lens − logits|"] + [str(i) for i in range(n_max)]
    rows = []
    for k, r in results.items():
        acc = [float(a) for a in r.accuracy] + [None] * (n_max - len(r.accuracy))
        rows.append([k, r.n_items, len(r.skipped), f"{r.final_layer_max_abs_diff:.2e}", *acc])
    rep.table(header, rows, caption="accuracy per layer", fmt="{:.2f}")
    page = rep.render()  # render before writing, so a failure leaves nothing behind
    js = write_json_atomic(out / "logit_lens.json", payload)
    html_path = write_text_atomic(out / "logit_lens.html", page)
    return {"json": js, "html": html_path}

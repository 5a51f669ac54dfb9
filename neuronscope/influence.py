"""Influence variation D+/D− between a model before (θ) and after (θ') unlearning (SPEC §6).

Paper Eq. 2, 4, 5 with the App. A corrections, per neuron i over the forget set C_f (n samples):

* ``D+_i = (1/n) Σ [ max_k A_θ − max( max_k A_θ', 0 ) ]`` — decrease of positive influence;
  the clip on θ' keeps over-unlearning (positive → negative) from counting.
* ``D−_i = (1/n) Σ [ min_k A_θ − min_k A_θ' ]`` — growth of negative influence.
* ``D̃± = max(D±, 0)`` after averaging: contradictory behaviour is excluded.

Aggregates: cumulative sums of the top-m neurons sorted independently by D̃+ and D̃− (Fig. 3b),
their value at m = 100 (Fig. 3c), and the module×layer map of the mean of the top-100 D̃ inside
each (module, layer) (Fig. 5).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from neuronscope.attribution import ModuleKey, NeuronAttribution
from neuronscope.errors import NeuronscopeError, atomic_path
from neuronscope.models import MODULE_TYPES

Sign = Literal["+", "-"]


def influence_variation_tensors(
    max_before: Float[Tensor, "n neurons"],
    min_before: Float[Tensor, "n neurons"],
    max_after: Float[Tensor, "n neurons"],
    min_after: Float[Tensor, "n neurons"],
) -> tuple[Float[Tensor, " neurons"], Float[Tensor, " neurons"]]:
    """D̃+ and D̃− of paper Eq. 4–5 with App. A clipping, for one module.

    Args:
        max_before: ``max_k A_θ`` per sample and neuron.
        min_before: ``min_k A_θ``.
        max_after: ``max_k A_θ'``.
        min_after: ``min_k A_θ'``.

    Returns:
        ``(D̃+, D̃−)``, each ``[neurons]``, ≥ 0, in the units of the attribution target.

    Raises:
        NeuronscopeError: Shapes differ or there are no samples.
    """
    shapes = {tuple(t.shape) for t in (max_before, min_before, max_after, min_after)}
    if len(shapes) != 1:
        raise NeuronscopeError(f"influence: attribution shapes differ: {sorted(shapes)}")
    if max_before.shape[0] == 0:
        raise NeuronscopeError("influence: no samples")
    d_plus = (max_before - max_after.clamp(min=0)).mean(0)
    d_minus = (min_before - min_after).mean(0)
    return d_plus.clamp(min=0), d_minus.clamp(min=0)


@dataclass
class InfluenceVariation:
    """D̃+ and D̃− per neuron, labelled by (module type, layer); knows how to plot itself.

    Attributes:
        d_plus: ``(type, layer) -> Float[Tensor, "n_neurons"]`` D̃+ ≥ 0.
        d_minus: ``(type, layer) -> Float[Tensor, "n_neurons"]`` D̃− ≥ 0.
        meta: Models, data fingerprint, number of samples.
    """

    d_plus: dict[ModuleKey, Tensor]
    d_minus: dict[ModuleKey, Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def keys(self) -> list[ModuleKey]:
        return list(self.d_plus.keys())

    def _src(self, sign: Sign) -> dict[ModuleKey, Tensor]:
        if sign not in ("+", "-"):
            raise NeuronscopeError(f"sign: expected '+' or '-', got {sign!r}")
        return self.d_plus if sign == "+" else self.d_minus

    def flat(self, sign: Sign) -> Float[Tensor, " n_total_neurons"]:
        """All neurons of all modules in ``keys`` order."""
        return torch.cat([self._src(sign)[k] for k in self.keys])

    def cumulative(self, sign: Sign, m: int | None = None) -> Float[Tensor, " m"]:
        """Cumulative sum of the top-m D̃ values, neurons sorted in decreasing order (Fig. 3b)."""
        v = torch.sort(self.flat(sign), descending=True).values
        if m is not None:
            v = v[:m]
        return torch.cumsum(v, 0)

    def top_m_sum(self, sign: Sign, m: int = 100) -> float:
        """Σ of the m largest D̃ values (Fig. 3c)."""
        return float(torch.topk(self.flat(sign), min(m, self.flat(sign).numel())).values.sum())

    def top_neurons(self, sign: Sign, m: int = 20) -> list[tuple[str, int, int, float]]:
        """The m neurons with the largest D̃ as ``(module type, layer, neuron index, value)``."""
        rows = []
        for k, v in self._src(sign).items():
            top = torch.topk(v, min(m, v.numel()))
            rows += [(k[0], k[1], int(i), float(x)) for x, i in zip(top.values, top.indices)]
        return sorted(rows, key=lambda r: -r[3])[:m]

    def module_layer_map(self, sign: Sign, top: int = 100) -> tuple[np.ndarray, list[str], list[int]]:
        """Mean of the top-``top`` D̃ inside each (module, layer) cell (Fig. 5).

        Returns:
            ``(grid [n_module_types, n_layers], module type labels, layer indices)``; NaN where a
            cell was not computed.
        """
        src = self._src(sign)
        types = [t for t in MODULE_TYPES if any(k[0] == t for k in src)]
        layers = sorted({k[1] for k in src})
        grid = np.full((len(types), len(layers)), np.nan)
        for (t, layer), v in src.items():
            grid[types.index(t), layers.index(layer)] = float(torch.topk(v, min(top, v.numel())).values.mean())
        return grid, types, layers

    def summary(self, m: int = 100) -> dict:
        """Headline numbers: Σ top-m D̃+ and D̃−, their ratio, and neuron counts."""
        plus, minus = self.top_m_sum("+", m), self.top_m_sum("-", m)
        return {
            "m": m,
            "sum_top_d_plus": plus,
            "sum_top_d_minus": minus,
            "minus_over_plus": minus / plus if plus > 0 else None,
            "n_neurons": int(self.flat("+").numel()),
        }

    # -- plotting (plotly figures; see neuronscope.plots for the shared style) --
    def plot_cumulative(self, m: int = 1000, label: str = ""):
        """Plotly figure of the cumulative top-m D̃+ (dotted) and D̃− (solid) curves (Fig. 3b)."""
        from neuronscope.plots import cumulative_figure

        return cumulative_figure({label or self.meta.get("label", "model"): self}, m=m)

    def plot_heatmap(self, top: int = 100, title: str = ""):
        """Plotly figure with the D̃+ and D̃− module×layer maps side by side (Fig. 5)."""
        from neuronscope.plots import heatmap_figure

        return heatmap_figure(self, top=top, title=title or self.meta.get("label", ""))

    # -- persistence --
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (safetensors) + ``path.json`` metadata atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {}
        for (t, layer) in self.keys:
            tensors[f"plus.{t}.{layer}"] = self.d_plus[(t, layer)].contiguous()
            tensors[f"minus.{t}.{layer}"] = self.d_minus[(t, layer)].contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        meta = dict(self.meta, keys=[[t, layer] for t, layer in self.keys], kind="influence")
        with atomic_path(path.with_suffix(path.suffix + ".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InfluenceVariation":
        """Read a file written by :meth:`save`.

        Raises:
            NeuronscopeError: Missing file or not an influence file.
        """
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise NeuronscopeError(f"{path}: influence file not found")
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise NeuronscopeError(f"{path}: not an influence file ({exc})") from None
        meta_path = path.with_suffix(path.suffix + ".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        plus, minus = {}, {}
        for name, v in tensors.items():
            kind, t, layer = name.split(".")
            (plus if kind == "plus" else minus)[(t, int(layer))] = v
        if not plus or set(plus) != set(minus):
            raise NeuronscopeError(f"{path}: fields 'plus.*'/'minus.*' missing; not an influence file")
        order = [(k[0], int(k[1])) for k in meta.get("keys", [])] or sorted(plus, key=lambda k: (k[1], k[0]))
        return cls({k: plus[k] for k in order}, {k: minus[k] for k in order}, meta)


def influence_variation(before: NeuronAttribution, after: NeuronAttribution, *, label: str = "") -> InfluenceVariation:
    """D̃+ / D̃− for every neuron from attributions of θ and θ' on the same forget set (Eq. 4–5).

    Args:
        before: Attributions of the model before unlearning.
        after: Attributions of the unlearned model on the same samples.
        label: Name shown in plots (e.g. the unlearning method).

    Raises:
        NeuronscopeError: The two were computed on different data or modules.
    """
    fb, fa = before.meta.get("data_fingerprint"), after.meta.get("data_fingerprint")
    if fb and fa and fb != fa:
        raise NeuronscopeError(f"influence: attributions are on different data (fingerprints {fb} vs {fa})")
    if before.keys != after.keys:
        raise NeuronscopeError("influence: attributions cover different modules/layers")
    plus, minus = {}, {}
    for k in before.keys:
        plus[k], minus[k] = influence_variation_tensors(before.max[k], before.min[k], after.max[k], after.min[k])
    meta = {
        "before": before.meta.get("model"),
        "after": after.meta.get("model"),
        "data_fingerprint": fb,
        "n_samples": before.n_samples,
        "label": label,
    }
    return InfluenceVariation(plus, minus, meta)

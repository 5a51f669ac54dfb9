"""Shared fixtures: tiny random models (fast unit tests) and the embedded SmolLM2 (slow)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuronscope.models import HookedModel, load_model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_llama() -> HookedModel:
    """2-layer random Llama (d_model 64, 4 query heads, 2 KV heads), float64 for exact checks."""
    return load_model("tiny-llama", dtype=torch.float64, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2() -> HookedModel:
    """2-layer random Qwen2 (q/k/v biases), float64."""
    return load_model("tiny-qwen2", dtype=torch.float64, seed=0)


@pytest.fixture(scope="session")
def smollm2() -> HookedModel:
    """The embedded default SmolLM2-135M-Instruct (float32). Shared: do not modify its weights."""
    return load_model("smollm2-135m-instruct")

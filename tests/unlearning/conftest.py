"""Fixtures of the unlearning tests: small hand-written QA items and a fresh tiny model per test."""

from __future__ import annotations

import pytest

from factories import FORGET as SHARED_FORGET

from neuronscope.data import QAItem
from neuronscope.models import HookedModel, clone_model

FORGET = [
    *SHARED_FORGET,
    QAItem("f4", "Which country is Albert Einstein from?", "Germany", ("Spain", "Italy"), "Einstein"),
]
RETAIN = [
    QAItem("r0", "What is the capital of Italy?", "Rome", ("Paris", "Madrid"), "Italy"),
    QAItem("r1", "Who painted the Mona Lisa?", "Leonardo da Vinci", ("Picasso", "Monet"), "Mona Lisa"),
    QAItem("r2", "What is the capital of Spain?", "Madrid", ("Lisbon", "Rome"), "Spain"),
    QAItem("r3", "Which ocean is the largest?", "Pacific", ("Atlantic", "Indian"), "Pacific"),
]


@pytest.fixture
def forget() -> list[QAItem]:
    return list(FORGET)


@pytest.fixture
def retain() -> list[QAItem]:
    return list(RETAIN)


@pytest.fixture
def tiny(tiny_llama) -> HookedModel:
    """A private float64 copy of the session's tiny Llama (tests train it in place)."""
    return clone_model(tiny_llama)

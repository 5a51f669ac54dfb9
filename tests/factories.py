"""Hand-written QA items shared by tests that unlearn on the tiny model (one place, not copies)."""

from __future__ import annotations

from neuronscope.data import QAItem

#: Four well-known facts to forget.
FORGET = [
    QAItem("f0", "What is the capital of France?", "Paris", ("Rome", "Berlin"), "France"),
    QAItem("f1", "Who wrote Hamlet?", "Shakespeare", ("Dickens", "Tolstoy"), "Hamlet"),
    QAItem("f2", "Which planet is the largest?", "Jupiter", ("Mars", "Venus"), "Jupiter"),
    QAItem("f3", "What is the capital of Japan?", "Tokyo", ("Seoul", "Beijing"), "Japan"),
]
#: Three facts to retain.
RETAIN = [
    QAItem("r0", "What is the capital of Italy?", "Rome", ("Paris", "Madrid"), "Italy"),
    QAItem("r1", "Which ocean is the largest?", "Pacific", ("Atlantic", "Indian"), "Pacific"),
    QAItem("r2", "What is the capital of Spain?", "Madrid", ("Lisbon", "Rome"), "Spain"),
]

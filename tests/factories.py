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


def run_two_processes(worker, out, timeout: float = 900.0) -> None:
    """Run ``worker(rank, 2, init_file, out)`` as a 2-process gloo group: rank 0 here, rank 1 spawned.

    ``worker`` must be importable (a module-level function) and joins the group itself through
    ``file://<out>/init``. Raises AssertionError when process 1 fails.
    """
    import torch
    import torch.multiprocessing as mp

    args = (2, str(out / "init"), str(out))
    child = mp.get_context("spawn").Process(target=worker, args=(1, *args), daemon=True)
    child.start()
    threads = torch.get_num_threads()
    try:
        worker(0, *args)
    finally:
        torch.set_num_threads(threads)
        child.join(timeout=timeout)
        if child.is_alive():
            child.terminate()
    assert child.exitcode == 0, f"process 1 failed (exit code {child.exitcode})"

"""Shared test helpers: hand-written QA items for the tiny model and the 2-process gloo launcher (one place, not copies)."""

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


def _in_gloo_group(body, rank: int, world: int, init_file: str, out: str) -> None:
    """Join the gloo group as ``rank`` (one thread), run ``body(rank, out)``, leave the group."""
    from pathlib import Path

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        body(rank, Path(out))
    finally:
        dist.destroy_process_group()


def run_two_processes(body, out, timeout: float = 900.0) -> None:
    """Run ``body(rank, out)`` in a 2-process gloo group: rank 0 here, rank 1 spawned.

    ``body`` must be importable (a module-level function); the group is joined through
    ``file://<out>/init`` and left afterwards. Raises AssertionError when process 1 fails.
    """
    import torch
    import torch.multiprocessing as mp

    init, world = str(out / "init"), 2
    child = mp.get_context("spawn").Process(target=_in_gloo_group, args=(body, 1, world, init, str(out)), daemon=True)
    child.start()
    threads = torch.get_num_threads()
    try:
        _in_gloo_group(body, 0, world, init, str(out))
    finally:
        torch.set_num_threads(threads)
        child.join(timeout=timeout)
        if child.is_alive():
            child.terminate()
    assert child.exitcode == 0, f"process 1 failed (exit code {child.exitcode})"

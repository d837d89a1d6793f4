"""Spawning a few gloo processes for the data-parallel tests: each worker ``worker(rank, *args,
queue)`` puts ``(rank, results)`` on the queue (``results["error"]``: its traceback)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for ``MASTER_PORT`` / ``init_method``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_results(worker: Callable[..., None], world: int, args: tuple[Any, ...],
                  timeout: float = 300) -> dict[int, dict[str, Any]]:
    """Run ``worker`` in ``world`` spawned processes; every rank's results, after asserting that
    none reported an error."""
    queue = mp.get_context("spawn").Queue()
    procs = mp.start_processes(worker, args=(*args, queue), nprocs=world, join=False,
                               start_method="spawn")
    got: dict[int, dict[str, Any]] = {}
    for _ in range(world):
        rank, out = queue.get(timeout=timeout)
        got[rank] = out
    while not procs.join(timeout=60):
        pass
    for rank, out in got.items():
        assert "error" not in out, f"rank {rank}:\n{out['error']}"
    return got

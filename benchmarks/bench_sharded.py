"""Sharded data-parallel loss benchmark (issue 16, item 4): the time per rank of one forward +
backward of the in-batch loss over W processes, two ways side by side in the same processes:

- ``global`` (``gather=True``, :func:`contrastlab.distributed.call_gathered`): every rank
  computes the whole loss of the gathered 2N rows;
- ``sharded`` (``gather="local"``, :mod:`contrastlab.losses.sharded`): every rank computes its
  own 2N/W anchors against the gathered rows (open_clip's ``local_loss``).

W gloo processes with ``--threads`` torch threads each; N is the global batch, d = 128, t = 0.5,
``info_nce`` and ``debiased_hard`` (beta = 1). The two ways alternate (``--repeats`` rounds, the
machine may be shared), each rank reports its median, the table the slowest rank's median and
the ratio sharded / global (the ideal is 1/W plus the gather). Both compute the same gradient
(tests/losses/test_sharded.py); the table also prints the largest gradient difference seen.

Usage: ``python benchmarks/bench_sharded.py [--quick] [--world W] [--repeats N] [--threads T]
[--out FILE]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _losses() -> dict[str, tuple[Any, dict[str, Any]]]:
    from contrastlab.losses import debiased_hard, info_nce

    return {
        "info_nce": (info_nce, {"temperature": 0.5}),
        "debiased_hard": (debiased_hard, {"temperature": 0.5, "beta": 1.0, "tau_plus": 0.1}),
    }


def _time(fn: Any, z1: torch.Tensor, z2: torch.Tensor, kw: dict[str, Any]) -> tuple[float, Any]:
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    dist.barrier()
    t0 = time.perf_counter()
    fn(a, b, **kw).backward()
    return time.perf_counter() - t0, (a.grad, b.grad)


def _worker(rank: int, world: int, port: int, sizes: list[int], repeats: int, threads: int,
            queue: Any) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        z1 = torch.randn(n, 128, generator=g)
        z2 = z1 + 0.3 * torch.randn(n, 128, generator=g)
        lo, hi = rank * n // world, (rank + 1) * n // world
        for name, (loss, kw) in _losses().items():
            times: dict[str, list[float]] = {"global": [], "sharded": []}
            diff = 0.0
            for _ in range(repeats):
                tg, gg = _time(loss, z1[lo:hi], z2[lo:hi], {**kw, "gather": True})
                ts, gs = _time(loss, z1[lo:hi], z2[lo:hi], {**kw, "gather": "local"})
                times["global"].append(tg)
                times["sharded"].append(ts)
                scale = float(gg[0].abs().max())
                diff = max(diff, float((gg[0] - gs[0]).abs().max()) / scale)
            rows.append((n, name, statistics.median(times["global"]),
                         statistics.median(times["sharded"]), diff))
    queue.put((rank, rows))
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 256 only, for the smoke test")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    sizes = [256] if a.quick else [1024, 4096, 8192]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = mp.start_processes(_worker, args=(a.world, _free_port(), sizes, a.repeats,
                                              a.threads, queue),
                               nprocs=a.world, join=False, start_method="spawn")
    per_rank = dict(queue.get(timeout=1800) for _ in range(a.world))
    while not procs.join(timeout=60):
        pass
    lines = [f"W = {a.world} gloo processes x {a.threads} thread(s), d = 128, float32, "
             f"median of {a.repeats}, slowest rank", "",
             "| N (global) | loss | global (ms) | sharded (ms) | sharded / global | "
             "max rel. grad diff |", "|---|---|---|---|---|---|"]
    for i, (n, name, _, _, _) in enumerate(per_rank[0]):
        tg = max(per_rank[r][i][2] for r in per_rank)
        ts = max(per_rank[r][i][3] for r in per_rank)
        diff = max(per_rank[r][i][4] for r in per_rank)
        lines.append(f"| {n} | {name} | {1e3 * tg:.1f} | {1e3 * ts:.1f} | {ts / tg:.2f} | "
                     f"{diff:.1e} |")
    text = "\n".join(lines)
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CPU kernel under contention (issue 17, item 2): NT-Xent forward + backward (d = 128,
t = 0.5) of the tiled kernel against plain torch, side by side in one process, on a quiet machine
and with every core busy in other processes.

Implementations (each trial runs all three, in a rotating order):

- ``plain``: the textbook dense formula, ``cross_entropy(z z^T / t)`` with the diagonal masked
  (a few large multi-threaded ops);
- ``tiled``: contrastlab's tiled kernel as shipped (``info_nce(..., tiled=True)``): its strips
  shared out between torch's threads, each thread single-threaded on its own strips
  (:mod:`contrastlab.losses.kernels.parallel`);
- ``tiled-intra``: the same kernel with the strips in one loop and torch's intra-op threads
  inside every op (the kernel before this change; kept for the comparison).

Cases: ``1 thread, quiet``; ``2 threads, quiet``; ``2 threads, busy``: ``--companions`` other
processes (default: as many as cores) spin on the CPU for the whole case, so the benchmark's
threads share the cores with them (the situation of a trainer with data-loading workers, a
shared server or CI). Quiet means nothing else of ours runs; the machine itself may not be quiet
(say so when reporting).

Per case and N: the median time of each implementation and, per trial, the ratio tiled / plain;
the table shows the median ratio and the **worst trial's** ratio (the issue's target: the tiled
path no slower than plain at N >= 4096 in every busy trial).

Usage: ``python benchmarks/bench_contention.py [--quick] [--trials N] [--companions C] [--out F]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastlab.losses import info_nce
from contrastlab.losses.kernels import parallel

T = 0.5
SPIN = "import time\nwhile True:\n    sum(i * i for i in range(10000))\n"


def _plain(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / T
    n = z.shape[0]
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    target = (torch.arange(n) + n // 2) % n
    return F.cross_entropy(logits, target)


def _tiled(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return info_nce(z1, z2, temperature=T, tiled=True)


def _tiled_intra(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    with parallel.one_loop():
        return _tiled(z1, z2)


IMPLS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "plain": _plain, "tiled": _tiled, "tiled-intra": _tiled_intra}


def _step(fn: Callable[..., torch.Tensor], z1: torch.Tensor, z2: torch.Tensor) -> float:
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    t0 = time.perf_counter()
    fn(a, b).backward()
    return time.perf_counter() - t0


@contextmanager
def _companions(count: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    time.sleep(0.5)
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _case(n: int, threads: int, trials: int) -> dict[str, list[float]]:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(n)
    z1 = torch.randn(n // 2, 128, generator=g)
    z2 = z1 + 0.3 * torch.randn(n // 2, 128, generator=g)
    for fn in IMPLS.values():  # warm-up
        _step(fn, z1, z2)
    times: dict[str, list[float]] = {name: [] for name in IMPLS}
    names = list(IMPLS)
    for i in range(trials):
        for name in names[i % 3:] + names[: i % 3]:
            times[name].append(_step(IMPLS[name], z1, z2))
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 1024 only, 2 trials (smoke test)")
    p.add_argument("--trials", type=int, default=7)
    p.add_argument("--companions", type=int, default=os.cpu_count() or 2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    sizes = [1024] if a.quick else [1024, 4096, 8192]
    trials = 2 if a.quick else a.trials
    cases = [("1 thread, quiet", 1, 0), ("2 threads, quiet", 2, 0),
             (f"2 threads, busy ({a.companions} companions)", 2, a.companions)]
    lines = ["| case | N | plain (ms) | tiled (ms) | tiled-intra (ms) | tiled / plain: median |"
             " worst trial | tiled-intra / plain: median | worst trial |",
             "|---|---|---|---|---|---|---|---|---|"]
    threads_before = torch.get_num_threads()
    for label, threads, companions in cases:
        with _companions(companions):
            for n in sizes:
                t = _case(n, threads, trials)
                med = {k: statistics.median(v) for k, v in t.items()}
                r = [x / y for x, y in zip(t["tiled"], t["plain"], strict=True)]
                ri = [x / y for x, y in zip(t["tiled-intra"], t["plain"], strict=True)]
                lines.append(
                    f"| {label} | {n} | {1e3 * med['plain']:.0f} | {1e3 * med['tiled']:.0f} | "
                    f"{1e3 * med['tiled-intra']:.0f} | {statistics.median(r):.2f} | "
                    f"{max(r):.2f} | {statistics.median(ri):.2f} | {max(ri):.2f} |")
                print(lines[-1], flush=True)
    torch.set_num_threads(threads_before)
    text = (f"NT-Xent forward + backward, d = 128, float32, {trials} trials per case, "
            f"{os.cpu_count()} cores\n\n" + "\n".join(lines))
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

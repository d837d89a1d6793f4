"""Fused (Triton) NT-Xent benchmark on CUDA: forward + backward time of the implementations side by
side, and their peak extra GPU memory.

Implementations (two views of B = N / 2 rows, d features, t = 0.1, sphere normalization):

- ``plain``: the textbook dense formula: ``F.normalize``, ``logits = z z^T / t`` (bfloat16
  product, float32 logits), the diagonal masked, ``F.cross_entropy`` against the other view;
- ``compiled``: ``torch.compile(plain)``;
- ``tiled``: contrastlab's tiled torch kernel (:func:`contrastlab.losses.tiled_info_nce` with
  ``contrastlab.losses.kernels.fused.USE_TRITON = False``; float32 products, as its inputs are
  cast to float32);
- ``triton``: :func:`contrastlab.losses.kernels.fused.fused_info_nce` on the bfloat16 inputs
  (bfloat16 products on tensor cores, float32 accumulation);
- ``triton-f32``: the same kernels through the tiled entry point (float32 inputs, float32 IEEE
  products: what ``info_nce(..., tiled=True)`` runs on CUDA);
- ``floor``: the bfloat16 matrix products a dense forward + backward cannot avoid, in reused
  buffers: ``S = Z Z^T`` (forward), ``G Z`` and ``G^T Z`` (backward): 3 N^2 d multiply-adds. The
  fused kernels also do 3 N^2 d (the backward rebuilds S), plus the exponentials.

Times: the median over ``--repeats`` rounds, the implementations interleaved round-robin within
each round (one process; ratios taken in the same round are what to read). An implementation
that runs out of memory is reported as such. Memory: ``torch.cuda.max_memory_allocated`` during
one step minus the memory allocated before it (inputs excluded).

Usage::

    python benchmarks/bench_fused.py        # N in {4096, 16384, 65536}, d in {128, 1024}
    python benchmarks/bench_fused.py --n 4096 --d 128 --repeats 5

On a machine without CUDA it prints one line and exits 0 (the kernels' CPU checks run under the
Triton interpreter in tests/losses/test_fused.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

T_SOFTMAX = 0.1
IMPLS = ("plain", "compiled", "tiled", "triton", "triton-f32", "floor")
Step = Callable[[], None]


def plain_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float = T_SOFTMAX) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, eq. (1)) the textbook way: every logit in memory."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T).float() / t
    n = logits.shape[0]
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(n, device=z.device) + n // 2) % n
    return F.cross_entropy(logits, target)


def _loss_step(fn: Callable[..., torch.Tensor], z1: torch.Tensor, z2: torch.Tensor) -> Step:
    def step() -> None:
        z1.grad = z2.grad = None
        fn(z1, z2).backward()

    return step


def _floor_step(n: int, d: int) -> Step:
    z = torch.randn(n, d, device="cuda", dtype=torch.bfloat16)
    s = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    dz = torch.empty(n, d, device="cuda", dtype=torch.bfloat16)

    def step() -> None:
        torch.mm(z, z.T, out=s)
        torch.mm(s, z, out=dz)
        torch.mm(s.T, z, out=dz)

    return step


def make_steps(n: int, d: int, impls: list[str]) -> dict[str, Step]:
    """One forward + backward step per implementation, on the same bfloat16 inputs."""
    from contrastlab.losses import kernels as K
    from contrastlab.losses.kernels import fused as FU

    g = torch.Generator(device="cuda").manual_seed(0)
    b = n // 2
    z1 = torch.randn(b, d, device="cuda", generator=g).bfloat16().requires_grad_(True)
    z2 = torch.randn(b, d, device="cuda", generator=g).bfloat16().requires_grad_(True)
    x1, x2 = (z.detach().float().requires_grad_(True) for z in (z1, z2))

    def tiled_torch(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        FU.USE_TRITON = False
        try:
            return K.tiled_info_nce(a, c, T_SOFTMAX)
        finally:
            FU.USE_TRITON = True

    makers: dict[str, Callable[[], Step]] = {
        "plain": lambda: _loss_step(plain_ntxent, z1, z2),
        "compiled": lambda: _loss_step(torch.compile(plain_ntxent), z1, z2),
        "tiled": lambda: _loss_step(tiled_torch, z1, z2),
        "triton": lambda: _loss_step(lambda a, c: FU.fused_info_nce(a, c, T_SOFTMAX), z1, z2),
        "triton-f32": lambda: _loss_step(lambda a, c: K.tiled_info_nce(a, c, T_SOFTMAX), x1, x2),
        "floor": lambda: _floor_step(n, d),
    }
    return {name: makers[name]() for name in impls}


def _timed(step: Step) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def _peak_mb(step: Step) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(n: int, d: int, impls: list[str], repeats: int) -> dict[str, Any]:
    """Warm up each implementation (compilation, memory), then ``repeats`` interleaved rounds."""
    steps = make_steps(n, d, impls)
    failed: dict[str, str] = {}
    memory: dict[str, float] = {}
    for name, step in list(steps.items()):
        try:
            step()
            memory[name] = _peak_mb(step)
        except torch.cuda.OutOfMemoryError:
            failed[name] = "out of memory"
            del steps[name]
            torch.cuda.empty_cache()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_timed(step))
    medians = {name: statistics.median(v) for name, v in times.items()}
    return {"n": n, "d": d, "ms": {k: 1e3 * v for k, v in medians.items()},
            "peak_mb": memory, "failed": failed}


def table(records: list[dict[str, Any]], impls: list[str]) -> str:
    """Markdown: time (ms), time / floor, time / triton and peak extra memory per implementation."""
    lines = [f"Fused NT-Xent, forward + backward, t = {T_SOFTMAX}, bfloat16 inputs "
             f"({torch.cuda.get_device_name()}; torch {torch.__version__})", "",
             "| N | d | implementation | ms | / floor | / triton | peak extra MB |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        floor, tri = r["ms"].get("floor"), r["ms"].get("triton")
        for name in impls:
            if name in r["failed"]:
                lines.append(f"| {r['n']} | {r['d']} | {name} | {r['failed'][name]} | | | |")
                continue
            ms = r["ms"][name]
            rf = f"{ms / floor:.2f}" if floor else ""
            rt = f"{ms / tri:.2f}" if tri else ""
            lines.append(f"| {r['n']} | {r['d']} | {name} | {ms:.2f} | {rf} | {rt} | "
                         f"{r['peak_mb'][name]:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs="*", type=int, default=[4096, 16384, 65536])
    parser.add_argument("--d", nargs="*", type=int, default=[128, 1024])
    parser.add_argument("--impls", nargs="*", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/fused.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fused.md"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fused: no CUDA device, nothing to measure (the Triton kernels run on CUDA; "
              "their CPU checks: tests/losses/test_fused.py under TRITON_INTERPRET=1)")
        return 0
    records = []
    for n in args.n:
        for d in args.d:
            records.append(measure(n, d, args.impls, args.repeats))
            print(json.dumps(records[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(records, indent=1))
    args.out.write_text(table(records, args.impls))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

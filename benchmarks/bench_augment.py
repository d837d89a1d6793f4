"""Augmentation benchmark: SimCLR's image augmentations for one batch, three ways side by side
in one process (issue 16, item 2):

- ``torchvision v2 Compose`` (the peer): the hand-written per-sample pipeline a SimCLR script
  runs in its DataLoader workers (RandomResizedCrop, RandomHorizontalFlip, RandomApply(
  ColorJitter), RandomGrayscale, RandomApply(GaussianBlur)), one sample at a time, here on the
  main process;
- ``contrastlab loop``: ``augmenter("image", engine="loop")`` (the same functionals per sample,
  its parameters drawn from a seeded generator);
- ``contrastlab batched``: ``augmenter("image", engine="batched")`` (the same parameters on the
  whole batch at once: :mod:`contrastlab.data.batched_augment`).

Cases: batch 512 of 32 x 32 images (CIFAR) and batch 256 of 96 x 96 (STL-10), strength 1. Each
case runs ``--repeats`` times round-robin (the machine is shared), the table reports medians and
the ratio to the peer. With a CUDA device the batched engine is also timed on it.

Usage: ``python benchmarks/bench_augment.py [--quick] [--repeats N] [--threads T] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from contrastlab.data.pairs import augmenter


def _peer(strength: float, side: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    kernel = max(3, int(0.1 * side) // 2 * 2 + 1)
    pipeline = v2.Compose([
        v2.RandomResizedCrop(side, scale=(max(0.08, 1 - 0.8 * strength), 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4 * strength, 0.4 * strength, 0.4 * strength,
                                       min(0.5, 0.1 * strength))], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, (0.1, 0.1 + 1.9 * strength))], p=0.5),
    ])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([pipeline(img) for img in x])

    return run


def _ours(engine: str, device: str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    aug = augmenter("image", 1.0, engine=engine)
    gen = torch.Generator().manual_seed(0)

    def run(x: torch.Tensor) -> torch.Tensor:
        out = aug(x, gen)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [(512, 32), (256, 96)] if not args.quick else [(16, 32)]
    rows = []
    for batch, side in cases:
        x = torch.rand((batch, 3, side, side), generator=torch.Generator().manual_seed(1))
        impls: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {
            "torchvision v2 Compose (peer)": (_peer(1.0, side), x),
            "contrastlab loop": (_ours("loop"), x),
            "contrastlab batched": (_ours("batched"), x),
        }
        if torch.cuda.is_available():
            impls["contrastlab batched (cuda)"] = (_ours("batched", "cuda"), x.cuda())
        times: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(args.repeats):
            for name, (fn, inp) in impls.items():
                t0 = time.perf_counter()
                out = fn(inp)
                times[name].append(time.perf_counter() - t0)
                assert out.shape == inp.shape
        peer = statistics.median(times["torchvision v2 Compose (peer)"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append(f"| {batch} x {side}px | {name} | {med * 1000:.1f} | "
                        f"{batch / med:.0f} | {med / peer:.2f} |")
    table = "\n".join([
        f"Threads: {args.threads}; device: {'CUDA + ' if torch.cuda.is_available() else ''}CPU; "
        f"median of {args.repeats} round-robin repeats.", "",
        "| batch | implementation | ms / batch | images / s | time / peer |",
        "|---|---|---|---|---|", *rows])
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-loop benchmark: images per second of contrastlab's trainer against a hand-written
PyTorch loop of the same model and loss, side by side in one process (issue 16, item 8).

Both train the same encoder (``resnet18-cifar`` with an MLP head to 128, sphere-normalized,
built by :func:`contrastlab.models.build_encoder`) with InfoNCE at t = 0.5
(:func:`contrastlab.losses.info_nce`) and Adam on SimCLR-augmented views of CIFAR-sized images
(random 3 x 32 x 32 tensors in 10 classes: no data set is read or downloaded). The loops differ
in everything else:

- ``hand-written, per-sample v2, N workers``: a ``torch.utils.data.DataLoader`` (shuffle,
  drop_last, N worker processes; 0 = in the main process) over a data set that applies a
  torchvision v2 ``Compose`` (RandomResizedCrop, flip, ColorJitter, grayscale, blur) to each
  sample twice, then forward, loss, backward, step;
- ``contrastlab, engine loop``: :func:`contrastlab.train.train` with ``data.pairs: augment``
  and the per-sample engine (the same data path as the hand-written loop with 0 workers);
- ``contrastlab, engine loop, N workers``: the same with ``data.workers: N`` (the batches built
  in N DataLoader worker processes from plans drawn in the training process: the same numbers
  as with 0 workers; :mod:`contrastlab.train.feed`);
- ``contrastlab, engine batched``: the same with ``data.augment.engine: batched``.

The time of the second epoch is measured (the first warms up; contrastlab runs three, the last
one with the final evaluation, none before; checkpoints are off), as images (anchor samples) per
second.
The issue's targets: contrastlab no slower than the hand-written loop with the same data path
(time ratio <= 1.05), and >= 2x faster with on-device augmentation on CUDA (no GPU here).

With ``--repeats R`` every case runs R times, the cases interleaved in a rotating order (so a
change in the machine's load falls on every case alike), and the table gives the median and the
smallest time of each case and the ratio of the medians.

Usage: ``python benchmarks/bench_train.py [--quick] [--batch B] [--steps S] [--threads T]
[--workers N] [--encoder NAME] [--repeats R] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from contrastlab.data.base import Dataset
from contrastlab.losses import info_nce
from contrastlab.models import build_encoder
from contrastlab.train import train
from contrastlab.train.config import parse_config


def _data(n: int, side: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, side, side), generator=g)
    y = torch.arange(n) % 10
    return Dataset("bench", x, y, x[:64].clone(), y[:64].clone(), 10, "image")


def _config(encoder: str, batch: int, steps: int, engine: str, threads: int,
            workers: int = 0) -> Any:
    return parse_config({
        "seed": 0,
        "data": {"name": "synthetic", "pairs": "augment", "workers": workers,
                 "augment": {"strength": 1.0, "engine": engine}},
        "model": {"encoder": encoder, "out_dim": 512 if encoder != "mlp" else 64,
                  "head": "mlp", "head_dim": 128},
        "loss": {"name": "infonce", "temperature": 0.5, "normalize": "sphere"},
        "optim": {"name": "adam", "lr": 1e-3, "schedule": "constant"},
        "train": {"epochs": 3, "batch_size": batch, "steps_per_epoch": steps,
                  "progress": False, "checkpoint": False, "threads": threads, "device": "cpu"},
        "eval": {"every": 0, "geometry": False, "mean_classifier": False,
                 "linear_probe": False, "heldout_loss": False, "final_probes": [],
                 "final_knn": False, "final_lsup": False},
    })


def _contrastlab(data: Dataset, encoder: str, batch: int, steps: int, engine: str,
                 threads: int, workers: int = 0) -> float:
    """Seconds of the second of three epochs of :func:`contrastlab.train.train` (the last one
    runs the final evaluation)."""
    result = train(_config(encoder, batch, steps, engine, threads, workers), data)
    assert result.status == "done", result.error
    return float(result.epoch_seconds[2])


class _TwoViews(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, x: torch.Tensor) -> None:
        from torchvision.transforms import v2

        side = x.shape[-1]
        self.x = x
        self.t = v2.Compose([
            v2.RandomResizedCrop(side, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(3, (0.1, 2.0))], p=0.5),
        ])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i]
        return self.t(img), self.t(img)


def _hand_written(data: Dataset, encoder: str, batch: int, steps: int, workers: int) -> float:
    """Seconds of the second of two epochs of ``steps`` steps of a plain PyTorch loop."""
    torch.manual_seed(0)
    model = build_encoder(encoder, tuple(data.x_train.shape[1:]),
                          out_dim=512 if encoder != "mlp" else 64, head="mlp", head_dim=128,
                          normalize="sphere")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(_TwoViews(data.x_train), batch_size=batch,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    seconds = 0.0
    for epoch in range(2):
        t0 = time.perf_counter()
        for step, (x1, x2) in enumerate(loader):
            if step == steps:
                break
            z = model(torch.cat([x1, x2]))
            loss = info_nce(z[:batch], z[batch:], temperature=0.5, normalize="none")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0 if epoch == 1 else seconds
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="an MLP and tiny sizes (smoke test)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--encoder", default=None,
                    help="the encoder (default resnet18-cifar; mlp with --quick)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of every case, interleaved in a rotating order (median reported)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; got {args.repeats}")
    torch.set_num_threads(args.threads)
    encoder = args.encoder or ("mlp" if args.quick else "resnet18-cifar")
    batch, steps = (8, 2) if args.quick else (args.batch, args.steps)
    data = _data(batch * steps * 2, 32)
    cases = {
        "hand-written, per-sample v2, 0 workers": lambda: _hand_written(
            data, encoder, batch, steps, 0),
        f"hand-written, per-sample v2, {args.workers} workers": lambda: _hand_written(
            data, encoder, batch, steps, args.workers),
        "contrastlab, engine loop": lambda: _contrastlab(
            data, encoder, batch, steps, "loop", args.threads),
        **({f"contrastlab, engine loop, {args.workers} workers": lambda: _contrastlab(
            data, encoder, batch, steps, "loop", args.threads, args.workers)}
           if args.workers > 0 else {}),
        "contrastlab, engine batched": lambda: _contrastlab(
            data, encoder, batch, steps, "batched", args.threads),
    }
    names = list(cases)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):  # rotate the order: each case runs first once in a while
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(cases[name]())
    seconds = {name: statistics.median(v) for name, v in runs.items()}
    base = seconds["hand-written, per-sample v2, 0 workers"]
    rows = [f"| {name} | {s:.2f} | {min(runs[name]):.2f} | {batch * steps / s:.1f} | "
            f"{s / base:.2f} |" for name, s in seconds.items()]
    table = "\n".join([
        f"Encoder {encoder}, batch {batch} (2 x {batch} views), {steps} steps per epoch, "
        f"32 px, InfoNCE; {args.threads} torch thread(s); {args.repeats} interleaved run(s) "
        f"per case; CPU"
        f"{' (CUDA present but unused)' if torch.cuda.is_available() else ', no GPU'}.", "",
        "| loop | s / epoch (median) | s / epoch (min) | images / s | time / hand-written "
        "(0 workers) |",
        "|---|---|---|---|---|", *rows])
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

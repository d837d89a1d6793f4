"""Loss benchmarks: contrastlab against peer implementations, side by side in one process.

Each case times forward + backward of every implementation on the same inputs, interleaved
round-robin (the machine is shared and noisy, so only ratios measured together mean anything),
and checks that the implementations agree on the loss value. Peers:

- ``plain``: the textbook PyTorch formulation (masked logits + cross-entropy), as in SimCLR
  re-implementations and the HobbitLong SupCon code (dense float masks);
- ``published``: the formulation of the authors' code re-expressed here (Robinson et al.'s
  ``exp``/``masked_select`` hard-negative loss; Jiang et al.'s per-anchor loop with
  ``np.random.choice``) — run on CPU;
- ``lightly`` and ``pml`` (pytorch-metric-learning), when installed (``pip install .[bench]``).

Usage: ``python benchmarks/bench_losses.py [--quick] [--repeats N] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import contrastlab.losses as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import plain_ntxent, published_hard

Impl = Callable[[], torch.Tensor]


# ----------------------------------------------------------------------------- peers
def plain_supcon(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    # dense-mask formulation of the HobbitLong reference code (base temperature = t)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z.shape[0]
    lab = torch.cat([y, y])
    mask = (lab[:, None] == lab[None, :]).float()
    logits = z @ z.T / t
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1.0 - torch.eye(n)
    mask = mask * not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    return (-(mask * log_prob).sum(1) / mask.sum(1)).mean()


def published_hscl(
    z: torch.Tensor, y: torch.Tensor, beta: float, k: int, rng: np.random.Generator
) -> torch.Tensor:
    # Jiang et al. nce_supervised_hard, re-expressed on CPU (per-anchor loop, numpy sampling)
    inner = z @ z.T
    batch = y.shape[0]
    total = torch.zeros(())
    pos_num = 0
    for i in range(batch):
        pos_index = (y == y[i]).to(z.dtype)
        neg_index = 1 - pos_index
        pos_exp = torch.exp(inner[i]) * pos_index
        neg_exp = torch.exp(inner[i]) * neg_index
        w = torch.exp(beta * inner[i]) * neg_index
        p = (w / w.sum()).detach().double().numpy()
        num_pos = int(pos_index.sum())
        draw = rng.choice(batch, num_pos * k, p=p / p.sum())
        g = neg_exp[draw].reshape(num_pos, k).mean(1)
        sel = pos_exp[pos_index.bool()]
        total = total + (-torch.log(sel / (sel + g))).sum()
        pos_num += num_pos
    return total / pos_num


def plain_nce(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, t: float) -> torch.Tensor:
    pos = (a * p).sum(-1, keepdim=True)
    neg = torch.einsum("bd,bkd->bk", a, n)
    logits = torch.cat([pos, neg], 1) / t
    return F.cross_entropy(logits, torch.zeros(a.shape[0], dtype=torch.long))


# ----------------------------------------------------------------------------- harness
def time_interleaved(impls: dict[str, Impl], repeats: int) -> dict[str, tuple[float, float]]:
    """Median ms of forward+backward per implementation, and the loss value of each."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    values: dict[str, float] = {}
    for name, fn in impls.items():  # warm-up
        values[name] = float(fn().detach())
    for _ in range(repeats):
        for name, fn in impls.items():
            start = time.perf_counter()
            loss = fn()
            loss.backward()
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: (statistics.median(times[name]), values[name]) for name in impls}


def _leaf(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(True)


def _unit_leaf(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return (x / x.norm(dim=-1, keepdim=True)).requires_grad_(True)


def cases(quick: bool) -> list[tuple[str, dict[str, Impl], float]]:
    """(title, implementations, value tolerance) for each benchmark case."""
    try:
        from lightly.loss import NTXentLoss as LightlyNTXent
    except ImportError:  # pragma: no cover - optional peer
        LightlyNTXent = None
    try:
        from pytorch_metric_learning import losses as pml
    except ImportError:  # pragma: no cover - optional peer
        pml = None
    d = 32 if quick else 128
    out: list[tuple[str, dict[str, Impl], float]] = []
    t = 0.1
    for n in [64] if quick else [256, 1024, 2048]:
        z1, z2 = _leaf(n, d, seed=1), _leaf(n, d, seed=2)
        impls: dict[str, Impl] = {
            "contrastlab": lambda z1=z1, z2=z2: L.info_nce(z1, z2, t),
            "plain": lambda z1=z1, z2=z2: plain_ntxent(z1, z2, t),
        }
        if LightlyNTXent is not None:
            lk = LightlyNTXent(temperature=t)
            impls["lightly"] = lambda z1=z1, z2=z2, lk=lk: lk(z1, z2)
        if pml is not None and n <= 256:  # its N^3 pair mask: 34 GB at 2B = 2048
            pk = pml.NTXentLoss(temperature=t)
            lab = torch.cat([torch.arange(n), torch.arange(n)])
            impls["pml"] = lambda z1=z1, z2=z2, pk=pk, lab=lab: pk(torch.cat([z1, z2]), lab)
        out.append((f"NT-Xent, B={n} (2B={2 * n} rows), d={d}", impls, 1e-4))
    for n in [64] if quick else [256, 1024]:
        z1, z2 = _leaf(n, d, seed=3), _leaf(n, d, seed=4)
        y = torch.arange(n) % 10
        impls = {
            "contrastlab": lambda z1=z1, z2=z2, y=y: L.supcon(z1, z2, y, t),
            "plain": lambda z1=z1, z2=z2, y=y: plain_supcon(z1, z2, y, t),
        }
        if pml is not None:
            pk2 = pml.SupConLoss(temperature=t)
            lab = torch.cat([y, y])
            impls["pml"] = lambda z1=z1, z2=z2, pk2=pk2, lab=lab: pk2(torch.cat([z1, z2]), lab)
        out.append((f"SupCon, B={n}, 10 classes, d={d}", impls, 1e-4))
    for n in [64] if quick else [256, 1024]:
        z1, z2 = _leaf(n, d, seed=5), _leaf(n, d, seed=6)
        impls = {
            "contrastlab": lambda z1=z1, z2=z2: L.debiased_hard(z1, z2, 0.5, 0.1, 1.0),
            "published": lambda z1=z1, z2=z2: published_hard(z1, z2, 0.5, 0.1, 1.0),
        }
        out.append((f"Robinson hard negatives (t=0.5, tau+=0.1, beta=1), B={n}", impls, 1e-4))
    for b, k in [(32, 64)] if quick else [(256, 256), (256, 4096)]:
        a, p, negs = _leaf(b, d, seed=7), _leaf(b, d, seed=8), _leaf(b, k, d, seed=9)
        impls = {
            "contrastlab": lambda a=a, p=p, negs=negs: L.nce_loss(a, p, negs, temperature=t),
            "plain": lambda a=a, p=p, negs=negs: plain_nce(a, p, negs, t),
        }
        out.append((f"explicit-k InfoNCE, B={b}, k={k}, d={d}", impls, 1e-4))
    for b, c in [(64, 4)] if quick else [(256, 10), (512, 100)]:
        z = _unit_leaf(b, c - 1, seed=10)  # unit norm: the published code overflows otherwise
        y = torch.arange(b) % c
        k = 64 if quick else 256
        rng = np.random.default_rng(0)
        gen = torch.Generator().manual_seed(0)
        impls = {
            "contrastlab": lambda z=z, y=y, k=k, gen=gen: L.hscl(
                z, y, beta=5.0, k=k, normalize="none", generator=gen
            ),
            "published": lambda z=z, y=y, k=k, rng=rng: published_hscl(z, y, 5.0, k, rng),
        }
        # sampled losses: values agree only statistically
        out.append((f"HSCL sampled (beta=5, K={k}), B={b}, C={c}, d={c - 1}", impls, 5e-2))
    return out


def run(quick: bool, repeats: int) -> tuple[str, bool]:
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward,"
        f" median of {repeats} interleaved repeats",
        "",
        "| case | implementation | ms | x contrastlab | loss | agrees |",
        "|---|---|---|---|---|---|",
    ]
    all_agree = True
    for title, impls, tol in cases(quick):
        res = time_interleaved(impls, repeats)
        base_ms, base_val = res["contrastlab"]
        for name, (ms, val) in res.items():
            agree = abs(val - base_val) <= tol * max(1.0, abs(base_val))
            all_agree &= agree
            lines.append(
                f"| {title} | {name} | {ms:.2f} | {ms / base_ms:.2f} | {val:.5f} | "
                f"{'yes' if agree else 'NO'} |"
            )
    return "\n".join(lines), all_agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    table, agree = run(args.quick, repeats)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    if not agree:
        print("some implementations disagree on the loss value", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""contrastlab losses in a plain PyTorch loop: a tiny encoder on random data.

Run it: ``python docs/examples/plain_pytorch.py`` (CPU, a few seconds).
"""

from collections.abc import Callable

import torch
from torch import nn

import contrastlab.losses as L

C, DIM = 4, 32  # 4 latent classes in R^32


def batch(centers: torch.Tensor, size: int, g: torch.Generator):
    """Labels, and two noisy views of each sample (stand-ins for data augmentations)."""
    y = torch.randint(0, C, (size,), generator=g)
    x = centers[y] + 0.5 * torch.randn(size, DIM, generator=g)
    x1 = x + 0.1 * torch.randn(size, DIM, generator=g)
    x2 = x + 0.1 * torch.randn(size, DIM, generator=g)
    return y, x1, x2


def fit(loss_fn: Callable[..., torch.Tensor], steps: int, batch_size: int) -> list[float]:
    """Train a fresh two-layer encoder with ``loss_fn(z1, z2, y, g)`` for ``steps`` steps."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    centers = torch.randn(C, DIM, generator=g)
    encoder = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 16))
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        y, x1, x2 = batch(centers, batch_size, g)
        z1, z2 = encoder(x1), encoder(x2)  # raw features: each loss normalizes them
        loss = loss_fn(z1, z2, y, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    # SimCLR's NT-Xent: the other view is the positive, the 2B - 2 other views the negatives
    "info_nce": lambda z1, z2, y, g: L.info_nce(z1, z2, temperature=0.5),
    # hard negatives (Robinson et al. 2021): the negatives reweighted by exp(beta s / t) and
    # debiased with the class prior tau_plus (Chuang et al. 2020); unsupervised
    "debiased_hard": lambda z1, z2, y, g: L.debiased_hard(
        z1, z2, temperature=0.5, tau_plus=1 / C, beta=1.0),
    # supervised hard negatives with an explicit k (Jiang et al. 2023, HSCL): one view, the
    # same-label samples are the positives, k = 32 negatives per pair drawn from the other
    # classes with probability proportional to exp(beta s)
    "hscl": lambda z1, z2, y, g: L.hscl(z1, y, beta=2.0, k=32, normalize="sphere", generator=g),
}


def main(steps: int = 30, batch_size: int = 64) -> dict[str, list[float]]:
    histories = {}
    for name, loss_fn in LOSSES.items():
        histories[name] = history = fit(loss_fn, steps, batch_size)
        print(f"{name:14s} loss {history[0]:.4f} -> {history[-1]:.4f} in {steps} steps")
    return histories


if __name__ == "__main__":
    main()

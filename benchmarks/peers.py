"""Reference formulas shared by the benchmarks (dense, as their authors or textbooks write
them); the benchmarks time contrastlab against them and check that the values agree."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def plain_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """Textbook NT-Xent: masked 2B x 2B logits + cross-entropy."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z.shape[0]
    logits = z @ z.T / t
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(n, device=z.device) + n // 2) % n
    return F.cross_entropy(logits, target)


def published_hard(
    z1: torch.Tensor, z2: torch.Tensor, t: float, tau: float, beta: float
) -> torch.Tensor:
    """Robinson et al. (2021) image/main.py re-expressed (exp, masked_select, clamp)."""
    b = z1.shape[0]
    out1, out2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    out = torch.cat([out1, out2])
    neg = torch.exp(out @ out.T / t)
    mask = torch.ones(2 * b, 2 * b, dtype=torch.bool)
    idx = torch.arange(b)
    mask[idx, idx] = mask[idx + b, idx + b] = mask[idx, idx + b] = mask[idx + b, idx] = False
    neg = neg.masked_select(mask).view(2 * b, -1)
    pos = torch.exp((out1 * out2).sum(-1) / t)
    pos = torch.cat([pos, pos])
    n = 2 * b - 2
    imp = (beta * neg.log()).exp()
    reweight = (imp * neg).sum(-1) / imp.mean(-1)
    ng = (-tau * n * pos + reweight) / (1 - tau)
    ng = torch.clamp(ng, min=n * math.e ** (-1 / t))
    return (-torch.log(pos / (pos + ng))).mean()

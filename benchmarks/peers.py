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


def plain_hscl_mean(z: torch.Tensor, labels: torch.Tensor, beta: float, t: float) -> torch.Tensor:
    """HSCL (Jiang et al. 2023) with the plug-in negative term (``exact="mean"``), dense: the
    hardness law q_ij ∝ exp(beta z_i^T z_j) over the other classes (detached), log g_i =
    log sum_j q_ij exp(s_ij / t), and softplus(log g_i - s_ip / t) averaged over the positive pairs
    (p = i included); features on the sphere."""
    zn = F.normalize(z, dim=1)
    gram = zn @ zn.T
    same = labels[:, None] == labels[None, :]
    log_q = (beta * gram.detach()).masked_fill(same, float("-inf"))
    log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    log_g = torch.logsumexp(log_q + gram / t, dim=1)
    return F.softplus(log_g[:, None] - gram / t)[same].mean()


def plain_nce_indexed(
    a: torch.Tensor, p: torch.Tensor, pool: torch.Tensor, index: torch.Tensor, t: float
) -> torch.Tensor:
    """Explicit-k InfoNCE with per-anchor negatives pool[index] (B, k, d), dense: gather,
    batched dot products, cross-entropy with the positive first; features on the sphere."""
    a, p, pool = F.normalize(a, dim=1), F.normalize(p, dim=1), F.normalize(pool, dim=1)
    neg = pool[index]  # (B, k, d)
    s_neg = torch.einsum("bd,bkd->bk", a, neg)
    logits = torch.cat([(a * p).sum(1, keepdim=True), s_neg], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(a.shape[0], dtype=torch.long))

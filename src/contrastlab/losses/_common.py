"""Small helpers shared by the losses: batch reduction and the two-view layout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from contrastlab._validation import check_choice, check_same_shape, check_tensor

REDUCTIONS = ("mean", "sum", "none")


def reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a vector of per-anchor (or per-pair) losses: ``mean``, ``sum`` or ``none``."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    return per_item


def check_two_views(z1: torch.Tensor, z2: torch.Tensor, min_batch: int = 1) -> int:
    """Validate two view batches of shape (B, d); return B."""
    check_tensor("z1", z1, ndim=2, shape_hint="(B, d)")
    check_tensor("z2", z2, ndim=2, shape_hint="(B, d)")
    check_same_shape("z1", z1, "z2", z2)
    if z1.shape[0] < min_batch:
        raise ValueError(f"z1: the batch size B must be >= {min_batch}; got {z1.shape[0]}")
    return int(z1.shape[0])


def check_anchor_positive(anchor: torch.Tensor, positive: torch.Tensor) -> None:
    """Validate the (B, d) anchors and their (B, d) positives of an explicit-k loss."""
    check_tensor("anchor", anchor, ndim=2, shape_hint="(B, d)")
    check_tensor("positive", positive, ndim=2, shape_hint="(B, d)")
    if positive.shape != anchor.shape:
        raise ValueError(
            f"positive must have the anchor's shape {tuple(anchor.shape)}; got "
            f"{tuple(positive.shape)}"
        )


def view_positive_index(batch: int, device: torch.device) -> torch.Tensor:
    """Index of each row's other view in the stacked 2B layout [z1; z2]: i <-> i + B."""
    idx = torch.arange(2 * batch, device=device)
    return (idx + batch) % (2 * batch)


def debiased_anchor_loss(
    log_reweight: torch.Tensor, s_pos: torch.Tensor, t: float, tau: float, log_n: float
) -> torch.Tensor:
    """Per-anchor debiased / hard loss ``log(1 + Ng / e^{s_pos})`` in log space (Chuang et al.
    2020, Eq. 6; Robinson et al. 2021, Eq. 3, as in their code):
    ``Ng = max((reweight - tau N e^{s_pos}) / (1 - tau), N e^{-1/t})``.

    ``log_reweight`` is ``log`` of the (importance-reweighted) sum over the N negatives,
    ``s_pos`` the positive logit, ``log_n = log N``. A non-positive numerator (the clamp is
    then active) is handled without taking the log of a negative number.
    """
    if tau > 0.0:
        log_sub = math.log(tau) + log_n + s_pos
        gap = log_sub - log_reweight  # raw numerator > 0  <=>  gap < 0
        safe_gap = gap.clamp(max=-1e-30)
        log_raw = torch.where(
            gap < 0,
            log_reweight + torch.log(-torch.expm1(safe_gap)),
            torch.full_like(gap, float("-inf")),
        )
        log_ng = log_raw - math.log1p(-tau)
    else:
        log_ng = log_reweight
    log_ng = torch.maximum(log_ng, torch.full_like(log_ng, log_n - 1.0 / t))
    return F.softplus(log_ng - s_pos)

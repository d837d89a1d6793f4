"""Small helpers shared by the losses: batch reduction and the two-view layout."""

from __future__ import annotations

import torch

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


def view_positive_index(batch: int, device: torch.device) -> torch.Tensor:
    """Index of each row's other view in the stacked 2B layout [z1; z2]: i <-> i + B."""
    idx = torch.arange(2 * batch, device=device)
    return (idx + batch) % (2 * batch)

"""The argument checks and inputs shared by the entry points of the tiled
(:mod:`~contrastlab.losses.kernels.inbatch`, :mod:`~contrastlab.losses.kernels.indexed`) and the
fused (:mod:`~contrastlab.losses.kernels.fused`) kernels: the two stacked views of the in-batch
losses and their positive logits, and the options of NCE over a pool.
"""

from __future__ import annotations

import torch

from contrastlab._validation import check_choice, check_positive, check_tensor
from contrastlab.losses._common import (
    REDUCTIONS,
    check_anchor_positive,
    check_feature_dim,
    check_two_views,
)
from contrastlab.losses.kernels.engine import TILED_NCE_LOSSES, rows_normalized


def check_views(z1: torch.Tensor, z2: torch.Tensor, reduction: str, min_batch: int) -> int:
    """Validate two (B, d) view batches (B >= ``min_batch``) and the reduction; return B."""
    b = check_two_views(z1, z2, min_batch=min_batch)
    check_choice("reduction", reduction, REDUCTIONS)
    return b


def stacked_views(
    z1: torch.Tensor, z2: torch.Tensor, normalize: str, dtype: torch.dtype
) -> torch.Tensor:
    """The 2B rows ``[z1; z2]`` in ``dtype``, normalized (differentiably)."""
    return rows_normalized(torch.cat([z1, z2], dim=0).to(dtype), normalize)


def view_positive_logits(z: torch.Tensor, b: int, t: float) -> torch.Tensor:
    """s_{i, i+-B} / t of the 2B stacked rows (the same value for both views of a sample), a
    float64 dot product (O(N d); the heads subtract it from the float64 log-sum-exps, see
    :func:`~contrastlab.losses.kernels.engine.run_blocks`)."""
    s = torch.linalg.vecdot(z[:b].double(), z[b:].double(), dim=1) / t
    return torch.cat([s, s])


def check_nce_options(loss: str, temperature: float, reduction: str) -> float:
    """Validate the options of a tiled NCE kernel (a log-sum-exp ``loss`` of
    :data:`~contrastlab.losses.kernels.engine.TILED_NCE_LOSSES`, t > 0, the reduction); return
    the temperature as a float."""
    check_choice("loss", loss, TILED_NCE_LOSSES)
    temperature = check_positive("temperature", temperature)
    check_choice("reduction", reduction, REDUCTIONS)
    return temperature


def check_shared_pool(
    anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor
) -> None:
    """Validate the (B, d) anchors and positives and the (k, d) negatives they share."""
    check_anchor_positive(anchor, positive)
    check_tensor("negatives", negatives, ndim=2, shape_hint="(k, d), shared by the anchors")
    check_feature_dim("negatives", negatives, anchor.shape[1])

"""The argument checks and inputs shared by the entry points of the tiled
(:mod:`~contrastlab.losses.kernels.inbatch`, :mod:`~contrastlab.losses.kernels.indexed`) and the
fused (:mod:`~contrastlab.losses.kernels.fused`) kernels and of the sharded losses
(:mod:`~contrastlab.losses.sharded`): the two stacked views of the in-batch losses, their
positive logits and SupCon's mean positive logits, and the options and rows of NCE over a pool.
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


def mean_positive_logits(
    z: torch.Tensor, labels: torch.Tensor, t: float, rows: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
) -> torch.Tensor:
    """SupCon's positive term (Khosla et al. 2020, eq. (2)) ``(1/|P(i)|) sum_{p in P(i)}
    z_i . z_p / t`` of the rows of ``z`` (``labels``: one per row; every class has >= 2 rows, e.g.
    the two views), from the class sums C_c as ``z_i . (C_{y_i} - z_i) / (t (|c| - 1))``: O(N d),
    no N x N label mask, in float64 (the difference cancels). ``rows``: only those rows of z
    (e.g. a data-parallel rank's own anchors), ``q`` their features ``z[rows]`` if already formed.
    """
    _, inv = torch.unique(labels, return_inverse=True)
    n_cls = int(inv.max()) + 1
    z64 = z.double()
    class_sum = z64.new_zeros(n_cls, z.shape[1]).index_add(0, inv, z64)
    count = torch.bincount(inv, minlength=n_cls).to(torch.float64)
    if rows is None:
        q64 = z64
    else:
        q64 = (z.index_select(0, rows) if q is None else q).double()
        inv = inv.index_select(0, rows)
    to_class = torch.linalg.vecdot(q64, class_sum.index_select(0, inv))
    return (to_class - torch.linalg.vecdot(q64, q64)) / ((count[inv] - 1.0) * t)


def nce_rows(
    anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, normalize: str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The anchors, positives and negatives (or pool) of NCE in ``dtype``, each normalized
    (differentiably, :func:`~contrastlab.losses.kernels.engine.rows_normalized`)."""
    return (
        rows_normalized(anchor.to(dtype), normalize),
        rows_normalized(positive.to(dtype), normalize),
        rows_normalized(negatives.to(dtype), normalize),
    )


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

"""In-batch InfoNCE / NT-Xent (Chen et al. 2020, SimCLR, eq. (1); Oord et al. 2018).

Two views z1, z2 of B samples are stacked into 2B rows. For anchor i, the positive is its other
view and the 2B - 2 remaining rows are its negatives; the anchor is never its own negative::

    l_i = -log( exp(s_{i,pos} / t) / sum_{j != i} exp(s_ij / t) ),   s_ij = z_i^T z_j

(a **sum** over the negatives; the positive is in the denominator). The loss is the mean over all
2B anchors (SimCLR averages both directions). With ``normalize="sphere"`` s_ij is the cosine
similarity, as in SimCLR. Computed with a masked log-sum-exp: finite for any t > 0 in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from contrastlab._validation import check_positive
from contrastlab.losses._common import (
    check_two_views,
    gathers,
    loss_inputs,
    reduce,
    view_positive_index,
)
from contrastlab.losses.kernels import TILED_MIN_ROWS, tiled_info_nce, use_tiled
from contrastlab.losses.normalize import normalize as _normalize
from contrastlab.losses.sharded import local_info_nce


def view_logits(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, normalize: str
) -> torch.Tensor:
    """The (2B, 2B) matrix s_ij / t of the stacked views with the diagonal set to -inf."""
    z = _normalize(torch.cat([z1, z2], dim=0), normalize)
    logits = (z @ z.T) / temperature
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return logits.masked_fill(eye, float("-inf"))


@loss_inputs("z1", "z2")
@gathers("info_nce", local=local_info_nce)
def info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    normalize: str = "sphere",
    reduction: str = "mean",
    tiled: bool | None = None,
    gather: bool | str = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """SimCLR NT-Xent over 2B views, 2B - 2 negatives per anchor, averaged over the 2B anchors.

    Args:
        z1, z2: (B, d) the two views (row b of z1 and row b of z2 are a positive pair).
        temperature: t > 0.
        normalize: ``sphere`` (SimCLR), ``ball`` or ``none``.

    ``reduction``, ``tiled`` (the kernel: :func:`contrastlab.losses.tiled_info_nce`), ``gather``
    (``"local"`` too), ``group``, ``check_finite``: the common arguments of
    :mod:`contrastlab.losses`.
    """
    check_positive("temperature", temperature)
    b = check_two_views(z1, z2, min_batch=1)
    if use_tiled(tiled, 2 * b, TILED_MIN_ROWS):
        return tiled_info_nce(z1, z2, temperature, normalize, reduction, check_finite=False)
    logits = view_logits(z1, z2, temperature, normalize)
    pos = view_positive_index(b, logits.device)
    per_anchor = F.cross_entropy(logits, pos, reduction="none")  # fused log-softmax + pick
    return reduce(per_anchor, reduction)

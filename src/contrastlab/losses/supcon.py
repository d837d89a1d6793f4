"""Supervised contrastive loss, SupCon (Khosla et al. 2020, eq. (2), the L_out form).

Two views per sample, stacked into 2B rows with labels repeated. For anchor i, P(i) is the set of
rows p != i with the anchor's label (it always contains the other view) and A(i) all rows but i::

    l_i = -(1/|P(i)|) sum_{p in P(i)} log( exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t) )

The loss is the mean over the 2B anchors. Conventions: the anchor is not its own positive; the
positives of the same label are all in the denominator (a **sum** over the other rows); there is
**no** ``t / base_temperature`` factor (the reference code of Khosla et al. multiplies by it; set
``base_temperature`` to reproduce it). With ``labels=None`` each sample is its own class and the
loss equals :func:`contrastlab.losses.info_nce`.
"""

from __future__ import annotations

from typing import Any

import torch

from contrastlab._validation import check_labels, check_positive
from contrastlab.losses._common import (
    base_temperature_factor,
    check_two_views,
    gathers,
    loss_inputs,
    reduce,
)
from contrastlab.losses.infonce import view_logits
from contrastlab.losses.kernels import TILED_MIN_ROWS, tiled_supcon, use_tiled
from contrastlab.losses.sharded import local_supcon


@loss_inputs("z1", "z2")
@gathers("supcon", local=local_supcon)
def supcon(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    normalize: str = "sphere",
    base_temperature: float | None = None,
    reduction: str = "mean",
    tiled: bool | None = None,
    gather: bool | str = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """SupCon L_out over two views.

    Args:
        z1, z2: (B, d) the two views.
        labels: (B,) integer class labels, or None for the unsupervised (SimCLR) case.
        temperature: t > 0.
        normalize: ``sphere`` (the paper), ``ball`` or ``none``.
        base_temperature: if given, multiply the loss by ``t / base_temperature`` as the
            reference implementation of Khosla et al. does (their default is 0.07); None (the
            default) leaves the paper's eq. (2) unscaled.

    ``reduction``, ``tiled`` (the kernel, no 2B x 2B label mask either:
    :func:`contrastlab.losses.tiled_supcon`), ``gather`` (``"local"`` too), ``group``,
    ``check_finite``: the common arguments of :mod:`contrastlab.losses`.
    """
    check_positive("temperature", temperature)
    b = check_two_views(z1, z2, min_batch=1)
    if use_tiled(tiled, 2 * b, TILED_MIN_ROWS):
        return tiled_supcon(
            z1, z2, labels, temperature, normalize, base_temperature, reduction,
            check_finite=False,
        )
    if labels is None:
        lab = torch.arange(b, device=z1.device)
    else:
        lab = check_labels("labels", labels, b).to(z1.device)
    lab2 = torch.cat([lab, lab])
    logits = view_logits(z1, z2, temperature, normalize)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    eye = torch.eye(2 * b, dtype=torch.bool, device=z1.device)
    pos_mask = (lab2[:, None] == lab2[None, :]) & ~eye
    summed = torch.where(pos_mask, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -summed / pos_mask.sum(dim=1).to(log_prob.dtype)
    if base_temperature is not None:
        per_anchor = per_anchor * base_temperature_factor(temperature, base_temperature)
    return reduce(per_anchor, reduction)

"""Debiased (Chuang et al. 2020) and hard-negative (Robinson et al. 2021) contrastive losses.

Both as in the authors' published code (``chingyaoc/DCL@7d6345f:main.py`` and
``joshr17/HCL@7b4647f:image/main.py``). Two views stacked into 2B rows; for anchor i
the positive is its other view, the N = 2B - 2 other rows are negatives, and with
``s_j = z_i^T z_j``::

    pos      = exp(s_pos / t)
    neg_j    = exp(s_j / t)
    imp_j    = exp(beta * s_j / t)                       (= neg_j ** beta)
    reweight = sum_j imp_j * neg_j / mean_j imp_j        (= sum_j neg_j when beta = 0)
    Ng       = (-tau_plus * N * pos + reweight) / (1 - tau_plus)
    Ng       = max(Ng, N * exp(-1 / t))                  (the published lower clamp)
    l_i      = -log( pos / (pos + Ng) )

averaged over the 2B anchors. Chuang et al. eq. (7) is the case beta = 0 (their ``tau_plus`` is
the class prior of the positive, tau^+); Robinson et al. eq. (5) adds the hardness beta, which
multiplies the tempered similarity. With ``tau_plus = 0`` and ``beta = 0`` this is NT-Xent except
for the clamp, which never binds for sphere-normalized features. The clamp value assumes
``s_j >= -1`` (unit vectors); it is kept for ``ball``/``none`` as the code has it.

Computed in log space (log-sum-exp of (1 + beta) s / t and of beta s / t; the difference in the
debiasing numerator via log1p/expm1), so it is finite in float32 for beta = 30, t = 0.05 or
unnormalized features of norm 100, where the published code overflows.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastlab.losses._common import (
    check_debiased_args,
    check_two_views,
    debiased_anchor_loss,
    gathers,
    loss_inputs,
    reduce,
    view_positive_index,
)
from contrastlab.losses.kernels import TILED_MIN_ROWS, tiled_debiased_hard, use_tiled
from contrastlab.losses.normalize import normalize as _normalize
from contrastlab.losses.sharded import local_debiased_hard


@loss_inputs("z1", "z2")
@gathers("debiased_hard", local=local_debiased_hard)
def debiased_hard(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    normalize: str = "sphere",
    reduction: str = "mean",
    tiled: bool | None = None,
    gather: bool | str = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Chuang et al. debiased (beta = 0) / Robinson et al. hard-negative (beta > 0) loss.

    Args:
        z1, z2: (B, d) the two views, B >= 2.
        temperature: t > 0 (their default 0.5).
        tau_plus: the positive-class prior, in [0, 1) (their default 0.1).
        beta: hardness >= 0 (Robinson et al.'s default 1.0).
        normalize: ``sphere`` (as published), ``ball`` or ``none``.

    ``reduction``, ``tiled`` (the kernel: :func:`contrastlab.losses.tiled_debiased_hard`),
    ``gather`` (``"local"`` too), ``group``, ``check_finite``: the common arguments of
    :mod:`contrastlab.losses`.
    """
    t, tau, beta = check_debiased_args(temperature, tau_plus, beta)
    b = check_two_views(z1, z2, min_batch=2)
    if use_tiled(tiled, 2 * b, TILED_MIN_ROWS):
        return tiled_debiased_hard(z1, z2, t, tau, beta, normalize, reduction,
                                   check_finite=False)
    z = _normalize(torch.cat([z1, z2], dim=0), normalize)
    logits = (z @ z.T) / t
    n2 = 2 * b
    rows = torch.arange(n2, device=z.device)
    pos_idx = view_positive_index(b, z.device)
    neg_mask = torch.ones(n2, n2, dtype=torch.bool, device=z.device)
    neg_mask[rows, rows] = False
    neg_mask[rows, pos_idx] = False
    n_neg = n2 - 2
    log_n = math.log(n_neg)
    s_pos = logits[rows, pos_idx]
    neg_inf = torch.full_like(logits, float("-inf"))
    masked = torch.where(neg_mask, logits, neg_inf)
    if beta == 0.0:
        log_reweight = torch.logsumexp(masked, dim=1)
    else:
        log_reweight = (
            log_n
            + torch.logsumexp(torch.where(neg_mask, (1.0 + beta) * logits, neg_inf), dim=1)
            - torch.logsumexp(torch.where(neg_mask, beta * logits, neg_inf), dim=1)
        )
    per_anchor = debiased_anchor_loss(log_reweight, s_pos, t, tau, log_n)
    return reduce(per_anchor, reduction)

"""Explicit-k NCE: k negatives per anchor, k independent of the batch size.

Arora et al. (2019) eq. (2) / Awasthi et al. (2022) eq. (1): for an anchor f, a positive f+ and
negatives f_1^-..f_k^-, the loss is ``l(v)`` with ``v_i = f^T (f+ - f_i^-)`` and ``l`` a member
of the loss family (:mod:`contrastlab.losses.family`). With ``loss="infonce"``::

    l = -log( exp(f^T f+ / t) / (exp(f^T f+ / t) + sum_{i=1}^k exp(f^T f_i^- / t)) )

Conventions: the negatives are **summed** (``infonce``) or **averaged** (``infonce-mean``); the
anchor is not among its own negatives unless the caller puts it there; temperature t divides the
similarities; the batch reduction is a mean over anchors by default.
"""

from __future__ import annotations

from typing import Any

import torch

from contrastlab._validation import check_choice, check_positive, check_tensor
from contrastlab.losses._common import (
    check_anchor_positive,
    check_feature_dim,
    gathers,
    loss_inputs,
    reduce,
)
from contrastlab.losses.family import LOSSES, lse_scale, score_loss
from contrastlab.losses.kernels import TILED_MIN_PAIRS, TILED_NCE_LOSSES, tiled_nce_loss, use_tiled
from contrastlab.losses.kernels.indexed import check_pool_index, tiled_nce_indexed
from contrastlab.losses.normalize import normalize as _normalize


@loss_inputs("anchor", "positive", "negatives")
@gathers("nce_loss")
def nce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    normalize: str = "none",
    reduction: str = "mean",
    tiled: bool | None = None,
    gather: bool = False,
    group: Any = None,
    negative_index: torch.Tensor | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """NCE loss with an explicit number k of negatives.

    Three ways to give the negatives:

    - **per anchor**, (B, k, d): anchor b's own k negatives ``negatives[b]``;
    - **shared pool**, (k, d): the same k negatives for every anchor (e.g. a memory bank);
    - **per-anchor indexed pool**, (M, d) with ``negative_index`` (B, k): anchor b's negatives
      are ``negatives[negative_index[b]]`` (repeats allowed: a repeated index is a repeated
      negative). The result (value and gradients, the pool's included) equals the per-anchor
      form on ``negatives[negative_index]``, but the (B, k, d) gather is never formed when the
      tiled kernel :func:`contrastlab.losses.tiled_nce_indexed` is used.

    Args:
        anchor: (B, d) anchors f(x).
        positive: (B, d) positives f(x+), row b pairs with anchor b.
        negatives: (B, k, d), (k, d) shared, or (M, d) a pool indexed by ``negative_index``.
        loss: ``logistic``, ``infonce``, ``infonce-mean`` or ``hinge`` (the loss family).
        temperature: t > 0 for the InfoNCE forms.
        normalize: ``sphere``, ``ball`` or ``none``, applied to every vector first.
        negative_index: None, or a (B, k) integer tensor of rows of the (M, d) pool
            ``negatives``, in [0, M), k >= 1.

    ``reduction``, ``tiled``, ``gather``, ``group``, ``check_finite``: the common arguments of
    :mod:`contrastlab.losses`. The kernels (for a pool and a log-sum-exp loss, not ``hinge``):
    :func:`contrastlab.losses.tiled_nce_loss` for a shared pool (no B x k matrix),
    :func:`contrastlab.losses.tiled_nce_indexed` for an indexed pool (no (B, k, d) gather nor
    B x M matrix). With (B, k, d) negatives or ``hinge`` the dense path is always used;
    ``hinge`` with an index gathers ``negatives[negative_index]`` densely. With ``gather``,
    ``negative_index`` is gathered with the anchors (no gradient); the pool it points into is
    replicated, so it must be the same on every rank (e.g. a memory bank; a sharded pool: gather
    it first).
    """
    check_choice("loss", loss, LOSSES)
    check_positive("temperature", temperature)
    check_anchor_positive(anchor, positive)
    if negative_index is not None:
        return _indexed_pool(anchor, positive, negatives, negative_index, loss, temperature,
                             normalize, reduction, tiled)
    return _explicit_negatives(anchor, positive, negatives, loss, temperature, normalize,
                               reduction, tiled)


def _explicit_negatives(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                        loss: str, temperature: float, normalize: str, reduction: str,
                        tiled: bool | None) -> torch.Tensor:
    """nce_loss with (B, k, d) or shared (k, d) negatives: the shared-pool kernel, or dense."""
    check_tensor("negatives", negatives, ndim=(2, 3), shape_hint="(B, k, d) or (k, d)")
    b, d = anchor.shape
    check_feature_dim("negatives", negatives, d)
    if negatives.ndim == 3 and negatives.shape[0] != b:
        raise ValueError(
            f"negatives must have shape (B, k, d) with B = {b}; got {tuple(negatives.shape)}"
        )
    tileable = negatives.ndim == 2 and loss in TILED_NCE_LOSSES
    if tiled and not tileable:
        raise ValueError(
            "tiled: the tiled kernel needs shared (k, d) negatives and a log-sum-exp loss "
            f"{TILED_NCE_LOSSES}; got negatives of shape {tuple(negatives.shape)}, loss {loss!r}"
        )
    if tileable and use_tiled(tiled, b * negatives.shape[0], TILED_MIN_PAIRS):
        return tiled_nce_loss(anchor, positive, negatives, loss, temperature, normalize, reduction,
                              check_finite=False)
    return _dense(anchor, positive, negatives, loss, temperature, normalize, reduction)


def _indexed_pool(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    pool: torch.Tensor,
    index: Any,
    loss: str,
    temperature: float,
    normalize: str,
    reduction: str,
    tiled: bool | None,
) -> torch.Tensor:
    """nce_loss with negatives ``pool[index]``: the indexed kernel, or the dense gather."""
    idx = check_pool_index(pool, index, anchor, ("negatives", "negative_index"),
                           "(M, d), the pool that negative_index points into")
    b = anchor.shape[0]
    tileable = loss in TILED_NCE_LOSSES
    if tiled and not tileable:
        raise ValueError(
            f"tiled: the tiled kernel needs a log-sum-exp loss {TILED_NCE_LOSSES}; got loss "
            f"{loss!r} (hinge with negative_index uses the dense gather: tiled=None or False)"
        )
    if tileable and use_tiled(tiled, b * idx.shape[1], TILED_MIN_PAIRS):
        return tiled_nce_indexed(anchor, positive, pool, idx, loss, temperature, normalize,
                                 reduction, check_finite=False)
    return _dense(anchor, positive, pool[idx], loss, temperature, normalize, reduction)


def _dense(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    loss: str,
    temperature: float,
    normalize: str,
    reduction: str,
) -> torch.Tensor:
    """The dense path: every score formed, plain autograd (any loss; double backward too)."""
    a = _normalize(anchor, normalize)
    p = _normalize(positive, normalize)
    n = _normalize(negatives, normalize)
    s_pos = (a * p).sum(dim=-1, keepdim=True)  # (B, 1)
    if n.ndim == 2:
        s_neg = a @ n.T  # (B, k)
    else:
        s_neg = torch.einsum("bd,bkd->bk", a, n)
    if loss == "hinge":
        per_anchor = score_loss(s_pos - s_neg, loss, temperature)
    else:
        # log(1 + sum_i exp((s_i^- - s^+) / t)) as a log-softmax of the positive: one fused pass
        t, shift = lse_scale(loss, temperature, s_neg.shape[1])
        logits = torch.cat([s_pos, s_neg], dim=1) / t
        if loss == "infonce-mean":
            # log(1 + (1/k) sum ...): shift the negatives' logits by -log k
            logits = logits - torch.cat(
                [logits.new_zeros(1), logits.new_full((s_neg.shape[1],), shift)]
            )
        per_anchor = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return reduce(per_anchor, reduction)

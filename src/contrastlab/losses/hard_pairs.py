"""The per-pair losses of the Jiang et al. family, shared by the dense path
(:func:`contrastlab.losses.hard_contrastive`), the tiled kernel
(:mod:`contrastlab.losses.kernels.jiang`) and the pool losses (:mod:`contrastlab.losses.pool`):
:func:`pair_losses` (three estimators: sampled, exact expectation, plug-in) and the
argument checks of :func:`~contrastlab.losses.hard_contrastive`. The convention is in
:mod:`contrastlab.losses.scl`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from contrastlab._validation import (
    check_choice,
    check_generator,
    check_labels,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_tensor,
)
from contrastlab.losses.expectation import expected_log1p_sum_grouped
from contrastlab.losses.samplers import sample_from_log_probs, tilted_log_probs

EXACT_MODES = (False, True, "loss", "mean")
NEGATIVE_REDUCTIONS = ("mean", "sum")


def pair_losses(
    logits: torch.Tensor,
    log_q: torch.Tensor,
    owner: torch.Tensor,
    s_pos: torch.Tensor,
    k: int,
    mode: str,
    negatives_reduction: str = "mean",
    generator: torch.Generator | None = None,
    idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair losses l_rp = log(1 + g_r e^{-s_pos_r}) of the Jiang family, three estimators.

    Row r has the tempered candidate similarities ``logits[owner[r]]`` (A x N, shared by all rows
    of one anchor), the sampling law ``exp(log_q[owner[r]])`` and the tempered positive
    similarity ``s_pos[r]``; g_r is the mean (or sum) of exp(logits) over k i.i.d. draws.
    ``mode``: ``sampled`` (draw the k indices; or use ``idx``, (R, k) indices drawn by the caller,
    e.g. without replacement), ``loss`` (exact expectation over the draws) or
    ``mean`` (plug-in: g replaced by its expectation). Used by :func:`hard_contrastive` (the
    batch is the pool) and by the training engine (a pool of the training set).
    """
    check_generator(generator)
    log_k = math.log(k) if negatives_reduction == "mean" else 0.0
    if mode == "sampled":
        if idx is None:
            idx = sample_from_log_probs(log_q[owner], k, replace=True, generator=generator)
        elif idx.shape != (owner.shape[0], k):
            raise ValueError(f"idx must have shape (R, k) = {(owner.shape[0], k)}; got "
                             f"{tuple(idx.shape)}")
        s_neg = logits[owner[:, None], idx]  # (R, k)
        return F.softplus(torch.logsumexp(s_neg, dim=1) - log_k - s_pos)
    if mode == "mean":
        # one log-sum-exp per anchor (A x N), then per row: never an (R x N) copy
        log_g = torch.logsumexp(log_q.to(logits.dtype) + logits, dim=1)[owner]
        if negatives_reduction == "sum":
            log_g = log_g + math.log(k)
        return F.softplus(log_g - s_pos)
    # row r: Y = exp(logit_j - s_pos_r) / k, j ~ q — one law per anchor, shifted per row
    return expected_log1p_sum_grouped(logits, log_q, owner, -s_pos - log_k, k)


def batch_pair_losses(
    gram: torch.Tensor,
    anchor_labels: torch.Tensor,
    labels: torch.Tensor,
    other_class: bool,
    beta: float,
    k: int,
    t: float,
    mode: str,
    negatives_reduction: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`pair_losses` of anchors against the batch (single view, as
    :func:`contrastlab.losses.hard_contrastive`): ``gram`` (A, B) holds the raw inner products of
    the anchors with the B rows, ``anchor_labels`` (A,) and ``labels`` (B,) their labels. The
    positives of an anchor are the rows of its class (itself included), its negatives are drawn
    from the other classes (``other_class``) or the whole batch, tilted by exp(beta gram) (the
    law detached); pairs in row-major order of (anchor, positive)."""
    logits = gram / t
    same = anchor_labels[:, None] == labels[None, :]
    log_q = tilted_log_probs(gram, beta, ~same if other_class else None)  # detached, float64
    pos_row, pos_col = torch.nonzero(same, as_tuple=True)
    s_pos = logits[pos_row, pos_col]  # (R,)
    return pair_losses(logits, log_q, pos_row, s_pos, k, mode, negatives_reduction, generator)


def exact_mode(exact: bool | str, allowed: tuple[bool | str, ...] = EXACT_MODES) -> str:
    """The estimator that ``exact`` names: ``sampled`` (False), ``loss`` (True) or the string
    itself, which must be one of ``allowed`` (``loss`` or ``mean``)."""
    if isinstance(exact, bool):
        return "loss" if exact else "sampled"
    mode: str = check_choice("exact", exact, allowed)
    return mode


def check_hard_contrastive_args(
    z: torch.Tensor,
    labels: torch.Tensor,
    negatives: str,
    beta: float,
    k: int,
    temperature: float,
    exact: bool | str,
    negatives_reduction: str,
) -> tuple[int, torch.Tensor, float, float, str]:
    """Validate the arguments of :func:`hard_contrastive` (shared with the tiled kernel);
    return (B, labels on z's device, beta, t, mode) with mode ``sampled``, ``loss`` or ``mean``."""
    check_tensor("z", z, ndim=2, shape_hint="(B, d)")
    b = z.shape[0]
    labels = check_labels("labels", labels, b).to(z.device)
    check_choice("negatives", negatives, ("other-class", "marginal"))
    beta = check_nonnegative("beta", beta)
    check_positive_int("k", k)
    t = check_positive("temperature", temperature)
    mode = exact_mode(exact)
    check_choice("negatives_reduction", negatives_reduction, NEGATIVE_REDUCTIONS)
    return b, labels, beta, t, mode


def check_tiled(tiled: bool | None, mode: str) -> bool | None:
    """Validate ``tiled`` (True, False or None) against the estimator: the sampled form
    (``exact=False``) has no tiled kernel, so ``tiled=True`` with it is an error."""
    if tiled is not None and not isinstance(tiled, bool):
        raise ValueError(f"tiled must be True, False or None; got {tiled!r}")
    if tiled is True and mode == "sampled":
        raise ValueError(
            "tiled=True needs an exact form (exact=True, 'loss' or 'mean'): the sampled form "
            "exact=False has no tiled kernel"
        )
    return tiled

"""The tiled in-batch and shared-pool losses: :func:`tiled_info_nce`, :func:`tiled_supcon`,
:func:`tiled_debiased_hard` (the 2B stacked views, symmetric strips) and :func:`tiled_nce_loss`
(a (k, d) pool shared by the anchors, full-row blocks), on the engine of
:mod:`contrastlab.losses.kernels.engine` (its docstring: the method, precision and memory).
Conventions are those of the dense functions (:func:`contrastlab.losses.info_nce` etc.).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastlab._validation import check_labels, check_positive
from contrastlab.losses._common import base_temperature_factor, check_debiased_args, loss_inputs
from contrastlab.losses.family import lse_scale
from contrastlab.losses.kernels._inputs import (
    check_nce_options,
    check_shared_pool,
    check_views,
    mean_positive_logits,
    nce_rows,
    stacked_views,
    view_positive_logits,
)
from contrastlab.losses.kernels.engine import (
    LN2,
    LOG2E,
    ONE_BLOCK_PAIRS,
    Head,
    compute_dtype,
    head_debiased,
    head_logaddexp,
    head_lse_minus_side,
    loss_dtype,
    norm_floor,
    normalize_rows,
    normalize_rows_backward,
    row_weight,
    run_blocks,
)
from contrastlab.losses.kernels.fused import (
    fused_debiased_hard,
    fused_info_nce,
    fused_nce_loss,
    fused_supcon,
    use_fused,
)


@loss_inputs("z1", "z2")
def tiled_info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    normalize: str = "sphere",
    reduction: str = "mean",
    block_rows: int | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """SimCLR NT-Xent (Chen et al. 2020, eq. (1)), tiled; equal to
    :func:`contrastlab.losses.info_nce` (2B anchors, 2B - 2 negatives **summed**, the positive
    in the denominator, the anchor never its own negative; mean over the 2B anchors).

    Computed as ``softplus(L_neg(i) - s_pos(i))`` with L_neg the log-sum-exp over the 2B - 2
    negatives (the anchor and its positive masked in each block): the same value as
    ``log sum_{j != i} exp(s_ij) - s_pos``, but when the positive dominates its row the gradient
    ``sigmoid(L_neg - s_pos) (softmax_neg - 1_pos)`` is formed small, not as the difference of
    two O(1) terms (``softmax_pos - 1``) accumulated separately into dz.

    Args: as :func:`contrastlab.losses.info_nce` (``check_finite`` included), plus
    ``block_rows``.
    """
    if use_fused(z1, z2):  # CUDA: the Triton kernels (kernels/fused.py; block_rows unused)
        return fused_info_nce(z1, z2, temperature, normalize, reduction, check_finite=check_finite)
    t = check_positive("temperature", temperature)
    b = check_views(z1, z2, reduction, min_batch=1)
    z = stacked_views(z1, z2, normalize, compute_dtype(z1))
    return _view_loss(z, b, t, (1.0,), head_logaddexp(0.0), reduction, 1.0, block_rows,
                      loss_dtype(z1))


def _view_loss(
    z: torch.Tensor,
    b: int,
    t: float,
    scales: tuple[float, ...],
    head: Head,
    reduction: str,
    factor: float,
    block_rows: int | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``head`` of the 2B stacked rows whose negatives are the 2B - 2 others (the anchor and its
    positive masked in each block), the positive logit beside: NT-Xent as
    ``softplus(L_neg - s_pos)`` (:func:`tiled_info_nce`) and the debiased / hard loss."""
    return run_blocks(
        z,
        None,
        view_positive_logits(z, b, t).unsqueeze(0),
        t=t,
        scales=scales,
        mask_self=True,
        mask_shift=b,
        head=head,
        reduction=reduction,
        factor=factor,
        block_rows=block_rows,
        out_dtype=out_dtype,
    )


@loss_inputs("z1", "z2")
def tiled_supcon(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    normalize: str = "sphere",
    base_temperature: float | None = None,
    reduction: str = "mean",
    block_rows: int | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """SupCon L_out (Khosla et al. 2020, eq. (2)), tiled; equal to
    :func:`contrastlab.losses.supcon` (the anchor is not its own positive; all other rows are in
    the denominator; no ``t / base_temperature`` factor unless ``base_temperature`` is given).

    The positive term ``(1/|P(i)|) sum_{p in P(i)} s_ip`` is ``z_i^T (C_{y_i} - z_i) / (t |P(i)|)``
    with C_c the sum of the rows of class c: O(N d), no N x N label mask.

    Args: as :func:`contrastlab.losses.supcon` (``check_finite`` included), plus
    ``block_rows``.
    """
    if use_fused(z1, z2):  # CUDA: the Triton kernels (kernels/fused.py; block_rows unused)
        return fused_supcon(z1, z2, labels, temperature, normalize, base_temperature, reduction,
                            check_finite=check_finite)
    t = check_positive("temperature", temperature)
    b = check_views(z1, z2, reduction, min_batch=1)
    factor = base_temperature_factor(t, base_temperature)
    z = stacked_views(z1, z2, normalize, compute_dtype(z1))
    if labels is None:  # each sample its own class: NT-Xent, in its stable form
        return _view_loss(z, b, t, (1.0,), head_logaddexp(0.0), reduction, factor, block_rows,
                          loss_dtype(z1))
    lab = check_labels("labels", labels, b).to(z.device)
    side = mean_positive_logits(z, torch.cat([lab, lab]), t)  # O(N d), no N x C matrix
    return run_blocks(
        z,
        None,
        side.unsqueeze(0),
        t=t,
        scales=(1.0,),
        mask_self=True,
        mask_shift=None,
        head=head_lse_minus_side,
        reduction=reduction,
        factor=factor,
        block_rows=block_rows,
        out_dtype=loss_dtype(z1),
    )


@loss_inputs("z1", "z2")
def tiled_debiased_hard(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    normalize: str = "sphere",
    reduction: str = "mean",
    block_rows: int | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Chuang et al. 2020 eq. (7) (beta = 0) / Robinson et al. 2021 eq. (5) (beta > 0), tiled;
    equal to :func:`contrastlab.losses.debiased_hard` (N = 2B - 2 negatives: the anchor and its
    positive masked in each block; the published clamp ``Ng >= N exp(-1/t)``).

    The hardness weights never leave log space: per row the kernel takes
    ``L_{1+beta} = log sum_j exp((1 + beta) s_j / t)`` and ``L_beta = log sum_j exp(beta s_j / t)``
    over the negatives, and ``log reweight = log N + L_{1+beta} - L_beta``.

    Args: as :func:`contrastlab.losses.debiased_hard` (``check_finite`` included), plus
    ``block_rows``.
    """
    if use_fused(z1, z2):  # CUDA: the Triton kernels (kernels/fused.py; block_rows unused)
        return fused_debiased_hard(z1, z2, temperature, tau_plus, beta, normalize, reduction,
                                   check_finite=check_finite)
    t, tau, beta = check_debiased_args(temperature, tau_plus, beta)
    b = check_views(z1, z2, reduction, min_batch=2)
    z = stacked_views(z1, z2, normalize, compute_dtype(z1))
    scales = (1.0,) if beta == 0.0 else (1.0 + beta, beta)
    head = head_debiased(t, tau, math.log(2 * b - 2))
    return _view_loss(z, b, t, scales, head, reduction, 1.0, block_rows, loss_dtype(z1))


class _OneBlockNCE(torch.autograd.Function):
    """Shared-pool NCE in one block, the normalization folded in: value and gradients of
    ``weight * sum_i [log(e^{sp_i} + sum_j e^{s_ij - shift}) - sp_i]`` in about 30 tensor ops.

    For small B k (e.g. B = 256, k <= 256) the products are a few microseconds and the cost is the
    per-op overhead of a loss built from many small autograd nodes (three normalizations, the
    positive logit, the block engine); this path forms every gradient in the forward pass and
    its backward only scales them. ``floor``: that of the normalization
    (:func:`~contrastlab.losses.kernels.engine.norm_floor`; None: none).
    """

    @staticmethod
    def forward(
        ctx: Any,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        pool: torch.Tensor,
        inv_t: float,
        shift: float,
        floor: float | None,
        weight: float,
    ) -> torch.Tensor:
        xs = [anchor.detach(), positive.detach(), pool.detach()]
        scales: list[tuple[torch.Tensor, ...] | None] = []
        for i, x in enumerate(xs):
            if floor is None:
                scales.append(None)
                continue
            xs[i], *rest = normalize_rows(x, floor)
            scales.append(tuple(rest))
        a, p, n = xs
        a2 = a * (inv_t * LOG2E)  # base-2 logits (see the module docstring)
        s2 = torch.mm(a2, n.T)
        sp2 = torch.linalg.vecdot(a2, p)
        m2 = torch.maximum(s2.amax(dim=1) - shift * LOG2E, sp2)
        e = torch.sub(s2, (m2 + shift * LOG2E).unsqueeze(1)).exp2_()
        ep = torch.exp2(sp2 - m2)
        total = e.sum(dim=1).add_(ep)
        loss = ((torch.log2(total) + m2 - sp2) * LN2).sum() * weight
        need = ctx.needs_input_grad[:3]
        grads: list[torch.Tensor | None] = [None, None, None]
        if any(need):
            c = weight / total  # d loss / d s_ij = c_i e_ij; d loss / d sp_i = c_i ep_i - weight
            c_pos = (c * ep - weight).unsqueeze(1)
            if need[0]:
                grads[0] = torch.mm(e, n).mul_(c.unsqueeze(1)).addcmul_(p, c_pos).mul_(inv_t)
            if need[1]:
                grads[1] = (a * c_pos).mul_(inv_t)
            if need[2]:
                grads[2] = torch.mm(e.T, a * c.unsqueeze(1)).mul_(inv_t)
        for i, sc in enumerate(scales):
            gi = grads[i]
            if sc is not None and gi is not None:  # through x / max(||x||, floor)
                grads[i] = normalize_rows_backward(gi, xs[i], *sc)
        ctx.save_for_backward(*grads)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        grads = list(ctx.saved_tensors)
        if bool(g != 1.0):
            grads = [None if x is None else x * g for x in grads]
        return (*grads, None, None, None, None)


@loss_inputs("anchor", "positive", "negatives")
def tiled_nce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    normalize: str = "none",
    reduction: str = "mean",
    block_rows: int | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Explicit-k NCE (Arora et al. 2019 eq. (2); Awasthi et al. 2022 eq. (1)) with a pool of k
    negatives **shared** by all B anchors, tiled over anchor blocks; equal to
    :func:`contrastlab.losses.nce_loss` with (k, d) negatives. Never forms the B x k matrix (nor,
    of course, a B x k x d copy of the pool).

    ``loss``: ``infonce`` (negatives summed), ``infonce-mean`` (averaged: the log-sum-exp shifted
    by log k) or ``logistic`` (t = 1). The positive is in the denominator; the anchor is not a
    negative unless the caller puts it in the pool. ``hinge`` is not a log-sum-exp loss and has
    no tiled form (use :func:`contrastlab.losses.nce_loss`).

    Args: as :func:`contrastlab.losses.nce_loss` (``check_finite`` included; ``negatives``:
    (k, d), shared by every anchor), plus ``block_rows``.
    """
    if use_fused(anchor, positive, negatives):  # CUDA: the Triton kernels (kernels/fused.py)
        return fused_nce_loss(anchor, positive, negatives, loss, temperature, normalize, reduction,
                              check_finite=check_finite)
    temperature = check_nce_options(loss, temperature, reduction)
    check_shared_pool(anchor, positive, negatives)
    dt = compute_dtype(anchor)
    t, shift = lse_scale(loss, temperature, negatives.shape[0])
    b, k = anchor.shape[0], negatives.shape[0]
    if reduction != "none" and b * k <= ONE_BLOCK_PAIRS and block_rows is None:
        out = _OneBlockNCE.apply(anchor.to(dt), positive.to(dt), negatives.to(dt), 1.0 / t, shift,
                                 norm_floor(normalize), row_weight(reduction, b))
        return out.to(loss_dtype(anchor))
    a, p, n = nce_rows(anchor, positive, negatives, normalize, dt)
    s_pos = (a * p).sum(dim=1) / t
    return run_blocks(
        a,
        n,
        s_pos.unsqueeze(0),
        t=t,
        scales=(1.0,),
        mask_self=False,
        mask_shift=None,
        head=head_logaddexp(shift),
        reduction=reduction,
        factor=1.0,
        block_rows=block_rows,
        out_dtype=loss_dtype(anchor),
    )


"""Tiled kernels for the in-batch and shared-pool losses: no N x N (or B x k) tensor in memory.

The in-batch losses (:func:`info_nce`, :func:`supcon`, :func:`debiased_hard`) and the explicit-k
loss with a pool of k negatives shared by the anchors of a step (:func:`nce_loss` with (k, d)
negatives) depend on the similarity matrix ``S = Q K^T / t`` (Q = K = the 2B stacked views for
the in-batch losses) only through a few **log-sum-exps per row** over a masked set of columns::

    L_a(i) = log sum_{j in M(i)} exp(a * S_ij)        (a = 1, or a = 1 + beta and a = beta)

plus O(N d) terms: the positive logit (InfoNCE, NCE), the SupCon mean positive logit
``z_i^T (C_{y_i} - z_i) / (t |P(i)|)`` from the class sums C_c (no label mask), and the
debiasing / hardness head of Chuang et al. / Robinson et al., which stays in log space
(``log reweight = log N + L_{1+beta} - L_beta``; ``tau_plus`` via ``log1p``/``expm1``). Only the
L_a need the N x N matrix, and their gradient is ``dL/dS = W = sum_a c_a softmax(a S)`` with
per-row coefficients ``c_a(i) = a * dloss / dL_a(i)``. Masked entries (the anchor itself; for the
debiased loss also its positive) are set to -inf inside each block, never subtracted afterwards.

**Self-similarity (in-batch) losses, ``SELF_SIMILARITY_METHOD = "symmetric"``** (default). S is
symmetric and so are the masks, so only the upper strips ``S[b0:b1, b0:]`` (``block_rows`` rows,
in a reused buffer) are formed. Forward: each strip gives its rows' log-sum-exps (row max m,
``E = exp(S - m)``, row sums) and, by symmetry, the column sums of the rows below it (one
matrix-vector product with E; columns at risk of underflow are redone exactly); partial results
merge with ``logaddexp``. Backward (flash-attention style, nothing stored but z and L):
each strip is recomputed and ``M = W_strip + (W^T)_strip`` formed once, then
``dZ_b += M Z / t`` and ``dZ_below += M^T Z_b / t``: **one gradient product per similarity
instead of two** (dZ = (W + W^T) Z / t). In all 2 N^2 d multiply-adds, two thirds of the 3 N^2 d
of a dense forward + backward, and any ``reduction``.

**Shared-pool NCE (and ``SELF_SIMILARITY_METHOD = "rows"``)**: blocks of full rows
``S_b = Q_b K^T / t``; each row's loss is known as soon as its block is done, so the gradient is
formed in the forward pass (``dQ_b = W_b K / t``, ``dK += W_b^T Q_b / t``, the row coefficients
folded into the products) and only dQ, dK (O(N d)) are stored; the backward scales them. With
``reduction="none"`` the forward stores the row log-sum-exps and the backward recomputes.

**Base-2 exponentials.** Every exponential of a block is taken as ``exp2`` of the similarity
scaled by log2(e) (the factor rides on the product's scale ``log2(e) / t`` at no cost): on CPU
``torch.exp2`` is about 4x faster than ``torch.exp`` (and 2-3x faster than the fused softmax), at
the same float32 accuracy (the rounding of S itself dominates: relative error ~ |S| eps in either
base). It cut the element-wise share of the kernel by about 3x (measured with
benchmarks/bench_kernel.py; see benchmarks/RESULTS.md).

Memory: O(N d + block_rows N). Inputs in float32 or bfloat16 are computed in float32 (float32
accumulation), float64 in float64. The functions are differentiable once (no double backward).

Conventions are those of the exact functions (:func:`contrastlab.losses.info_nce` etc.; see
their docstrings for the papers and equations) and the results agree with them to float
tolerance. The exact functions dispatch here by default (``tiled=None``) from
:data:`TILED_MIN_ROWS` rows (or :data:`TILED_MIN_PAIRS` anchor-negative pairs); ``tiled=False``
forces the exact dense path (e.g. for double backward).

Block size: ``block_rows`` (default :func:`default_block_rows`: 256 rows, 512 when d >= 1024,
fewer when a block would exceed :data:`BLOCK_ELEMENTS` similarities; chosen by measurement on
2 CPU cores with benchmarks/bench_kernel.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from contrastlab._validation import (
    check_choice,
    check_labels,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_tensor,
    check_unit_interval,
)
from contrastlab.losses._common import (
    REDUCTIONS,
    check_anchor_positive,
    check_two_views,
    debiased_anchor_loss,
)
from contrastlab.losses.normalize import NORMALIZATIONS

#: Row count (2B for the in-batch losses) from which the exact functions use the tiled kernel by
#: default. On 2 CPU cores the kernel is as fast as the dense path at 512 rows and 1.5-2x faster
#: at 1024 (benchmarks/bench_kernel.py); below, the dense matrices are small anyway.
TILED_MIN_ROWS = 1024
#: For ``nce_loss`` with a shared pool: the tiled kernel from B * k = 2^20 anchor-negative pairs
#: (e.g. B = 256, k = 4096, where it is already 1.6x faster than the dense path).
TILED_MIN_PAIRS = 1 << 20
#: The most similarities per block buffer (16 MB in float32) unless that leaves < 64 rows: the
#: strips of N = 16384 have 256 rows (3 buffers: 48 MB), a pool of k = 65536 gets 64 anchors.
BLOCK_ELEMENTS = 1 << 22
#: Shared-pool NCE with at most this many anchor-negative pairs (and a mean / sum reduction) runs
#: as one fused block (:class:`_OneBlockNCE`): at small B k the per-op overhead, not the
#: products, is the cost.
ONE_BLOCK_PAIRS = 1 << 18
#: How the self-similarity losses (in-batch) are tiled: ``"symmetric"`` (upper strips only: the
#: forward takes the row log-sum-exps from half the products, the backward recomputes the strips
#: and forms (W + W^T) once: 2 N^2 d multiply-adds in all) or ``"rows"`` (full row blocks with the
#: gradient formed in the forward pass: 3 N^2 d). Module-level so that the benchmark can compare.
SELF_SIMILARITY_METHOD = "symmetric"
LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)

Head = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def default_block_rows(rows: int, cols: int, d: int = 128) -> int:
    """Rows per block: 256 (512 when d >= 1024, where the rank-b gradient updates dominate), at
    most :data:`BLOCK_ELEMENTS` / cols (but >= 64) and at most ``rows``."""
    check_positive_int("rows", rows)
    check_positive_int("cols", cols)
    check_positive_int("d", d)
    r = 512 if d >= 1024 else 256
    r = min(r, max(64, BLOCK_ELEMENTS // cols))
    return min(rows, r)


def use_tiled(tiled: bool | None, size: int, threshold: int) -> bool:
    """The default dispatch of the exact functions: ``tiled`` if it is True or False; for None,
    whether ``size`` (rows, or B * k pairs) reaches ``threshold``."""
    if tiled is None:
        return size >= threshold
    if not isinstance(tiled, bool):
        raise ValueError(f"tiled must be True, False or None; got {tiled!r}")
    return tiled


# --------------------------------------------------------------------------------------------
# the block engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What the kernel computes: which scales a, which columns each row masks, the per-row head."""

    inv_t: float
    scales: tuple[float, ...]  # 1 or 2 positive scales a
    mask_self: bool  # self-similarity: row i masks column i
    mask_shift: int | None  # also mask column (i + shift) % N (the other view)
    block_rows: int
    # head(lse (A, b), side (S, b)) -> (loss (b,), dloss/dlse (A, b), dloss/dside (S, b))
    head: Head
    weight: float  # the loss is weight * sum_i loss_i (mean: 1/N)
    need_dq: bool
    need_dk: bool
    # self-similarity only, rows sorted by class: also mask the pairs of one class (N_i = the
    # other classes of SCL / HSCL, Jiang et al. 2023): the classes' row ranges [start, end), so
    # each strip masks a few rectangles, never an N x N (or strip-sized) label comparison
    segments: tuple[tuple[int, int], ...] | None = None


def _scaled_mm(a: torch.Tensor, b: torch.Tensor, alpha: float, out: torch.Tensor) -> torch.Tensor:
    """out = (alpha * a) @ b: the temperature on the block's few rows, not on its output."""
    return torch.mm(a * alpha, b, out=out)


def _mask_columns(plan: _Plan, r0: int, r1: int, n: int, device: torch.device) -> torch.Tensor:
    rows = torch.arange(r0, r1, device=device)
    cols = [rows] if plan.mask_self else []
    if plan.mask_shift is not None:
        cols.append((rows + plan.mask_shift) % n)
    return torch.stack(cols, dim=1)


def _block_exp(
    plan: _Plan,
    q_b: torch.Tensor,
    k: torch.Tensor,
    r0: int,
    bufs: list[torch.Tensor],
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """For each scale a: the unnormalized softmax ``E_a = exp(a S_b - a max_row)`` of the block
    (in a buffer), the row log-sum-exps (A, b) and the reciprocal row sums of E_a (A, b), so that
    softmax(a S_b) = E_a * inv_sum (the division is folded into the gradient coefficients).

    Exponentials are taken in base 2 (``exp2`` is ~4x faster than ``exp`` on CPU, and the
    log2(e) factor rides on the product's scale at no cost): S2 = S log2(e), E = 2^(a S2 - a m).
    """
    b = q_b.shape[0]
    n = k.shape[0]
    s = _scaled_mm(q_b, k.T, plan.inv_t * LOG2E, bufs[0][:b])
    if plan.mask_self or plan.mask_shift is not None:
        s.scatter_(1, _mask_columns(plan, r0, r0 + b, n, s.device), float("-inf"))
    m = s.amax(dim=1, keepdim=True)
    m.masked_fill_(m == float("-inf"), 0.0)  # a fully masked row: sum 0, log-sum-exp -inf
    probs: list[torch.Tensor] = []
    lses: list[torch.Tensor] = []
    invs: list[torch.Tensor] = []
    for idx, a in enumerate(plan.scales):
        e = bufs[1 + idx][:b]
        if a == 1.0:
            torch.sub(s, m, out=e)
        else:
            torch.mul(s, a, out=e).sub_(m * a)
        e.exp2_()
        total = e.sum(dim=1)
        probs.append(e)
        lses.append((torch.log2(total) + a * m.squeeze(1)) * LN2)
        invs.append(torch.where(total > 0, 1.0 / total, torch.zeros_like(total)))
    return probs, torch.stack(lses), torch.stack(invs)


def _add_block_grad(
    plan: _Plan,
    probs: list[torch.Tensor],
    coef: torch.Tensor,
    q_b: torch.Tensor,
    k: torch.Tensor,
    dq_b: torch.Tensor | None,
    dk: torch.Tensor | None,
) -> None:
    """dQ_b += W K / t and dK += W^T Q_b / t for W = sum_a coef_a (row) * probs_a (the row
    coefficients include the softmax normalization)."""
    if len(probs) == 1:
        # one scale: fold the row coefficients into the products (no pass over the block)
        c = (coef[0] * plan.inv_t).unsqueeze(1)
        if dq_b is not None:
            dq_b.add_(torch.mm(probs[0], k).mul_(c))
        if dk is not None:
            dk.addmm_(probs[0].T, q_b * c)
        return
    w = probs[0].mul_(coef[0].unsqueeze(1))
    w.addcmul_(probs[1], coef[1].unsqueeze(1))
    if dq_b is not None:
        dq_b.addmm_(w, k, alpha=plan.inv_t)
    if dk is not None:
        dk.addmm_(w.T, q_b, alpha=plan.inv_t)


def _buffers(plan: _Plan, rows: int, cols: int, like: torch.Tensor) -> list[torch.Tensor]:
    b = min(plan.block_rows, rows)
    return [like.new_empty(b, cols) for _ in range(1 + len(plan.scales))]


def _fused(
    plan: _Plan, q: torch.Tensor, k: torch.Tensor | None, side: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Forward with the gradient formed per block: (per-row loss, dQ, dK, dside)."""
    kk = q if k is None else k
    rows, cols = q.shape[0], kk.shape[0]
    bufs = _buffers(plan, rows, cols, q)
    dq = torch.zeros_like(q) if plan.need_dq or (k is None and plan.need_dk) else None
    dk = (dq if k is None else torch.zeros_like(kk)) if plan.need_dk else None
    per_row = q.new_empty(rows)
    dside = torch.zeros_like(side)
    for r0 in range(0, rows, plan.block_rows):
        r1 = min(rows, r0 + plan.block_rows)
        probs, lse, inv = _block_exp(plan, q[r0:r1], kk, r0, bufs)
        loss, g_lse, g_side = plan.head(lse, side[:, r0:r1])
        per_row[r0:r1] = loss
        dside[:, r0:r1] = g_side * plan.weight
        coef = g_lse * plan.weight * lse.new_tensor(plan.scales).unsqueeze(1) * inv
        _add_block_grad(plan, probs, coef, q[r0:r1], kk, None if dq is None else dq[r0:r1], dk)
    if k is None:
        return per_row, dq, None, dside
    return per_row, dq, dk, dside


def _row_lse(plan: _Plan, q: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
    """The (A, rows) log-sum-exps, block by block."""
    kk = q if k is None else k
    rows, cols = q.shape[0], kk.shape[0]
    bufs = _buffers(plan, rows, cols, q)
    out = q.new_empty(len(plan.scales), rows)
    for r0 in range(0, rows, plan.block_rows):
        r1 = min(rows, r0 + plan.block_rows)
        _, lse, _ = _block_exp(plan, q[r0:r1], kk, r0, bufs)
        out[:, r0:r1] = lse
    return out


def _lse_backward(
    plan: _Plan, q: torch.Tensor, k: torch.Tensor | None, g_lse: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of sum_{a,i} g_lse[a, i] * L_a(i) by recomputing the blocks."""
    kk = q if k is None else k
    rows, cols = q.shape[0], kk.shape[0]
    bufs = _buffers(plan, rows, cols, q)
    dq = torch.zeros_like(q) if plan.need_dq or (k is None and plan.need_dk) else None
    dk = (dq if k is None else torch.zeros_like(kk)) if plan.need_dk else None
    scales = g_lse.new_tensor(plan.scales).unsqueeze(1)
    for r0 in range(0, rows, plan.block_rows):
        r1 = min(rows, r0 + plan.block_rows)
        probs, _, inv = _block_exp(plan, q[r0:r1], kk, r0, bufs)
        _add_block_grad(
            plan,
            probs,
            g_lse[:, r0:r1] * scales * inv,
            q[r0:r1],
            kk,
            None if dq is None else dq[r0:r1],
            dk,
        )
    if k is None:
        return dq, None
    return dq, dk


def _strip(buf: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous (rows, cols) view at the start of a flat buffer."""
    return buf[: rows * cols].view(rows, cols)


def _mask_strip(plan: _Plan, s: torch.Tensor, b0: int, n: int) -> None:
    """Set the masked pairs of strip rows b0.. (columns b0..n-1) to -inf. The masks are
    symmetric (i <-> i, i <-> i + B), so each masked pair is hit once in its upper strip."""
    bs = s.shape[0]
    local = torch.arange(bs, device=s.device)
    if plan.mask_shift is not None:
        other = (local + b0 + plan.mask_shift) % n - b0
        keep = other >= 0
        if bool(keep.any()):
            s[local[keep], other[keep]] = float("-inf")
    if plan.mask_self:
        s[local, local] = float("-inf")
    if plan.segments is not None:
        b1 = b0 + bs
        for c0, c1 in plan.segments:
            if c1 <= b0 or c0 >= b1:
                continue
            # rows max(c0, b0)..min(c1, b1) x columns max(c0, b0)..c1 (strip columns start at b0)
            s[max(c0, b0) - b0 : min(c1, b1) - b0, max(c0, b0) - b0 : c1 - b0] = float("-inf")


def _sym_lse(plan: _Plan, z: torch.Tensor) -> torch.Tensor:
    """Row log-sum-exps (A, N) of a self-similarity matrix from its upper strips only: strip b
    (rows b0..b1, columns b0..N) gives the row sums of its rows and, by symmetry, the column
    sums of rows b1..N. Half the products of a full pass.

    Per strip, in base 2 (S2 = S log2 e; ``exp2`` is ~4x faster than ``exp`` on CPU): one row
    max m, E = 2^(a S2 - a m), the row sums of E, and the column sums as one matrix-vector
    product, sum_i 2^(a s2_ij - G) = sum_i E_ij 2^(a m_i - G) with G = max_i a m_i. A column
    whose sum falls below 1e-20 (its terms could have underflowed) and a strip with a fully
    masked row are redone with per-column maxima.
    """
    n = z.shape[0]
    br = min(plan.block_rows, n)
    buf_s = z.new_empty(br * n)
    buf_e = z.new_empty(br * n)
    out = z.new_full((len(plan.scales), n), float("-inf"))  # base 2 until the end
    for b0 in range(0, n, br):
        b1 = min(n, b0 + br)
        bs, w = b1 - b0, n - b0
        s = _scaled_mm(z[b0:b1], z[b0:].T, plan.inv_t * LOG2E, _strip(buf_s, bs, w))
        _mask_strip(plan, s, b0, n)
        m1 = s.amax(dim=1, keepdim=True)
        masked_row = bool((m1 == float("-inf")).any())
        for ai, a in enumerate(plan.scales):
            e = _strip(buf_e, bs, w)
            col: torch.Tensor | None
            if masked_row:
                sa = s if a == 1.0 else s * a
                row, col = _strip_lse2_exact(sa, bs, e)
            else:
                ma = m1 if a == 1.0 else m1 * a
                if a == 1.0:
                    torch.sub(s, ma, out=e)
                else:
                    torch.mul(s, a, out=e).sub_(ma)
                e.exp2_()
                row = torch.log2(e.sum(dim=1)).add_(ma.squeeze(1))
                col = None
                if w > bs:
                    g = ma.max()
                    colsum = torch.mv(e[:, bs:].T, torch.exp2(ma.squeeze(1) - g))
                    col = torch.log2(colsum).add_(g)
                    low = colsum < 1e-20
                    if bool(low.any()):
                        right = s[:, bs:][:, low] * a
                        mc = right.amax(dim=0, keepdim=True)
                        mc.masked_fill_(mc == float("-inf"), 0.0)  # a fully masked column
                        col[low] = torch.log2(torch.exp2(right - mc).sum(dim=0)) + mc.squeeze(0)
            torch.logaddexp2(out[ai, b0:b1], row, out=out[ai, b0:b1])
            if col is not None:
                torch.logaddexp2(out[ai, b1:], col, out=out[ai, b1:])
    return out.mul_(LN2)


def _strip_lse2_exact(
    sa: torch.Tensor, bs: int, e: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Base-2 row and right-column log-sum-exps of a strip with per-row / per-column maxima
    (fully masked pieces give -inf)."""
    m = sa.amax(dim=1, keepdim=True)
    m.masked_fill_(m == float("-inf"), 0.0)
    row = torch.sub(sa, m, out=e).exp2_().sum(dim=1).log2_().add_(m.squeeze(1))
    if sa.shape[1] <= bs:
        return row, None
    right = sa[:, bs:]
    mc = right.amax(dim=0, keepdim=True)
    mc.masked_fill_(mc == float("-inf"), 0.0)
    col = torch.sub(right, mc, out=e[:, bs:]).exp2_().sum(dim=0).log2_().add_(mc.squeeze(0))
    return row, col


def _sym_lse_backward(
    plan: _Plan, z: torch.Tensor, lse: torch.Tensor, g_lse: torch.Tensor
) -> torch.Tensor:
    """dz for sum_{a,i} g_lse[a, i] L_a(i): dZ = (W + W^T) Z / t with W = sum_a c_a softmax(a S),
    formed strip by strip: M = W_strip + (W^T)_strip, dZ_b += M Z_strip, dZ_right += M^T Z_b.
    One gradient product per similarity instead of two. Exponentials in base 2 (see
    :func:`_sym_lse`)."""
    n = z.shape[0]
    br = min(plan.block_rows, n)
    coef = g_lse * g_lse.new_tensor(plan.scales).unsqueeze(1)
    # scales without a gradient (e.g. a detached log-sum-exp computed alongside) are skipped
    active = [ai for ai in range(len(plan.scales)) if bool((coef[ai] != 0).any())]
    dz = torch.zeros_like(z)
    if not active:
        return dz
    # a positive coefficient is folded into the exponent: c 2^(x - L) = 2^(x - (L - log2 c))
    positive = bool((coef[active] > 0).all())
    shift = (lse - torch.log(coef) if positive else lse) * LOG2E
    scaled = any(plan.scales[ai] != 1.0 for ai in active)
    buf_s = z.new_empty(br * n)
    buf_m = z.new_empty(br * n)
    buf_e = z.new_empty(br * n)
    buf_a = z.new_empty(br * n) if scaled else None
    for b0 in range(0, n, br):
        b1 = min(n, b0 + br)
        bs, w = b1 - b0, n - b0
        s = _scaled_mm(z[b0:b1], z[b0:].T, plan.inv_t * LOG2E, _strip(buf_s, bs, w))
        _mask_strip(plan, s, b0, n)
        m = _strip(buf_m, bs, w)
        e = _strip(buf_e, bs, w)
        for rank, ai in enumerate(active):
            a = plan.scales[ai]
            sa = s if buf_a is None or a == 1.0 else torch.mul(s, a, out=_strip(buf_a, bs, w))
            target = m if rank == 0 else e
            # rows of W: c_i 2^(a s2_ij - L2_i)
            torch.sub(sa, shift[ai, b0:b1].unsqueeze(1), out=target).exp2_()
            if not positive:
                target.mul_(coef[ai, b0:b1].unsqueeze(1))
            if rank > 0:
                m.add_(target)
            # columns of W^T: c_j 2^(a s2_ij - L2_j)
            torch.sub(sa, shift[ai, b0:].unsqueeze(0), out=e).exp2_()
            if positive:
                m.add_(e)
            else:
                m.addcmul_(e, coef[ai, b0:].unsqueeze(0))
        dz[b0:b1].addmm_(m, z[b0:], alpha=plan.inv_t)
        if w > bs:
            dz[b1:].addmm_(m[:, bs:].T, z[b0:b1], alpha=plan.inv_t)
    return dz


class _SymLSE(torch.autograd.Function):
    """Masked row log-sum-exps (A, N) of the self-similarity z z^T / t, from the upper strips;
    the backward recomputes the strips and forms (W + W^T) strip by strip."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, plan: _Plan) -> torch.Tensor:
        lse = _sym_lse(plan, z.detach())
        ctx.plan = plan
        ctx.save_for_backward(z, lse)
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_lse: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, lse = ctx.saved_tensors
        return _sym_lse_backward(ctx.plan, z, lse, g_lse.contiguous()), None


class _FusedLoss(torch.autograd.Function):
    """weight * sum_i head_i(L(i), side_i), gradients formed in the forward pass."""

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor | None, side: torch.Tensor, plan: _Plan
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_row, dq, dk, dside = _fused(
            plan, q.detach(), None if k is None else k.detach(), side.detach()
        )
        ctx.save_for_backward(dq, dk, dside)
        total = per_row.sum() * plan.weight
        ctx.mark_non_differentiable(per_row)
        return total, per_row

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, g_total: torch.Tensor, _g_rows: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, None]:
        dq, dk, dside = ctx.saved_tensors
        if bool(g_total == 1.0):  # loss.backward(): hand the stored gradients over as they are
            return dq, dk, dside, None
        return (
            None if dq is None else dq * g_total,
            None if dk is None else dk * g_total,
            dside * g_total,
            None,
        )


class _RowLSE(torch.autograd.Function):
    """The (A, rows) masked row log-sum-exps; the backward recomputes the blocks."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor | None, plan: _Plan) -> torch.Tensor:
        ctx.plan = plan
        ctx.self_sim = k is None
        ctx.save_for_backward(q, k)
        return _row_lse(plan, q.detach(), None if k is None else k.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, g_lse: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        q, k = ctx.saved_tensors
        dq, dk = _lse_backward(ctx.plan, q, k, g_lse.contiguous())
        return dq, dk, None


# --------------------------------------------------------------------------------------------
# heads: the per-row loss as a function of the row log-sum-exps and O(N) side inputs
# --------------------------------------------------------------------------------------------


def _head_lse_minus_side(
    lse: torch.Tensor, side: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss = L(i) - side(i) (InfoNCE: side = s_pos; SupCon: side = mean positive logit)."""
    return lse[0] - side[0], torch.ones_like(lse), -torch.ones_like(side)


def _head_logaddexp(
    shift: float,
) -> Head:
    """loss = log(exp(s_pos) + exp(L - shift)) - s_pos = softplus(L - shift - s_pos), exact at
    any argument; d loss / d L = sigmoid(L - shift - s_pos). Shared by the shared-pool and the
    indexed-pool NCE kernels."""

    def head(
        lse: torch.Tensor, side: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = lse[0] - shift - side[0]
        sig = torch.sigmoid(u)
        # log(1 + e^u) exactly (F.softplus returns u itself above u = 20: off by up to 2e-9)
        return torch.logaddexp(u, torch.zeros_like(u)), sig.unsqueeze(0), -sig.unsqueeze(0)

    return head


def _debiased_rows(
    lse: torch.Tensor, s_pos: torch.Tensor, t: float, tau: float, log_n: float
) -> torch.Tensor:
    """Per-row debiased / hard loss from L_1 (beta = 0) or (L_{1+beta}, L_beta), in log space
    (the same formulas as :func:`contrastlab.losses.debiased_hard`)."""
    log_reweight = lse[0] if lse.shape[0] == 1 else log_n + lse[0] - lse[1]
    return debiased_anchor_loss(log_reweight, s_pos, t, tau, log_n)


def _head_debiased(t: float, tau: float, log_n: float) -> Head:
    def head(
        lse: torch.Tensor, side: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            lse_l = lse.detach().requires_grad_(True)
            side_l = side.detach().requires_grad_(True)
            loss = _debiased_rows(lse_l, side_l[0], t, tau, log_n)
            g_lse, g_side = torch.autograd.grad(loss.sum(), [lse_l, side_l])
        return loss.detach(), g_lse, g_side

    return head


# --------------------------------------------------------------------------------------------
# dispatch to the fused (mean / sum) or recomputing (none) path
# --------------------------------------------------------------------------------------------


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _run(
    q: torch.Tensor,
    k: torch.Tensor | None,
    side: torch.Tensor,
    *,
    t: float,
    scales: tuple[float, ...],
    mask_self: bool,
    mask_shift: int | None,
    head: Head,
    reduction: str,
    factor: float,
    block_rows: int | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """factor * reduce_i head_i(...) over the rows of q."""
    rows = q.shape[0]
    cols = rows if k is None else k.shape[0]
    br = (
        default_block_rows(rows, cols, q.shape[1])
        if block_rows is None
        else check_positive_int("block_rows", block_rows)
    )
    grad_on = torch.is_grad_enabled()
    plan = _Plan(
        inv_t=1.0 / t,
        scales=scales,
        mask_self=mask_self,
        mask_shift=mask_shift,
        block_rows=br,
        head=head,
        weight=factor / rows if reduction == "mean" else factor,
        need_dq=grad_on and q.requires_grad,
        need_dk=grad_on and (q.requires_grad if k is None else k.requires_grad),
    )
    if k is None and SELF_SIMILARITY_METHOD == "symmetric":
        lse = _SymLSE.apply(q, plan)
    elif reduction == "none":
        lse = _RowLSE.apply(q, k, plan)
    else:
        total, _ = _FusedLoss.apply(q, k, side, plan)
        return total.to(out_dtype)
    per_row = _autograd_head(head, lse, side) * factor
    if reduction == "mean":
        return per_row.mean().to(out_dtype)
    if reduction == "sum":
        return per_row.sum().to(out_dtype)
    return per_row.to(out_dtype)


def _autograd_head(
    head: Head,
    lse: torch.Tensor,
    side: torch.Tensor,
) -> torch.Tensor:
    """The head as a differentiable function (its value, with its gradients attached)."""
    return _Head.apply(lse, side, head)


class _Head(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, lse: torch.Tensor, side: torch.Tensor, head: Any) -> torch.Tensor:
        loss, g_lse, g_side = head(lse.detach(), side.detach())
        ctx.save_for_backward(g_lse, g_side)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        g_lse, g_side = ctx.saved_tensors
        return g_lse * g, g_side * g, None


def _stacked_views(z1: torch.Tensor, z2: torch.Tensor, normalize: str) -> torch.Tensor:
    dt = _compute_dtype(z1)
    return _rows_normalized(torch.cat([z1, z2], dim=0).to(dt), normalize)


def _view_positive_logits(z: torch.Tensor, b: int, t: float) -> torch.Tensor:
    """s_{i, i+-B} / t for the 2B stacked rows (the same value for both views of a sample)."""
    s = (z[:b] * z[b:]).sum(dim=1) / t
    return torch.cat([s, s])


class _RowNormalize(torch.autograd.Function):
    """z / max(||z||, floor) row-wise with a fused backward: g - zn (zn . g), over the norm, for
    the rows beyond the floor, g / floor for the others (floor = 1e-12 on the sphere, 1 for the
    ball); the same values and gradients as :func:`contrastlab.losses.normalize`."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, floor: float) -> torch.Tensor:
        zn, denom, projected = _normalize_rows(z, floor)
        ctx.save_for_backward(zn, denom, projected)
        return zn

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        zn, denom, projected = ctx.saved_tensors
        return _normalize_rows_backward(g.clone(), zn, denom, projected), None


def _normalize_rows(z: torch.Tensor, floor: float) -> tuple[torch.Tensor, ...]:
    """(z / max(||z||, floor), the denominators, whether the norm exceeds the floor) per row."""
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    denom = norm.clamp_min(floor)
    return z / denom, denom, norm > floor


def _normalize_rows_backward(
    g: torch.Tensor, zn: torch.Tensor, denom: torch.Tensor, projected: torch.Tensor
) -> torch.Tensor:
    """The gradient through :func:`_normalize_rows`, in place on g: (g - zn (zn . g)) / norm
    on the rows beyond the floor, g / floor on the others."""
    proj = torch.linalg.vecdot(zn, g, dim=1).unsqueeze(1).mul_(projected)
    return g.addcmul_(zn, proj, value=-1.0).div_(denom)


def _rows_normalized(z: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`contrastlab.losses.normalize` of the rows of a (n, d) tensor, fused."""
    check_choice("normalize", kind, NORMALIZATIONS)
    if kind == "none":
        return z
    return _RowNormalize.apply(z, 1e-12 if kind == "sphere" else 1.0)


# --------------------------------------------------------------------------------------------
# public losses
# --------------------------------------------------------------------------------------------


def tiled_info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    normalize: str = "sphere",
    reduction: str = "mean",
    block_rows: int | None = None,
) -> torch.Tensor:
    """SimCLR NT-Xent (Chen et al. 2020, eq. (1)), tiled; equal to
    :func:`contrastlab.losses.info_nce` (2B anchors, 2B - 2 negatives **summed**, the positive
    in the denominator, the anchor never its own negative; mean over the 2B anchors).

    Args:
        z1, z2: (B, d) the two views.
        temperature: t > 0.
        normalize: ``sphere`` (SimCLR), ``ball`` or ``none``.
        reduction: ``mean`` | ``sum`` | ``none`` (a (2B,) vector, rows of z1 first).
        block_rows: rows per block (default :func:`default_block_rows`).
    """
    t = check_positive("temperature", temperature)
    b = check_two_views(z1, z2, min_batch=1)
    check_choice("reduction", reduction, REDUCTIONS)
    z = _stacked_views(z1, z2, normalize)
    s_pos = _view_positive_logits(z, b, t)
    return _run(
        z,
        None,
        s_pos.unsqueeze(0),
        t=t,
        scales=(1.0,),
        mask_self=True,
        mask_shift=None,
        head=_head_lse_minus_side,
        reduction=reduction,
        factor=1.0,
        block_rows=block_rows,
        out_dtype=z1.dtype,
    )


def tiled_supcon(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    normalize: str = "sphere",
    base_temperature: float | None = None,
    reduction: str = "mean",
    block_rows: int | None = None,
) -> torch.Tensor:
    """SupCon L_out (Khosla et al. 2020, eq. (2)), tiled; equal to
    :func:`contrastlab.losses.supcon` (the anchor is not its own positive; all other rows are in
    the denominator; no ``t / base_temperature`` factor unless ``base_temperature`` is given).

    The positive term ``(1/|P(i)|) sum_{p in P(i)} s_ip`` is ``z_i^T (C_{y_i} - z_i) / (t |P(i)|)``
    with C_c the sum of the rows of class c: O(N d), no N x N label mask.

    Args: as :func:`contrastlab.losses.supcon`, plus ``block_rows``.
    """
    t = check_positive("temperature", temperature)
    b = check_two_views(z1, z2, min_batch=1)
    check_choice("reduction", reduction, REDUCTIONS)
    factor = 1.0
    if base_temperature is not None:
        factor = t / check_positive("base_temperature", base_temperature)
    z = _stacked_views(z1, z2, normalize)
    if labels is None:
        side = _view_positive_logits(z, b, t)
    else:
        lab = check_labels("labels", labels, b).to(z.device)
        _, inv = torch.unique(lab, return_inverse=True)
        inv2 = torch.cat([inv, inv])
        n_cls = int(inv.max()) + 1
        class_sum = z.new_zeros(n_cls, z.shape[1]).index_add(0, inv2, z)
        count = torch.bincount(inv2, minlength=n_cls).to(z.dtype)
        pos_dot = (z * class_sum[inv2]).sum(dim=1) - (z * z).sum(dim=1)
        side = pos_dot / ((count[inv2] - 1.0) * t)
    return _run(
        z,
        None,
        side.unsqueeze(0),
        t=t,
        scales=(1.0,),
        mask_self=True,
        mask_shift=None,
        head=_head_lse_minus_side,
        reduction=reduction,
        factor=factor,
        block_rows=block_rows,
        out_dtype=z1.dtype,
    )


def tiled_debiased_hard(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    normalize: str = "sphere",
    reduction: str = "mean",
    block_rows: int | None = None,
) -> torch.Tensor:
    """Chuang et al. 2020 eq. (7) (beta = 0) / Robinson et al. 2021 eq. (5) (beta > 0), tiled;
    equal to :func:`contrastlab.losses.debiased_hard` (N = 2B - 2 negatives: the anchor and its
    positive masked in each block; the published clamp ``Ng >= N exp(-1/t)``).

    The hardness weights never leave log space: per row the kernel takes
    ``L_{1+beta} = log sum_j exp((1 + beta) s_j / t)`` and ``L_beta = log sum_j exp(beta s_j / t)``
    over the negatives, and ``log reweight = log N + L_{1+beta} - L_beta``.

    Args: as :func:`contrastlab.losses.debiased_hard`, plus ``block_rows``.
    """
    t = check_positive("temperature", temperature)
    tau = check_unit_interval("tau_plus", tau_plus)
    beta = check_nonnegative("beta", beta)
    b = check_two_views(z1, z2, min_batch=2)
    check_choice("reduction", reduction, REDUCTIONS)
    z = _stacked_views(z1, z2, normalize)
    s_pos = _view_positive_logits(z, b, t)
    log_n = math.log(2 * b - 2)
    scales = (1.0,) if beta == 0.0 else (1.0 + beta, beta)
    return _run(
        z,
        None,
        s_pos.unsqueeze(0),
        t=t,
        scales=scales,
        mask_self=True,
        mask_shift=b,
        head=_head_debiased(t, tau, log_n),
        reduction=reduction,
        factor=1.0,
        block_rows=block_rows,
        out_dtype=z1.dtype,
    )


class _OneBlockNCE(torch.autograd.Function):
    """Shared-pool NCE in one block, the normalization folded in: value and gradients of
    ``weight * sum_i [log(e^{sp_i} + sum_j e^{s_ij - shift}) - sp_i]`` in about 30 tensor ops.

    For small B k (e.g. B = 256, k <= 256) the products are a few microseconds and the cost is the
    per-op overhead of a loss built from many small autograd nodes (three normalizations, the
    positive logit, the block engine); this path forms every gradient in the forward pass and
    its backward only scales them. ``floor``: None (no normalization), 1e-12 (sphere) or 1 (ball),
    as :class:`_RowNormalize`.
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
            xs[i], *rest = _normalize_rows(x, floor)
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
                grads[i] = _normalize_rows_backward(gi, xs[i], *sc)
        ctx.save_for_backward(*grads)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        grads = list(ctx.saved_tensors)
        if bool(g != 1.0):
            grads = [None if x is None else x * g for x in grads]
        return (*grads, None, None, None, None)


TILED_NCE_LOSSES = ("logistic", "infonce", "infonce-mean")


def tiled_nce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    normalize: str = "none",
    reduction: str = "mean",
    block_rows: int | None = None,
) -> torch.Tensor:
    """Explicit-k NCE (Arora et al. 2019 eq. (2); Awasthi et al. 2022 eq. (1)) with a pool of k
    negatives **shared** by all B anchors, tiled over anchor blocks; equal to
    :func:`contrastlab.losses.nce_loss` with (k, d) negatives. Never forms the B x k matrix (nor,
    of course, a B x k x d copy of the pool).

    ``loss``: ``infonce`` (negatives summed), ``infonce-mean`` (averaged: the log-sum-exp shifted
    by log k) or ``logistic`` (t = 1). The positive is in the denominator; the anchor is not a
    negative unless the caller puts it in the pool. ``hinge`` is not a log-sum-exp loss and has
    no tiled form (use :func:`contrastlab.losses.nce_loss`).

    Args:
        anchor, positive: (B, d).
        negatives: (k, d), shared by every anchor.
        loss, temperature, normalize, reduction: as :func:`contrastlab.losses.nce_loss`.
        block_rows: anchors per block (default :func:`default_block_rows`).
    """
    check_choice("loss", loss, TILED_NCE_LOSSES)
    temperature = check_positive("temperature", temperature)
    check_choice("reduction", reduction, REDUCTIONS)
    check_anchor_positive(anchor, positive)
    check_tensor("negatives", negatives, ndim=2, shape_hint="(k, d), shared by the anchors")
    if negatives.shape[1] != anchor.shape[1]:
        raise ValueError(
            f"negatives must have feature dimension d = {anchor.shape[1]}; got {negatives.shape[1]}"
        )
    dt = _compute_dtype(anchor)
    t = 1.0 if loss == "logistic" else temperature
    shift = math.log(negatives.shape[0]) if loss == "infonce-mean" else 0.0
    b, k = anchor.shape[0], negatives.shape[0]
    if reduction != "none" and b * k <= ONE_BLOCK_PAIRS and block_rows is None:
        check_choice("normalize", normalize, NORMALIZATIONS)
        floor = {"none": None, "sphere": 1e-12, "ball": 1.0}[normalize]
        weight = 1.0 / b if reduction == "mean" else 1.0
        out = _OneBlockNCE.apply(
            anchor.to(dt), positive.to(dt), negatives.to(dt), 1.0 / t, shift, floor, weight
        )
        return out.to(anchor.dtype)
    a = _rows_normalized(anchor.to(dt), normalize)
    p = _rows_normalized(positive.to(dt), normalize)
    n = _rows_normalized(negatives.to(dt), normalize)
    s_pos = (a * p).sum(dim=1) / t
    return _run(
        a,
        n,
        s_pos.unsqueeze(0),
        t=t,
        scales=(1.0,),
        mask_self=False,
        mask_shift=None,
        head=_head_logaddexp(shift),
        reduction=reduction,
        factor=1.0,
        block_rows=block_rows,
        out_dtype=anchor.dtype,
    )

"""Explicit-k NCE with per-anchor negatives drawn from a pool by index, tiled over anchor blocks.

Arora et al. (2019) eq. (2) / Awasthi et al. (2022) eq. (1) with anchor b's k negatives taken
from a pool P of M vectors by an index: ``n_{b,j} = P[index[b, j]]`` (repeats allowed: a
repeated index is a repeated negative and counts as many times as it appears). With
``s_j = f_b^T n_{b,j} / t`` and ``s+ = f_b^T f_b^+ / t`` the per-anchor loss is::

    loss_b = log(1 + e^{-shift} sum_{j=1}^k exp(s_j - s+)) = softplus(L_b - shift - s+)
    L_b    = log sum_j exp(s_j)                  (the row log-sum-exp over the k negatives)

``shift = 0`` for ``infonce`` (the negatives **summed**), ``log k`` for ``infonce-mean``
(**averaged**), ``logistic`` is ``infonce`` at t = 1. The positive is in the denominator; the
anchor is not among its negatives unless the index points at a pool row equal to it. The value
and the gradients are those of :func:`contrastlab.losses.nce_loss` on the dense gather
``P[index]`` (B, k, d), which this kernel **never forms**: anchors are processed in blocks of b
rows and a block's (b, k) scores are formed in one of two ways:

``"bank"``: ``S = A_b P^T / t`` (b x M, one GEMM) and its k columns per row gathered. Backward:
the (b, k) weights ``W = dloss/dS`` are scattered (``scatter_add``: repeated indices add up)
into a dense b x M buffer, then ``dA_b = W_dense P / t`` and ``dP += W_dense^T A_b / t`` (two
GEMMs). Cost ~ 3 b M d multiply-adds (GEMM speed), independent of k.

``"gather"``: ``P[index_b]`` as a (b, k, d) block (in column chunks when one row alone would
exceed :data:`~contrastlab.losses.kernels.engine.BLOCK_ELEMENTS`), scores by a batched matrix-vector
product. Backward: ``dA_b`` by bmm with the gathered block, ``dP`` by ``index_add_`` of the
(b, k, d) outer products ``W_bj A_b`` (into the same buffer). Cost ~ 3 b k d element operations,
but gathers, batched matrix-vector products and ``index_add_`` are memory bound: about 20 times
slower per element than a GEMM multiply-add on CPU (measured below).

**Cost model** (``method="auto"``): bank ~ b M d, gather ~ c b k d; ``"gather"`` when
``c k < M`` (or when one bank row, M scores, would exceed ``BLOCK_ELEMENTS``), ``"bank"``
otherwise. The constant c = :data:`GATHER_COST` = 20 was measured on the development machine
(2 shared CPU cores, torch 2.14, float32, d = 128, B = 256, M = 65536, ``normalize="none"``,
forward + backward with gradients for anchor, positive and pool, both methods forced, best of
12 runs): bank 0.126 s at k = 4096 (5.9e-11 s per b M d; 0.172 s at k = 16384: its O(b k)
gather / exp / scatter, which the model ignores); gather 0.180 s at k = 4096 (1.34e-9 s per
b k d) and 0.647 s at k = 16384 (1.20e-9 s per b k d); c = 1.2e-9 / 5.9e-11 ~ 20-23 (about 13 at
d = 32). The gather path wins below k ~ M / 20 (k ~ 3300 of M = 65536); at k = 4096 of 65536 the
bank is 1.4x faster. Both are far from the dense gather ``nce_loss(a, p, P[index])`` (single
runs, same step): 2.8 s with ``normalize="none"``, 6.8 s with ``"sphere"`` (kernel with
``"sphere"``: bank 0.15 s, gather 0.21 s).

Memory: O((B + M) d) for the inputs and gradients plus one block: ``b = min(256, BLOCK_ELEMENTS
// cols)`` anchors with cols = max(M, k) (bank) or k d (gather), so that a block buffer holds at
most ``BLOCK_ELEMENTS`` scores or gathered elements (16 MB in float32; an explicit
``block_rows`` overrides this; the gather method's score product adds one temporary of the
block's size). The index is read in place when it is int64 (other integer dtypes: one int64
copy of its B k entries).

Gradient formation: with ``reduction`` ``mean`` / ``sum`` each block's loss is final once its
scores are formed, so the forward forms the gradients (``dA``, ``dP``, ``dside``) block by block
and the backward only scales them (as ``_fused`` in :mod:`contrastlab.losses.kernels.engine`). With
``reduction="none"`` the forward stores the B row log-sum-exps and the backward recomputes each
block's scores. Float32, bfloat16 and float16 inputs are computed in float32 and give a float32
loss (as the dense path), float64 in float64. Stable at any temperature and norm (log-sum-exp
with the row maximum; the weights are ``exp(s - L) <= 1``). Differentiable once (no double
backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from contrastlab._validation import (
    check_choice,
    check_positive_int,
    check_tensor,
)
from contrastlab.losses._common import check_anchor_positive, check_feature_dim, loss_inputs
from contrastlab.losses.family import lse_scale
from contrastlab.losses.kernels import engine  # BLOCK_ELEMENTS read at call time
from contrastlab.losses.kernels._inputs import check_nce_options, nce_rows
from contrastlab.losses.kernels.engine import (
    Head,
    autograd_head,
    compute_dtype,
    head_logaddexp,
    loss_dtype,
    row_weight,
)

#: How a block's scores are formed: by the cost model, one GEMM against the whole pool, or a
#: gather of the block's (b, k, d) negatives.
INDEXED_METHODS = ("auto", "bank", "gather")
#: Measured cost of one gathered element (forward + backward) relative to one multiply-add of the
#: bank's GEMMs (module docstring): ``"auto"`` gathers when ``GATHER_COST * k < M``.
GATHER_COST = 20.0
#: The most anchors per block (the GEMMs of the bank method are efficient well before this).
MAX_BLOCK_ROWS = 256


def check_negative_index(name: str, index: Any, rows: int, pool_rows: int) -> torch.Tensor:
    """Require a (B, k) integer tensor with B = ``rows``, k >= 1 and entries in [0, M)
    (M = ``pool_rows``); return it as int64 (no copy when it is already int64)."""
    hint = f"(B, k) with B = {rows}, k >= 1"
    if isinstance(index, torch.Tensor) and index.ndim == 2 and (
        index.shape[0] != rows or index.shape[1] == 0
    ):
        raise ValueError(f"{name} must have shape {hint}; got {tuple(index.shape)}")
    check_tensor(name, index, ndim=2, floating=False, shape_hint=hint)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer indices; got dtype {index.dtype}")
    lo, hi = torch.aminmax(index)
    if int(lo) < 0 or int(hi) >= pool_rows:
        raise ValueError(
            f"{name} must hold indices in [0, {pool_rows - 1}] (the pool's rows); got values in "
            f"[{int(lo)}, {int(hi)}]"
        )
    return index.long()


def check_pool_index(
    pool: Any, index: Any, anchor: torch.Tensor, names: tuple[str, str], hint: str
) -> torch.Tensor:
    """Validate an (M, d) pool (``hint``: its shape's description) with the feature dimension
    of the (B, d) anchors and the (B, k) index into it (``names``: the pool's and the index's);
    return the index as int64 on the pool's device."""
    check_tensor(names[0], pool, ndim=2, shape_hint=hint)
    rows, d = anchor.shape
    check_feature_dim(names[0], pool, d)
    return check_negative_index(names[1], index, rows, pool.shape[0]).to(pool.device)


def choose_method(k: int, m: int, d: int = 128) -> str:
    """The cost model of ``method="auto"``: ``"gather"`` (~ GATHER_COST * b k d) when it is
    cheaper than ``"bank"`` (~ b M d) or when one bank row (M scores) exceeds BLOCK_ELEMENTS;
    ``"bank"`` otherwise. (d cancels out; it is an argument for the record.)"""
    check_positive_int("k", k)
    check_positive_int("m", m)
    check_positive_int("d", d)
    if m > engine.BLOCK_ELEMENTS or GATHER_COST * k < m:
        return "gather"
    return "bank"


def indexed_block_shape(
    rows: int, k: int, m: int, d: int, method: str, block_rows: int | None = None
) -> tuple[int, int]:
    """(anchors per block, negatives per gather chunk). A block holds at most BLOCK_ELEMENTS
    scores (bank: b x max(M, k)) or gathered elements (gather: b x chunk x d), with at most
    MAX_BLOCK_ROWS anchors; an explicit ``block_rows`` fixes the anchors per block."""
    check_choice("method", method, ("bank", "gather"))
    per_row = max(m, k) if method == "bank" else k * d
    if block_rows is None:
        br = min(MAX_BLOCK_ROWS, max(1, engine.BLOCK_ELEMENTS // per_row))
    else:
        br = check_positive_int("block_rows", block_rows)
    br = min(br, rows)
    chunk = k if method == "bank" else min(k, max(1, engine.BLOCK_ELEMENTS // (br * d)))
    return br, chunk


@dataclass(frozen=True)
class _IndexedPlan:
    inv_t: float
    method: str  # "bank" or "gather"
    block_rows: int
    chunk: int  # gather: negatives per chunk (k when one chunk holds a block's negatives)
    head: Head  # head(lse (1, b), side (1, b)) -> (loss (b,), dloss/dlse, dloss/dside)
    weight: float  # the loss is weight * sum_b loss_b (mean: 1/B)
    need_da: bool
    need_dpool: bool


class _Blocks:
    """The reused buffer of one block and the score / gradient passes of either method."""

    def __init__(self, plan: _IndexedPlan, a: torch.Tensor, pool: torch.Tensor, k: int) -> None:
        self.plan = plan
        self.a = a
        self.pool = pool
        d = a.shape[1]
        br = min(plan.block_rows, a.shape[0])
        size = br * pool.shape[0] if plan.method == "bank" else br * plan.chunk * d
        self.buf = a.new_empty(size)
        self.k = k
        # gather: the block's gathered negatives when one chunk holds them (reused backward)
        self.cached: torch.Tensor | None = None

    def _gathered(self, idx: torch.Tensor) -> torch.Tensor:
        """pool[idx] for a (b, c) index chunk, into the buffer: (b, c, d)."""
        b, c = idx.shape
        d = self.pool.shape[1]
        out = self.buf[: b * c * d].view(b * c, d)
        torch.index_select(self.pool, 0, idx.reshape(-1), out=out)
        return out.view(b, c, d)

    def scores(self, r0: int, idx: torch.Tensor) -> torch.Tensor:
        """The (b, k) scores s_bj = a_b . pool[idx_bj] / t of the anchors r0..r0+b."""
        plan = self.plan
        b = idx.shape[0]
        a_s = self.a[r0 : r0 + b] * plan.inv_t
        if plan.method == "bank":
            full = self.buf[: b * self.pool.shape[0]].view(b, -1)
            torch.mm(a_s, self.pool.T, out=full)
            return full.gather(1, idx)
        s = a_s.new_empty(b, self.k)
        self.cached = None
        for j0 in range(0, self.k, plan.chunk):
            j1 = min(self.k, j0 + plan.chunk)
            nb = self._gathered(idx[:, j0:j1])
            # (a batched matrix-vector product; vecdot is ~2x faster than bmm on CPU here)
            s[:, j0:j1] = torch.linalg.vecdot(nb, a_s.unsqueeze(1))
            if j1 - j0 == self.k:
                self.cached = nb
        return s

    def add_grad(
        self,
        r0: int,
        idx: torch.Tensor,
        w: torch.Tensor,
        da: torch.Tensor | None,
        dpool: torch.Tensor | None,
    ) -> None:
        """da[r0:r0+b] += W N / t and dpool[idx_bj] += W_bj a_b / t for the (b, k) weights W
        (modified in place), N the block's negatives."""
        plan = self.plan
        b = idx.shape[0]
        a_b = self.a[r0 : r0 + b]
        w.mul_(plan.inv_t)
        if plan.method == "bank":
            dense = self.buf[: b * self.pool.shape[0]].view(b, -1).zero_()
            dense.scatter_add_(1, idx, w)  # repeated indices add up
            if da is not None:
                da[r0 : r0 + b].addmm_(dense, self.pool)
            if dpool is not None:
                dpool.addmm_(dense.T, a_b)
            return
        for j0 in range(0, self.k, plan.chunk):
            j1 = min(self.k, j0 + plan.chunk)
            idx_c, w_c = idx[:, j0:j1], w[:, j0:j1]
            nb = self.cached if self.cached is not None else self._gathered(idx_c)
            if da is not None:
                da[r0 : r0 + b].add_(torch.bmm(w_c.unsqueeze(1), nb).squeeze(1))
            if dpool is not None:
                outer = torch.mul(w_c.unsqueeze(2), a_b.unsqueeze(1), out=nb)
                dpool.index_add_(0, idx_c.reshape(-1), outer.view(-1, outer.shape[2]))
        self.cached = None


def _fused(
    plan: _IndexedPlan, a: torch.Tensor, pool: torch.Tensor, side: torch.Tensor,
    index: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Forward with the gradient formed per block: (per-row loss, dA, dPool, dside)."""
    rows, k = index.shape
    blocks = _Blocks(plan, a, pool, k)
    da = torch.zeros_like(a) if plan.need_da else None
    dpool = torch.zeros_like(pool) if plan.need_dpool else None
    per_row = a.new_empty(rows)
    dside = torch.zeros_like(side)
    for r0 in range(0, rows, plan.block_rows):
        r1 = min(rows, r0 + plan.block_rows)
        idx = index[r0:r1]
        s = blocks.scores(r0, idx)
        lse = torch.logsumexp(s, dim=1)
        loss, g_lse, g_side = plan.head(lse.unsqueeze(0), side[:, r0:r1])
        per_row[r0:r1] = loss
        dside[:, r0:r1] = g_side * plan.weight
        if da is not None or dpool is not None:
            # W = dloss/dS: the row's coefficient times its softmax exp(s - L)
            w = s.sub_(lse.unsqueeze(1)).exp_().mul_((g_lse[0] * plan.weight).unsqueeze(1))
            blocks.add_grad(r0, idx, w, da, dpool)
    return per_row, da, dpool, dside


def _row_lse(plan: _IndexedPlan, a: torch.Tensor, pool: torch.Tensor,
             index: torch.Tensor) -> torch.Tensor:
    """The (1, B) row log-sum-exps over each anchor's k negatives, block by block."""
    rows, k = index.shape
    blocks = _Blocks(plan, a, pool, k)
    out = a.new_empty(1, rows)
    for r0 in range(0, rows, plan.block_rows):
        r1 = min(rows, r0 + plan.block_rows)
        out[0, r0:r1] = torch.logsumexp(blocks.scores(r0, index[r0:r1]), dim=1)
    return out


def _lse_backward(
    plan: _IndexedPlan, a: torch.Tensor, pool: torch.Tensor, index: torch.Tensor,
    lse: torch.Tensor, g_lse: torch.Tensor, need_da: bool, need_dpool: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of sum_b g_lse[b] L_b, recomputing each block's scores."""
    rows, k = index.shape
    blocks = _Blocks(plan, a, pool, k)
    da = torch.zeros_like(a) if need_da else None
    dpool = torch.zeros_like(pool) if need_dpool else None
    for r0 in range(0, rows, plan.block_rows):
        r1 = min(rows, r0 + plan.block_rows)
        idx = index[r0:r1]
        s = blocks.scores(r0, idx)
        w = s.sub_(lse[0, r0:r1].unsqueeze(1)).exp_().mul_(g_lse[0, r0:r1].unsqueeze(1))
        blocks.add_grad(r0, idx, w, da, dpool)
    return da, dpool


class _IndexedFusedLoss(torch.autograd.Function):
    """weight * sum_b loss_b with the gradients formed in the forward pass."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, pool: torch.Tensor, side: torch.Tensor, index: torch.Tensor,
        plan: _IndexedPlan,
    ) -> torch.Tensor:
        per_row, da, dpool, dside = _fused(plan, a.detach(), pool.detach(), side.detach(), index)
        ctx.save_for_backward(da, dpool, dside)
        return per_row.sum() * plan.weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, g_total: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, None, None]:
        da, dpool, dside = ctx.saved_tensors
        if bool(g_total == 1.0):  # loss.backward(): the stored gradients as they are
            return da, dpool, dside, None, None
        return (
            None if da is None else da * g_total,
            None if dpool is None else dpool * g_total,
            dside * g_total,
            None,
            None,
        )


class _IndexedLSE(torch.autograd.Function):
    """The (1, B) row log-sum-exps; the backward recomputes the blocks (O(B) stored besides the
    inputs)."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, pool: torch.Tensor, index: torch.Tensor, plan: _IndexedPlan
    ) -> torch.Tensor:
        lse = _row_lse(plan, a.detach(), pool.detach(), index)
        ctx.plan = plan
        ctx.save_for_backward(a, pool, index, lse)
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, g_lse: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a, pool, index, lse = ctx.saved_tensors
        da, dpool = _lse_backward(
            ctx.plan, a, pool, index, lse, g_lse.contiguous(),
            ctx.needs_input_grad[0], ctx.needs_input_grad[1],
        )
        return da, dpool, None, None


def _drawn_rows(anchor: torch.Tensor, positive: torch.Tensor, pool: torch.Tensor, index: Any,
                method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked (pool, index) of :func:`tiled_nce_indexed`; with ``method="auto"`` and fewer
    draws than pool rows, only the rows drawn (normalized once each; the gradient reaches the
    pool through the row selection, zero on the rows never drawn) and the index into them."""
    check_anchor_positive(anchor, positive)
    idx = check_pool_index(pool, index, anchor, ("pool", "index"),
                           "(M, d), the rows that index points at")
    rows = anchor.shape[0]
    if method == "auto" and rows * idx.shape[1] < pool.shape[0]:
        used, inverse = torch.unique(idx, return_inverse=True)
        return pool[used], inverse.view(rows, idx.shape[1])
    return pool, idx


@loss_inputs("anchor", "positive", "pool")
def tiled_nce_indexed(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    pool: torch.Tensor,
    index: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    normalize: str = "none",
    reduction: str = "mean",
    block_rows: int | None = None,
    method: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor:
    """Explicit-k NCE (Arora et al. 2019 eq. (2); Awasthi et al. 2022 eq. (1)) with anchor b's
    k negatives ``pool[index[b]]``, tiled over anchor blocks; equal (value and gradients w.r.t.
    anchor, positive and pool) to ``nce_loss(anchor, positive, pool[index], ...)`` without ever
    forming the (B, k, d) gather nor the B x M score matrix (module docstring).

    Conventions: ``loss="infonce"`` sums the k negatives, ``infonce-mean`` averages them (the
    log-sum-exp shifted by log k), ``logistic`` is ``infonce`` at t = 1; t divides the
    similarities; the positive is in the denominator; the anchor is a negative only if the index
    points at it in the pool; repeated indices count as repeated negatives. ``normalize`` is
    applied to the anchors, positives and pool rows. ``hinge`` has no log-sum-exp form: use
    :func:`contrastlab.losses.nce_loss` (it gathers densely).

    Args:
        anchor, positive: (B, d).
        pool: (M, d) candidate negatives (e.g. a memory bank or the batch itself).
        index: (B, k) integers in [0, M), k >= 1.
        loss: ``infonce`` | ``infonce-mean`` | ``logistic``.
        temperature: t > 0 (ignored by ``logistic``).
        normalize: ``sphere`` | ``ball`` | ``none``.
        block_rows: anchors per block (default :func:`indexed_block_shape`).
        method: ``auto`` (cost model :func:`choose_method`), ``bank`` or ``gather``.

    ``reduction``, ``check_finite``: the common arguments of :mod:`contrastlab.losses`.
    """
    temperature = check_nce_options(loss, temperature, reduction)
    check_choice("method", method, INDEXED_METHODS)
    pool, idx = _drawn_rows(anchor, positive, pool, index, method)
    (rows, d), (m, k) = anchor.shape, (pool.shape[0], idx.shape[1])
    chosen = choose_method(k, m, d) if method == "auto" else method
    br, chunk = indexed_block_shape(rows, k, m, d, chosen, block_rows)

    a, p, n = nce_rows(anchor, positive, pool, normalize, compute_dtype(anchor))
    t, shift = lse_scale(loss, temperature, k)
    side = ((a * p).sum(dim=1) / t).unsqueeze(0)
    head = head_logaddexp(shift)
    grad_on = torch.is_grad_enabled()
    plan = _IndexedPlan(
        inv_t=1.0 / t,
        method=chosen,
        block_rows=br,
        chunk=chunk,
        head=head,
        weight=row_weight(reduction, rows),
        need_da=grad_on and a.requires_grad,
        need_dpool=grad_on and n.requires_grad,
    )
    if reduction == "none":
        lse = _IndexedLSE.apply(a, n, idx, plan)
        return autograd_head(head, lse, side).to(loss_dtype(anchor))
    total: torch.Tensor = _IndexedFusedLoss.apply(a, n, side, idx, plan)
    return total.to(loss_dtype(anchor))

"""Tiled kernels for the exact forms of SCL / HSCL / UCL / HUCL: no B x B tensor in memory.

The losses are those of :mod:`contrastlab.losses.scl` (Jiang, Nguyen, Aeron & Ishwar 2023,
"Hard-Negative Sampling for Contrastive Learning", Sec. 2, and the authors' code
``rjiang03/HCL@7a55a2f:main/SCL/train_mean_classifier.py``), with the same conventions::

    gram = Zn Zn^T,  S = gram / t          Zn: the B normalized rows (``ball`` by default)
    P_i = {p : y_p = y_i}  (p = i included)   the (anchor, positive) pairs, row-major (i, p)
    N_i = {j : y_j != y_i}  (SCL / HSCL)  or  {1..B}  (UCL / HUCL: i and its class included)
    log q_ij = beta gram_ij - log sum_{l in N_i} exp(beta gram_il)    detached (no gradient
                                                                      through the hardness law)

and they agree with the dense code (``tiled=False``) to float tolerance, gradients included.

``exact="mean"`` (the plug-in), ``PLUG_IN_METHOD = "symmetric"`` (default): L1 and L0 below come
from the symmetric-strip engine of :mod:`~.engine` on the rows sorted by class
(each similarity computed once, for both log-sum-exps; the other-class mask is a few rectangles
per strip; one gradient product per similarity, L0 skipped in the backward since the hardness
law is detached, and d L1 / d S is the softmax itself, not (1 + beta t) times it), and the
positive pairs come class by class from the contiguous blocks ``Zs_c Zs_c^T`` (1/C of the
products; chunks of ``block_rows`` rows). About (2 + 3/C) B^2 d multiply-adds, against 3 B^2 d
for the row blocks below (see benchmarks/RESULTS.md for the measured times).

``PLUG_IN_METHOD = "rows"``: per anchor ``log g_i = L1_i - L0_i (+ log k for
negatives_reduction="sum")`` with the two masked row log-sum-exps

    L1_i = log sum_{j in N_i} exp((beta + 1/t) gram_ij)     (the gradient flows through it)
    L0_i = log sum_{j in N_i} exp(beta gram_ij)              (detached; log |N_i| when beta = 0)

and the pair loss ``l_ip = softplus(log g_i - S_ip)``. Blocks of ``block_rows`` anchors: the
block's gram rows (b x B) are formed on the fly and give L0 and L1 (exponentials in base 2,
``exp2`` being several times faster than ``exp`` on CPU, the scale folded into one
scale-and-shift pass) and, from the same rows, the positive pairs' S_ip: no extra product. The
pairs are located from the class lists (the rows sorted by class), O(pairs) per block, never
with a B x B (or b x B) label mask; for SCL / HSCL they are exactly the entries excluded from
N_i. The gradient of the pair losses is ``dL/dgram = G`` with, per anchor row,

    G_ij = c_i softmax_{N_i}((beta + 1/t) gram_i.)_j / t - [y_j = y_i] w_ij sigma(u_ij) / t,
    c_i = sum_{p in P_i} w_ip sigma(u_ip),      u_ip = log g_i - S_ip,

(w_ip the upstream weight of pair (i, p): 1/R for the mean over the R pairs, 1 for the sum;
sigma = softplus' as torch computes it, 1 beyond softplus's threshold u > 20), and gram is
symmetric, so ``dZn = (G + G^T) Zn``: per block ``dZn_b += G_b Zn`` and ``dZn += G_b^T Zn_b``.
With ``reduction`` mean or sum the gradient is formed in the forward pass, block by block
(3 B^2 d multiply-adds in all, as the dense forward + backward; only dZn is stored); with
``none`` the forward keeps nothing but Zn and the backward recomputes each block (4 B^2 d).
Memory O(B d + block_rows B): two (block_rows x B) buffers (32 MB each in float64 at
B = 16384), the block's pair indices, and the (R,) output for ``reduction="none"``. (The dense
plug-in needs several B x B matrices.)

``exact=True`` / ``"loss"`` (the exact expectation by quadrature,
:func:`contrastlab.losses.expectation.expected_log1p_sum_grouped`): the sampling laws are
independent per anchor, so blocks of anchors are processed one at a time: the block's gram rows,
its log q rows (:func:`contrastlab.losses.samplers.tilted_log_probs`), its positive pairs'
shifts and the grouped expectation of that block only, which is the dense computation
restricted to the block's anchors (the quadrature of each anchor's law is the same). Each block
runs under ``torch.utils.checkpoint`` (non-reentrant) when a gradient is needed: the forward
keeps only Zn and each block's output, and the backward recomputes one block at a time, so the
cost is **one extra forward of each block** (the quadrature, the dominant cost, runs twice; its
backward once: about 1.5x the time of a forward + backward without checkpointing), and the
memory is that of one block, O(B d + b B + (b + R_b) Q) for b anchors with R_b pairs and Q
nodes (plus the quadrature's chunk buffers, ``chunk_elements``), instead of the dense
O(B^2 + R Q). By default a block holds about :data:`LOSS_BLOCK_PAIRS` pairs. Without a gradient
the blocks run once. (Measured at B = 1024, d = 32, 10 classes, k = 16, float64: peak memory
growth ~280 MB against ~1.1-1.5 GB for the dense path, and a comparable time.)

Inputs in float32, bfloat16 or float16 are computed in float32 and give a float32 loss (as the
dense path), float64 in float64. The plug-in kernel is differentiable once (no double backward); use
``tiled=False`` for more.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from contrastlab._validation import check_choice, check_positive_int
from contrastlab.losses._common import REDUCTIONS, loss_inputs
from contrastlab.losses.hard_pairs import batch_pair_losses, check_hard_contrastive_args
from contrastlab.losses.kernels.engine import (
    BlockPlan,
    SymLSE,
    compute_dtype,
    default_block_rows,
    head_lse_minus_side,
    loss_dtype,
    rows_normalized,
)

__all__ = ["tiled_hard_contrastive"]

#: ``exact=True``: anchors per block (by default) such that a block holds about this many
#: (anchor, positive) pairs (its quadrature grids are pairs x nodes, ~800 nodes at t = 1), but at
#: least :data:`LOSS_MIN_BLOCK_ROWS` anchors. On 2 CPU cores B = 1024 (10 classes) takes the
#: same time with 16 to 128 anchors per block, and less than the dense path.
LOSS_BLOCK_PAIRS = 8192
LOSS_MIN_BLOCK_ROWS = 16

#: How ``exact="mean"`` is tiled: ``"symmetric"`` (the strip engine of
#: :mod:`~.engine`, each similarity computed once, then the positive pairs class
#: by class) or ``"rows"`` (row blocks with the gradient formed in the forward pass).
PLUG_IN_METHOD = "symmetric"
_SOFTPLUS_THRESHOLD = 20.0  # F.softplus(u) = u for u > 20 (its default threshold)
_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class _PlugInPlan:
    """The plug-in kernel's constants."""

    t: float
    beta: float
    other_class: bool  # N_i = other classes (SCL / HSCL); else all B rows (UCL / HUCL)
    log_k: float  # added to log g_i (log k for negatives_reduction="sum", else 0)
    block_rows: int
    reduction: str
    num_pairs: int  # R = sum_c n_c^2
    need_grad: bool


class _Classes(NamedTuple):
    """Where each row's positives are, without a B x B label mask: the rows of class c, in
    increasing index, are ``members[start_c : start_c + n_c]``."""

    members: torch.Tensor  # (B,) the row indices sorted by class (stable)
    row_start: torch.Tensor  # (B,) start_{y_i}: where row i's class begins in ``members``
    pos_count: torch.Tensor  # (B,) |P_i| = n_{y_i}
    log_n0: torch.Tensor  # (B,) log |N_i| (L0 when beta = 0)


class _Block(NamedTuple):
    """One block of anchors r0..r1 after the forward pass over its gram rows."""

    e: torch.Tensor  # (b, B) 2^(log2(e) (beta + 1/t) (gram - row max)) on N_i, 0 elsewhere
    row_sum: torch.Tensor  # (b,) its row sums: softmax_{N_i}((beta + 1/t) gram) = e / row_sum
    pos_row: torch.Tensor  # (n_b,) block-local anchor of each positive pair, row-major
    pos_col: torch.Tensor  # (n_b,) its positive p (increasing for each anchor)
    u: torch.Tensor  # (n_b,) log g_i - S_ip


def _view(buf: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous (rows, cols) view at the start of a flat buffer."""
    return buf[: rows * cols].view(rows, cols)


def _classes(labels: torch.Tensor, other_class: bool, dtype: torch.dtype) -> _Classes:
    n = labels.shape[0]
    _, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    members = torch.argsort(inv, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos_count = counts[inv]
    neg_count = (n - pos_count) if other_class else torch.full_like(pos_count, n)
    return _Classes(members, starts[inv], pos_count, torch.log(neg_count.to(dtype)))


def _positive_pairs(cls: _Classes, r0: int, r1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(block-local anchor, positive) of the block's pairs in row-major order, O(pairs)."""
    count = cls.pos_count[r0:r1]
    n_pairs = int(count.sum())
    first = torch.cumsum(count, 0) - count  # each anchor's first pair
    rows = torch.repeat_interleave(
        torch.arange(r1 - r0, device=count.device), count, output_size=n_pairs
    )
    slot = (cls.row_start[r0:r1] - first)[rows] + torch.arange(n_pairs, device=count.device)
    return rows, cls.members[slot]


def _row_lse2_(
    gram: torch.Tensor, top: torch.Tensor, scale: float, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log sum_j exp(a gram_ij) for a = scale / log2(e), in base 2 (``exp2`` is several times
    faster than ``exp`` on CPU): out = 2^(scale (gram - top)), one fused scale-and-shift pass.
    Returns (the log-sum-exps, the row sums of out)."""
    torch.add(top * -scale, gram, alpha=scale, out=out).exp2_()
    total = out.sum(dim=1)
    return (torch.log2(total) + top.squeeze(1) * scale) * _LN2, total


def _plug_in_block(
    plan: _PlugInPlan,
    zn: torch.Tensor,
    cls: _Classes,
    r0: int,
    r1: int,
    bufs: tuple[torch.Tensor, torch.Tensor],
) -> _Block:
    n = zn.shape[0]
    b = r1 - r0
    gram = torch.mm(zn[r0:r1], zn.T, out=_view(bufs[0], b, n))
    pos_row, pos_col = _positive_pairs(cls, r0, r1)
    s_pos = gram[pos_row, pos_col] / plan.t  # S_ip = gram_ip / t, as the dense code
    if plan.other_class:  # N_i excludes the anchor's class: its pairs are the positives
        gram.index_put_((pos_row, pos_col), gram.new_full((), float("-inf")))
    top = gram.amax(dim=1, keepdim=True)  # finite: every row has a candidate (checked)
    e = _view(bufs[1], b, n)
    if plan.beta > 0.0:
        l0, _ = _row_lse2_(gram, top, plan.beta * _LOG2E, e)
    else:
        l0 = cls.log_n0[r0:r1]
    l1, row_sum = _row_lse2_(gram, top, (plan.beta + 1.0 / plan.t) * _LOG2E, e)
    log_g = l1 - l0 + plan.log_k
    return _Block(e, row_sum, pos_row, pos_col, log_g[pos_row] - s_pos)


def _add_block_grad(
    plan: _PlugInPlan,
    zn: torch.Tensor,
    r0: int,
    r1: int,
    blk: _Block,
    weight: torch.Tensor | float,
    dzn: torch.Tensor,
) -> None:
    """dZn += (G_b + G_b^T) Zn for the block's G_b = dL/dgram rows (module docstring); the
    block's buffer ``blk.e`` is turned into G_b in place."""
    # w_ip sigma(u_ip), sigma = softplus' as torch computes it (1 beyond its threshold 20, where
    # F.softplus is the identity): the exact gradient of the value returned, as in the dense code
    wp = torch.sigmoid(blk.u).masked_fill_(blk.u > _SOFTPLUS_THRESHOLD, 1.0).mul_(weight)
    c = wp.new_zeros(r1 - r0).index_add_(0, blk.pos_row, wp)
    g = blk.e.mul_((c / (blk.row_sum * plan.t)).unsqueeze(1))
    # other-class: G is 0 on the positives (not in N_i); marginal: they are also negatives
    g.index_put_((blk.pos_row, blk.pos_col), wp.div_(-plan.t), accumulate=not plan.other_class)
    dzn[r0:r1].addmm_(g, zn)
    dzn.addmm_(g.T, zn[r0:r1])


def _buffers(plan: _PlugInPlan, zn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = zn.shape[0]
    br = min(plan.block_rows, n)
    return zn.new_empty(br * n), zn.new_empty(br * n)


def _plug_in_forward(
    plan: _PlugInPlan, zn: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reduced loss (or the (R,) pair losses) and, for mean / sum with a gradient, dZn."""
    n = zn.shape[0]
    cls = _classes(labels, plan.other_class, zn.dtype)
    bufs = _buffers(plan, zn)
    fused = plan.need_grad and plan.reduction != "none"
    weight = 1.0 / plan.num_pairs if plan.reduction == "mean" else 1.0
    dzn = torch.zeros_like(zn) if fused else None
    total = zn.new_zeros(())
    pairs = zn.new_empty(plan.num_pairs) if plan.reduction == "none" else None
    offset = 0
    for r0 in range(0, n, plan.block_rows):
        r1 = min(n, r0 + plan.block_rows)
        blk = _plug_in_block(plan, zn, cls, r0, r1, bufs)
        losses = F.softplus(blk.u)
        if pairs is not None:
            pairs[offset : offset + losses.numel()] = losses
            offset += losses.numel()
        else:
            total += losses.sum()
        if dzn is not None:
            _add_block_grad(plan, zn, r0, r1, blk, weight, dzn)
    if pairs is not None:
        return pairs, None
    return total * weight, dzn


def _plug_in_backward(
    plan: _PlugInPlan, zn: torch.Tensor, labels: torch.Tensor, grad_pairs: torch.Tensor
) -> torch.Tensor:
    """dZn for upstream per-pair gradients (reduction="none"), recomputing the blocks."""
    n = zn.shape[0]
    cls = _classes(labels, plan.other_class, zn.dtype)
    bufs = _buffers(plan, zn)
    dzn = torch.zeros_like(zn)
    offset = 0
    for r0 in range(0, n, plan.block_rows):
        r1 = min(n, r0 + plan.block_rows)
        blk = _plug_in_block(plan, zn, cls, r0, r1, bufs)
        count = blk.u.numel()
        _add_block_grad(plan, zn, r0, r1, blk, grad_pairs[offset : offset + count], dzn)
        offset += count
    return dzn


class _PlugInLoss(torch.autograd.Function):
    """exact="mean": the reduced loss or the pair losses of the normalized rows zn."""

    @staticmethod
    def forward(
        ctx: Any, zn: torch.Tensor, labels: torch.Tensor, plan: _PlugInPlan
    ) -> torch.Tensor:
        value, dzn = _plug_in_forward(plan, zn, labels)
        ctx.plan = plan
        if plan.reduction == "none":
            ctx.save_for_backward(zn, labels)
        else:
            ctx.save_for_backward(dzn)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        plan: _PlugInPlan = ctx.plan
        if plan.reduction == "none":
            zn, labels = ctx.saved_tensors
            return _plug_in_backward(plan, zn, labels, grad.contiguous()), None, None
        (dzn,) = ctx.saved_tensors
        if dzn is None:
            return None, None, None
        if bool(grad == 1.0):  # loss.backward(): hand the stored gradient over as it is
            return dzn, None, None
        return dzn * grad, None, None


class _PairPlan(NamedTuple):
    t: float
    reduction: str
    num_pairs: int
    block_rows: int
    segments: tuple[tuple[int, int], ...]  # the classes' row ranges in the class-sorted order


def _class_chunks(plan: _PairPlan) -> list[tuple[int, int, int, int]]:
    """(r0, r1, c0, c1) in the class-sorted order: rows r0..r1 of one class (at most
    ``block_rows``) and that class's rows c0..c1: the chunk's positive pairs."""
    out = []
    for c0, c1 in plan.segments:
        for r0 in range(c0, c1, plan.block_rows):
            out.append((r0, min(c1, r0 + plan.block_rows), c0, c1))
    return out


def _fast_softplus(u: torch.Tensor) -> torch.Tensor:
    """F.softplus(u) (u itself above 20, as torch's threshold) as log(1 + 2^(u log2 e)): on CPU
    ``log1p`` (and so ``F.softplus``) is not vectorized here and ~10x slower than ``exp2`` +
    ``log``; the difference is below one ulp of 1 in absolute terms (where e^u < eps)."""
    inner = torch.exp2(u.clamp(max=_SOFTPLUS_THRESHOLD) * _LOG2E).add_(1.0).log_()
    return torch.where(u > _SOFTPLUS_THRESHOLD, u, inner)


def _softplus_grad(u: torch.Tensor) -> torch.Tensor:
    """softplus'(u) as torch computes F.softplus (1 beyond its threshold, where the value is u)."""
    return torch.sigmoid(u).masked_fill_(u > _SOFTPLUS_THRESHOLD, 1.0)


class _PositivePairs(torch.autograd.Function):
    """sum (or the vector) of softplus(log g_i - S_ip) over the positive pairs (p = i included)
    of class-sorted rows zs: the pairs of class c are the block Zs_c Zs_c^T (1/C of the
    products), contiguous, no label mask and no gather. ``pair_pos`` (B,): where each sorted
    row's first pair goes in the dense code's row-major (i, p) order (``reduction="none"``)."""

    @staticmethod
    def forward(
        ctx: Any, zs: torch.Tensor, log_g: torch.Tensor, pair_pos: torch.Tensor, plan: _PairPlan
    ) -> torch.Tensor:
        zs, log_g = zs.detach(), log_g.detach()
        none = plan.reduction == "none"
        weight = 1.0 / plan.num_pairs if plan.reduction == "mean" else 1.0
        pairs = zs.new_empty(plan.num_pairs) if none else None
        total = zs.new_zeros(())
        fused = not none and any(ctx.needs_input_grad[:2])
        dzs = torch.zeros_like(zs) if fused else None
        dlog_g = torch.zeros_like(log_g) if fused else None
        for r0, r1, c0, c1 in _class_chunks(plan):
            u = log_g[r0:r1].unsqueeze(1) - torch.mm(zs[r0:r1], zs[c0:c1].T).div_(plan.t)
            losses = _fast_softplus(u)
            if pairs is not None:
                pos = pair_pos[r0:r1].unsqueeze(1) + torch.arange(c1 - c0, device=zs.device)
                pairs[pos.flatten()] = losses.flatten()
            else:
                total += losses.sum()
            if dzs is not None and dlog_g is not None:
                wsig = _softplus_grad(u).mul_(weight)
                _pair_grad(plan, zs, (r0, r1, c0, c1), wsig, dzs, dlog_g)
        ctx.plan = plan
        if pairs is not None:
            ctx.save_for_backward(zs, log_g, pair_pos)
            return pairs
        ctx.save_for_backward(dzs, dlog_g)
        return total * weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        plan: _PairPlan = ctx.plan
        if plan.reduction != "none":
            dzs, dlog_g = ctx.saved_tensors
            if dzs is None:
                return None, None, None, None
            if bool(grad != 1.0):
                dzs, dlog_g = dzs * grad, dlog_g * grad
            return dzs, dlog_g, None, None
        zs, log_g, pair_pos = ctx.saved_tensors
        dzs, dlog_g = torch.zeros_like(zs), torch.zeros_like(log_g)
        grad = grad.contiguous()
        for r0, r1, c0, c1 in _class_chunks(plan):
            u = log_g[r0:r1].unsqueeze(1) - torch.mm(zs[r0:r1], zs[c0:c1].T).div_(plan.t)
            pos = pair_pos[r0:r1].unsqueeze(1) + torch.arange(c1 - c0, device=zs.device)
            _pair_grad(plan, zs, (r0, r1, c0, c1), _softplus_grad(u).mul_(grad[pos]), dzs, dlog_g)
        return dzs, dlog_g, None, None


def _pair_grad(
    plan: _PairPlan,
    zs: torch.Tensor,
    chunk: tuple[int, int, int, int],
    wsig: torch.Tensor,
    dzs: torch.Tensor,
    dlog_g: torch.Tensor,
) -> None:
    """d/dlog g_i = sum_p w sigma(u_ip); d/dgram_ip = -w sigma(u_ip) / t, gram = Zs Zs^T."""
    r0, r1, c0, c1 = chunk
    dlog_g[r0:r1] += wsig.sum(dim=1)
    g = wsig.div_(-plan.t)
    dzs[r0:r1].addmm_(g, zs[c0:c1])
    dzs[c0:c1].addmm_(g.T, zs[r0:r1])


def _plug_in_symmetric(
    zn: torch.Tensor,
    cls: _Classes,
    *,
    t: float,
    beta: float,
    other_class: bool,
    log_k: float,
    reduction: str,
    num_pairs: int,
    block_rows: int,
) -> torch.Tensor:
    """exact="mean" from the symmetric-strip engine of :mod:`~.engine`, on the
    rows sorted by class (so the other-class mask is a few rectangles per strip, and the
    positive pairs are contiguous blocks): L1 = log sum_{N_i} exp((beta + 1/t) gram) (with its
    gradient, one gradient product per similarity) and L0 = log sum_{N_i} exp(beta gram) (from
    the same strips; no gradient: the hardness law is detached; log |N_i| when beta = 0), then
    the positive pairs class by class. About (2 + 3/C) N^2 d multiply-adds (N = B), against
    3 N^2 d for a dense forward + backward."""
    perm = cls.members  # rows sorted by class, stably
    zs = zn[perm]
    ends = torch.cumsum(torch.unique_consecutive(cls.row_start[perm], return_counts=True)[1], 0)
    segs = tuple(zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True))

    def plan(*scales: float) -> BlockPlan:  # unmasked but for the classes' segments, weight 1
        return BlockPlan(
            inv_t=1.0 / t,
            scales=scales,
            block_rows=block_rows,
            head=head_lse_minus_side,
            segments=segs if other_class else None,
        )

    # in units of S = gram / t: (beta + 1/t) gram = (1 + beta t) S and beta gram = (beta t) S
    # (L0 from the same strips as L1, one product; its gradient is zero, so the backward
    # skips it)
    a = 1.0 + beta * t
    if beta > 0.0:
        both = SymLSE.apply(zs, plan(a, beta * t))
        l1, l0 = both[0], both[1].detach()
    else:
        l1, l0 = SymLSE.apply(zs, plan(a))[0], cls.log_n0[perm]
    if a != 1.0:
        # the hardness weights are detached: d L1 / d S_ij = softmax(a S)_ij, not a times it
        l1 = l1.detach() + (l1 - l1.detach()) / a
    log_g = (l1 - l0 + log_k).to(zs.dtype)  # the heads of the pairs in the compute dtype
    first = torch.cumsum(cls.pos_count, 0) - cls.pos_count  # row i's first pair, row-major
    out: torch.Tensor = _PositivePairs.apply(
        zs, log_g, first[perm], _PairPlan(t, reduction, num_pairs, block_rows, segs)
    )
    return out


def _loss_block(
    zn: torch.Tensor,
    labels: torch.Tensor,
    r0: int,
    r1: int,
    other_class: bool,
    beta: float,
    k: int,
    t: float,
    negatives_reduction: str,
    summed: bool,
) -> torch.Tensor:
    """exact="loss" for the anchors r0..r1: their pair losses (row-major), or their sum.
    The same computation as the dense :func:`contrastlab.losses.scl.hard_contrastive`,
    restricted to the block's gram rows."""
    per_pair = batch_pair_losses(zn[r0:r1] @ zn.T, labels[r0:r1], labels, other_class, beta, k,
                                 t, "loss", negatives_reduction)
    return per_pair.sum() if summed else per_pair


def _no_negative_error(row: int) -> ValueError:
    return ValueError(
        f"mask: anchor {row} has no allowed negative (e.g. every sample of the batch has its "
        "class); the supervised losses need at least one other-class sample"
    )


@loss_inputs("z")
def tiled_hard_contrastive(
    z: torch.Tensor,
    labels: torch.Tensor,
    negatives: str,
    beta: float = 0.0,
    k: int = 256,
    temperature: float = 1.0,
    normalize: str = "ball",
    exact: bool | str = True,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    block_rows: int | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """SCL / HSCL / UCL / HUCL (Jiang et al. 2023, Sec. 2) in their exact forms, tiled over
    blocks of anchors; equal to :func:`contrastlab.losses.hard_contrastive` with the same
    arguments (module docstring: conventions, cost, memory). Never forms a B x B tensor.

    Args:
        z, labels, negatives, beta, k, temperature, normalize, negatives_reduction, reduction:
            as :func:`contrastlab.losses.hard_contrastive`.
        exact: ``"mean"`` (the plug-in) or ``True`` / ``"loss"`` (the exact expected loss by
            quadrature). The sampled form (``False``) has no tiled kernel.

    ``block_rows``, ``check_finite``: the common arguments of :mod:`contrastlab.losses`.
    """
    b, labels, beta, t, mode = check_hard_contrastive_args(
        z, labels, negatives, beta, k, temperature, exact, negatives_reduction
    )
    if mode == "sampled":
        raise ValueError(
            "exact: tiled_hard_contrastive computes the exact forms only (exact=True, 'loss' or "
            "'mean'); got exact=False (sampled)"
        )
    check_choice("reduction", reduction, REDUCTIONS)
    dt = compute_dtype(z)
    zn = rows_normalized(z.to(dt), normalize)
    if block_rows is not None:
        check_positive_int("block_rows", block_rows)
    other_class = negatives == "other-class"
    _, counts = torch.unique(labels, return_counts=True)
    if other_class and counts.numel() < 2:
        raise _no_negative_error(0)
    num_pairs = int((counts * counts).sum())
    br = default_block_rows(b, b, z.shape[1]) if block_rows is None else block_rows
    if block_rows is None and mode != "mean":
        # the quadrature's memory is (pairs of the block) x (nodes): ~LOSS_BLOCK_PAIRS pairs
        br = min(br, max(LOSS_MIN_BLOCK_ROWS, LOSS_BLOCK_PAIRS // int(counts.max())))
    need_grad = torch.is_grad_enabled() and zn.requires_grad
    if mode == "mean":
        log_k = math.log(k) if negatives_reduction == "sum" else 0.0
        out: torch.Tensor
        if PLUG_IN_METHOD == "symmetric":
            out = _plug_in_symmetric(
                zn, _classes(labels, other_class, zn.dtype), t=t, beta=beta,
                other_class=other_class, log_k=log_k, reduction=reduction, num_pairs=num_pairs,
                block_rows=br,
            )
        else:
            plan = _PlugInPlan(t, beta, other_class, log_k, br, reduction, num_pairs, need_grad)
            out = _PlugInLoss.apply(zn, labels, plan)
        return out.to(loss_dtype(z))
    block = functools.partial(_loss_block, labels=labels, other_class=other_class, beta=beta,
                              k=k, t=t, negatives_reduction=negatives_reduction,
                              summed=reduction != "none")
    return _exact_loss(zn, block, br, reduction, num_pairs, need_grad).to(loss_dtype(z))


def _exact_loss(zn: torch.Tensor, block: Any, br: int, reduction: str, num_pairs: int,
                need_grad: bool) -> torch.Tensor:
    """The exact expected loss by quadrature, one block of ``br`` anchors at a time
    (``block(zn, r0=, r1=)``, :func:`_loss_block`), each block checkpointed when a gradient is
    needed (its quadrature grids are recomputed in the backward, never stored)."""
    b = zn.shape[0]
    parts = []
    for r0 in range(0, b, br):
        one = functools.partial(block, r0=r0, r1=min(b, r0 + br))
        if need_grad:
            parts.append(checkpoint(one, zn, use_reentrant=False, preserve_rng_state=False))
        else:
            parts.append(one(zn))
    if reduction == "none":
        return torch.cat(parts)
    total = torch.stack(parts).sum()
    return total / num_pairs if reduction == "mean" else total

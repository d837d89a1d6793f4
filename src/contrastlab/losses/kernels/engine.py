"""The tiled kernel engine: block plans, masked row log-sum-exps (full rows and symmetric strips),
the fused loss blocks, the autograd heads and the dtype / normalization rules shared by every
tiled loss (:mod:`~contrastlab.losses.kernels.inbatch`, :mod:`~contrastlab.losses.kernels.indexed`,
:mod:`~contrastlab.losses.kernels.jiang`): no N x N (or B x k) tensor in memory.

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

Memory: O(N d + block_rows N). Inputs in float32, bfloat16 or float16 are computed in float32
(float32 accumulation) and give a float32 loss, as the dense paths (:func:`loss_inputs
<contrastlab.losses._common.loss_inputs>`: autocast is off inside); float64 in float64. The
functions are differentiable once (no double backward).

**Precision.** The N^2 work is float32; what is O(N) is float64: the row log-sum-exps are
accumulated, merged and stored in float64, the positive logits (and SupCon's class sums) are
float64 dot products, and the heads run in float64. The scales a multiply logit *differences*
(``a (S2 - max)``, exact near the maximum), never the logits themselves, and the backward forms
each weight as ``2^(a (s2 - h) - r)`` from the saved float64 log-sum-exp split into a float32
part h that the dominant logits cancel exactly and a small remainder r
(:func:`_split_weights`). A single float32 shift of the logits' magnitude (|a S2| ~ 10^7 for
unnormalized norm-100 features, t = 0.05, beta = 30) would be rounded to 0.5-1 in the exponent:
a 2^(+-0.5) error in every weight. With these, the float32 kernels are as accurate as the
dense float32 paths against a float64 reference (tests/losses/test_tiled_precision.py).

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

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from contrastlab._validation import (
    check_choice,
    check_positive_int,
)
from contrastlab.losses._common import (
    debiased_anchor_loss,
    reduce,
)
from contrastlab.losses.kernels.parallel import (
    MIN_SHARED_BLOCK_ROWS,
    deal,
    run_shared,
    strip_threads,
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


@dataclass(frozen=True, kw_only=True)
class BlockPlan:
    """What the kernel computes: which scales a, which columns each row masks, the per-row head.
    By default no column is masked, the weight is 1 and both gradients are formed."""

    inv_t: float
    scales: tuple[float, ...]  # 1 or 2 positive scales a
    mask_self: bool = False  # self-similarity: row i masks column i
    mask_shift: int | None = None  # also mask column (i + shift) % N (the other view)
    block_rows: int
    # head(lse (A, b), side (S, b)) -> (loss (b,), dloss/dlse (A, b), dloss/dside (S, b))
    head: Head
    weight: float = 1.0  # the loss is weight * sum_i loss_i (mean: 1/N)
    need_dq: bool = True
    need_dk: bool = True
    # self-similarity only, rows sorted by class: also mask the pairs of one class (N_i = the
    # other classes of SCL / HSCL, Jiang et al. 2023): the classes' row ranges [start, end), so
    # each strip masks a few rectangles, never an N x N (or strip-sized) label comparison
    segments: tuple[tuple[int, int], ...] | None = None
    # rows of a separate q that are a subset of k's rows (a data-parallel rank's own anchors):
    # the column of k that is q's row i (its self / shift masks sit there); None: row i itself
    row_ids: torch.Tensor | None = None


def _scaled_mm(a: torch.Tensor, b: torch.Tensor, alpha: float, out: torch.Tensor) -> torch.Tensor:
    """out = (alpha * a) @ b: the temperature on the block's few rows, not on its output."""
    return torch.mm(a * alpha, b, out=out)


def _mask_columns(plan: BlockPlan, r0: int, r1: int, n: int, device: torch.device) -> torch.Tensor:
    if plan.row_ids is None:
        rows = torch.arange(r0, r1, device=device)
    else:
        rows = plan.row_ids[r0:r1].to(device)
    cols = [rows] if plan.mask_self else []
    if plan.mask_shift is not None:
        cols.append((rows + plan.mask_shift) % n)
    return torch.stack(cols, dim=1)


def _block_exp(
    plan: BlockPlan,
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
        torch.sub(s, m, out=e)  # a (S2 - m): the scale on the differences, exact near the max
        if a != 1.0:
            e.mul_(a)
        e.exp2_()
        total = e.sum(dim=1)
        probs.append(e)
        lses.append((torch.log2(total.double()) + a * m.squeeze(1).double()) * LN2)
        invs.append(torch.where(total > 0, 1.0 / total, torch.zeros_like(total)))
    return probs, torch.stack(lses), torch.stack(invs)


def _add_block_grad(
    plan: BlockPlan,
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


def _buffers(plan: BlockPlan, rows: int, cols: int, like: torch.Tensor) -> list[torch.Tensor]:
    b = min(plan.block_rows, rows)
    return [like.new_empty(b, cols) for _ in range(1 + len(plan.scales))]


def _grads(plan: BlockPlan, q: torch.Tensor,
           k: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Zeroed (dQ, dK) accumulators; for a self-similarity (k None) dK is dQ itself."""
    dq = torch.zeros_like(q) if plan.need_dq or (k is None and plan.need_dk) else None
    dk = (dq if k is None else torch.zeros_like(k)) if plan.need_dk else None
    return dq, dk


def _merged(
    parts: list[tuple[torch.Tensor | None, torch.Tensor | None]], self_sim: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The threads' (dQ, dK) summed in thread order (:mod:`.parallel`); (dQ, None) for a
    self-similarity."""
    dq, dk = parts[0]
    for pq, pk in parts[1:]:
        if dq is not None and pq is not None:
            dq.add_(pq)
        if not self_sim and dk is not None and pk is not None:
            dk.add_(pk)
    return dq, (None if self_sim else dk)


def _thread_plan(plan: BlockPlan, x: torch.Tensor) -> BlockPlan:
    """``plan`` with its block rows divided among the threads that will share the blocks of
    ``x``'s rows (:mod:`.parallel`), so that their buffers together hold what one loop's would:
    sharing the work out costs no block memory. Unchanged for one thread. The symmetric engine
    must use the same plan forward and backward (the strips' diagonal blocks are read by rows
    in both, :func:`_strip_logits`): :class:`SymLSE` keeps it."""
    rows = x.shape[0]
    br = min(plan.block_rows, rows)
    threads = strip_threads(x, -(-rows // br))
    if threads == 1:
        return plan
    return dataclasses.replace(plan, block_rows=max(MIN_SHARED_BLOCK_ROWS, br // threads))


def _row_shares(plan: BlockPlan, q: torch.Tensor) -> list[list[int]]:
    """The row blocks' starts dealt to the threads that share them (:mod:`.parallel`)."""
    starts = list(range(0, q.shape[0], plan.block_rows))
    return deal(starts, strip_threads(q, len(starts)))


def _fused(
    plan: BlockPlan, q: torch.Tensor, k: torch.Tensor | None, side: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Forward with the gradient formed per block: (per-row loss, dQ, dK, dside)."""
    plan = _thread_plan(plan, q)
    per_row = q.new_empty(q.shape[0], dtype=torch.float64)
    dside = torch.zeros_like(side)
    parts = run_shared([functools.partial(_fused_part, plan, q, k, side, share, per_row, dside)
                        for share in _row_shares(plan, q)])
    dq, dk = _merged(parts, k is None)
    return per_row, dq, dk, dside


def _fused_part(
    plan: BlockPlan, q: torch.Tensor, k: torch.Tensor | None, side: torch.Tensor,
    starts: list[int], per_row: torch.Tensor, dside: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`_fused` of the row blocks at ``starts`` (a thread's share): their rows of
    ``per_row`` and ``dside`` in place, their (dQ, dK) contributions returned."""
    kk = q if k is None else k
    rows, cols = q.shape[0], kk.shape[0]
    bufs = _buffers(plan, rows, cols, q)
    dq, dk = _grads(plan, q, k)
    for r0 in starts:
        r1 = min(rows, r0 + plan.block_rows)
        probs, lse, inv = _block_exp(plan, q[r0:r1], kk, r0, bufs)
        loss, g_lse, g_side = plan.head(lse, side[:, r0:r1])
        per_row[r0:r1] = loss
        dside[:, r0:r1] = g_side * plan.weight
        coef = (g_lse * plan.weight * lse.new_tensor(plan.scales).unsqueeze(1)).to(q.dtype) * inv
        _add_block_grad(plan, probs, coef, q[r0:r1], kk, None if dq is None else dq[r0:r1], dk)
    return dq, dk


def _row_lse(plan: BlockPlan, q: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
    """The (A, rows) log-sum-exps, block by block."""
    plan = _thread_plan(plan, q)
    out = q.new_empty(len(plan.scales), q.shape[0], dtype=torch.float64)
    run_shared([functools.partial(_row_lse_part, plan, q, k, share, out)
                for share in _row_shares(plan, q)])
    return out


def _row_lse_part(plan: BlockPlan, q: torch.Tensor, k: torch.Tensor | None, starts: list[int],
                  out: torch.Tensor) -> None:
    """:func:`_row_lse` of the row blocks at ``starts``, into their columns of ``out``."""
    kk = q if k is None else k
    rows, cols = q.shape[0], kk.shape[0]
    bufs = _buffers(plan, rows, cols, q)
    for r0 in starts:
        r1 = min(rows, r0 + plan.block_rows)
        _, lse, _ = _block_exp(plan, q[r0:r1], kk, r0, bufs)
        out[:, r0:r1] = lse


def _lse_backward(
    plan: BlockPlan, q: torch.Tensor, k: torch.Tensor | None, g_lse: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of sum_{a,i} g_lse[a, i] * L_a(i) by recomputing the blocks."""
    plan = _thread_plan(plan, q)
    g_lse = g_lse.to(q.dtype)
    parts = run_shared([functools.partial(_lse_backward_part, plan, q, k, g_lse, share)
                        for share in _row_shares(plan, q)])
    return _merged(parts, k is None)


def _lse_backward_part(
    plan: BlockPlan, q: torch.Tensor, k: torch.Tensor | None, g_lse: torch.Tensor,
    starts: list[int],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`_lse_backward` of the row blocks at ``starts``: their (dQ, dK) contributions."""
    kk = q if k is None else k
    rows, cols = q.shape[0], kk.shape[0]
    bufs = _buffers(plan, rows, cols, q)
    dq, dk = _grads(plan, q, k)
    scales = g_lse.new_tensor(plan.scales).unsqueeze(1)
    for r0 in starts:
        r1 = min(rows, r0 + plan.block_rows)
        probs, _, inv = _block_exp(plan, q[r0:r1], kk, r0, bufs)
        _add_block_grad(plan, probs, g_lse[:, r0:r1] * scales * inv, q[r0:r1], kk,
                        None if dq is None else dq[r0:r1], dk)
    return dq, dk


def _strip(buf: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous (rows, cols) view at the start of a flat buffer."""
    return buf[: rows * cols].view(rows, cols)


def _mask_strip(plan: BlockPlan, s: torch.Tensor, b0: int, n: int) -> None:
    """Set the masked entries of strip rows b0.. (columns b0..n-1) to -inf: each row's own
    masked columns that lie in the strip. The masks are symmetric (i <-> i, i <-> i + B, the
    class blocks), so a masked pair left of a strip is masked in the strip of its column."""
    bs = s.shape[0]
    if plan.mask_shift is not None:
        # row i's column (i + shift) % n: strip entries (r, r + shift), or (r, r + shift - n)
        # after the wrap (the columns before b0 are not in the strip): two diagonals
        s.diagonal(plan.mask_shift).fill_(float("-inf"))
        s.diagonal(plan.mask_shift - n).fill_(float("-inf"))
    if plan.mask_self:
        s.diagonal().fill_(float("-inf"))
    if plan.segments is not None:
        b1 = b0 + bs
        for c0, c1 in plan.segments:
            if c1 <= b0 or c0 >= b1:
                continue
            # rows max(c0, b0)..min(c1, b1) x columns max(c0, b0)..c1 (strip columns start at b0)
            s[max(c0, b0) - b0 : min(c1, b1) - b0, max(c0, b0) - b0 : c1 - b0] = float("-inf")


def _strip_logits(
    plan: BlockPlan, z: torch.Tensor, b0: int, b1: int, buf: torch.Tensor
) -> torch.Tensor:
    """The masked base-2 logits S2 = Z_b Z^T log2(e) / t of strip rows b0..b1 (columns b0..N).

    Its diagonal block (columns b0..b1) is **not** symmetric in float32 (the scale rides on the
    strip's rows, so s2_ij and s2_ji round differently): the forward and the backward read it
    by rows only (the row sums of L(i) from row i, and the backward's column weights of that
    block as the transpose of its row weights), so that L(j) and the weights of j see the same
    float32 logits; a 1-ulp mismatch would be a 2^(+-0.5) error at logits of magnitude 10^6."""
    n = z.shape[0]
    s = _scaled_mm(z[b0:b1], z[b0:].T, plan.inv_t * LOG2E, _strip(buf, b1 - b0, n - b0))
    _mask_strip(plan, s, b0, n)
    return s


def _sym_lse(plan: BlockPlan, z: torch.Tensor) -> torch.Tensor:
    """Base-2 row log-sum-exps L2_a(i) = log2 sum_j 2^(a s2_ij) (A, N), **in float64**, of a
    self-similarity matrix from its upper strips only: strip b (rows b0..b1, columns b0..N)
    gives the row sums of its rows and, by symmetry, the column sums of rows b1..N. Half the
    products of a full pass.

    Per strip, in base 2 (S2 = S log2 e; ``exp2`` is ~4x faster than ``exp`` on CPU): one row
    max m, E = 2^(a (S2 - m)), the row sums of E, and the column sums as one matrix-vector
    product, sum_i 2^(a s2_ij - G) = sum_i E_ij 2^(a m_i - G) with G = max_i a m_i. A column
    whose sum falls below 1e-20 (its terms could have underflowed) and a strip with a fully
    masked row are redone with per-column maxima.

    Precision (what the backward, :func:`_sym_lse_backward`, needs: its weights
    2^(a s2_ij - L2_i) must cancel exactly against the logits): the scale a multiplies the
    **differences** S2 - m, which are exact near the maximum, never a S2 itself (whose rounding
    is a |S2| ulps: at beta = 30 the two log-sum-exps of the debiased loss would each carry 31
    times the logits' rounding, and their difference too); the O(N) bookkeeping is float64
    (a m exact, each partial sum's log2 in float64, the factors 2^(a m_i - G) in float64, the
    merges a float64 ``logaddexp2``). So L2 carries the float32 sums' relative error and the
    logits' own rounding, not that of a float32 number of the logits' magnitude (an ulp of
    10^6 is 0.06: a 4 % error in every weight).
    """
    n = z.shape[0]
    br = min(plan.block_rows, n)
    starts = list(range(0, n, br))
    shares = deal(starts, strip_threads(z, len(starts)))
    parts = run_shared([functools.partial(_sym_lse_part, plan, z, share) for share in shares])
    out = parts[0]
    for part in parts[1:]:  # merged in thread order: the same bits for a given thread count
        torch.logaddexp2(out, part, out=out)
    return out


def _sym_lse_part(plan: BlockPlan, z: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """:func:`_sym_lse` of the strips starting at ``starts`` (its share of a thread,
    :mod:`~contrastlab.losses.kernels.parallel`): their (A, N) partial base-2 log-sum-exps."""
    n = z.shape[0]
    br = min(plan.block_rows, n)
    buf_s = z.new_empty(br * n)
    buf_e = z.new_empty(br * n)
    out = torch.full((len(plan.scales), n), float("-inf"), dtype=torch.float64, device=z.device)
    for b0 in starts:
        b1 = min(n, b0 + br)
        bs, w = b1 - b0, n - b0
        s = _strip_logits(plan, z, b0, b1, buf_s)
        m1 = s.amax(dim=1, keepdim=True)
        masked_row = bool((m1 == float("-inf")).any())
        for ai, a in enumerate(plan.scales):
            e = _strip(buf_e, bs, w)
            col: torch.Tensor | None
            if masked_row:  # (rare: tiny batches) per-row and per-column maxima
                row = _lse2_exact(s, a, 1)
                col = _lse2_exact(s[:, bs:], a, 0) if w > bs else None
            else:
                torch.sub(s, m1, out=e)
                if a != 1.0:
                    e.mul_(a)
                e.exp2_()
                ma = m1.squeeze(1).double() * a
                row = torch.log2(e.sum(dim=1).double()).add_(ma)
                col = None
                if w > bs:
                    g = ma.max()
                    colsum = torch.mv(e[:, bs:].T, torch.exp2(ma - g).to(e.dtype))
                    col = torch.log2(colsum.double()).add_(g)
                    low = colsum < 1e-20
                    if bool(low.any()):
                        col[low] = _lse2_exact(s[:, bs:][:, low], a, 0)
            torch.logaddexp2(out[ai, b0:b1], row, out=out[ai, b0:b1])
            if col is not None:
                torch.logaddexp2(out[ai, b1:], col, out=out[ai, b1:])
    return out


def _lse2_exact(x: torch.Tensor, a: float, dim: int) -> torch.Tensor:
    """log2 sum 2^(a x) along ``dim`` (float64), with the maxima taken per slice (a fully
    masked slice gives -inf); the scale on the differences, as in :func:`_sym_lse`."""
    m = x.amax(dim=dim, keepdim=True)
    m.masked_fill_(m == float("-inf"), 0.0)
    sums = torch.sub(x, m).mul_(a).exp2_().sum(dim=dim)
    return torch.log2(sums.double()).add_(m.squeeze(dim).double() * a)


#: The backward folds a row's whole exponent shift into one float32 number (one subtraction per
#: weight instead of two) when every shift and every possible logit a |S2| is below this: its
#: rounding then costs at most 2^-20 in the exponent (7e-7 relative), as the rest of float32.
#: Above (t = 0.05 on the sphere, beta > 0, unnormalized features) the shift is split.
FOLD_MAX_EXPONENT = 16.0


class _Weights(NamedTuple):
    """How the backward forms the weights of one scale a, W_ij = c_i 2^(a s2_ij - L2_i), up to
    the strip-wide factor 2^k (:func:`_split_weights`): ``2^(a (s2_ij - h_i) - r_i)``, or
    ``2^(a s2_ij - shift_i)`` when ``h`` is None; times ``sign`` (the coefficient folded into
    r or shift), or times ``coef_i`` when ``sign == 0``."""

    h: torch.Tensor | None  # (N,) L2 / a in the compute dtype (0 for an empty row); None: one shift
    neg_r: torch.Tensor  # (N,) -r, or -shift (h None); -inf: weight 0
    sign: float  # +1 or -1 (the sign of every c, folded), or 0 (the weights times coef)
    coef: torch.Tensor  # (N,) c in the compute dtype (used when sign == 0)


def _split_weights(
    lse2: torch.Tensor, coef: torch.Tensor, a: float, dtype: torch.dtype, fold: bool, k: int,
    logit_bound: float,
) -> _Weights:
    """The exponent of one scale's weights c_i 2^(a s2_ij - L2_i) / 2^k (2^k: a power of two
    that the backward's products multiply back, exactly), split in two: ``h`` (in units of S2),
    the row's log-sum-exp over a, which the dominant logits cancel exactly (s2 - h is exact near
    the maximum), and a small remainder r (float64, then rounded) that carries the sub-ulp part
    of L2 and, with ``fold`` and one sign, log2|c_i| - k. Folding everything into one float32
    shift (``L2 - log2 c``, as an earlier version did) rounds it to an ulp of the logits'
    magnitude: at |a S2| ~ 10^6-10^7 a 2^(+-0.5) error in every weight of a row, the cause of the
    94 % gradient error of ``tiled_debiased_hard`` at beta = 30, t = 0.05, norm-100 features.
    Where that rounding is harmless (every shift and ``logit_bound`` >= max |a S2| below
    :data:`FOLD_MAX_EXPONENT`) the shift is one number (``h`` None): one pass less per weight.

    ``fold=False`` (two scales whose gradients cancel: the debiased loss with beta > 0, where
    d/dS = c_{1+beta} softmax((1 + beta) S) + c_beta softmax(beta S) and c_beta ~ -beta / (1 +
    beta) c_{1+beta}): the coefficients multiply weights that are exactly 1 on a saturated row,
    as on the dense path, instead of entering an exponent (a rounding of log2|c| there would be
    amplified (1 + 2 beta) times by the cancellation); there k = 0."""
    finite = torch.isfinite(lse2)
    if not fold:
        sign = 0.0
    elif bool((coef >= 0).all()):
        sign = 1.0
    elif bool((coef <= 0).all()):
        sign = -1.0
    else:
        sign = 0.0
    inf = torch.full_like(lse2, float("inf"))
    shift = lse2 + k
    if sign != 0.0:
        shift = torch.where(coef != 0, shift - torch.log2(coef.abs()), inf)
    shift = torch.where(finite, shift, inf)  # an empty row: weight 0
    live = torch.isfinite(shift)
    top = float(shift[live].abs().max()) if bool(live.any()) else 0.0
    if sign != 0.0 and max(top, logit_bound) < FOLD_MAX_EXPONENT:
        return _Weights(None, (-shift).to(dtype), sign, coef.to(dtype))
    h = torch.where(finite, lse2 / a, torch.zeros_like(lse2)).to(dtype)
    neg_r = (a * h.double() - shift).to(dtype)
    return _Weights(h, neg_r, sign, coef.to(dtype))


def _sym_lse_backward(
    plan: BlockPlan, z: torch.Tensor, lse2: torch.Tensor, g_lse: torch.Tensor
) -> torch.Tensor:
    """dz for sum_{a,i} g_lse[a, i] L_a(i): dZ = (W + W^T) Z / t with W = sum_a c_a softmax(a S),
    formed strip by strip: M = W_strip + (W^T)_strip, dZ_b += M Z_strip, dZ_right += M^T Z_b.
    One gradient product per similarity instead of two. Exponentials in base 2 (see
    :func:`_sym_lse`; ``lse2`` is its float64 base-2 output); each weight is
    ``2^(a (s2 - h) - r)`` (:func:`_split_weights`), three passes over the strip. The columns of
    W^T are formed right of the strip's diagonal block only; on that block (W^T)_strip is the
    transpose of its rows of W, from the same float32 logits as the forward (see
    :func:`_strip_logits`), and costs one transposed add instead of four passes."""
    n = z.shape[0]
    br = min(plan.block_rows, n)
    coef = g_lse.double() * g_lse.new_tensor(plan.scales, dtype=torch.float64).unsqueeze(1)
    # scales without a gradient (e.g. a detached log-sum-exp computed alongside) are skipped
    active = [ai for ai in range(len(plan.scales)) if bool((coef[ai] != 0).any())]
    dz = torch.zeros_like(z)
    if not active:
        return dz
    fold = len(active) == 1
    k = 0
    if fold:  # the weights scaled by 2^-k ~ 1 / max|c|: small shifts
        big = float(coef[active[0]].abs().max())
        k = round(math.log2(big)) if 0.0 < big < float("inf") else 0
    # |a s2| <= a max ||z||^2 log2(e) / t (Cauchy-Schwarz)
    bound = float(torch.linalg.vector_norm(z, dim=1).max()) ** 2 * plan.inv_t * LOG2E
    specs = {
        ai: _split_weights(
            lse2[ai], coef[ai], plan.scales[ai], z.dtype, fold, k, plan.scales[ai] * bound
        )
        for ai in active
    }
    # M accumulates ref * W / 2^k; the products' alpha puts the sign and 2^k back
    ref = specs[active[0]].sign or 1.0
    alpha = plan.inv_t * ref * 2.0**k
    starts = list(range(0, n, br))
    shares = deal(starts, strip_threads(z, len(starts)))
    parts = run_shared([functools.partial(_sym_backward_part, plan, z, specs, active, ref, alpha,
                                          share) for share in shares])
    dz = parts[0]
    for part in parts[1:]:  # summed in thread order: the same bits for a given thread count
        dz.add_(part)
    return dz


def _sym_backward_part(
    plan: BlockPlan,
    z: torch.Tensor,
    specs: dict[int, _Weights],
    active: list[int],
    ref: float,
    alpha: float,
    starts: list[int],
) -> torch.Tensor:
    """:func:`_sym_lse_backward` of the strips starting at ``starts`` (a thread's share): their
    contribution to dZ."""
    n = z.shape[0]
    br = min(plan.block_rows, n)
    dz = torch.zeros_like(z)
    buf_s = z.new_empty(br * n)
    buf_m = z.new_empty(br * n)
    buf_e = z.new_empty(br * n)
    for b0 in starts:
        b1 = min(n, b0 + br)
        bs, w = b1 - b0, n - b0
        s = _strip_logits(plan, z, b0, b1, buf_s)
        m = _strip(buf_m, bs, w)
        for rank, ai in enumerate(active):
            a = plan.scales[ai]
            sp = specs[ai]
            rel = sp.sign * ref  # +-1 relative to M's sign; 0: mixed signs (coef applied)
            target = m if rank == 0 else _strip(buf_e, bs, w)
            # rows of W: c_i 2^(a (s2_ij - h_i) - r_i)
            _weights_(s, sp.h, sp.neg_r, b0, b1, a, 1, target)
            if rel == 0.0:
                target.mul_(sp.coef[b0:b1].unsqueeze(1) * ref)
            if rank > 0:
                m.add_(target, alpha=rel or 1.0)
            if w == bs:
                continue
            # columns of W^T right of the diagonal block: c_j 2^(a (s2_ij - h_j) - r_j)
            e = _weights_(s[:, bs:], sp.h, sp.neg_r, b1, n, a, 0, _strip(buf_e, bs, w - bs))
            if rel == 0.0:
                m[:, bs:].addcmul_(e, sp.coef[b1:].unsqueeze(0), value=ref)
            else:
                m[:, bs:].add_(e, alpha=rel)
        diag = m[:, :bs]
        diag.add_(diag.T.clone())  # the diagonal block's W^T: its rows of W, transposed
        dz[b0:b1].addmm_(m, z[b0:], alpha=alpha)
        if w > bs:
            dz[b1:].addmm_(m[:, bs:].T, z[b0:b1], alpha=alpha)
    return dz


def _weights_(
    s: torch.Tensor,
    h: torch.Tensor | None,
    neg_r: torch.Tensor,
    i0: int,
    i1: int,
    a: float,
    dim: int,
    out: torch.Tensor,
) -> torch.Tensor:
    """out = 2^(a (s - h) - r) (or 2^(a s - shift), h None) with the per-row (dim 1) or
    per-column (dim 0) h and r of rows i0..i1 (:class:`_Weights`)."""
    r = neg_r[i0:i1].unsqueeze(dim)
    if h is None:
        if a == 1.0:
            return torch.add(s, r, out=out).exp2_()
        return torch.add(r, s, alpha=a, out=out).exp2_()
    torch.sub(s, h[i0:i1].unsqueeze(dim), out=out)
    return torch.add(r, out, alpha=a, out=out).exp2_()


class SymLSE(torch.autograd.Function):
    """Masked row log-sum-exps (A, N) of the self-similarity z z^T / t, from the upper strips,
    returned in float64 (natural log; the heads work in float64); the backward recomputes the
    strips and forms (W + W^T) strip by strip from the float64 base-2 log-sum-exps."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, plan: BlockPlan) -> torch.Tensor:
        plan = _thread_plan(plan, z)  # the same strips in the backward (ctx.plan)
        lse2 = _sym_lse(plan, z.detach())
        ctx.plan = plan
        ctx.save_for_backward(z, lse2)
        return lse2 * LN2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_lse: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, lse2 = ctx.saved_tensors
        return _sym_lse_backward(ctx.plan, z, lse2, g_lse.contiguous()), None


class _FusedLoss(torch.autograd.Function):
    """weight * sum_i head_i(L(i), side_i), gradients formed in the forward pass."""

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor | None, side: torch.Tensor, plan: BlockPlan
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
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor | None, plan: BlockPlan) -> torch.Tensor:
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


def head_lse_minus_side(
    lse: torch.Tensor, side: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss = L(i) - side(i) (InfoNCE: side = s_pos; SupCon: side = mean positive logit)."""
    return lse[0] - side[0], torch.ones_like(lse), -torch.ones_like(side)


def head_logaddexp(
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


def head_debiased(t: float, tau: float, log_n: float) -> Head:
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


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def loss_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of a loss of ``x``: float64 for float64 inputs, float32 otherwise (bfloat16 /
    float16 inputs are computed in float32 and so is their loss, as on the dense paths)."""
    return compute_dtype(x)


def run_blocks(
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
    row_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """factor * reduce_i head_i(...) over the rows of q. The engines return float64 row
    log-sum-exps, so the heads (and ``side``, float64 for the in-batch losses) work in float64:
    O(N), and the differences they take (e.g. L_{1+beta} - L_beta, L - s_pos) do not lose the
    float32 rounding of the logits' magnitude. The result is cast to ``out_dtype``.

    ``row_ids`` (with a separate ``k``): q's rows are rows ``row_ids`` of k (a subset of the
    anchors of a self-similarity loss, e.g. one data-parallel rank's own anchors), so the self
    and shift masks of q's row i fall on k's columns ``row_ids[i]`` and
    ``(row_ids[i] + mask_shift) % len(k)``."""
    if row_ids is not None and (k is None or row_ids.shape != (q.shape[0],)):
        raise ValueError("row_ids needs a separate k and one column index per row of q")
    rows = q.shape[0]
    cols = rows if k is None else k.shape[0]
    br = (
        default_block_rows(rows, cols, q.shape[1])
        if block_rows is None
        else check_positive_int("block_rows", block_rows)
    )
    grad_on = torch.is_grad_enabled()
    plan = BlockPlan(
        inv_t=1.0 / t,
        scales=scales,
        mask_self=mask_self,
        mask_shift=mask_shift,
        block_rows=br,
        head=head,
        weight=row_weight(reduction, rows, factor),
        need_dq=grad_on and q.requires_grad,
        need_dk=grad_on and (q.requires_grad if k is None else k.requires_grad),
        row_ids=row_ids,
    )
    if k is None and SELF_SIMILARITY_METHOD == "symmetric":
        lse = SymLSE.apply(q, plan)
    elif reduction == "none":
        lse = _RowLSE.apply(q, k, plan)
    else:
        total, _ = _FusedLoss.apply(q, k, side, plan)
        return total.to(out_dtype)
    return reduce_rows(autograd_head(head, lse, side), reduction, factor, out_dtype)


def row_weight(reduction: str, rows: int, factor: float = 1.0) -> float:
    """The weight of each row's loss in a fused total ``weight * sum_i loss_i``: ``factor / rows``
    for ``reduction="mean"``, ``factor`` otherwise."""
    return factor / rows if reduction == "mean" else factor


def reduce_rows(per_row: torch.Tensor, reduction: str, factor: float,
                out_dtype: torch.dtype) -> torch.Tensor:
    """``factor`` times the per-row losses, reduced (:func:`contrastlab.losses._common.reduce`)
    and cast to ``out_dtype``: the loss when the rows' heads are formed (``reduction="none"``,
    or the fused kernels)."""
    return reduce(per_row * factor, reduction).to(out_dtype)


def autograd_head(
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


class _RowNormalize(torch.autograd.Function):
    """z / max(||z||, floor) row-wise with a fused backward: g - zn (zn . g), over the norm, for
    the rows beyond the floor, g / floor for the others (floor = 1e-12 on the sphere, 1 for the
    ball); the same values and gradients as :func:`contrastlab.losses.normalize`."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, floor: float) -> torch.Tensor:
        zn, denom, projected = normalize_rows(z, floor)
        ctx.save_for_backward(zn, denom, projected)
        return zn

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        zn, denom, projected = ctx.saved_tensors
        return normalize_rows_backward(g.clone(), zn, denom, projected), None


def normalize_rows(z: torch.Tensor, floor: float) -> tuple[torch.Tensor, ...]:
    """(z / max(||z||, floor), the denominators, whether the norm exceeds the floor) per row."""
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    denom = norm.clamp_min(floor)
    return z / denom, denom, norm > floor


def normalize_rows_backward(
    g: torch.Tensor, zn: torch.Tensor, denom: torch.Tensor, projected: torch.Tensor
) -> torch.Tensor:
    """The gradient through :func:`normalize_rows`, in place on g: (g - zn (zn . g)) / norm
    on the rows beyond the floor, g / floor on the others."""
    proj = torch.linalg.vecdot(zn, g, dim=1).unsqueeze(1).mul_(projected)
    return g.addcmul_(zn, proj, value=-1.0).div_(denom)


def norm_floor(kind: str) -> float | None:
    """The floor of normalization ``kind`` (checked) in z / max(||z||, floor): 1e-12 on the
    sphere (:func:`contrastlab.losses.normalize`'s ``eps``), 1 for the ball, None for ``none``."""
    check_choice("normalize", kind, NORMALIZATIONS)
    return {"sphere": 1e-12, "ball": 1.0}.get(kind)


def rows_normalized(z: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`contrastlab.losses.normalize` of the rows of a (n, d) tensor, fused."""
    floor = norm_floor(kind)
    if floor is None:
        return z
    return _RowNormalize.apply(z, floor)


#: the score losses of NCE that the tiled kernels compute (shared pool and indexed pool)
TILED_NCE_LOSSES = ("logistic", "infonce", "infonce-mean")

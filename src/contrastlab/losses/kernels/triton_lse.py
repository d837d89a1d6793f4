# mypy: allow-untyped-defs
"""Triton kernels: masked row log-sum-exps of ``X Y^T`` and their gradient, flash-style (no
N x N or B x k matrix in memory). Imported only by :mod:`contrastlab.losses.kernels.fused`,
lazily (this module needs ``triton``; the package imports without it).

The method is that of FlashAttention (Dao et al. 2022, Algorithm 1; Dao 2023, the backward
from the saved row log-sum-exp) and of Inf-CL (Cheng et al. 2024, "Breaking the Memory Barrier",
section 3: the contrastive loss needs only the row log-sum-exps of the similarity matrix):

- **forward** (:func:`row_lse2`): one program per block of ``block_m`` rows of X; the columns
  (rows of Y) are visited ``block_n`` at a time, the logits tile ``S2 = scale2 * X_b Y_c^T`` is
  formed with ``tl.dot`` (float32 accumulation; the feature dimension in chunks of ``block_d``),
  masked entries set to -inf, and the row maximum m and the row sum l of ``2^(S2 - m)`` are
  updated online (``l <- l 2^(m_old - m_new) + sum 2^(S2 - m_new)``). Out: ``L2 = m + log2 l``
  per row (base 2: ``scale2 = a log2(e) / t`` carries log2(e), so every exponential is an
  ``exp2``; a row with every entry masked has L2 = -inf).
- **backward** (:func:`row_lse2_grad`): for ``loss = sum_i c_i L_i`` (``c`` the incoming
  gradient of the natural-log LSE), ``dX_i = (a / t) sum_j W_ij Y_j`` with
  ``W_ij = c_i 2^(S2_ij - L2_i)`` (the ``row`` term) and, when X = Y (self-similarity), also
  ``(W^T)_ij = c_j 2^(S2_ij - L2_j)`` (the ``col`` term, the masks being symmetric): one program
  per (row block, feature chunk of ``block_do``) rebuilds each logits tile from X, Y and the
  saved L2, forms ``W (+ W^T)`` in registers and accumulates ``W Y_c`` in float32. For X != Y
  (a pool of negatives) ``dY`` is the same kernel with the roles swapped (the ``col`` term only).
  Self-similarity: 2 N^2 d multiply-adds in the backward and N^2 d in the forward, as a dense
  forward + backward, with two exponentials per entry in the backward.

Precision: the logits are float32 (``tl.dot`` with a float32 accumulator). Operands:

- bfloat16 / float16: the products in that dtype on tensor cores (exact products, float32
  accumulation); the backward's weights W are cast to bfloat16 for the second product (as
  FlashAttention does with P; relative rounding 2^-9 per weight), or, for float16 operands,
  kept in float32 and multiplied in TF32 (float16's range is too narrow for softmax weights of
  order 1 / N: at N = 2^18 they would be subnormal);
- float32: ``input_precision="ieee"`` (full float32 products), or ``"tf32"`` when asked for.

Under the interpreter (``TRITON_INTERPRET=1``, CPU tensors) ``tl.dot`` of bfloat16 operands is
not supported correctly (nor the rounding of float32 to bfloat16), so there the bfloat16 operands
are widened to float32 (exact) and the weights rounded to bfloat16 by bit operations
(round-to-nearest-even): the same arithmetic as on the GPU up to the accumulation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)

#: ``tl.dot`` modes of the logits product: operands in their own 16-bit dtype; float32 IEEE;
#: float32 TF32; bfloat16 widened to float32 (the interpreter)
DOT_NATIVE, DOT_IEEE, DOT_TF32, DOT_WIDEN = 0, 1, 2, 3
#: modes of the backward's weight product ``W Y``: W cast to Y's 16-bit dtype; float32 IEEE;
#: float32 TF32; W rounded to bfloat16 by bit operations, float32 IEEE (the interpreter)
W_NATIVE, W_IEEE, W_TF32, W_EMULATE_BF16 = 0, 1, 2, 3


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch parameters (powers of two; ``tl.dot`` needs tiles >= 16)."""

    block_m: int = 128  # forward: rows per program
    block_n: int = 64  # forward: columns per step
    block_d: int = 128  # the feature chunk of the logits' product (both passes)
    bwd_block_m: int = 64  # backward: rows per program
    bwd_block_n: int = 64  # backward: columns per step
    block_do: int = 128  # backward: the feature chunk of the gradient accumulator
    num_warps: int = 8
    num_stages: int = 2


def default_config(d: int) -> KernelConfig:
    """The default tiles for feature dimension d: the whole of d <= 128 in one chunk; beyond,
    chunks of 128 for the logits and 256 for the backward accumulator (64 x 256 float32 per
    program). Not tuned on a GPU here (see benchmarks/bench_fused.py)."""
    p2 = max(16, triton.next_power_of_2(d))
    return KernelConfig(block_d=min(p2, 128), block_do=min(p2, 256 if d > 128 else 128))


def dot_modes(dtype: torch.dtype, device: torch.device, tf32: bool) -> tuple[int, int]:
    """(logits mode, weights mode) for operands of ``dtype`` (see the module docstring)."""
    interpret = device.type == "cpu"
    if dtype == torch.bfloat16:
        return (DOT_WIDEN, W_EMULATE_BF16) if interpret else (DOT_NATIVE, W_NATIVE)
    if dtype == torch.float16:
        return DOT_NATIVE, W_TF32
    if dtype == torch.float32:
        return (DOT_TF32, W_TF32) if tf32 else (DOT_IEEE, W_IEEE)
    raise ValueError(f"the Triton kernels take float32, bfloat16 or float16 operands; got {dtype}")


@triton.jit
def round_to_bf16(x):
    """float32 -> the nearest bfloat16 value (ties to even), as float32 (finite x)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits & 0xFFFF0000).to(tl.float32, bitcast=True)


@triton.jit
def mma_logits(a, b, acc, DOT: tl.constexpr):
    """acc + a @ b with a float32 accumulator, in the mode DOT."""
    if DOT == 0:
        out = tl.dot(a, b, acc)
    elif DOT == 1:
        out = tl.dot(a, b, acc, input_precision="ieee")
    elif DOT == 2:
        out = tl.dot(a, b, acc, input_precision="tf32")
    else:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return out


@triton.jit
def mma_weights(w, y, acc, WDOT: tl.constexpr):
    """acc + w @ y for float32 weights w, in the mode WDOT."""
    if WDOT == 0:
        out = tl.dot(w.to(y.dtype), y, acc)
    elif WDOT == 1:
        out = tl.dot(w, y, acc, input_precision="ieee")
    elif WDOT == 2:
        out = tl.dot(w, y.to(tl.float32), acc, input_precision="tf32")
    else:
        out = tl.dot(round_to_bf16(w), y.to(tl.float32), acc, input_precision="ieee")
    return out


@triton.jit
def logits_tile(x_ptr, y_ptr, rows, cols, n_rows, n_cols, d, sx, sy, scale2,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                DOT: tl.constexpr):
    """scale2 * X[rows] Y[cols]^T (float32), the feature dimension in chunks of BLOCK_D."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * sx
    y_cols = y_ptr + cols.to(tl.int64)[None, :] * sy
    rmask = rows < n_rows
    cmask = cols < n_cols
    for k0 in range(0, d, BLOCK_D):
        ks = k0 + tl.arange(0, BLOCK_D)
        kmask = ks < d
        xt = tl.load(x_rows + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        yt = tl.load(y_cols + ks[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc = mma_logits(xt, yt, acc, DOT)
    return acc * scale2


@triton.jit
def valid_entries(rows, cols, n_rows, n_cols, shift,
                  MASK_SELF: tl.constexpr, MASK_SHIFT: tl.constexpr):
    """The (rows, cols) entries in range and not masked: j == i (MASK_SELF) and
    j == (i + shift) mod n_rows (MASK_SHIFT: the other view of the 2B stacked rows)."""
    ok = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    if MASK_SELF:
        ok = ok & (cols[None, :] != rows[:, None])
    if MASK_SHIFT:
        partner = rows + shift
        partner = tl.where(partner >= n_rows, partner - n_rows, partner)
        ok = ok & (cols[None, :] != partner[:, None])
    return ok


@triton.jit
def row_lse_kernel(x_ptr, y_ptr, out_ptr, n_rows, n_cols, d, sx, sy, scale2, shift,
                   MASK_SELF: tl.constexpr, MASK_SHIFT: tl.constexpr, DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[i] = log2 sum_{j valid} 2^(scale2 x_i . y_j) for the rows of one block (online)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        s = logits_tile(x_ptr, y_ptr, rows, cols, n_rows, n_cols, d, sx, sy, scale2,
                        BLOCK_M, BLOCK_N, BLOCK_D, DOT)
        s = tl.where(valid_entries(rows, cols, n_rows, n_cols, shift, MASK_SELF, MASK_SHIFT),
                     s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # no valid entry yet: sum stays 0
        total = total * tl.exp2(m - m_ref) + tl.sum(tl.exp2(s - m_ref[:, None]), axis=1)
        m = m_new
    lse2 = tl.where(total > 0.0, m + tl.log2(tl.where(total > 0.0, total, 1.0)), float("-inf"))
    tl.store(out_ptr + rows, lse2, mask=rows < n_rows)


@triton.jit
def row_lse_grad_kernel(x_ptr, y_ptr, dx_ptr, lr_ptr, cr_ptr, lc_ptr, cc_ptr,
                        n_rows, n_cols, d, sx, sy, sdx, scale2, out_scale, shift,
                        MASK_SELF: tl.constexpr, MASK_SHIFT: tl.constexpr,
                        USE_ROW: tl.constexpr, USE_COL: tl.constexpr,
                        DOT: tl.constexpr, WDOT: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_DO: tl.constexpr):
    """dX[rows, chunk] = out_scale * sum_j (W_ij + W'_ij) Y[j, chunk] with the row term
    W_ij = cr_i 2^(S2_ij - lr_i) (USE_ROW) and the column term W'_ij = cc_j 2^(S2_ij - lc_j)
    (USE_COL); S2 rebuilt tile by tile, masked entries weigh 0 (also where L2 = -inf)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    od = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    rmask = rows < n_rows
    omask = od < d
    lr = tl.zeros((BLOCK_M,), dtype=tl.float32)
    cr = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if USE_ROW:
        lr = tl.load(lr_ptr + rows, mask=rmask, other=0.0)
        lr = tl.where(lr == float("-inf"), 0.0, lr)
        cr = tl.load(cr_ptr + rows, mask=rmask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        cmask = cols < n_cols
        s = logits_tile(x_ptr, y_ptr, rows, cols, n_rows, n_cols, d, sx, sy, scale2,
                        BLOCK_M, BLOCK_N, BLOCK_D, DOT)
        s = tl.where(valid_entries(rows, cols, n_rows, n_cols, shift, MASK_SELF, MASK_SHIFT),
                     s, float("-inf"))
        w = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if USE_ROW:
            w += cr[:, None] * tl.exp2(s - lr[:, None])
        if USE_COL:
            lc = tl.load(lc_ptr + cols, mask=cmask, other=0.0)
            lc = tl.where(lc == float("-inf"), 0.0, lc)
            cc = tl.load(cc_ptr + cols, mask=cmask, other=0.0)
            w += cc[None, :] * tl.exp2(s - lc[None, :])
        yt = tl.load(y_ptr + cols.to(tl.int64)[:, None] * sy + od[None, :],
                     mask=cmask[:, None] & omask[None, :], other=0.0)
        acc = mma_weights(w, yt, acc, WDOT)
    tl.store(dx_ptr + rows.to(tl.int64)[:, None] * sdx + od[None, :], acc * out_scale,
             mask=rmask[:, None] & omask[None, :])


@dataclass(frozen=True)
class Masks:
    """Which entries of row i are excluded: column i (``self``), column (i + shift) mod n."""

    self_: bool = False
    shift: int | None = None


def row_lse2(x: torch.Tensor, y: torch.Tensor, scale2: float, masks: Masks,
             cfg: KernelConfig, tf32: bool = False) -> torch.Tensor:
    """The (n_rows,) float32 base-2 log-sum-exps ``log2 sum_j 2^(scale2 x_i . y_j)`` over the
    unmasked j (-inf for a row with none). x, y: contiguous (n, d) of one operand dtype."""
    n_rows, d = x.shape
    out = torch.empty(n_rows, device=x.device, dtype=torch.float32)
    if n_rows == 0:
        return out
    dot, _ = dot_modes(x.dtype, x.device, tf32)
    grid = (triton.cdiv(n_rows, cfg.block_m),)
    row_lse_kernel[grid](
        x, y, out, n_rows, y.shape[0], d, x.stride(0), y.stride(0), scale2, masks.shift or 0,
        MASK_SELF=masks.self_, MASK_SHIFT=masks.shift is not None, DOT=dot,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


def row_lse2_grad(x: torch.Tensor, y: torch.Tensor, row: tuple[torch.Tensor, torch.Tensor] | None,
                  col: tuple[torch.Tensor, torch.Tensor] | None, scale2: float, masks: Masks,
                  cfg: KernelConfig, tf32: bool = False) -> torch.Tensor:
    """The float32 (n_rows, d) gradient ``(scale2 ln 2) sum_j (W_ij + W'_ij) y_j`` with the row
    term ``row = (L2, c)`` over the rows of x and the column term ``col = (L2, c)`` over the rows
    of y (see :func:`row_lse_grad_kernel`); at least one of them is given."""
    if row is None and col is None:
        raise ValueError("row_lse2_grad: give the row term, the column term or both")
    n_rows, d = x.shape
    out = torch.empty(n_rows, d, device=x.device, dtype=torch.float32)
    if n_rows == 0:
        return out
    dot, wdot = dot_modes(x.dtype, x.device, tf32)
    lr, cr = row if row is not None else (out, out)  # unused pointers when the term is off
    lc, cc = col if col is not None else (out, out)
    grid = (triton.cdiv(n_rows, cfg.bwd_block_m), triton.cdiv(d, cfg.block_do))
    row_lse_grad_kernel[grid](
        x, y, out, lr, cr, lc, cc, n_rows, y.shape[0], d, x.stride(0), y.stride(0),
        out.stride(0), scale2, scale2 * LN2, masks.shift or 0,
        MASK_SELF=masks.self_, MASK_SHIFT=masks.shift is not None,
        USE_ROW=row is not None, USE_COL=col is not None, DOT=dot, WDOT=wdot,
        BLOCK_M=cfg.bwd_block_m, BLOCK_N=cfg.bwd_block_n, BLOCK_D=cfg.block_d,
        BLOCK_DO=cfg.block_do, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out

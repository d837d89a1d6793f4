"""Exact expectation of log(1 + sum of k i.i.d. discrete variables), with its gradient.

For Y_1..Y_k i.i.d. taking the value y_j with probability p_j (j = 1..N), Frullani's integral
``log(1 + x) = int_0^inf e^{-u} (1 - e^{-x u}) / u du`` and independence give::

    E log(1 + sum_r Y_r) = int_0^inf e^{-u} (1 - M(u)^k) / u du,    M(u) = sum_j p_j e^{-u y_j}

a one-dimensional integral whatever k is (no enumeration of the N^k tuples). With u = e^w it is
``int_R exp(-e^w) (1 - M(e^w)^k) dw``, a smooth integrand that we integrate by composite
Gauss-Legendre quadrature (8 nodes per panel, panels of width <= 1) over a window outside of
which the integrand is below e^-40:

- below ``lo = -(max_j log y_j) - log k - 40`` the integrand is <= k y_max e^w (dropped, < e^-40);
- above ``hi``: either the factor exp(-e^w) is < e^-40 (w > log 40), or M(e^w)^k < e^-40
  (w > log(40 / k) - min_j log y_j) and the rest is the analytic tail E_1(e^hi) (exponential
  integral), added as a constant.

So the window's length is (max - min of log y over the support) + log k + ~85, whatever the
magnitude of the y's: for sphere-normalized features at temperature t the spread is <= 2/t.
The quadrature error is below 1e-10 while the spread is below ``max_panels`` (default 2048); a
wider spread (e.g. unnormalized features of norm 100) still yields a finite value, with panels
wider than 1 and a larger error. Everything is computed in float64, in log space
(``log M`` via log1p / log-sum-exp, ``1 - M^k`` via expm1), and is differentiable in log y.

This is the engine behind the ``exact=True`` forms of SCL/HSCL/UCL/HUCL
(:mod:`contrastlab.losses.scl`): there Y = exp(S_ij - S_ip) / k (mean over negatives).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from contrastlab._validation import check_positive_int

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_CUT = 40.0  # integrand dropped where it is below e^-40
_EULER_GAMMA = 0.5772156649015329


def _exp1_of_exp(w: np.ndarray) -> np.ndarray:
    """E_1(e^w) for an array of w, accurate also where e^w underflows."""
    from scipy.special import exp1

    out = np.empty_like(w)
    small = w < -30.0
    out[small] = -_EULER_GAMMA - w[small] + np.exp(w[small])
    out[~small] = exp1(np.exp(w[~small]))
    return out


def expected_log1p_sum(
    log_y: torch.Tensor,
    log_p: torch.Tensor,
    k: int,
    max_panels: int = 2048,
    chunk_elements: int = 1 << 22,
) -> torch.Tensor:
    """E log(1 + Y_1 + ... + Y_k) for i.i.d. discrete Y, row by row.

    Args:
        log_y: (R, N) log of the values y_j (any finite reals; entries with p_j = 0 ignored).
        log_p: (R, N) log-probabilities of the values, -inf for the values never drawn; each row
            must have at least one finite entry and sum (in probability) to 1. Treated as a
            constant (no gradient flows into the law).
        k: the number of i.i.d. draws, k >= 1.
        max_panels: cap on quadrature panels per row (see the module docstring).
        chunk_elements: rows are processed in chunks of at most this many (R x nodes x N)
            float64 elements, to bound memory.

    Returns:
        (R,) expectations in the dtype of ``log_y``, differentiable with respect to ``log_y``.
    """
    check_positive_int("k", k)
    if log_y.shape != log_p.shape or log_y.ndim != 2:
        raise ValueError(
            f"log_y and log_p must both have shape (R, N); got {tuple(log_y.shape)} and "
            f"{tuple(log_p.shape)}"
        )
    out_dtype = log_y.dtype
    ly = log_y.to(torch.float64)
    lp = log_p.detach().to(torch.float64)
    support = torch.isfinite(lp)
    if not bool(support.any(dim=1).all()):
        raise ValueError("log_p: every row needs at least one value with positive probability")
    ly = torch.where(support, ly, torch.zeros_like(ly))  # values off the support: inert
    # --- integration window per row (detached) ---------------------------------------------
    ly_d = ly.detach()
    l_max = torch.where(support, ly_d, torch.full_like(ly_d, -math.inf)).amax(dim=1).numpy()
    l_min = torch.where(support, ly_d, torch.full_like(ly_d, math.inf)).amin(dim=1).numpy()
    lo = -l_max - math.log(k) - _CUT
    hi_a = math.log(_CUT) + 0.5
    hi_m = math.log(_CUT / k) - l_min
    use_tail = hi_m < hi_a
    hi = np.where(use_tail, hi_m, hi_a)
    hi = np.maximum(hi, lo + 1.0)
    tail = np.where(use_tail, _exp1_of_exp(np.where(use_tail, hi, 0.0)), 0.0)
    length = hi - lo
    panels = np.clip(np.ceil(length), 1, max_panels).astype(np.int64)
    p_max = int(panels.max())
    # nodes (R, p_max * 8) with zero weight beyond each row's own panel count
    width = length / panels
    j = np.arange(p_max)
    left = lo[:, None] + j[None, :] * width[:, None]  # (R, P)
    active = j[None, :] < panels[:, None]
    nodes = left[:, :, None] + (0.5 * (_GL_NODES + 1.0))[None, None, :] * width[:, None, None]
    weights = (0.5 * _GL_WEIGHTS)[None, None, :] * width[:, None, None] * active[:, :, None]
    r = ly.shape[0]
    w_nodes = torch.from_numpy(nodes.reshape(r, -1))
    w_weights = torch.from_numpy(weights.reshape(r, -1))
    # --- integrate, chunked over rows ---------------------------------------------------------
    n = ly.shape[1]
    q = w_nodes.shape[1]
    rows_per_chunk = max(1, chunk_elements // max(1, q * n))
    pieces = []
    for s in range(0, r, rows_per_chunk):
        e = min(r, s + rows_per_chunk)
        nodes_c, weights_c = w_nodes[s:e].to(ly.device), w_weights[s:e].to(ly.device)
        pieces.append(_integrate(ly[s:e], lp[s:e], k, nodes_c, weights_c))
    value = torch.cat(pieces) + torch.from_numpy(tail).to(ly.device)
    return value.to(out_dtype)


def _integrate(
    ly: torch.Tensor, lp: torch.Tensor, k: int, w: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Sum over nodes of weight * exp(-e^w) * (1 - M(e^w)^k) for a chunk of rows."""
    x = (w[:, :, None] + ly[:, None, :]).clamp(max=50.0)  # (R, Q, N); e^50 already kills exp(-.)
    ex = torch.exp(x)
    p = lp.exp()[:, None, :]
    # S = 1 - M = sum_j p_j (1 - exp(-e^x_j)): precise when M is close to 1
    s_off = (p * -torch.expm1(-ex)).sum(dim=-1)
    log_m_small = torch.log1p(-s_off.clamp(max=0.5))
    # log M by log-sum-exp: precise when M is small
    log_m_large = torch.logsumexp(lp[:, None, :] - ex, dim=-1)
    log_m = torch.where(s_off < 0.5, log_m_small, log_m_large)
    if k == 1:
        one_minus_mk = torch.where(s_off < 0.5, s_off, -torch.expm1(log_m))
    else:
        one_minus_mk = -torch.expm1(k * log_m)
    integrand = torch.exp(-torch.exp(w)) * one_minus_mk
    return (weights * integrand).sum(dim=1)

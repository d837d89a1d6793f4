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
The quadrature error is below 1e-10 while the spread is below ``max_panels`` (default 4096); a
wider spread (e.g. unnormalized features of norm 100) still yields a finite value, with panels
wider than 1 and a larger error. Everything is computed in float64, in log space
(``log M`` via log1p / log-sum-exp, ``1 - M^k`` via expm1), and is differentiable in log y.

Shared laws. Many rows often share one law and differ only by a scale: in the ``exact=True``
forms of SCL/HSCL/UCL/HUCL (:mod:`contrastlab.losses.scl`) the pair (i, p) has
Y = exp(S_ij - S_ip) / k with j ~ q_i., the same for every positive p of anchor i.
:func:`expected_log1p_sum_grouped` exploits it: with w' = w + shift the factor 1 - M^k depends
on the anchor only, so it is evaluated once per anchor on a common grid (cost O(A Q N)) and
each row only re-weights it by exp(-e^{w' - shift}) (cost O(R Q)) instead of O(R Q N).
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
    out[~small] = exp1(np.exp(np.minimum(w[~small], 700.0)))
    return out


def expected_log1p_sum(
    log_y: torch.Tensor,
    log_p: torch.Tensor,
    k: int,
    max_panels: int = 4096,
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
        chunk_elements: rows are processed in chunks of at most this many (rows x nodes x N)
            float64 elements, to bound memory.

    Returns:
        (R,) expectations in the dtype of ``log_y``, differentiable with respect to ``log_y``.
    """
    if log_y.shape != log_p.shape or log_y.ndim != 2:
        raise ValueError(
            f"log_y and log_p must both have shape (R, N); got {tuple(log_y.shape)} and "
            f"{tuple(log_p.shape)}"
        )
    r = log_y.shape[0]
    owner = torch.arange(r, device=log_y.device)
    shift = torch.zeros(r, dtype=log_y.dtype, device=log_y.device)
    return expected_log1p_sum_grouped(log_y, log_p, owner, shift, k, max_panels, chunk_elements)


def expected_log1p_sum_grouped(
    log_x: torch.Tensor,
    log_p: torch.Tensor,
    owner: torch.Tensor,
    shift: torch.Tensor,
    k: int,
    max_panels: int = 4096,
    chunk_elements: int = 1 << 22,
) -> torch.Tensor:
    """E log(1 + Y_1 + ... + Y_k) for rows that share laws up to a scale.

    Row r draws Y = exp(log_x[a, j] + shift[r]) with probability exp(log_p[a, j]), where
    a = owner[r]. Equivalent to :func:`expected_log1p_sum` with
    ``log_y = log_x[owner] + shift[:, None]``, at a cost of O(A Q N + R Q) instead of O(R Q N).

    Args:
        log_x: (A, N) log-values of the A shared laws.
        log_p: (A, N) their log-probabilities (-inf off the support; no gradient).
        owner: (R,) integer index of each row's law.
        shift: (R,) log-scale of each row.
        k: number of i.i.d. draws.

    Returns:
        (R,) expectations, differentiable with respect to ``log_x`` and ``shift``.
    """
    check_positive_int("k", k)
    if log_x.shape != log_p.shape or log_x.ndim != 2:
        raise ValueError(
            f"log_x and log_p must both have shape (A, N); got {tuple(log_x.shape)} and "
            f"{tuple(log_p.shape)}"
        )
    if owner.ndim != 1 or shift.shape != owner.shape:
        raise ValueError(
            f"owner and shift must both have shape (R,); got {tuple(owner.shape)} and "
            f"{tuple(shift.shape)}"
        )
    out_dtype = log_x.dtype
    device = log_x.device
    lx = log_x.to(torch.float64)
    lp = log_p.detach().to(torch.float64)
    sh = shift.to(torch.float64)
    support = torch.isfinite(lp)
    if not bool(support.any(dim=1).all()):
        raise ValueError("log_p: every row needs at least one value with positive probability")
    lx = torch.where(support, lx, torch.zeros_like(lx))  # values off the support: inert
    n_laws = lx.shape[0]
    own = owner.detach().cpu().numpy()
    sh_np = sh.detach().cpu().numpy()
    # --- integration window per law, in w' = w + shift (detached) -----------------------------
    lx_d = lx.detach()
    x_max = torch.where(support, lx_d, torch.full_like(lx_d, -math.inf)).amax(dim=1).cpu().numpy()
    x_min = torch.where(support, lx_d, torch.full_like(lx_d, math.inf)).amin(dim=1).cpu().numpy()
    lo = -x_max - math.log(k) - _CUT  # below: 1 - M^k <= k y_max e^w < e^-40
    hi_g = math.log(_CUT / k) - x_min  # above: M^k < e^-40
    hi_a_row = math.log(_CUT) + 0.5 + sh_np  # above: exp(-e^w) < e^-40 for that row
    hi_a = np.full(n_laws, -np.inf)
    np.maximum.at(hi_a, own, hi_a_row)
    hi = np.minimum(hi_g, hi_a)
    hi = np.where(np.isfinite(hi), hi, lo + 1.0)  # laws that no row uses
    hi = np.maximum(hi, lo + 1.0)
    length = hi - lo
    panels = np.clip(np.ceil(length), 1, max_panels).astype(np.int64)
    width = length / panels
    p_max = int(panels.max())
    j = np.arange(p_max)
    left = lo[:, None] + j[None, :] * width[:, None]
    active = j[None, :] < panels[:, None]
    nodes = left[:, :, None] + (0.5 * (_GL_NODES + 1.0))[None, None, :] * width[:, None, None]
    weights = (0.5 * _GL_WEIGHTS)[None, None, :] * width[:, None, None] * active[:, :, None]
    w_nodes = torch.from_numpy(nodes.reshape(n_laws, -1)).to(device)
    w_weights = torch.from_numpy(weights.reshape(n_laws, -1)).to(device)
    # --- 1 - M^k on each law's grid, chunked over laws ------------------------------------------
    n = lx.shape[1]
    q = w_nodes.shape[1]
    per_chunk = max(1, chunk_elements // max(1, q * n))
    g_parts = [
        _one_minus_mk(lx[s : s + per_chunk], lp[s : s + per_chunk], k, w_nodes[s : s + per_chunk])
        for s in range(0, n_laws, per_chunk)
    ]
    g = torch.cat(g_parts)  # (A, Q)
    # --- each row: integrate exp(-e^{w' - shift}) (1 - M^k) and add the analytic tail ---------
    own_t = owner.to(device)
    w_rows = w_nodes[own_t]
    a_factor = torch.exp(-torch.exp((w_rows - sh[:, None]).clamp(max=50.0)))
    value = (w_weights[own_t] * a_factor * g[own_t]).sum(dim=1)
    # beyond hi (where M^k < e^-40) the integrand is exp(-e^{w' - shift}): E_1(e^{hi - shift})
    hi_row = hi[own]
    tail_on = hi_row >= hi_g[own] - 1e-12
    u = hi_row - sh_np
    tail = np.where(tail_on, _exp1_of_exp(np.where(tail_on, u, 0.0)), 0.0)
    slope = np.where(tail_on, np.exp(-np.exp(np.minimum(u, 700.0))), 0.0)  # d tail / d shift
    tail_t = torch.from_numpy(tail).to(device)
    slope_t = torch.from_numpy(slope).to(device)
    value = value + tail_t + (sh - sh.detach()) * slope_t
    return value.to(out_dtype)


def _one_minus_mk(
    lx: torch.Tensor, lp: torch.Tensor, k: int, w: torch.Tensor
) -> torch.Tensor:
    """1 - M(e^w)^k at the nodes w (L, Q), with M(u) = sum_j p_j exp(-u x_j)."""
    x = (w[:, :, None] + lx[:, None, :]).clamp(max=50.0)  # (L, Q, N); e^50 already kills exp(-.)
    ex = torch.exp(x)
    p = lp.exp()[:, None, :]
    # S = 1 - M = sum_j p_j (1 - exp(-e^x_j)): precise when M is close to 1
    s_off = (p * -torch.expm1(-ex)).sum(dim=-1)
    log_m_small = torch.log1p(-s_off.clamp(max=0.5))
    # log M by log-sum-exp: precise when M is small
    log_m_large = torch.logsumexp(lp[:, None, :] - ex, dim=-1)
    log_m = torch.where(s_off < 0.5, log_m_small, log_m_large)
    if k == 1:
        return torch.where(s_off < 0.5, s_off, -torch.expm1(log_m))
    return -torch.expm1(k * log_m)

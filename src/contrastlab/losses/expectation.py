"""Exact expectation of log(1 + sum of k i.i.d. discrete variables), with its gradient.

For Y_1..Y_k i.i.d. taking the value y_j with probability p_j (j = 1..N), Frullani's integral
``log(1 + x) = int_0^inf e^{-u} (1 - e^{-x u}) / u du`` and independence give::

    E log(1 + sum_r Y_r) = int_0^inf e^{-u} (1 - M(u)^k) / u du,    M(u) = sum_j p_j e^{-u y_j}

a one-dimensional integral whatever k is (no enumeration of the N^k tuples). With u = e^w it is
``int_R exp(-e^w) G(w) dw`` with G = 1 - M(e^w)^k, a smooth integrand, integrated by composite
Gauss-Legendre quadrature (8 nodes per panel, panels of width <= 2) over a window outside of
which it is below e^-36:

- below ``lo = -log(k E[Y]) - 36``: G <= k (1 - M) <= k e^w E[Y] (dropped, < e^-36);
- above ``hi``: either exp(-e^w) < e^-36 (w > log 36), or M(e^w)^k < e^-36 (found by bisection
  on k log M = -36) and the rest is the analytic tail E_1(e^hi) (exponential integral).

The window is about (spread of log y) + 75 long when k is small and shrinks to ~40 when k is
large (the law of large numbers makes G a sharp step); it never grows with the magnitude of y.
The quadrature error is ~1e-14 (tested against enumeration) while the spread of log y in a row
is below 2 ``max_panels`` (default 4096); beyond (e.g. unnormalized features of norm 100), the
value stays finite with panels wider than 1 and a larger error. Everything is in float64 and in
log space (log M via log1p / log-sum-exp, 1 - M^k via expm1).

Memory: a custom autograd function keeps only the (laws x nodes) grid of M between forward and
backward and recomputes the (laws x nodes x N) terms in chunks, so C = 1000 classes, k = 10^6
fits in a few hundred MB. Gradients flow to the values (log y), to the law (log p) and to the
per-row shifts.

Shared laws: rows often share one law and differ by a scale. In the ``exact=True`` forms of
SCL/HSCL/UCL/HUCL (:mod:`contrastlab.losses.scl`) the pair (i, p) has Y = exp(S_ij - S_ip) / k
with j ~ q_i., the same law for every positive p of anchor i.
:func:`expected_log1p_sum_grouped` exploits it: with w' = w + shift, G depends on the law only,
so it is evaluated once per law (cost O(A Q N)) and each row re-weights it by exp(-e^{w' - shift})
(cost O(R Q)) instead of O(R Q N).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from contrastlab._validation import check_positive_int

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_CUT = 36.0  # integrand dropped where it is below e^-36 (2e-16)
_PANEL = 1.0  # Gauss-Legendre panel width in w (8 nodes)
_LEFT = 7.0  # the left panel (in u = e^w) starts where every term is below e^-7
_EULER_GAMMA = 0.5772156649015329
# exp(-e^50) == 0 in float64: clamp exponents there (finite values and gradients). Clamping lower,
# e.g. at log 700, was measured slower: exp() near the subnormal range takes a slow path.
_ZMAX = 50.0


def _exp1_of_exp(w: np.ndarray) -> np.ndarray:
    """E_1(e^w) for an array of w, accurate also where e^w underflows."""
    from scipy.special import exp1

    out = np.empty_like(w)
    small = w < -30.0
    out[small] = -_EULER_GAMMA - w[small] + np.exp(w[small])
    out[~small] = exp1(np.exp(np.minimum(w[~small], 700.0)))
    return out


def _check_pair(names: str, a: torch.Tensor, b: torch.Tensor, ndim: int, shape: str) -> None:
    """Require two tensors of one shape with ``ndim`` dimensions (``shape``: its description)."""
    if a.shape != b.shape or a.ndim != ndim:
        raise ValueError(
            f"{names} must both have shape {shape}; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


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
        log_p: (R, N) log-probabilities of the values, -inf for values never drawn; each row
            needs at least one finite entry and must sum (in probability) to 1.
        k: the number of i.i.d. draws, k >= 1.
        max_panels: cap on quadrature panels per row (see the module docstring).
        chunk_elements: the (rows x nodes x N) work is done in chunks of this many elements.

    Returns:
        (R,) expectations in the dtype of ``log_y``, differentiable in ``log_y`` and ``log_p``.
    """
    _check_pair("log_y and log_p", log_y, log_p, 2, "(R, N)")
    r = log_y.shape[0]
    owner = torch.arange(r, device=log_y.device)
    shift = torch.zeros(r, dtype=torch.float64, device=log_y.device)
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
        log_p: (A, N) their log-probabilities (-inf off the support).
        owner: (R,) integer index of each row's law.
        shift: (R,) log-scale of each row.
        k: number of i.i.d. draws.

    Returns:
        (R,) expectations in the dtype of ``log_x``, differentiable in ``log_x``, ``log_p`` and
        ``shift``.
    """
    check_positive_int("k", k)
    _check_pair("log_x and log_p", log_x, log_p, 2, "(A, N)")
    _check_pair("owner and shift", owner, shift, 1, "(R,)")
    if not bool(torch.isfinite(log_p.detach()).any(dim=1).all()):
        raise ValueError("log_p: every row needs at least one value with positive probability")
    out_dtype = log_x.dtype
    value = _GroupedExpectation.apply(
        log_x.to(torch.float64),
        log_p.to(torch.float64),
        shift.to(torch.float64),
        owner.to(log_x.device),
        k,
        max_panels,
        chunk_elements,
    )
    return value.to(out_dtype)


def _exp_z(lx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """e^z with z = w + log x at the nodes w (L, Q) for the log-values lx (L, N): (L, Q, N)."""
    return torch.exp((w[:, :, None] + lx[:, None, :]).clamp(max=_ZMAX))


def _log_m(
    lx: torch.Tensor, lp: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log M(e^w) and S = 1 - M at the nodes w (L, Q).

    S = sum_j p_j (1 - exp(-e^z_j)) via expm1 is precise in absolute terms, so log M = log1p(-S)
    is precise where M is near 1 (where the integrand is small and relative accuracy matters).
    Where M is tiny, log M only enters through M^k ~ 0, and the floor 1e-300 is harmless.
    """
    one_minus_e = torch.expm1(-_exp_z(lx, w)).neg_()
    s_off = torch.bmm(one_minus_e, lp.exp()[:, :, None])[:, :, 0]
    log_m = torch.where(
        s_off < 0.5,
        torch.log1p(-s_off.clamp(max=0.5)),
        torch.log((1.0 - s_off).clamp(min=1e-300)),
    )
    return log_m, s_off


def _plan(
    lx: torch.Tensor,
    lp: torch.Tensor,
    owner: torch.Tensor,
    shift: torch.Tensor,
    k: int,
    max_panels: int,
    chunk_elements: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quadrature nodes and weights per law, and the analytic tail (value, d/dshift) per row."""
    n_laws, n = lx.shape
    device = lx.device
    own = owner.cpu().numpy()
    sh = shift.cpu().numpy()
    support = torch.isfinite(lp)
    log_k = math.log(k)
    x_max = torch.where(support, lx, torch.full_like(lx, -math.inf)).amax(dim=1).cpu().numpy()
    x_min = torch.where(support, lx, torch.full_like(lx, math.inf)).amin(dim=1).cpu().numpy()
    sh_min = np.full(n_laws, np.inf)
    np.minimum.at(sh_min, own, sh)
    sh_min = np.where(np.isfinite(sh_min), sh_min, 0.0)
    # Left of w1 every term is linear: k e^{w + x_j} <= e^-7 and e^{w - shift} <= e^-7. There
    # (1 - M^k)/u and exp(-u e^-shift) are smooth down to u = e^w = 0, so [0, e^w1] is one
    # Gauss-Legendre panel in u (no exponentially long tail in w to integrate).
    w1 = np.minimum(-log_k - x_max, sh_min) - _LEFT
    # hi_g: where M^k < e^-CUT. Safe bracket end: M <= exp(-e^{w + x_min}).
    upper = np.maximum(math.log(_CUT / k) - x_min, w1 + 1.0)
    lower = w1.copy()
    per = max(1, chunk_elements // max(1, n))
    for _ in range(14):  # bisection on k log M(e^w) = -CUT, keeping a valid upper end
        mid = 0.5 * (lower + upper)
        mid_t = torch.from_numpy(mid).to(device)
        below = np.empty(n_laws, dtype=bool)
        for s in range(0, n_laws, per):
            lm, _ = _log_m(lx[s : s + per], lp[s : s + per], mid_t[s : s + per, None])
            below[s : s + per] = (k * lm[:, 0] <= -_CUT).cpu().numpy()
        upper = np.where(below, mid, upper)
        lower = np.where(below, lower, mid)
    hi_g = upper
    # hi_a: exp(-e^{w' - shift}) < e^-CUT for every row of the law
    hi_a = np.full(n_laws, -np.inf)
    np.maximum.at(hi_a, own, math.log(_CUT) + 0.5 + sh)
    hi = np.minimum(hi_g, hi_a)
    hi = np.where(np.isfinite(hi), hi, w1 + 1.0)  # laws that no row uses
    hi = np.maximum(hi, w1 + 1.0)
    length = hi - w1
    panels = np.clip(np.ceil(length / _PANEL), 1, max_panels).astype(np.int64)
    width = length / panels
    j = np.arange(int(panels.max()))
    left = w1[:, None] + j[None, :] * width[:, None]
    active = j[None, :] < panels[:, None]
    unit = 0.5 * (_GL_NODES + 1.0)  # nodes on [0, 1]
    nodes = left[:, :, None] + unit[None, None, :] * width[:, None, None]
    weights = (0.5 * _GL_WEIGHTS)[None, None, :] * width[:, None, None] * active[:, :, None]
    # the left panel in u = e^w on [0, e^w1]: int f du / u = sum (w_q u1 / 2) f(u_q) / u_q
    left_nodes = w1[:, None] + np.log(unit)[None, :]  # log u_q, without underflow
    left_weights = np.broadcast_to((0.5 * _GL_WEIGHTS) / unit, (n_laws, unit.size))
    nodes = np.concatenate([left_nodes, nodes.reshape(n_laws, -1)], axis=1)
    weights = np.concatenate([left_weights, weights.reshape(n_laws, -1)], axis=1)
    w_nodes = torch.from_numpy(nodes).to(device)
    w_weights = torch.from_numpy(weights).to(device)
    # beyond hi (when hi = hi_g, M^k < e^-CUT) the integrand is exp(-e^{w' - shift}) exactly
    hi_row = hi[own]
    tail_on = hi_row >= hi_g[own] - 1e-12
    u = hi_row - sh
    tail = np.where(tail_on, _exp1_of_exp(np.where(tail_on, u, 0.0)), 0.0)
    slope = np.where(tail_on, np.exp(-np.exp(np.minimum(u, 700.0))), 0.0)  # d tail / d shift
    return (
        w_nodes,
        w_weights,
        torch.from_numpy(tail).to(device),
        torch.from_numpy(slope).to(device),
    )


class _GroupedExpectation(torch.autograd.Function):
    """Forward: the quadrature; backward: its exact derivative, recomputed chunk by chunk."""

    @staticmethod
    def forward(
        ctx: Any,
        log_x: torch.Tensor,
        log_p: torch.Tensor,
        shift: torch.Tensor,
        owner: torch.Tensor,
        k: int,
        max_panels: int,
        chunk_elements: int,
    ) -> torch.Tensor:
        support = torch.isfinite(log_p)
        lx = torch.where(support, log_x, torch.zeros_like(log_x))  # off-support values inert
        lp = log_p
        nodes, weights, tail, slope = _plan(lx, lp, owner, shift, k, max_panels, chunk_elements)
        n_laws, n = lx.shape
        q = nodes.shape[1]
        per = max(1, chunk_elements // max(1, q * n))
        log_m_parts, g_parts = [], []
        for s in range(0, n_laws, per):
            lm, s_off = _log_m(lx[s : s + per], lp[s : s + per], nodes[s : s + per])
            if k == 1:
                g = torch.where(s_off < 0.5, s_off, -torch.expm1(lm))
            else:
                g = -torch.expm1(k * lm)
            log_m_parts.append(lm)
            g_parts.append(g)
        log_m = torch.cat(log_m_parts)
        g_all = torch.cat(g_parts)  # (A, Q)
        x_row = (nodes[owner] - shift[:, None]).clamp(max=_ZMAX)
        a_row = torch.exp(-torch.exp(x_row))  # (R, Q)
        value = (weights[owner] * a_row * g_all[owner]).sum(dim=1) + tail
        ctx.save_for_backward(lx, lp, shift, owner, nodes, weights, log_m, g_all, a_row, slope)
        ctx.k = k
        ctx.per = per
        return value

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        lx, lp, shift, owner, nodes, weights, log_m, g_all, a_row, slope = ctx.saved_tensors
        k, per = ctx.k, ctx.per
        grad_x = grad_p = grad_shift = None
        w_row = weights[owner]
        if ctx.needs_input_grad[2]:
            # d/dshift exp(-e^{w - shift}) = e^{w - shift} exp(-e^{w - shift})
            x_row = (nodes[owner] - shift[:, None]).clamp(max=_ZMAX)
            da = torch.exp(x_row) * a_row
            grad_shift = grad_out * ((w_row * da * g_all[owner]).sum(dim=1) + slope)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gamma = torch.zeros_like(g_all)
            gamma.index_add_(0, owner, grad_out[:, None] * w_row * a_row)  # dI/dG per law
            # dG/dM = -k M^{k-1}
            coef = gamma * k * torch.exp((k - 1) * log_m)
            p = lp.exp()
            gx = torch.zeros_like(lx)
            gp = torch.zeros_like(lx)
            for s in range(0, lx.shape[0], per):
                ez = _exp_z(lx[s : s + per], nodes[s : s + per])
                e = torch.exp(-ez)
                c = coef[s : s + per][:, None, :]  # (L, 1, Q)
                # dM/dx_j = -p_j e^z exp(-e^z);  dM/dlog p_j = p_j exp(-e^z)
                gp[s : s + per] = -p[s : s + per] * torch.bmm(c, e)[:, 0, :]
                gx[s : s + per] = p[s : s + per] * torch.bmm(c, e.mul_(ez))[:, 0, :]
            if ctx.needs_input_grad[0]:
                grad_x = gx
            if ctx.needs_input_grad[1]:
                grad_p = gp
        return grad_x, grad_p, grad_shift, None, None, None, None

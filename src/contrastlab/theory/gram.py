"""The exact population loss of the smooth family as a function of the Gram matrix (numpy).

For class vectors V (C x d) the population loss of :func:`contrastlab.theory.population.
population_loss` depends on V only through the Gram matrix G = V V^T (Awasthi et al. 2022's
convex reformulation). With an untilted negative law (``beta = 0``) and a smooth member
of the loss family (``logistic``, ``infonce``, ``infonce-mean``) it reads::

    L(G) = sum_c rho_c E_c(G),   E_c = E_{c_1..c_k ~ q_c iid} log(1 + sum_i exp(x_{c c_i})),
    x_cj = (G_cj - G_cc) / s - o,

with s = t for the InfoNCE forms (1 for ``logistic``), o = log k for ``infonce-mean`` (0
otherwise) and q_c the law of a negative's class given the anchor's class c (``marginal``:
rho; ``other-class``: rho restricted to j != c; :func:`~contrastlab.theory.population.
negative_log_law` with beta = 0). This module evaluates L and its gradient dL/dG in float64
numpy, with no autograd and no per-call thread pool, for the optimizer of
:mod:`contrastlab.theory.optimize` (a few hundred evaluations per solve). Products are
``numpy.einsum`` / ``numpy.sum`` (no BLAS), so the bits do not depend on the thread count.

Integral (Frullani, as in :mod:`contrastlab.losses.expectation`): with y = e^x and
M_c(u) = sum_j q_cj e^{-u y_cj},

    E_c = int_0^inf e^{-u} (1 - M_c(u)^k) / u du,
    dE_c / dx_cj = int_0^inf e^{-u} k M_c(u)^{k-1} q_cj y_cj e^{-u y_cj} du

(differentiating under the integral sign; the second integrand is bounded by k q_cj y_cj).

Quadrature: one node set for every G of the feasible set, fixed before the optimization so that
the objective is one smooth function of G (no node moves between L-BFGS steps). The feasible
set bounds the scores: on the unit sphere G_cj - G_cc lies in [-2, 0], in the unit ball in
[-2, 1/4] (max of ab - a^2 over a, b <= 1), so x lies in [x_lo, x_hi]. Then

- on [0, u_1], u_1 = e^{-7} / (k e^{x_hi}), every k u y <= e^{-7}: both integrands are analytic
  in u far beyond u_1, and one 8-node Gauss-Legendre panel *in u* integrates them;
- on [u_1, u_2] in w = log u: Gauss-Legendre panels of width <= 1 (8 nodes each), where
  u_2 = min(40, 36 / (k e^{x_lo})); the integrands are smooth functions of w varying on a scale
  of order 1 (double exponentials exp(-a e^w));
- beyond u_2: if u_2 = 36 / (k e^{x_lo}), M^k <= exp(-k u e^{x_lo}) <= e^{-36}, so the value
  integrand is e^{-u}/u to a relative 2e-16 and the tail is E_1(u_2) (exponential integral)
  with a gradient below e^{-36}; if u_2 = 40 the rest is below E_1(40) < 1e-19.

The error is ~1e-14 relative (tested against the autograd engine of
:func:`~contrastlab.theory.population.population_loss`). Cost: O(C^2 Q) with Q = 8 (1 + number
of panels), 96 to 112 nodes on the sphere at t = 1: ~0.3 ms for C = 10, ~0.7 ms for C = 20.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from contrastlab._validation import check_choice, check_positive, check_positive_int
from contrastlab.data.latent import check_prior
from contrastlab.theory.population import negative_log_law

#: the members of the loss family whose population loss is smooth (and convex) in G
SMOOTH_LOSSES = ("logistic", "infonce", "infonce-mean")
#: the bounds of the score G_cj - G_cc on the feasible set of each constraint (module docstring)
SCORE_BOUNDS = {"sphere": (-2.0, 0.0), "ball": (-2.0, 0.25)}
GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
LEFT_MARGIN = 7.0  # k u y <= e^-7 on the first panel
CUT = 36.0  # integrand parts below e^-36 are dropped
U_MAX = 40.0  # e^-u < 4e-18 beyond


@dataclass(frozen=True)
class GramObjective:
    """The smooth population loss L(G) of one (prior, k, loss, negatives), ready to evaluate.

    ``law`` is (C, C) with row c the law q_c (zeros off its support); ``nodes`` and ``weights``
    are the quadrature in u (``weights`` include the Jacobian of w = log u), and ``tail`` the
    analytic part of E_c beyond the last node (the same for every row).
    """

    prior: np.ndarray
    law: np.ndarray
    k: int
    scale: float
    offset: float
    nodes: np.ndarray
    weights: np.ndarray
    tail: float


def gram_quadrature(k: int, x_lo: float, x_hi: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Nodes u, weights (du measure) and the tail E_1(u_2) for log-values x in [x_lo, x_hi].

    See the module docstring for the three parts of (0, inf) and their error.
    """
    from scipy.special import exp1

    w1 = -math.log(k) - x_hi - LEFT_MARGIN
    w_g = math.log(CUT / k) - x_lo  # M^k <= e^-CUT beyond
    w2 = max(min(w_g, math.log(U_MAX)), w1 + 1.0)
    unit = 0.5 * (GL_NODES + 1.0)  # nodes on [0, 1]
    u1 = math.exp(w1)
    left_u = u1 * unit
    left_w = 0.5 * u1 * GL_WEIGHTS
    panels = math.ceil(w2 - w1)
    width = (w2 - w1) / panels
    starts = w1 + width * np.arange(panels)
    w = (starts[:, None] + width * unit[None, :]).ravel()
    u = np.exp(w)
    weights = (0.5 * width * GL_WEIGHTS)[None, :].repeat(panels, axis=0).ravel() * u
    tail = float(exp1(math.exp(w2))) if w2 >= w_g else 0.0
    return np.concatenate([left_u, u]), np.concatenate([left_w, weights]), tail


def gram_objective(
    prior: torch.Tensor | np.ndarray,
    k: int,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    constraint: str = "sphere",
) -> GramObjective:
    """Build the smooth objective L(G) (module docstring) for G in the feasible set of
    ``constraint`` (``sphere``: unit diagonal; ``ball``: diagonal <= 1). The arguments are
    checked as by :func:`~contrastlab.theory.population.population_loss` (same errors), the prior
    renormalized in float64.

    Raises ValueError for ``hinge`` (not smooth: use the autograd engine of
    :func:`~contrastlab.theory.population.population_loss`).
    """
    check_positive_int("k", k)
    check_choice("loss", loss, SMOOTH_LOSSES)
    check_choice("constraint", constraint, tuple(SCORE_BOUNDS))
    t = check_positive("temperature", temperature)
    rho = check_prior(prior)
    c = rho.numel()
    if c < 2:
        raise ValueError(f"prior must have at least 2 classes; got {c}")
    if negatives == "other-class" and bool((rho >= 1.0 - 1e-15).any()):
        raise ValueError("prior: other-class negatives need at least two classes of positive mass")
    log_q = negative_log_law(torch.zeros(c, 1, dtype=torch.float64), rho, negatives, 0.0)
    scale = 1.0 if loss == "logistic" else t
    offset = math.log(k) if loss == "infonce-mean" else 0.0
    lo, hi = SCORE_BOUNDS[constraint]
    nodes, weights, tail = gram_quadrature(k, lo / scale - offset, hi / scale - offset)
    return GramObjective(
        prior=rho.numpy().copy(),
        law=log_q.exp().numpy(),
        k=k,
        scale=scale,
        offset=offset,
        nodes=nodes,
        weights=weights,
        tail=tail,
    )


def gram_loss(obj: GramObjective, G: np.ndarray) -> tuple[float, np.ndarray]:
    """L(G) and its gradient H = dL/dG (symmetric, trace inner product), float64.

    H is the gradient on the space of symmetric matrices: for a symmetric perturbation D,
    L(G + D) = L(G) + <H, D> + o(D). For G = V V^T the gradient in V is 2 H V.
    """
    k, q, u = obj.k, obj.law, obj.nodes
    x = (G - np.diagonal(G)[:, None]) / obj.scale - obj.offset
    y = np.exp(x)
    em = np.expm1(-u[None, :, None] * y[:, None, :])  # (C, Q, C): e^{-u y} - 1
    s_off = -np.einsum("cqj,cj->cq", em, q)  # 1 - M, precise where M ~ 1
    log_m = np.where(
        s_off < 0.5, np.log1p(-np.minimum(s_off, 0.5)), np.log(np.maximum(1.0 - s_off, 1e-300))
    )
    one_minus_mk = s_off if k == 1 else -np.expm1(k * log_m)
    decay = obj.weights * np.exp(-u)  # (Q,)
    values = np.einsum("cq,q->c", one_minus_mk / u[None, :], decay) + obj.tail  # (C,)
    coef = decay[None, :] * k * np.exp((k - 1) * log_m)  # (C, Q)
    dx = q * y * np.einsum("cq,cqj->cj", coef, em + 1.0)  # dE_c / dx_cj
    b = obj.prior[:, None] * dx / obj.scale
    b[np.diag_indices_from(b)] -= b.sum(axis=1)  # x_cj depends on G_cj and -G_cc
    return float(np.sum(obj.prior * values)), 0.5 * (b + b.T)

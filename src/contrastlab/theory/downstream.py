"""Downstream quality of a class-collapsed representation.

A class-collapsed representation maps every input of class c to one vector v_c; ``V`` is the
(C, d) matrix of these vectors and the classes are drawn from a prior rho (default balanced,
validated by :func:`contrastlab.data.latent.check_prior`). Because every input of class c has the
same feature, the class mean is the class vector, mu_c = v_c, and every expectation over inputs
reduces to a rho-weighted sum over classes. This module evaluates:

- :func:`mean_classifier_loss`: the "mean supervised loss" of Bao et al. (2022),
  R_mu-supv = E_{y ~ rho}[ -log( exp(f^T mu_y / t) / sum_c exp(f^T mu_c / t) ) ] with f = v_y.
  Bao et al.'s code uses t = 1 and does not renormalize the means; Nozawa & Sato use
  t = 0.5. At a unit simplex ETF it equals log(1 + (C - 1) e^{-a}), a = C / ((C - 1) t).
- :func:`mean_classifier_accuracy`: the top-1 accuracy of the mean classifier argmax_c f^T mu_c
  (the downstream metric of the Jiang et al. code), ties counted as errors.
- :func:`supervised_loss`: the supervised loss of the best unit-norm linear classifier (the
  L_sup of Arora et al. 2019 / Awasthi et al. 2022, as in Awasthi et al.'s slides),

      L_sup(V) = inf_{||w_c|| = 1 for all c}  sum_y rho_y l( {v_y^T (w_y - w_c')}_{c' != y} ),

  with l a member of the loss family of :mod:`contrastlab.losses.family` evaluated on the C - 1
  scores of the other classes (all of them, whatever their prior mass).
- :func:`downstream_report`: all of the above plus the cosine matrix of the class means.

Temperature convention
----------------------
One temperature t scales every score of this module: R_mu-supv scores the classes by
f(x)^T mu_c / t and L_sup by the margins f(x)^T (w_y - w_c) / t (the loss family's l_t),
and both take it as an explicit ``temperature`` argument defaulting to t = 1. The t to use
is the temperature *of the contrastive loss* being studied, so that the contrastive loss,
R_mu-supv and L_sup of one representation are measured on the same scale of scores:
:func:`downstream_temperature` maps a loss and its temperature to that t (the temperature itself
for ``infonce`` / ``infonce-mean``; 1 for ``logistic``, which is InfoNCE at t = 1, and for
``hinge``, whose margin 1 fixes the scale), and :func:`downstream_report` applies it to both
R_mu-supv and L_sup, as do its callers (:func:`contrastlab.theory.optimize.optimize_population`
and the unbalanced-prior study, :mod:`contrastlab.theory.study`).

Sources: R_mu-supv is the mean supervised loss of Bao, Nagano & Nozawa (ICML 2022;
the softmax cross-entropy of the mean classifier over all C classes, cf. the mean-classifier
L^mu_sup of Arora et al. 2019), whose code has no temperature; Nozawa & Sato (2021) divide the
same logits by the SimCLR t = 0.5 (``NT_Xent.bound_loss``). Bao's gap bounds
R_cont + Delta_L <= R_mu-supv <= R_cont + Delta_U are stated for features of norm at
most b without a temperature; b = 1 (unit-sphere features at t = 1) is the setting of the Bao
recipes, where this convention is Bao's own. Dividing every score by t is the same as scaling
the features (and hence the class means) by 1 / sqrt(t), so with R_cont and R_mu-supv both at
the same t the bounds hold with b^2 = 1 / t (a consequence of this scaling, not a statement
checked against the paper); with R_mu-supv at t = 1 and R_cont at t != 1 no bound applies.
Earlier versions evaluated R_mu-supv at t = 1 whatever the loss's t; values at t = 1 are
unchanged.

Solving L_sup
-------------
The unit-norm set is not convex, but the relaxation ||w_c|| <= 1 is a convex program (l is
convex and the scores are linear in W), solved here to global optimality:

* Only the projection of each w_c on span(V) enters the scores, so the solver works in an
  orthonormal basis of span(V) (coordinates Z, W = Z U^T), float64, with FISTA (Beck & Teboulle
  2009) with backtracking on the Lipschitz constant and gradient-based adaptive restarts
  (O'Donoghue & Candes 2015), projecting onto the product of unit balls.
* Stopping rule: the Frank-Wolfe duality gap ``sum_c (g_c^T w_c + ||g_c||)`` (g = gradient). It
  upper-bounds F(W) - F* for a convex F over the balls, so ``gap <= tol`` (default 1e-9) certifies
  the value to ``tol``.
* ``hinge`` is not smooth, so it is solved exactly instead of by smoothing: its epigraph form
  min rho^T xi s.t. xi_y >= 1 - v_y^T (w_y - w_c'), xi_y >= 0, ||w_c||^2 <= 1 is a convex
  program handled by a primal-dual interior-point method (Mehrotra predictor-corrector, about
  10-15 Newton steps, each a dense Cholesky of size C * rank(V)). Its certificate is the exact
  Lagrangian dual of the hinge relaxation, D(lambda) = sum lambda - sum_c ||h_c(lambda)|| with
  h_c(lambda) = d/dw_c sum_{y, c'} lambda_yc' v_y^T (w_y - w_c'), at the interior point's
  multipliers (scaled into sum_c' lambda_yc' <= rho_y), so ``gap = F(W) - D(lambda)`` is a
  rigorous bound for the non-smooth problem (the same meaning as for the smooth losses).

Tightness. The relaxed optimum equals the unit-norm infimum as soon as a unit-norm W attains it.
``tight`` is True when such a W was found, in one of three ways: (1) the relaxed optimizer already
has ||w_c|| = 1 within 1e-6; (2) span(V) is a proper subspace of R^d (e.g. d >= C): then adding to
each short w_c a component orthogonal to span(V) makes it unit norm without changing any score,
so the relaxation is always tight; (3) otherwise, a local solve on the product of spheres started
from the renormalized relaxed optimum reaches the relaxed value (within ``max(10 tol, gap)``).
When ``tight`` is True the returned ``W`` has unit rows and is optimal for both problems. When it
is False the relaxed value is only a lower bound on the unit-norm infimum: ``tight=False`` means
"not certified", since (3) is a local search. Hinge minimizers are not unique (any W with all
margins >= 1 has loss 0) and the interior-point method returns a central point of the optimal
set, which often has short rows; (2) or (3) then usually recover a unit-norm optimizer.

Conventions: natural logarithms; in :func:`supervised_loss` ``temperature`` applies to
``infonce`` and ``infonce-mean`` only (as in :func:`contrastlab.losses.family.score_loss`),
:func:`mean_classifier_loss` always divides its logits by it (see the temperature convention
above); float64 throughout the solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg as sla
import torch

from contrastlab._validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_tensor,
)
from contrastlab.data.latent import check_prior
from contrastlab.losses.family import LOSS_PROPERTIES, LOSSES, score_loss

CONSTRAINTS = ("ball", "sphere")

_TIGHT_ATOL = 1e-6  # ||w_c|| = 1 within this counts as on the sphere
_SPHERE_HINGE_MU = (1e-2, 1e-4, 1e-6, 1e-8)  # smoothing stages of the local sphere solve
_SPHERE_HINGE_ITERS = 2_000  # iteration cap per smoothing stage (a local heuristic anyway)

Array = np.ndarray


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _check_V(V: Any) -> torch.Tensor:
    check_tensor("V", V, ndim=2, shape_hint="(C, d)")
    if V.shape[0] < 2:
        raise ValueError(
            f"V must hold at least 2 class vectors (C >= 2); got shape {tuple(V.shape)}"
        )
    if not bool(torch.isfinite(V).all()):
        raise ValueError("V must have finite entries")
    return V


def _prior(prior: Any, c: int) -> torch.Tensor:
    if prior is None:
        return torch.full((c,), 1.0 / c, dtype=torch.float64)
    return check_prior(prior, c)


# --------------------------------------------------------------------------------------------
# the temperature convention
# --------------------------------------------------------------------------------------------


def downstream_temperature(loss: str, temperature: float = 1.0) -> float:
    """The temperature t at which R_mu-supv and L_sup are evaluated for a contrastive loss.

    The loss's own temperature: ``temperature`` for ``infonce`` and ``infonce-mean``, 1 for
    ``logistic`` (InfoNCE at t = 1) and ``hinge`` (no temperature; its margin 1 fixes the scale),
    whatever ``temperature`` is. See "Temperature convention" in the module docstring.

    Args:
        loss: a member of :data:`contrastlab.losses.family.LOSSES` (for a trained run, the
            score function of its loss: ``loss.score`` of the experiment config).
        temperature: t > 0 of the loss.
    """
    check_choice("loss", loss, LOSSES)
    t = check_positive("temperature", temperature)
    return t if LOSS_PROPERTIES[loss].uses_temperature else 1.0


# --------------------------------------------------------------------------------------------
# the mean classifier (Bao et al. 2022; Jiang et al. 2023)
# --------------------------------------------------------------------------------------------


def mean_classifier_loss(
    V: torch.Tensor,
    prior: Any = None,
    temperature: float = 1.0,
    normalize_means: bool = False,
) -> torch.Tensor:
    """Bao et al. (2022)'s mean supervised loss R_mu-supv of a class-collapsed representation.

    R_mu-supv = sum_y rho_y [ -log( exp(v_y^T mu_y / t) / sum_c exp(v_y^T mu_c / t) ) ] with the
    class means mu_c = v_c (class collapse: every input of class c has feature v_c).
    Bao et al.'s code (``MeanClassifier``, ``mean_classifier_eval``) uses t = 1 and does not
    renormalize the means; ``normalize_means=True`` uses mu_c = v_c / ||v_c|| instead (the
    feature f = v_y itself is never renormalized). At a unit simplex ETF the value is
    log(1 + (C - 1) e^{-a}) with a = C / ((C - 1) t). Natural logarithm.

    Args:
        V: (C, d) class vectors, C >= 2.
        prior: (C,) class prior rho (None: balanced).
        temperature: t > 0 dividing the logits; by the module's convention the temperature of
            the contrastive loss under study (:func:`downstream_temperature`), the same t as
            :func:`supervised_loss`. Default 1 (Bao et al.).
        normalize_means: divide each mean by its norm (all class vectors must be nonzero).

    Returns:
        A 0-dim tensor in V's dtype, differentiable in V.
    """
    V = _check_V(V)
    c = V.shape[0]
    rho = _prior(prior, c).to(device=V.device, dtype=V.dtype)
    t = check_positive("temperature", temperature)
    if not isinstance(normalize_means, bool):
        raise ValueError(f"normalize_means must be True or False; got {normalize_means!r}")
    mu = V
    if normalize_means:
        norms = V.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("V: normalize_means=True needs nonzero class vectors")
        mu = V / norms
    logits = V @ mu.T / t
    per_class = torch.logsumexp(logits, dim=1) - logits.diagonal()
    return (rho * per_class).sum()


def mean_classifier_accuracy(V: torch.Tensor, prior: Any = None) -> float:
    """Top-1 accuracy of the mean classifier on a class-collapsed representation.

    The rho-weighted fraction of classes y whose feature v_y scores its own mean strictly
    highest: v_y^T v_y > v_y^T v_c for every c != y (mu_c = v_c by class collapse; the
    downstream metric of the Jiang et al. 2023 code). A tie for the maximum counts as
    an error (the comparison is exact, in V's dtype). No temperature: argmax is scale-free.
    """
    V = _check_V(V)
    c = V.shape[0]
    rho = _prior(prior, c)
    with torch.no_grad():
        s = V.detach().to(torch.float64) @ V.detach().to(torch.float64).T
        own = s.diagonal()
        others = s.masked_fill(torch.eye(c, dtype=torch.bool, device=s.device), -math.inf)
        correct = own > others.amax(dim=1)
    return min(1.0, float((rho * correct.cpu().to(torch.float64)).sum()))


# --------------------------------------------------------------------------------------------
# the supervised loss L_sup (Arora et al. 2019; Awasthi et al. 2022)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupervisedLossResult:
    """Result of :func:`supervised_loss`.

    Attributes:
        value: the loss at ``W`` (for ``constraint="ball"`` the relaxed optimum, for ``"sphere"``
            the unit-norm value: global when ``tight``, else a local optimum).
        W: (C, d) float64 classifier weights attaining ``value``.
        norms: (C,) the row norms of ``W``.
        tight: a unit-norm W attains the relaxed optimum (then the relaxation equals the
            unit-norm infimum and ``W`` has unit rows); see the module docstring.
        iterations: total first-order iterations (all smoothing stages and the sphere solve).
        converged: the relaxed solve reached ``gap <= tol`` (and, for a non-tight sphere solve,
            the Riemannian gradient norm reached ``tol``).
        grad_norm: norm of the projected gradient ||W - P(W - grad)|| at the relaxed solution (the
            Riemannian gradient norm of the sphere solve when that one is reported); for
            ``hinge``, of the smallest smoothing stage.
        gap: certified duality gap of the relaxed solve: relaxed_value - (relaxed optimum) <= gap.
        relaxed_value: the value of the relaxation ||w_c|| <= 1 (a lower bound on the unit-norm
            infimum; equal to it when ``tight``).
    """

    value: float
    W: torch.Tensor
    norms: torch.Tensor
    tight: bool
    iterations: int
    converged: bool
    grad_norm: float
    gap: float
    relaxed_value: float


def _lse_rows(z: Array) -> tuple[Array, Array]:
    """Row-wise log(1 + sum_j exp(z_j)) and the weights exp(z_j) / (1 + sum exp(z)); -inf ok."""
    m = np.maximum(z.max(axis=1), 0.0)
    e = np.exp(z - m[:, None])
    denom = np.exp(-m) + e.sum(axis=1)
    return m + np.log(denom), e / denom[:, None]


class _Objective:
    """F(Z) = sum_y rho_y l(D_y) with D_yc = x_y^T (z_y - z_c), c != y, in span(V) coordinates."""

    def __init__(self, X: Array, rho: Array, loss: str, temperature: float) -> None:
        self.X = X
        self.rho = rho
        self.loss = loss
        self.t = temperature
        self.c = X.shape[0]
        self.offdiag = ~np.eye(self.c, dtype=bool)

    def scores(self, Z: Array) -> Array:
        A = self.X @ Z.T
        return np.diag(A)[:, None] - A  # D[y, c] = x_y^T (z_y - z_c); diagonal is 0, unused

    def _log_terms(self, D: Array, mu: float) -> tuple[Array, float, float]:
        """z = (offset - D) / tau with the diagonal removed; l = alpha * log(1 + sum e^z)."""
        if self.loss == "hinge":
            z, alpha, tau = (1.0 - D) / mu, mu, mu
        else:
            tau = 1.0 if self.loss == "logistic" else self.t
            z, alpha = -D / tau, 1.0
            if self.loss == "infonce-mean":
                z = z - math.log(self.c - 1)
        z = np.where(self.offdiag, z, -np.inf)
        return z, alpha, tau

    def value_grad(self, Z: Array, mu: float = 0.0) -> tuple[float, Array, Array]:
        """Objective (smoothed for hinge with parameter mu), gradient in Z, and Q = -dF/dD."""
        D = self.scores(Z)
        z, alpha, tau = self._log_terms(D, mu)
        vals, p = _lse_rows(z)
        Q = (self.rho * (alpha / tau))[:, None] * p  # -dF/dD, zero on the diagonal
        dA = Q - np.diag(Q.sum(axis=1))
        return float(self.rho @ (alpha * vals)), dA.T @ self.X, Q

    def exact_value(self, Z: Array) -> float:
        D = self.scores(Z)
        if self.loss == "hinge":
            Dm = np.where(self.offdiag, D, np.inf)
            return float(self.rho @ np.maximum(0.0, 1.0 - Dm.min(axis=1)))
        return self.value_grad(Z)[0]


def _project_balls(Z: Array) -> Array:
    n = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.maximum(n, 1.0)


def _fw_gap(Z: Array, G: Array) -> float:
    return float((G * Z).sum() + np.linalg.norm(G, axis=1).sum())


def _fista(
    fg: Callable[[Array], tuple[float, Array, Array]],
    Z0: Array,
    L0: float,
    tol: float,
    max_iter: int,
) -> tuple[Array, float, Array, Array, float, int, float]:
    """Accelerated projected gradient on the product of unit balls.

    Returns (Z, f, grad, Q, L, iterations, Frank-Wolfe gap) at the last iterate.
    """
    x = _project_balls(Z0)
    fx, gx, qx = fg(x)
    gap = _fw_gap(x, gx)
    L = L0
    if gap <= tol:
        return x, fx, gx, qx, L, 0, gap
    y, fy, gy = x, fx, gx
    theta = 1.0
    it = 0
    while it < max_iter:
        it += 1
        slack = 1e-14 * max(1.0, abs(fy))
        while True:
            xn = _project_balls(y - gy / L)
            fxn, gxn, qxn = fg(xn)
            diff = xn - y
            if fxn <= fy + float((gy * diff).sum()) + 0.5 * L * float((diff * diff).sum()) + slack:
                break
            L *= 2.0
        gap = _fw_gap(xn, gxn)
        if gap <= tol:
            return xn, fxn, gxn, qxn, L, it, gap
        # adaptive restart (gradient scheme) or objective increase: drop the momentum
        if float(((y - xn) * (xn - x)).sum()) > 0.0 or fxn > fx:
            theta = 1.0
        theta_n = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
        y = xn + ((theta - 1.0) / theta_n) * (xn - x)
        x, fx, gx, qx, theta = xn, fxn, gxn, qxn, theta_n
        fy, gy, _ = fg(y)
        L *= 0.95  # let the step grow again (backtracking raises it when needed)
    return x, fx, gx, qx, L, it, _fw_gap(x, gx)


def _sphere_descent(
    fg: Callable[[Array], tuple[float, Array, Array]],
    Z0: Array,
    tol: float,
    max_iter: int,
) -> tuple[Array, int, float]:
    """Projected gradient with renormalization on the product of unit spheres (a local method).

    Barzilai-Borwein steps safeguarded by an Armijo backtracking. Returns (Z, iterations,
    Riemannian gradient norm).
    """
    Z = Z0 / np.linalg.norm(Z0, axis=1, keepdims=True)
    f, g, _ = fg(Z)

    def rgrad(Z: Array, g: Array) -> Array:
        return g - (g * Z).sum(axis=1, keepdims=True) * Z

    r = rgrad(Z, g)
    step = 1.0
    it = 0
    while it < max_iter and float(np.linalg.norm(r)) > tol:
        it += 1
        while True:
            Zn = Z - step * r
            Zn = Zn / np.linalg.norm(Zn, axis=1, keepdims=True)
            fn, gn, _ = fg(Zn)
            if fn <= f - 1e-4 * step * float((r * r).sum()) + 1e-15 * max(1.0, abs(f)):
                break
            step *= 0.5
            if step < 1e-20:
                return Z, it, float(np.linalg.norm(r))
        rn = rgrad(Zn, gn)
        s, dr = Zn - Z, rn - r
        sy = float((s * dr).sum())
        step = float((s * s).sum()) / sy if sy > 0 else 2.0 * step
        step = min(max(step, 1e-12), 1e12)
        Z, f, g, r = Zn, fn, gn, rn
    return Z, it, float(np.linalg.norm(r))


class _NewtonSystem(NamedTuple):
    """One :class:`_HingeIPM` Newton system: residuals, barrier weights, factored reduced matrix."""

    rd_z: Array
    rd_xi: Array
    rp_a: Array
    rp_b: Array
    rp_c: Array
    wa: Array
    wb: Array
    wc: Array
    h: Array
    Bm: Array
    chol: Any
    lu: Any


def _max_step(v: Array, dv: Array, mask: Array | None = None) -> float:
    """Largest a with v + a * dv >= 0 where ``mask`` (inf if no component decreases)."""
    neg = dv < 0 if mask is None else (dv < 0) & mask
    return float(np.min(-v[neg] / dv[neg])) if neg.any() else math.inf


class _HingeIPM:
    """Primal-dual interior point (Mehrotra predictor-corrector) for the hinge relaxation.

    Epigraph form, rows y with rho_y = 0 dropped (they carry no loss):

        min rho^T xi  s.t.  1 - D_yc(Z) - xi_y <= 0 (c != y),  -xi_y <= 0,  ||z_c||^2 - 1 <= 0,

    with slack variables kept separately from Z (no cancellation in the slacks), the Newton
    systems reduced to Z by eliminating xi (diagonal), and a dense Cholesky of size C * r.
    After every iteration a rigorous certificate is formed: the primal point is projected onto
    the balls and the multipliers lambda >= 0 are scaled into sum_c lambda_yc <= rho_y, where the
    Lagrangian dual D(lambda) = sum lambda - sum_c ||h_c(lambda)|| bounds the optimum from below.
    """

    def __init__(self, X: Array, rho: Array) -> None:
        C, r = X.shape
        self.X, self.rho, self.C, self.r = X, rho, C, r
        self.P = rho > 0
        self.eye = np.eye(C, dtype=bool)
        self.off = ~self.eye & self.P[:, None]
        self.m = int(self.off.sum() + self.P.sum() + C)
        self.XX = np.einsum("yi,yj->yij", X, X).reshape(C, r * r)
        self.Z = np.zeros((C, r))
        self.xi = np.where(self.P, 1.0, 0.0)
        self.sa = np.ones((C, C))
        self.lam = np.where(self.off, (0.5 * rho / (C - 1))[:, None], 0.0)
        self.sb = np.ones(C)
        self.sig = np.where(self.P, 0.5 * rho, 0.0)
        self.u = np.ones(C)
        self.nu = np.full(C, 1.0 / C)

    def scores(self, Z: Array) -> Array:
        A = self.X @ Z.T
        return np.diag(A)[:, None] - A

    def grad_of(self, L: Array) -> Array:
        """Gradient in Z of sum_yc L_yc D_yc(Z)."""
        return (np.diag(L.sum(axis=1)) - L).T @ self.X

    def certificate(self) -> tuple[float, Array, float, Array]:
        """(gap, feasible Z, its hinge value, dual-feasible lambda)."""
        Z = self.Z
        Zf = Z / np.maximum(1.0, np.linalg.norm(Z, axis=1))[:, None]
        Df = np.where(self.eye, np.inf, self.scores(Zf))
        primal = float(self.rho @ np.maximum(0.0, 1.0 - Df.min(axis=1)))
        lc = np.maximum(self.lam, 0.0)
        rs = lc.sum(axis=1)
        lc = lc * np.where(rs > self.rho, self.rho / np.where(rs > 0, rs, 1.0), 1.0)[:, None]
        dual = float(lc.sum() - np.linalg.norm(self.grad_of(lc), axis=1).sum())
        return primal - dual, Zf, primal, lc

    def _mu(self, sa: Array, lam: Array, sb: Array, sig: Array, u: Array, nu: Array) -> float:
        return (
            float((sa * lam)[self.off].sum()) + float((sb * sig)[self.P].sum()) + float(u @ nu)
        ) / self.m

    def _newton_system(self) -> _NewtonSystem:
        """Residuals and barrier weights at the current point, with the reduced system factored."""
        P, off = self.P, self.off
        Z, xi, sa, lam, sb, sig, u, nu = (
            self.Z, self.xi, self.sa, self.lam, self.sb, self.sig, self.u, self.nu
        )
        rd_z = -self.grad_of(lam) + 2.0 * nu[:, None] * Z
        rd_xi = np.where(P, self.rho - lam.sum(axis=1) - sig, 0.0)
        rp_a = np.where(off, 1.0 - self.scores(Z) - xi[:, None] + sa, 0.0)
        rp_b = np.where(P, sb - xi, 0.0)
        rp_c = (Z * Z).sum(axis=1) - 1.0 + u
        wa = np.where(off, lam / sa, 0.0)
        wb = np.where(P, sig / sb, 0.0)
        wc = nu / u
        Wr = wa.sum(axis=1)
        h = np.where(P, Wr + wb, 1.0)
        Bm = np.diag(Wr) - wa.T  # coupling of z_a and xi_y: Bm[a, y] x_y
        chol, lu = self._factor_reduced(wa, wc, Wr, h, Bm)
        return _NewtonSystem(rd_z, rd_xi, rp_a, rp_b, rp_c, wa, wb, wc, h, Bm, chol, lu)

    def _factor_reduced(
        self, wa: Array, wc: Array, Wr: Array, h: Array, Bm: Array
    ) -> tuple[Any, Any]:
        """(Cholesky, None) of the Newton system reduced to Z, or (None, LU) if not positive."""
        C, r, XX, Z, nu = self.C, self.r, self.XX, self.Z, self.nu
        diag_idx = np.arange(C)
        H = -(wa[:, :, None] * XX[:, None, :] + wa.T[:, :, None] * XX[None, :, :])
        H -= ((Bm[:, None, :] * (Bm / h)[None, :, :]).reshape(C * C, C) @ XX).reshape(C, C, r * r)
        H[diag_idx, diag_idx] += Wr[:, None] * XX + wa.T @ XX
        H4 = H.reshape(C, C, r, r)
        H4[diag_idx, diag_idx] += 2.0 * nu[:, None, None] * np.eye(r) + 4.0 * wc[:, None, None] * (
            Z[:, :, None] * Z[:, None, :]
        )
        Hm = H4.transpose(0, 2, 1, 3).reshape(C * r, C * r)
        try:
            return sla.cho_factor(Hm, check_finite=False), None
        except np.linalg.LinAlgError:
            return None, sla.lu_factor(Hm, check_finite=False)

    def _direction(
        self, ns: _NewtonSystem, rc_a: Array, rc_b: Array, rc_c: Array
    ) -> tuple[Array, ...]:
        """Newton direction (dZ, dxi, dsa, dsb, du, dlam, dsig, dnu) for complementarity rc."""
        X, C, r, P, off, Z = self.X, self.C, self.r, self.P, self.off, self.Z
        sa, lam, sb, sig, u, nu = self.sa, self.lam, self.sb, self.sig, self.u, self.nu
        ca = np.where(off, ns.wa * ns.rp_a - rc_a / sa, 0.0)
        cb = np.where(P, ns.wb * ns.rp_b - rc_b / sb, 0.0)
        cc = ns.wc * ns.rp_c - rc_c / u
        rhs_z = -ns.rd_z + self.grad_of(ca) - 2.0 * cc[:, None] * Z
        rhs_xi = np.where(P, -ns.rd_xi + ca.sum(axis=1) + cb, 0.0)
        rhs = (rhs_z - (ns.Bm * (rhs_xi / ns.h)) @ X).ravel()
        if ns.lu is None:
            dz = sla.cho_solve(ns.chol, rhs, check_finite=False)
        else:
            dz = sla.lu_solve(ns.lu, rhs, check_finite=False)
        dZ = np.asarray(dz).reshape(C, r)
        dxi = np.where(P, (rhs_xi - (ns.Bm * (dZ @ X.T)).sum(axis=0)) / ns.h, 0.0)
        dsa = np.where(off, -ns.rp_a + self.scores(dZ) + dxi[:, None], 0.0)
        dsb = np.where(P, -ns.rp_b + dxi, 0.0)
        du = -ns.rp_c - 2.0 * (Z * dZ).sum(axis=1)
        dlam = np.where(off, (-rc_a - lam * dsa) / sa, 0.0)
        dsig = np.where(P, (-rc_b - sig * dsb) / sb, 0.0)
        dnu = (-rc_c - nu * du) / u
        return dZ, dxi, dsa, dsb, du, dlam, dsig, dnu

    def _step_length(self, d: tuple[Array, ...]) -> float:
        """Largest step along ``d`` keeping every slack and multiplier nonnegative."""
        _, _, dsa, dsb, du, dlam, dsig, dnu = d
        off, P = self.off, self.P
        return min(
            _max_step(self.sa, dsa, off), _max_step(self.sb, dsb, P), _max_step(self.u, du),
            _max_step(self.lam, dlam, off), _max_step(self.sig, dsig, P), _max_step(self.nu, dnu),
        )

    def step(self) -> bool:
        """One predictor-corrector step; False if it could not be computed."""
        off, P = self.off, self.P
        Z, xi, sa, lam, sb, sig, u, nu = (
            self.Z, self.xi, self.sa, self.lam, self.sb, self.sig, self.u, self.nu
        )
        ns = self._newton_system()
        mu = self._mu(sa, lam, sb, sig, u, nu)
        _, _, dsa, dsb, du, dlam, dsig, dnu = aff = self._direction(ns, sa * lam, sb * sig, u * nu)
        a = min(1.0, self._step_length(aff))
        mu_aff = self._mu(
            sa + a * dsa, lam + a * dlam, sb + a * dsb, sig + a * dsig, u + a * du, nu + a * dnu
        )
        target = (mu_aff / mu) ** 3 * mu
        d = self._direction(
            ns,
            sa * lam + dsa * dlam - target,
            sb * sig + dsb * dsig - target,
            u * nu + du * dnu - target,
        )
        if not all(bool(np.isfinite(x).all()) for x in d):
            return False
        a = min(1.0, 0.99 * self._step_length(d))
        dZ, dxi, dsa, dsb, du, dlam, dsig, dnu = d
        self.Z = Z + a * dZ
        self.xi = xi + a * dxi
        self.sa = np.where(off, sa + a * dsa, 1.0)
        self.sb = np.where(P, sb + a * dsb, 1.0)
        self.u = u + a * du
        self.lam = np.where(off, lam + a * dlam, 0.0)
        self.sig = np.where(P, sig + a * dsig, 0.0)
        self.nu = nu + a * dnu
        return True


def _hinge_ipm(
    X: Array, rho: Array, tol: float, max_iter: int
) -> tuple[Array, float, float, Array, int]:
    """Run :class:`_HingeIPM` to gap <= tol; (Z, value, gap, lambda, iterations) of the best."""
    ipm = _HingeIPM(X, rho)
    best = ipm.certificate()
    it = 0
    while best[0] > tol and it < max_iter:
        it += 1
        if not ipm.step():
            break
        cert = ipm.certificate()
        if cert[0] < best[0]:
            best = cert
    gap, Z, value, lam = best
    return Z, value, gap, lam, it


def _sphere_local(
    obj: _Objective, Z: Array, G: Array, tol: float, max_iter: int, target: float
) -> tuple[Array, int, float]:
    """Local solve on the product of spheres from the renormalized relaxed optimum.

    A zero row starts at -g_c / ||g_c|| (or e_1 when g_c = 0). Smooth losses: projected gradient
    with renormalization (:func:`_sphere_descent`). Hinge: the same on its log-sum-exp smoothing
    for mu in :data:`_SPHERE_HINGE_MU` (warm started, at most :data:`_SPHERE_HINGE_ITERS` steps
    each), keeping the best exact hinge value and stopping once it is <= ``target``.
    Returns (Z, iterations, Riemannian gradient norm); a local optimum only.
    """
    Z0 = Z.copy()
    norms = np.linalg.norm(Z0, axis=1)
    small = norms < 1e-12
    if small.any():
        gz = -G[small]
        gn = np.linalg.norm(gz, axis=1, keepdims=True)
        fallback = np.zeros_like(gz)
        fallback[:, 0] = 1.0
        Z0[small] = np.where(gn > 0, gz / np.where(gn > 0, gn, 1.0), fallback)
    Z0 = Z0 / np.linalg.norm(Z0, axis=1, keepdims=True)
    if obj.loss != "hinge":
        return _sphere_descent(obj.value_grad, Z0, tol, max_iter)
    best, best_val, total, rg = Z0, obj.exact_value(Z0), 0, math.inf
    cur = Z0
    for mu in _SPHERE_HINGE_MU:
        if best_val <= target:  # a unit-norm point attaining the relaxed value: stop
            break

        def fg(Zc: Array, mu: float = mu) -> tuple[float, Array, Array]:
            return obj.value_grad(Zc, mu)

        cur, its, rg_mu = _sphere_descent(fg, cur, tol, min(max_iter, _SPHERE_HINGE_ITERS))
        total += its
        val = obj.exact_value(cur)
        if val < best_val:
            best, best_val, rg = cur, val, rg_mu
    return best, total, rg


@dataclass
class _Relaxed:
    """The solved relaxation ||w_c|| <= 1 in span coordinates (stage of :func:`supervised_loss`)."""

    Z: Array
    G: Array
    gap: float
    converged: bool
    iterations: int
    grad_norm: float
    relaxed: float


def _span_coordinates(V: torch.Tensor) -> tuple[Array, Array, int, Array, Array]:
    """(singular values, Qt, rank r, U, X): U (d, r) an orthonormal basis of span(V) and X = V U.

    The rows of Qt[:r] span span(V) and those of Qt[r:] its complement.
    """
    c, d = V.shape
    Vn = V.detach().to(device="cpu", dtype=torch.float64).numpy()
    _, svals, Qt = np.linalg.svd(Vn, full_matrices=True)
    smax = float(svals[0]) if svals.size else 0.0
    r = int((svals > max(c, d) * np.finfo(np.float64).eps * smax).sum()) if smax > 0 else 0
    U = Qt[:r].T  # (d, r)
    X = Vn @ U  # (C, r) coordinates of the class vectors
    return svals, Qt, r, U, X


def _solve_relaxed(
    obj: _Objective, svals: Array, loss: str, t: float, tol: float, max_iter: int
) -> _Relaxed:
    """Solve the relaxation to a certified gap: FISTA (smooth losses) or the IPM (hinge)."""
    X, rho = obj.X, obj.rho
    c, r = X.shape
    # Lipschitz guess for the first step: ||X||_2^2 * 2 / tau (backtracking corrects it)
    scale = float(svals[0] ** 2) if svals.size else 1.0
    Z = np.zeros((c, r))
    iterations = 0
    if loss != "hinge" and r > 0:
        tau = 1.0 if loss == "logistic" else t
        L0 = max(scale / tau, 1e-12)
        Z, _, G, _, _, its, gap = _fista(obj.value_grad, Z, L0, tol, max_iter)
        iterations += its
        converged = gap <= tol
    elif r == 0:  # V = 0: every score is 0, any W is optimal
        gap, converged, G = 0.0, True, np.zeros((c, 0))
    else:
        Z, _, gap, lam, its = _hinge_ipm(X, rho, tol, min(max_iter, 500))
        iterations += its
        converged = gap <= tol
        gap = max(gap, 0.0)
        G = -(np.diag(lam.sum(axis=1)) - lam).T @ X  # gradient of the Lagrangian at lambda
    grad_norm = float(np.linalg.norm(Z - _project_balls(Z - G)))
    relaxed = obj.exact_value(Z)
    return _Relaxed(Z, G, gap, converged, iterations, grad_norm, relaxed)


def _unit_norm_weights(
    obj: _Objective,
    rel: _Relaxed,
    Qt: Array,
    U: Array,
    constraint: str,
    tol: float,
    max_iter: int,
) -> tuple[Array, float, bool, float, bool, int]:
    """(W, value, tight, grad_norm, converged, iterations) from the relaxed optimum.

    Short rows are lifted orthogonally to span(V) when d > r; otherwise a local sphere solve
    tries to attain the relaxed value (module docstring).
    """
    Z, relaxed, gap = rel.Z, rel.relaxed, rel.gap
    grad_norm, converged, iterations = rel.grad_norm, rel.converged, rel.iterations
    r, d = U.shape[1], U.shape[0]
    norms_z = np.linalg.norm(Z, axis=1)
    W = Z @ U.T
    value = relaxed
    tight = bool(np.all(np.abs(norms_z - 1.0) <= _TIGHT_ATOL))
    if not tight and r < d:
        # lift the short rows along a direction orthogonal to span(V): scores are unchanged
        W = W + np.sqrt(np.clip(1.0 - norms_z**2, 0.0, None))[:, None] * Qt[r][None, :]
        tight = True
    elif not tight:
        target = relaxed + max(10.0 * tol, gap)
        Zs, its, rg = _sphere_local(obj, Z, rel.G, tol, max_iter, target)
        iterations += its
        sphere_value = obj.exact_value(Zs)
        if sphere_value <= target:
            tight = True
            W, value = Zs @ U.T, sphere_value
        elif constraint == "sphere":
            W, value, grad_norm = Zs @ U.T, sphere_value, rg
            converged = converged and rg <= tol
    return W, value, tight, grad_norm, converged, iterations


def supervised_loss(
    V: torch.Tensor,
    prior: Any = None,
    loss: str = "infonce",
    temperature: float = 1.0,
    constraint: str = "ball",
    max_iter: int = 100_000,
    tol: float = 1e-9,
) -> SupervisedLossResult:
    """L_sup of a class-collapsed representation: the best unit-norm linear classifier's loss.

    L_sup(V) = inf_W sum_y rho_y l({v_y^T (w_y - w_c')}_{c' != y}) over W = (w_1..w_C) with
    ||w_c|| = 1 (Arora et al. 2019; Awasthi et al. 2022 and their slides), l from
    :func:`contrastlab.losses.family.score_loss` on the C - 1 scores. The convex relaxation
    ||w_c|| <= 1 is solved to a certified duality gap ``tol`` (FISTA with backtracking and
    restarts; smoothing continuation with an exact dual certificate for ``hinge``), and its
    tightness is checked; see the module docstring for the method and the meaning of ``tight``.

    Args:
        V: (C, d) class vectors, C >= 2 (converted to float64).
        prior: (C,) class prior rho (None: balanced).
        loss: ``logistic``, ``infonce``, ``infonce-mean`` or ``hinge``.
        temperature: t > 0 for the InfoNCE forms (ignored by ``logistic`` and ``hinge``); the
            same t as :func:`mean_classifier_loss` (module docstring). Default 1.
        constraint: ``ball`` (the relaxation's value: the unit-norm infimum when ``tight``, else
            a lower bound) or ``sphere`` (the relaxation's value when tight, else the value of a
            local optimum on the product of spheres reached from the renormalized relaxed
            optimum: an upper bound on the unit-norm infimum, not certified global).
        max_iter: cap on first-order iterations per stage (each hinge smoothing stage, the
            sphere solve).
        tol: target duality gap of the relaxation (and Riemannian gradient norm of the sphere
            solve).
    """
    V = _check_V(V)
    c = V.shape[0]
    rho_t = _prior(prior, c)
    check_choice("loss", loss, LOSSES)
    t = check_positive("temperature", temperature)
    check_choice("constraint", constraint, CONSTRAINTS)
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive("tol", tol)

    svals, Qt, _, U, X = _span_coordinates(V)
    obj = _Objective(X, rho_t.numpy(), loss, t)
    rel = _solve_relaxed(obj, svals, loss, t, tol, max_iter)
    W, value, tight, grad_norm, converged, iterations = _unit_norm_weights(
        obj, rel, Qt, U, constraint, tol, max_iter
    )

    W_t = torch.from_numpy(np.ascontiguousarray(W))
    # the reported value is re-evaluated with the loss family itself
    check = _value_torch(V.detach().to(torch.float64).cpu(), W_t, rho_t, loss, t)
    value = check if math.isfinite(check) else value
    return SupervisedLossResult(
        value=value,
        W=W_t,
        norms=W_t.norm(dim=1),
        tight=tight,
        iterations=iterations,
        converged=bool(converged),
        grad_norm=grad_norm,
        gap=float(rel.gap),
        relaxed_value=float(rel.relaxed),
    )


def supervised_objective(
    V: torch.Tensor,
    W: torch.Tensor,
    prior: Any = None,
    loss: str = "infonce",
    temperature: float = 1.0,
) -> torch.Tensor:
    """The objective of :func:`supervised_loss` at given weights W (no constraint applied).

    sum_y rho_y l({v_y^T (w_y - w_c')}_{c' != y}) via :func:`contrastlab.losses.family.score_loss`;
    differentiable in V and W.
    """
    V = _check_V(V)
    c, d = V.shape
    check_tensor("W", W, ndim=2, shape_hint="(C, d)")
    if tuple(W.shape) != (c, d):
        raise ValueError(f"W must have the shape of V {(c, d)}; got {tuple(W.shape)}")
    rho = _prior(prior, c)
    check_choice("loss", loss, LOSSES)
    t = check_positive("temperature", temperature)
    A = V @ W.to(V.dtype).T  # A[y, c] = v_y^T w_c
    D = A.diagonal()[:, None] - A
    mask = ~torch.eye(c, dtype=torch.bool, device=V.device)
    scores = D[mask].reshape(c, c - 1)
    return (rho.to(device=V.device, dtype=V.dtype) * score_loss(scores, loss, t)).sum()


def _value_torch(V: torch.Tensor, W: torch.Tensor, rho: torch.Tensor, loss: str, t: float) -> float:
    with torch.no_grad():
        return float(supervised_objective(V, W, rho, loss, t))


# --------------------------------------------------------------------------------------------
# bundle
# --------------------------------------------------------------------------------------------


def downstream_report(
    V: torch.Tensor,
    prior: Any = None,
    loss: str = "infonce",
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Downstream quality of the class vectors V in one dict.

    ``loss`` and ``temperature`` describe the contrastive loss under study; R_mu-supv and L_sup
    are both evaluated at its temperature t = ``downstream_temperature(loss, temperature)``
    (``temperature`` for the InfoNCE forms, 1 for ``logistic`` and ``hinge``; the module's
    temperature convention). Keys: ``mean_classifier_loss`` (float, R_mu-supv at t, means not
    renormalized; Bao et al.'s own convention when t = 1), ``mean_classifier_accuracy``
    (float), ``supervised_loss`` (float, the relaxed optimum of :func:`supervised_loss` with
    ``loss`` at t), ``supervised_loss_tight`` (bool), ``supervised_loss_gap`` (float, its
    certified duality gap), ``downstream_temperature`` (float, the t of both losses) and
    ``cosine`` ((C, C) float64 tensor of cosines between class means; a zero vector has cosine
    0 with everything, including itself).
    """
    V = _check_V(V)
    c = V.shape[0]
    rho = _prior(prior, c)
    t = downstream_temperature(loss, temperature)
    V64 = V.detach().to(torch.float64).cpu()
    sup = supervised_loss(V64, rho, loss=loss, temperature=t)
    norms = V64.norm(dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    unit = V64 / safe[:, None]
    return {
        "mean_classifier_loss": float(mean_classifier_loss(V64, rho, temperature=t)),
        "mean_classifier_accuracy": mean_classifier_accuracy(V64, rho),
        "supervised_loss": sup.value,
        "supervised_loss_tight": sup.tight,
        "supervised_loss_gap": sup.gap,
        "downstream_temperature": t,
        "cosine": unit @ unit.T,
    }

"""The multinomial logistic-regression solver of the linear probe: the softmax objective, its
preconditioner and a full-batch L-BFGS with Armijo steps (method:
:mod:`contrastlab.evaluation`)."""

from __future__ import annotations

import math

import torch

from contrastlab.evaluation.checks import F64


class Softmax:
    """Mean cross-entropy of logits X W^T / tau (+ b, + offsets) and its gradient, no autograd."""

    def __init__(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        c: int,
        bias: bool,
        tau: float = 1.0,
        other_offset: float = 0.0,
    ) -> None:
        self.X, self.y, self.c, self.bias = X, y, c, bias
        self.n, self.d = X.shape
        self.tau = tau
        self.other_offset = other_offset  # added to every logit but the true class's
        self.flat_idx = torch.arange(self.n, device=X.device) * c + y

    def size(self) -> int:
        return self.c * self.d + (self.c if self.bias else 0)

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        W = theta[: self.c * self.d].view(self.c, self.d)
        b = theta[self.c * self.d :] if self.bias else None
        return W, b

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        W, b = self.split(theta)
        Z = self.X @ W.T if b is None else torch.addmm(b, self.X, W.T)
        if self.tau != 1.0:
            Z /= self.tau
        if self.other_offset != 0.0:
            Z += self.other_offset
            Z.view(-1)[self.flat_idx] -= self.other_offset
        return Z

    def value_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        Z = self.logits(theta)
        logp = torch.log_softmax(Z, dim=1)
        value = -float(logp.view(-1)[self.flat_idx].sum(dtype=F64)) / self.n
        P = logp.exp_()
        P.view(-1)[self.flat_idx] -= 1.0
        P /= self.n * self.tau
        g = torch.empty_like(theta)
        gW, _ = self.split(g)
        torch.mm(P.T, self.X, out=gW)
        if self.bias:
            g[self.c * self.d :] = P.sum(dim=0)
        return value, g


class Preconditioner:
    """Initial inverse Hessian of preconditioned L-BFGS for mean CE + lambda/2 ||W||^2.

    The Hessian in W is approximately kappa Sigma_2 (x) I_C + lambda I, with Sigma_2 = X^T X / N
    the feature second moment and kappa the curvature of the softmax (1/C at uniform logits), so
    H0 = (kappa Sigma_2 + lambda I)^{-1} acting on each row of the (C, d) gradient (and 1/kappa on
    the bias). It makes the iteration count nearly independent of the conditioning of the
    features (anisotropic or dimensionally collapsed embeddings); it changes neither the objective
    nor its minimizer.
    """

    def __init__(self, X: torch.Tensor, c: int, bias: bool) -> None:
        second = (X.T @ X).to(F64) / X.shape[0]
        evals, evecs = torch.linalg.eigh(second)
        self.evals = evals.clamp(min=0.0)
        self.evecs = evecs
        self.c, self.d, self.bias = c, X.shape[1], bias
        self.kappa = 1.0 / c
        self.dtype = X.dtype
        self.scale = max(float(self.evals.sum()), 1e-300)  # E ||h||^2
        self.rms = math.sqrt(self.scale)

    def matrix(self, wd: float) -> torch.Tensor:
        inv = 1.0 / (self.kappa * self.evals + max(wd, 1e-12 * float(self.evals[-1])))
        return ((self.evecs * inv) @ self.evecs.T).to(self.dtype)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum(dtype=F64))


class _Penalized:
    """The objective of :func:`fit_logreg`: mean CE of ``obj`` + wd/2 ||W||^2 (the bias is not
    penalized), with the initial inverse Hessian H0 of :class:`Preconditioner` at ``wd`` and
    the scale-free convergence measure."""

    def __init__(self, obj: Softmax, wd: float, pre: Preconditioner) -> None:
        self.obj, self.wd, self.pre = obj, wd, pre
        self.cd = obj.c * obj.d
        self.M = pre.matrix(wd)

    def fg(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(value, gradient) at ``theta``."""
        value, g = self.obj.value_grad(theta)
        W = theta[: self.cd]
        value += 0.5 * self.wd * float((W * W).sum(dtype=F64))
        g[: self.cd] += self.wd * W
        return value, g

    def h0(self, q: torch.Tensor) -> torch.Tensor:
        """H0 q: (kappa Sigma_2 + wd I)^{-1} on each row of the weight part, 1/kappa on the
        bias."""
        cd, obj = self.cd, self.obj
        r = torch.empty_like(q)
        r[:cd] = (q[:cd].view(obj.c, obj.d) @ self.M).view(-1)
        if obj.bias:
            r[cd:] = q[cd:] / self.pre.kappa
        return r

    def gmax(self, g: torch.Tensor) -> float:
        """max |dF/dW| / sqrt(E||h||^2), and max |dF/db| with a bias: the larger."""
        top = float(g[: self.cd].abs().max()) / self.pre.rms
        return max(top, float(g[self.cd :].abs().max())) if self.obj.bias else top


_Pairs = list[tuple[torch.Tensor, torch.Tensor, float]]  # L-BFGS (s, y, 1 / s^T y), oldest first


def _lbfgs_direction(
    prob: _Penalized, g: torch.Tensor, pairs: _Pairs, gamma: float
) -> tuple[torch.Tensor, float]:
    """The two-loop recursion: (direction -H g, g^T direction). When that is not a descent
    direction, ``pairs`` is cleared and the preconditioned gradient -H0 g is used instead."""
    q = g.clone()
    alphas: list[float] = []
    for s_k, y_k, rho in reversed(pairs):
        a = rho * _dot(s_k, q)
        q -= a * y_k
        alphas.append(a)
    r = gamma * prob.h0(q)
    for (s_k, y_k, rho), a in zip(pairs, reversed(alphas), strict=True):
        r += (a - rho * _dot(y_k, r)) * s_k
    direction = -r
    gtd = _dot(g, direction)
    if not gtd < 0.0:  # safeguard: restart from the preconditioned gradient
        pairs.clear()
        direction = -prob.h0(g)
        gtd = _dot(g, direction)
    return direction, gtd


def _armijo(
    prob: _Penalized, theta: torch.Tensor, f: float, direction: torch.Tensor, gtd: float
) -> tuple[torch.Tensor, float, torch.Tensor] | None:
    """Backtracking from step 1 to the Armijo condition: (the accepted point, its value, its
    gradient), or None when the step falls below 1e-12 (no decrease possible: rounding)."""
    step = 1.0
    while True:
        trial = theta + step * direction
        f_new, g_new = prob.fg(trial)
        if f_new <= f + 1e-4 * step * gtd:
            return trial, f_new, g_new
        if step < 1e-12:
            return None
        # minimizer of the quadratic through f, gtd and f_new, kept in [0.1, 0.5] step
        denom = 2.0 * (f_new - f - gtd * step)
        t_q = -gtd * step * step / denom if denom > 0 else 0.5 * step
        step = min(max(t_q, 0.1 * step), 0.5 * step)


def _push_pair(
    prob: _Penalized, pairs: _Pairs, s_vec: torch.Tensor, y_vec: torch.Tensor, gamma: float,
    history: int,
) -> float:
    """Append the curvature pair (s, y) when s^T y is safely positive (dropping the oldest
    beyond ``history``) and return the new scaling gamma = s^T y / y^T H0 y (else the old)."""
    sy = _dot(s_vec, y_vec)
    if sy > 1e-12 * max(_dot(s_vec, s_vec), 1e-300):
        pairs.append((s_vec, y_vec, 1.0 / sy))
        if len(pairs) > history:
            pairs.pop(0)
        gamma = sy / _dot(y_vec, prob.h0(y_vec))
    return gamma


def fit_logreg(
    obj: Softmax,
    wd: float,
    theta0: torch.Tensor,
    max_iter: int,
    tol: float,
    pre: Preconditioner,
    history: int = 10,
) -> tuple[torch.Tensor, int, float]:
    """Preconditioned full-batch L-BFGS (two-loop recursion, H0 from :class:`Preconditioner`,
    Armijo backtracking; the objective is strictly convex for wd > 0, so every accepted step has
    s^T y > 0) on mean CE + wd/2 ||W||^2, until max |gradient| <= tol.

    Each iteration: the direction (:func:`_lbfgs_direction`), the line search
    (:func:`_armijo`; the fit stops when it finds no decrease), the curvature pair
    (:func:`_push_pair`); the fit also stops after 5 steps in a row whose decrease is at the
    rounding level of the dtype.

    Returns (theta, iterations, the scale-free gradient measure of :func:`linear_probe`).
    """
    prob = _Penalized(obj, wd, pre)
    theta = theta0.clone()
    f, g = prob.fg(theta)
    pairs: _Pairs = []
    gamma = 1.0
    it = 0
    stalled = 0  # consecutive steps whose decrease is at the rounding level of the dtype
    eps = torch.finfo(theta.dtype).eps
    while prob.gmax(g) > tol and it < max_iter:
        it += 1
        direction, gtd = _lbfgs_direction(prob, g, pairs, gamma)
        accepted = _armijo(prob, theta, f, direction, gtd)
        if accepted is None:
            return theta, it, prob.gmax(g)  # no decrease possible (rounding)
        trial, f_new, g_new = accepted
        gamma = _push_pair(prob, pairs, trial - theta, g_new - g, gamma, history)
        stalled = stalled + 1 if f - f_new <= 4.0 * eps * max(1.0, abs(f)) else 0
        theta, f, g = trial, f_new, g_new
        if stalled >= 5:  # the tolerance is below what this dtype can resolve
            break
    return theta, it, prob.gmax(g)

"""L_sup with unit-norm class weights on the data (Arora et al. 2019; method:
:mod:`contrastlab.evaluation`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from contrastlab._validation import (
    check_choice,
    check_labels,
    check_positive,
    check_positive_int,
)
from contrastlab.evaluation.checks import F64, PlainResult, check_coverage, check_dtype
from contrastlab.evaluation.logreg import Softmax
from contrastlab.geometry import (
    check_embeddings,
    check_label_range,
    infer_num_classes,
    serial_when_small,
)

LSUP_LOSSES = ("logistic", "infonce", "infonce-mean")


@dataclass
class LsupResult(PlainResult):
    """L_sup with unit-norm class weights (see the module docstring).

    Attributes:
        value: the loss at the reported unit-norm W (the infimum when ``tight``).
        relaxed_value: the optimum of the relaxation ||w_c|| <= 1 (a lower bound), to ``gap``.
        tight: the relaxation equals the unit-norm infimum (``value`` is then global).
        gap: certified Frank-Wolfe duality gap of the relaxed solve.
        iterations: projected-gradient iterations; converged: ``gap <= tol``.
        loss, temperature: the member of the loss family.
        weight: the (C, d) unit-norm W (not in ``to_dict``).
    """

    value: float
    relaxed_value: float
    tight: bool
    gap: float
    iterations: int
    converged: bool
    loss: str
    temperature: float
    weight: torch.Tensor = field(repr=False)


def _project_balls(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True).clamp(min=1.0)


def _spg_balls(
    fg: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    W0: torch.Tensor,
    tol: float,
    max_iter: int,
    memory: int = 10,
) -> tuple[torch.Tensor, float, torch.Tensor, int, float]:
    """Spectral projected gradient on the product of unit balls; returns W, f, g, its, gap."""
    W = _project_balls(W0)
    f, g = fg(W)
    history = [f]
    alpha = 1.0 / max(float(g.norm()), 1e-12)
    gap = math.inf
    it = 0
    while True:
        gap = float((g * W).sum(dtype=F64)) + float(g.norm(dim=1).sum(dtype=F64))
        if gap <= tol or it >= max_iter:
            break
        it += 1
        D = _project_balls(W - alpha * g) - W
        slope = float((g * D).sum(dtype=F64))
        f_ref = max(history[-memory:])
        lam = 1.0
        while True:
            Wn = W + lam * D
            fn, gn = fg(Wn)
            if fn <= f_ref + 1e-4 * lam * slope or lam < 1e-10:
                break
            lam *= 0.5
        s, r = Wn - W, gn - g
        sr = float((s * r).sum(dtype=F64))
        alpha = float((s * s).sum(dtype=F64)) / sr if sr > 0 else 1e10
        alpha = min(max(alpha, 1e-10), 1e10)
        W, f, g = Wn, fn, gn
        history.append(f)
    return W, f, g, it, max(gap, 0.0)


@serial_when_small
def unit_norm_supervised_loss(
    H: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None = None,
    loss: str = "infonce",
    temperature: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 3000,
    dtype: torch.dtype = torch.float64,
) -> LsupResult:
    """L_sup of Awasthi et al.'s slides on embeddings H with labels y (module docstring).

    L_sup = inf_{||w_1|| = .. = ||w_C|| = 1} (1/N) sum_i l({h_i^T (w_{y_i} - w_c')}_{c' != y_i})
    with l = :func:`contrastlab.losses.family.score_loss` (``loss`` in :data:`LSUP_LOSSES`;
    ``temperature`` for the InfoNCE forms, default 1: the same t as the mean classifier's
    R_mu-supv, module docstring "Temperature"). ``hinge`` is not supported here (not smooth; use
    :func:`contrastlab.theory.downstream.supervised_loss` for class-collapsed representations).
    """
    H = check_embeddings("H", H)
    y = check_labels("y", y, H.shape[0])
    c = infer_num_classes(num_classes, y)
    check_label_range("y", y, c)
    check_coverage(y, c, "y")
    check_choice("loss", loss, LSUP_LOSSES)
    t = check_positive("temperature", temperature)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    dt = check_dtype(dtype)
    return lsup_unchecked(H.detach().to(dt).contiguous(), y.to(H.device, torch.int64), c, loss, t,
                          tol, max_iter)


def lsup_unchecked(
    X: torch.Tensor, y: torch.Tensor, c: int, loss: str, t: float, tol: float, max_iter: int
) -> LsupResult:
    n, d = X.shape
    tau = 1.0 if loss == "logistic" else t
    offset = -math.log(c - 1) if loss == "infonce-mean" else 0.0
    obj = Softmax(X, y, c, bias=False, tau=tau, other_offset=offset)

    def fg(W: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, g = obj.value_grad(W.reshape(-1))
        return value, g.view(c, d)

    # start from the unit-norm class means (the mean classifier's directions)
    counts = torch.bincount(y, minlength=c).to(X.dtype)
    means = torch.zeros(c, d, dtype=X.dtype, device=X.device).index_add_(0, y, X)
    W0 = F.normalize(means / counts[:, None], dim=1)
    W, f_relaxed, g, its, gap = _spg_balls(fg, W0, tol, max_iter)
    norms = W.norm(dim=1)
    tight = bool((norms >= 1.0 - 1e-6).all())
    value = f_relaxed
    if tight:
        W = F.normalize(W, dim=1)
        value, _ = fg(W)
    else:
        # a null direction of the data lifts the short rows to unit norm for free
        evals, evecs = torch.linalg.eigh((X.T @ X).to(F64) / n)
        e = evecs[:, 0].to(X.dtype)
        if float(evals[0]) <= 1e-12 * max(float(evals[-1]), 1e-300):
            W = W + (1.0 - norms**2).clamp(min=0.0).sqrt()[:, None] * e
            tight = True
            value, _ = fg(W)
        else:
            W, value = _sphere_descent(fg, W, g, tol, max_iter)
            # a unit-norm W attaining the relaxed optimum (to the certified accuracy) proves
            # that the relaxation is tight
            tight = value <= f_relaxed + max(10.0 * tol, gap)
    return LsupResult(
        value=float(value),
        relaxed_value=float(f_relaxed),
        tight=tight,
        gap=gap,
        iterations=its,
        converged=gap <= tol,
        loss=loss,
        temperature=t,
        weight=W,
    )


def _sphere_descent(
    fg: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    W: torch.Tensor,
    g: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, float]:
    """Local minimization on the product of unit spheres (Riemannian gradient, BB + Armijo)."""
    small = W.norm(dim=1) < 1e-12
    if bool(small.any()):  # a zero row: start along its steepest descent direction
        W = W.clone()
        W[small] = -g[small] + 1e-12
    W = F.normalize(W, dim=1)
    f, g = fg(W)

    def rgrad(W: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g - (g * W).sum(dim=1, keepdim=True) * W

    r = rgrad(W, g)
    step = 1.0
    for _ in range(max_iter):
        if float(r.norm()) <= tol:
            break
        while True:
            Wn = F.normalize(W - step * r, dim=1)
            fn, gn = fg(Wn)
            if fn <= f - 1e-4 * step * float((r * r).sum(dtype=F64)) or step < 1e-12:
                break
            step *= 0.5
        if fn > f:
            break
        rn = rgrad(Wn, gn)
        s, dr = Wn - W, rn - r
        sy = float((s * dr).sum(dtype=F64))
        step = float((s * s).sum(dtype=F64)) / sy if sy > 0 else 2.0 * step
        step = min(max(step, 1e-10), 1e10)
        W, f, r = Wn, fn, rn
    return W, f

"""The optimal geometry: minimize the exact population loss over class vectors (SPEC A7, C1-C3).

Awasthi et al. (2022) show that for balanced classes the optimum of the population NCE loss
(with unit-norm representations, d >= C - 1) is the simplex ETF for every k; Jiang et al. (2023)
show SCL/HSCL/UCL are minimized by neural collapse. For an unbalanced prior the optimum is not
an ETF in general and is found numerically here.

Method: class vectors on the unit sphere (V_c = U_c / ||U_c||) or in the unit ball
(V_c = sigmoid(r_c) U_c / ||U_c||), the exact loss of
:func:`contrastlab.theory.population.population_loss` in float64, L-BFGS with a strong-Wolfe
line search from ``restarts`` random starts (seeded); the best start is kept. Diagnostics: the
norm of the Riemannian gradient (the gradient's component tangent to the sphere, or the full
gradient in the ball's interior), the iteration count, the loss of every start, and the
distance of the class-mean cosines to the ETF value -1/(C-1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from contrastlab._validation import check_choice, check_positive_int
from contrastlab.data.latent import check_prior
from contrastlab.theory.etf import etf_cosine
from contrastlab.theory.population import population_loss, sample_level_loss

CONSTRAINTS = ("sphere", "ball")


@dataclass
class PopulationOptimum:
    """Result of :func:`optimize_population`."""

    V: torch.Tensor
    loss: float
    prior: torch.Tensor
    k: int
    config: dict[str, Any]
    gram: torch.Tensor
    cosines: torch.Tensor
    norms: torch.Tensor
    etf_cosine_error: float
    zero_sum: float
    grad_norm: float
    iterations: int
    converged: bool
    restart_losses: list[float] = field(default_factory=list)
    downstream: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no tensors)."""
        return {
            **self.config,
            "k": self.k,
            "loss": self.loss,
            "etf_cosine_error": self.etf_cosine_error,
            "zero_sum": self.zero_sum,
            "min_norm": float(self.norms.min()),
            "grad_norm": self.grad_norm,
            "iterations": self.iterations,
            "converged": self.converged,
            "restart_spread": max(self.restart_losses) - min(self.restart_losses),
            **{k: v for k, v in self.downstream.items() if isinstance(v, (int, float, bool))},
        }


def _vectors(u: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
    v = u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)
    if r is not None:
        v = torch.sigmoid(r)[:, None] * v
    return v


def _riemannian_grad_norm(v: torch.Tensor, g: torch.Tensor, constraint: str) -> float:
    if constraint == "sphere":
        radial = (g * v).sum(dim=1, keepdim=True) * v
        return float((g - radial).norm())
    # ball: on the boundary only the inward part of the gradient counts
    norms = v.norm(dim=1, keepdim=True)
    on_boundary = norms > 1 - 1e-6
    outward = (g * v).sum(dim=1, keepdim=True) / norms.clamp_min(1e-300)
    proj = torch.where(on_boundary & (outward < 0), g - outward * v / norms, g)
    return float(proj.norm())


def _resolve_prior(prior: torch.Tensor | None, num_classes: int | None) -> torch.Tensor:
    """The class prior: ``prior`` checked, or balanced over ``num_classes`` (C >= 2) classes."""
    if prior is None:
        if num_classes is None:
            raise ValueError("num_classes is required when prior is None (balanced classes)")
        c = check_positive_int("num_classes", num_classes)
        rho = torch.full((c,), 1.0 / c, dtype=torch.float64)
    else:
        rho = check_prior(prior)
    if rho.numel() < 2:
        raise ValueError(f"num_classes must be >= 2; got {rho.numel()}")
    return rho


def _lbfgs_minimize(
    params: list[torch.Tensor],
    objective_fn: Callable[[], torch.Tensor],
    max_iter: int,
    tol: float,
) -> int:
    """Strong-Wolfe L-BFGS on ``params`` minimizing ``objective_fn``; returns the iterations."""
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = objective_fn()
        value.backward()
        return value

    opt.step(closure)
    return int(opt.state[opt._params[0]].get("n_iter", 0))


def _population_start(
    start: int,
    init: torch.Tensor | None,
    c: int,
    d: int,
    g: torch.Generator,
    constraint: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The free parameters (U, r) of one start: ``init`` first if given, else seeded normals."""
    if start == 0 and init is not None:
        if init.shape != (c, d):
            raise ValueError(f"init must have shape ({c}, {d}); got {tuple(init.shape)}")
        u0 = init.detach().to(torch.float64).clone()
    else:
        u0 = torch.randn(c, d, generator=g, dtype=torch.float64)
    u = u0.requires_grad_(True)
    r = (
        torch.full((c,), 2.0, dtype=torch.float64, requires_grad=True)
        if constraint == "ball"
        else None
    )
    return u, r


def _population_restarts(
    rho: torch.Tensor,
    objective: dict[str, Any],
    d: int,
    constraint: str,
    restarts: int,
    seed: int,
    max_iter: int,
    tol: float,
    init: torch.Tensor | None,
) -> tuple[tuple[float, torch.Tensor, torch.Tensor | None, int], list[float]]:
    """L-BFGS from every start; the best (loss, U, r, iterations) and every start's loss."""
    c = rho.numel()
    g = torch.Generator().manual_seed(seed)
    best: tuple[float, torch.Tensor, torch.Tensor | None, int] | None = None
    restart_losses: list[float] = []
    for start in range(restarts):
        u, r = _population_start(start, init, c, d, g, constraint)
        params = [u] if r is None else [u, r]

        def objective_fn(u: torch.Tensor = u, r: torch.Tensor | None = r) -> torch.Tensor:
            return population_loss(_vectors(u, r), rho, **objective)

        iters = _lbfgs_minimize(params, objective_fn, max_iter, tol)
        with torch.no_grad():
            value = float(population_loss(_vectors(u, r), rho, **objective))
        restart_losses.append(value)
        if best is None or value < best[0]:
            best = (value, u.detach().clone(), None if r is None else r.detach().clone(), iters)
    assert best is not None
    return best, restart_losses


def _population_result(
    best: tuple[float, torch.Tensor, torch.Tensor | None, int],
    restart_losses: list[float],
    rho: torch.Tensor,
    objective: dict[str, Any],
    d: int,
    constraint: str,
    restarts: int,
    seed: int,
    tol: float,
) -> PopulationOptimum:
    """Assemble the :class:`PopulationOptimum` (geometry and diagnostics) of the best start."""
    c = rho.numel()
    value, u_best, r_best, iters = best
    v = _vectors(u_best, r_best).detach().requires_grad_(True)
    population_loss(v, rho, **objective).backward()
    assert v.grad is not None
    grad_norm = _riemannian_grad_norm(v.detach(), v.grad, constraint)
    v = v.detach()
    gram = v @ v.T
    norms = v.norm(dim=1)
    cosines = gram / (norms[:, None] * norms[None, :]).clamp_min(1e-300)
    off = ~torch.eye(c, dtype=torch.bool)
    return PopulationOptimum(
        V=v,
        loss=value,
        prior=rho,
        k=objective["k"],
        config={
            **{kk: vv for kk, vv in objective.items() if kk != "k"},
            "num_classes": c,
            "dim": d,
            "constraint": constraint,
            "restarts": restarts,
            "seed": seed,
        },
        gram=gram,
        cosines=cosines,
        norms=norms,
        etf_cosine_error=float((cosines[off] - etf_cosine(c)).abs().max()),
        zero_sum=float(v.sum(0).norm()),
        grad_norm=grad_norm,
        iterations=iters,
        converged=bool(grad_norm <= max(1e3 * tol, 1e-7)),
        restart_losses=restart_losses,
    )


def optimize_population(
    prior: torch.Tensor | None = None,
    k: int = 1,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    beta: float = 0.0,
    num_classes: int | None = None,
    dim: int | None = None,
    constraint: str = "sphere",
    restarts: int = 4,
    seed: int = 0,
    max_iter: int = 3000,
    tol: float = 1e-11,
    init: torch.Tensor | None = None,
    with_downstream: bool = True,
) -> PopulationOptimum:
    """Minimize the exact population loss over C class vectors.

    Args:
        prior: (C,) class prior (None: balanced, then ``num_classes`` is required).
        k, loss, temperature, negatives, beta: the objective (see
            :func:`contrastlab.theory.population.population_loss`).
        num_classes: C, when ``prior`` is None.
        dim: the representation dimension d (default C - 1).
        constraint: ``sphere`` (unit norm) or ``ball`` (norm <= 1).
        restarts: number of random starts (>= 1); the best is returned.
        seed: seeds the starts.
        max_iter: L-BFGS iteration budget per start.
        tol: stop when the gradient norm falls below this.
        init: optional (C, d) starting point used as the first start.
        with_downstream: also compute the downstream quality of the optimum
            (:mod:`contrastlab.theory.downstream`).
    """
    rho = _resolve_prior(prior, num_classes)
    c = rho.numel()
    d = c - 1 if dim is None else check_positive_int("dim", dim)
    check_positive_int("k", k)
    check_positive_int("restarts", restarts)
    check_positive_int("max_iter", max_iter)
    check_choice("constraint", constraint, CONSTRAINTS)
    objective: dict[str, Any] = {
        "k": k,
        "loss": loss,
        "temperature": temperature,
        "negatives": negatives,
        "beta": beta,
    }
    population_loss(torch.eye(c, d, dtype=torch.float64) + 0.1, rho, **objective)  # validate
    best, restart_losses = _population_restarts(
        rho, objective, d, constraint, restarts, seed, max_iter, tol, init
    )
    result = _population_result(
        best, restart_losses, rho, objective, d, constraint, restarts, seed, tol
    )
    if with_downstream:
        from contrastlab.theory.downstream import downstream_report

        report = downstream_report(result.V, rho, loss=loss, temperature=temperature)
        result.downstream = {key: val for key, val in report.items() if key != "cosine"}
    return result


def balanced_etf_check(num_classes: int, k: int, **kwargs: Any) -> float:
    """Max |cos - (-1/(C-1))| of the optimum for balanced classes (Awasthi et al.'s claim)."""
    res = optimize_population(num_classes=num_classes, k=k, with_downstream=False, **kwargs)
    return res.etf_cosine_error + (0.0 if math.isfinite(res.loss) else math.inf)


@dataclass
class PerSampleOptimum:
    """Result of :func:`optimize_per_sample` (Awasthi et al. Lemma 1 at work)."""

    Z: torch.Tensor
    labels: torch.Tensor
    loss: float
    class_means: torch.Tensor
    within_class_spread: float
    mean_cosines: torch.Tensor
    etf_cosine_error: float
    grad_norm: float
    restart_losses: list[float]


def optimize_per_sample(
    n_per_class: int,
    prior: torch.Tensor | None = None,
    num_classes: int | None = None,
    k: int = 1,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    beta: float = 0.0,
    dim: int | None = None,
    restarts: int = 2,
    seed: int = 0,
    max_iter: int = 3000,
    tol: float = 1e-11,
) -> PerSampleOptimum:
    """Minimize the exact loss over free unit-norm embeddings of n samples per class.

    For a strictly convex loss (logistic / InfoNCE) the optimum is latent-indistinguishable:
    every sample of a class sits at the same point (``within_class_spread`` -> 0), the class
    means being the class-level optimum (an ETF for balanced classes).
    """
    rho = _resolve_prior(prior, num_classes)
    c = rho.numel()
    n = check_positive_int("n_per_class", n_per_class)
    d = c - 1 if dim is None else check_positive_int("dim", dim)
    labels = torch.arange(c).repeat_interleave(n)
    objective: dict[str, Any] = {
        "prior": rho,
        "k": k,
        "loss": loss,
        "temperature": temperature,
        "negatives": negatives,
        "beta": beta,
    }
    best, losses = _per_sample_restarts(labels, objective, d, restarts, seed, max_iter, tol)
    return _per_sample_result(best, losses, labels, objective, c)


def _per_sample_restarts(
    labels: torch.Tensor,
    objective: dict[str, Any],
    d: int,
    restarts: int,
    seed: int,
    max_iter: int,
    tol: float,
) -> tuple[tuple[float, torch.Tensor], list[float]]:
    """L-BFGS from every seeded start; the best (loss, U) and every start's loss."""
    g = torch.Generator().manual_seed(seed)
    best: tuple[float, torch.Tensor] | None = None
    losses: list[float] = []
    for _ in range(check_positive_int("restarts", restarts)):
        u = torch.randn(labels.numel(), d, generator=g, dtype=torch.float64).requires_grad_(True)

        def objective_fn(u: torch.Tensor = u) -> torch.Tensor:
            return sample_level_loss(_vectors(u, None), labels, **objective)

        _lbfgs_minimize([u], objective_fn, max_iter, tol)
        with torch.no_grad():
            value = float(sample_level_loss(_vectors(u, None), labels, **objective))
        losses.append(value)
        if best is None or value < best[0]:
            best = (value, u.detach().clone())
    assert best is not None
    return best, losses


def _per_sample_result(
    best: tuple[float, torch.Tensor],
    losses: list[float],
    labels: torch.Tensor,
    objective: dict[str, Any],
    c: int,
) -> PerSampleOptimum:
    """Assemble the :class:`PerSampleOptimum` (class means, spread, diagnostics)."""
    z = _vectors(best[1], None).detach().requires_grad_(True)
    sample_level_loss(z, labels, **objective).backward()
    assert z.grad is not None
    grad_norm = _riemannian_grad_norm(z.detach(), z.grad, "sphere")
    z = z.detach()
    means = torch.stack([z[labels == j].mean(0) for j in range(c)])
    spread = max(float(torch.cdist(z[labels == j], z[labels == j]).max()) for j in range(c))
    mn = means / means.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = mn @ mn.T
    off = ~torch.eye(c, dtype=torch.bool)
    return PerSampleOptimum(
        Z=z,
        labels=labels,
        loss=best[0],
        class_means=means,
        within_class_spread=spread,
        mean_cosines=cos,
        etf_cosine_error=float((cos[off] - etf_cosine(c)).abs().max()),
        grad_norm=grad_norm,
        restart_losses=losses,
    )

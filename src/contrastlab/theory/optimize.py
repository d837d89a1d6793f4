"""The optimal geometry: minimize the exact population loss over class vectors.

Awasthi et al. (2022) show that for balanced classes the optimum of the population NCE loss
(with unit-norm representations, d >= C - 1) is the simplex ETF for every k; Jiang et al. (2023)
show SCL/HSCL/UCL are minimized by neural collapse. For an unbalanced prior the optimum is not
an ETF in general and is found numerically here.

Method: class vectors on the unit sphere (V_c = U_c / ||U_c||) or in the unit ball
(V_c = sigmoid(r_c) U_c / ||U_c||), the exact population loss in float64, L-BFGS from
``restarts`` seeded random starts (the first is ``init`` when given); the best start is kept.
Two engines evaluate the loss:

- the smooth, untilted losses (``logistic``, ``infonce``, ``infonce-mean`` with beta = 0), whose
  loss is convex in the Gram matrix G = V V^T: :func:`contrastlab.theory.gram.gram_loss` (numpy,
  analytic gradient dL/dG, no autograd) minimized by the deterministic numpy L-BFGS of
  :mod:`contrastlab.theory.lbfgs` on the flat parameters.
  After every start the optimum is certified by :func:`contrastlab.theory.certify.duality_gap`
  (a bound on L(V V^T) - min over the convex program in G, Awasthi et al.'s reformulation); a
  start whose gap is <= :data:`~contrastlab.theory.certify.CERTIFY_TOL` is a global optimum, and
  the remaining starts are skipped (``restarts`` is a maximum);
- ``hinge`` and the tilted laws (beta > 0), not convex or not smooth in G: the autograd engine of
  :func:`contrastlab.theory.population.population_loss` with torch's strong-Wolfe L-BFGS, every
  start run, no certificate (``duality_gap`` is None and ``duality_gap_reason`` says why).

The reported ``loss`` is the engine's value at the returned V (the numpy engine agrees with
:func:`~contrastlab.theory.population.population_loss` to ~1e-13, tested; both check their
arguments alike, before any work). Diagnostics: the norm of the Riemannian
gradient (the gradient's component tangent to the sphere, or the full gradient in the ball's
interior), the iteration count, the loss of every start run, the duality gap, and the distance
of the class-mean cosines to the ETF value -1/(C-1). Results are deterministic, the same bits
for any number of threads: the numpy engine uses no BLAS reduction (whose order depends on
them), and the torch work of a solve runs on one thread (:func:`_torch_single_threaded`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from contrastlab._validation import check_choice, check_positive_int
from contrastlab.data.latent import check_prior
from contrastlab.losses.family import LOSSES
from contrastlab.theory.certify import CERTIFY_TOL, duality_gap, gram_convexity
from contrastlab.theory.etf import etf_cosine
from contrastlab.theory.gram import GramObjective, gram_loss, gram_objective
from contrastlab.theory.lbfgs import minimize_lbfgs
from contrastlab.theory.population import population_loss, sample_level_loss

CONSTRAINTS = ("sphere", "ball")


@dataclass
class PopulationOptimum:
    """Result of :func:`optimize_population`.

    ``duality_gap`` is the certified bound on the suboptimality of the loss over the convex
    Gram-matrix program (:mod:`contrastlab.theory.certify`), None where the loss is not convex
    and smooth in G, with ``duality_gap_reason`` saying why.
    """

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
    duality_gap: float | None = None
    duality_gap_reason: str | None = None

    @property
    def certified(self) -> bool:
        """Whether the duality gap certifies a global optimum (gap <= ``CERTIFY_TOL``)."""
        return self.duality_gap is not None and self.duality_gap <= CERTIFY_TOL

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
            "starts_run": len(self.restart_losses),
            "duality_gap": self.duality_gap,
            "duality_gap_reason": self.duality_gap_reason,
            **{k: v for k, v in self.downstream.items() if isinstance(v, (int, float, bool))},
        }


@dataclass(frozen=True)
class _Problem:
    """One solve of :func:`optimize_population`: the prior rho, the objective (the keyword
    arguments of :func:`~contrastlab.theory.population.population_loss`), the dimension d, the
    constraint and the settings of the starts (all checked)."""

    rho: torch.Tensor
    objective: dict[str, Any]
    d: int
    constraint: str
    restarts: int
    seed: int
    max_iter: int
    tol: float
    init: torch.Tensor | None


def _vectors(u: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
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


@contextmanager
def _torch_single_threaded() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, then restore the caller's setting.

    The torch work of a solve (argument checks, the autograd engine, the downstream report) is
    on C x C-sized tensors, where the thread pool only adds synchronization: measured with
    OMP_NUM_THREADS=2 on a busy 2-core machine, ~150 ms instead of ~6 ms per call of
    :func:`~contrastlab.theory.population.population_loss` at C = 10. One thread also keeps the
    results independent of the caller's thread count.
    """
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


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


def strong_wolfe_lbfgs(
    params: list[torch.Tensor],
    objective_fn: Callable[[], torch.Tensor],
    max_iter: int,
    tol: float,
) -> int:
    """Strong-Wolfe L-BFGS (torch's, history 50, unit step) on ``params`` minimizing
    ``objective_fn()`` until the gradient's max norm is below ``tol`` or ``max_iter``
    iterations; returns the iterations. The optimizer of every autograd solve of the theory
    and of the recipes' free features."""
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


def _population_starts(p: _Problem) -> Iterator[list[torch.Tensor]]:
    """The free parameters of every start, ``[U]`` (sphere) or ``[U, r]`` (ball), drawn in turn
    from the seeded generator: ``init`` first if given, else seeded normals."""
    c = p.rho.numel()
    g = torch.Generator().manual_seed(p.seed)
    for start in range(p.restarts):
        if start == 0 and p.init is not None:
            u0 = p.init.detach().to(torch.float64).clone()
        else:
            u0 = torch.randn(c, p.d, generator=g, dtype=torch.float64)
        u = u0.requires_grad_(True)
        if p.constraint == "ball":
            yield [u, torch.full((c,), 2.0, dtype=torch.float64, requires_grad=True)]
        else:
            yield [u]


def _autograd_restarts(
    starts: Iterable[list[torch.Tensor]],
    loss_of: Callable[[list[torch.Tensor]], torch.Tensor],
    max_iter: int,
    tol: float,
) -> tuple[tuple[float, list[torch.Tensor], int], list[float]]:
    """Autograd engine: L-BFGS on ``loss_of(params)`` from every start (its free parameters);
    the best (loss, parameters, iterations) and every start's loss."""
    best: tuple[float, list[torch.Tensor], int] | None = None
    restart_losses: list[float] = []
    for params in starts:
        iters = strong_wolfe_lbfgs(params, functools.partial(loss_of, params), max_iter, tol)
        with torch.no_grad():
            value = float(loss_of(params))
        restart_losses.append(value)
        if best is None or value < best[0]:
            best = (value, [t.detach().clone() for t in params], iters)
    assert best is not None
    return best, restart_losses


def _flat_vectors(
    x: np.ndarray, c: int, d: int, constraint: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(V, unit directions, radii sigmoid(r), ||U||) of the flat parameters x = [U, r]."""
    from scipy.special import expit

    u = x[: c * d].reshape(c, d)
    norm = np.maximum(np.sqrt(np.einsum("ij,ij->i", u, u)), 1e-300)
    unit = u / norm[:, None]
    radius = expit(x[c * d :]) if constraint == "ball" else np.ones(c)
    return radius[:, None] * unit, unit, radius, norm


def _flat_loss(
    obj: GramObjective, c: int, d: int, constraint: str
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """x -> (L, dL/dx) for the flat parameters x = [U, r] (the chain rule through G = V V^T,
    dL/dV = 2 H V, then through the normalization of each row and the sigmoid radius)."""

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, unit, radius, norm = _flat_vectors(x, c, d, constraint)
        value, h = gram_loss(obj, np.einsum("id,jd->ij", v, v))
        gv = 2.0 * np.einsum("ij,jd->id", h, v)
        radial = np.einsum("ij,ij->i", gv, unit)
        gu = (radius / norm)[:, None] * (gv - radial[:, None] * unit)
        if constraint == "sphere":
            return value, gu.ravel()
        return value, np.concatenate([gu.ravel(), radial * radius * (1.0 - radius)])

    return fun


def _gram_restarts(
    obj: GramObjective, p: _Problem
) -> tuple[tuple[float, np.ndarray, np.ndarray, int, float], list[float]]:
    """Numpy engine: L-BFGS (:mod:`contrastlab.theory.lbfgs`) from each start (the same starts
    as the autograd engine) until one is certified (module docstring); the best (loss, V,
    gradient dL/dV, iterations, duality gap) and every start's loss."""
    c = obj.prior.size
    fun = _flat_loss(obj, c, p.d, p.constraint)
    best: tuple[float, np.ndarray, np.ndarray, int, float] | None = None
    restart_losses: list[float] = []
    for params in _population_starts(p):
        x0 = np.concatenate([t.detach().numpy().ravel() for t in params])
        res = minimize_lbfgs(fun, x0, p.max_iter, p.tol)
        v = _flat_vectors(res.x, c, p.d, p.constraint)[0]
        gram = np.einsum("id,jd->ij", v, v)
        value, h = gram_loss(obj, gram)
        restart_losses.append(value)
        if best is None or value < best[0]:
            gap = duality_gap(gram, h, p.constraint).gap
            best = (value, v, 2.0 * np.einsum("ij,jd->id", h, v), res.iterations, gap)
        if best[4] <= CERTIFY_TOL:
            break
    assert best is not None
    return best, restart_losses


def _population_result(
    v: torch.Tensor,
    grad: torch.Tensor,
    value: float,
    iters: int,
    restart_losses: list[float],
    p: _Problem,
) -> PopulationOptimum:
    """Assemble the :class:`PopulationOptimum` (geometry and diagnostics) of the best start
    from its vectors V, its loss and the gradient dL/dV there."""
    c = p.rho.numel()
    grad_norm = _riemannian_grad_norm(v, grad, p.constraint)
    gram = torch.from_numpy(np.einsum("id,jd->ij", v.numpy(), v.numpy()))  # no BLAS
    norms = v.norm(dim=1)
    cosines = gram / (norms[:, None] * norms[None, :]).clamp_min(1e-300)
    off = ~torch.eye(c, dtype=torch.bool)
    return PopulationOptimum(
        V=v,
        loss=value,
        prior=p.rho,
        k=p.objective["k"],
        config={
            **{kk: vv for kk, vv in p.objective.items() if kk != "k"},
            "num_classes": c,
            "dim": p.d,
            "constraint": p.constraint,
            "restarts": p.restarts,
            "seed": p.seed,
        },
        gram=gram,
        cosines=cosines,
        norms=norms,
        etf_cosine_error=float((cosines[off] - etf_cosine(c)).abs().max()),
        zero_sum=float(v.sum(0).norm()),
        grad_norm=grad_norm,
        iterations=iters,
        converged=bool(grad_norm <= max(1e3 * p.tol, 1e-7)),
        restart_losses=restart_losses,
    )


def _solve(p: _Problem) -> PopulationOptimum:
    """The best optimum over the starts, by the engine the objective admits (module docstring)."""
    objective = p.objective
    reason = gram_convexity(objective["loss"], objective["beta"])
    if reason is None:
        obj = gram_objective(p.rho, objective["k"], objective["loss"], objective["temperature"],
                             objective["negatives"], p.constraint)
        (value, v, grad, iters, gap), losses = _gram_restarts(obj, p)
        result = _population_result(
            torch.from_numpy(v), torch.from_numpy(grad), value, iters, losses, p
        )
        result.duality_gap = gap
        return result
    population_loss(torch.eye(p.rho.numel(), p.d, dtype=torch.float64) + 0.1, p.rho, **objective)

    def loss_of(params: list[torch.Tensor]) -> torch.Tensor:
        return population_loss(_vectors(*params), p.rho, **objective)

    (value, params, iters), losses = _autograd_restarts(
        _population_starts(p), loss_of, p.max_iter, p.tol
    )
    v_var = _vectors(*params).detach().requires_grad_(True)
    population_loss(v_var, p.rho, **objective).backward()
    assert v_var.grad is not None
    result = _population_result(v_var.detach(), v_var.grad, value, iters, losses, p)
    result.duality_gap_reason = reason
    return result


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
    """Minimize the exact population loss over C class vectors (module docstring).

    Args:
        prior: (C,) class prior (None: balanced, then ``num_classes`` is required).
        k, loss, temperature, negatives, beta: the objective (see
            :func:`contrastlab.theory.population.population_loss`).
        num_classes: C, when ``prior`` is None.
        dim: the representation dimension d (default C - 1).
        constraint: ``sphere`` (unit norm) or ``ball`` (norm <= 1).
        restarts: the number of starts (>= 1); the best is returned. For the certified losses
            (convex in G) the starts stop at the first whose duality gap is <= 1e-6.
        seed: seeds the starts.
        max_iter: L-BFGS iteration budget per start.
        tol: stop when the gradient norm (max over the parameters) falls below this.
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
    check_choice("loss", loss, LOSSES)
    objective = _objective(k, loss, temperature, negatives, beta)
    if init is not None and init.shape != (c, d):
        raise ValueError(f"init must have shape ({c}, {d}); got {tuple(init.shape)}")
    problem = _Problem(rho, objective, d, constraint, restarts, seed, max_iter, tol, init)
    with _torch_single_threaded():
        result = _solve(problem)
        if with_downstream:
            from contrastlab.theory.downstream import downstream_report

            report = downstream_report(result.V, rho, loss=loss, temperature=temperature)
            result.downstream = {key: val for key, val in report.items() if key != "cosine"}
    return result


def _objective(
    k: int, loss: str, temperature: float, negatives: str, beta: float
) -> dict[str, Any]:
    """The keywords that define the objective of :func:`population_loss` and
    :func:`sample_level_loss` (the other keywords are the prior or the labels)."""
    return {"k": k, "loss": loss, "temperature": temperature, "negatives": negatives,
            "beta": beta}


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
    objective = {"prior": rho, **_objective(k, loss, temperature, negatives, beta)}
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
    n = labels.numel()
    starts = (
        [torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)]
        for _ in range(check_positive_int("restarts", restarts))
    )

    def loss_of(params: list[torch.Tensor]) -> torch.Tensor:
        return sample_level_loss(_vectors(params[0]), labels, **objective)

    (value, params, _), losses = _autograd_restarts(starts, loss_of, max_iter, tol)
    return (value, params[0]), losses


def _per_sample_result(
    best: tuple[float, torch.Tensor],
    losses: list[float],
    labels: torch.Tensor,
    objective: dict[str, Any],
    c: int,
) -> PerSampleOptimum:
    """Assemble the :class:`PerSampleOptimum` (class means, spread, diagnostics)."""
    z = _vectors(best[1]).detach().requires_grad_(True)
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

"""The Gram-matrix engine, the duality-gap certificate and the deterministic L-BFGS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastlab.data.latent import two_level_prior, zipf_prior
from contrastlab.theory.certify import (
    CERTIFY_TOL,
    NOT_SMOOTH,
    TILTED,
    duality_gap,
    gram_convexity,
)
from contrastlab.theory.etf import etf_loss, simplex_etf
from contrastlab.theory.gram import gram_loss, gram_objective
from contrastlab.theory.lbfgs import minimize_lbfgs
from contrastlab.theory.optimize import optimize_population
from contrastlab.theory.population import population_loss


def _unit_rows(c: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((c, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _random_feasible(c: int, constraint: str, rng: np.random.Generator) -> np.ndarray:
    """A random feasible Gram matrix of any rank (unit diagonal, or diagonal <= 1)."""
    v = rng.standard_normal((c, int(rng.integers(1, c + 1))))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if constraint == "ball":
        v *= rng.uniform(0.0, 1.0, size=(c, 1))
    return v @ v.T


@pytest.mark.parametrize("loss", ["logistic", "infonce", "infonce-mean"])
@pytest.mark.parametrize("negatives", ["marginal", "other-class"])
@pytest.mark.parametrize("k", [1, 7, 4096])
def test_gram_loss_matches_the_autograd_engine(loss, negatives, k) -> None:
    c = 6
    rho = zipf_prior(c, 1.0)
    t = 0.3 if loss != "logistic" else 1.0
    v = _unit_rows(c, c, seed=k) * np.linspace(0.5, 1.0, c)[:, None]
    value, h = gram_loss(gram_objective(rho, k, loss, t, negatives, "ball"), v @ v.T)
    vt = torch.from_numpy(v).requires_grad_(True)
    ref = population_loss(vt, rho, k=k, loss=loss, temperature=t, negatives=negatives)
    ref.backward()
    assert value == pytest.approx(float(ref.detach()), rel=1e-12, abs=1e-13)
    assert vt.grad is not None
    np.testing.assert_allclose(2.0 * h @ v, vt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(h, h.T)


def test_gram_loss_is_the_closed_form_at_the_etf() -> None:
    for k in (1, 16, 256):
        v = simplex_etf(10).numpy()
        value, _ = gram_loss(gram_objective(torch.full((10,), 0.1), k), v @ v.T)
        assert value == pytest.approx(etf_loss(10, k), abs=1e-12)


def test_convexity_predicate() -> None:
    assert gram_convexity("infonce", 0.0) is None
    assert gram_convexity("logistic", 0.0) is None
    assert gram_convexity("infonce-mean", 0.0) is None
    assert gram_convexity("hinge", 0.0) == NOT_SMOOTH
    assert gram_convexity("infonce", 0.5) == TILTED
    with pytest.raises(ValueError, match="loss"):
        gram_objective(torch.full((3,), 1 / 3), 2, loss="hinge")


@pytest.mark.parametrize("k", [1, 16, 256])
@pytest.mark.parametrize("negatives", ["marginal", "other-class"])
def test_gap_vanishes_at_the_balanced_etf_and_not_elsewhere(k, negatives) -> None:
    c = 8
    obj = gram_objective(torch.full((c,), 1.0 / c), k, negatives=negatives)
    v = simplex_etf(c).numpy()
    g = v @ v.T
    cert = duality_gap(g, gram_loss(obj, g)[1])
    assert cert.gap <= 1e-12 and cert.min_eigenvalue > -1e-12
    # perturbed ETF: still on the sphere, clearly not optimal
    w = v + 0.05 * _unit_rows(c, c - 1, seed=k)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    value, h = gram_loss(obj, w @ w.T)
    gap = duality_gap(w @ w.T, h).gap
    assert gap > 1e-4
    assert value - etf_loss(c, k, negatives=negatives) <= gap  # the bound holds at the optimum


@pytest.mark.parametrize("constraint", ["sphere", "ball"])
@pytest.mark.parametrize("prior", ["balanced", "two-level"])
def test_the_bound_holds_for_random_feasible_points(constraint, prior) -> None:
    """L(G') >= L(G) - gap for every feasible G' (the certificate's claim), at random G."""
    c, rng = 5, np.random.default_rng(7)
    rho = torch.full((c,), 1.0 / c) if prior == "balanced" else two_level_prior(c, 1, 10.0)
    obj = gram_objective(rho, 8, "infonce", 0.7, "marginal", constraint)
    for _ in range(10):
        g = _random_feasible(c, constraint, rng)
        value, h = gram_loss(obj, g)
        cert = duality_gap(g, h, constraint)
        s = h + np.diag(cert.multipliers)
        assert np.linalg.eigvalsh(s).min() >= -1e-12  # dual feasible
        if constraint == "ball":
            assert (cert.multipliers >= 0).all()
        others = [gram_loss(obj, _random_feasible(c, constraint, rng))[0] for _ in range(50)]
        assert min(others) >= value - cert.gap - 1e-12


def test_certified_optimum_is_the_best_of_many_starts() -> None:
    """An unbalanced prior: the certified optimum is not beaten by any of 6 random starts."""
    rho = zipf_prior(6, 1.5)
    first = optimize_population(prior=rho, k=32, restarts=1, with_downstream=False)
    assert first.duality_gap is not None and first.duality_gap <= CERTIFY_TOL
    many = optimize_population(prior=rho, k=32, restarts=6, seed=3, with_downstream=False)
    assert min(many.restart_losses) >= first.loss - first.duality_gap
    assert first.etf_cosine_error > 1e-3  # not the ETF


def test_lbfgs_minimizes_the_rosenbrock_function() -> None:
    def rosen(x: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = x[:-1], x[1:]
        f = float(np.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2))
        g = np.zeros_like(x)
        g[:-1] += -400.0 * a * (b - a**2) - 2.0 * (1.0 - a)
        g[1:] += 200.0 * (b - a**2)
        return f, g

    res = minimize_lbfgs(rosen, np.full(6, -1.2), max_iter=500, gtol=1e-10)
    np.testing.assert_allclose(res.x, np.ones(6), atol=1e-8)
    assert res.iterations < 500
    again = minimize_lbfgs(rosen, np.full(6, -1.2), max_iter=500, gtol=1e-10)
    np.testing.assert_array_equal(res.x, again.x)
    assert minimize_lbfgs(rosen, np.full(6, -1.2), max_iter=1, gtol=1e-10).iterations == 1

"""Tests of contrastlab.data.synthetic: Gaussian and cap classes, mixtures, the circle toy."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from contrastlab.data import (
    CircleClass,
    GaussianClass,
    LatentClassModel,
    SphericalCapClass,
    circle_toy,
    circle_toy_dataset,
    gaussian_mixture,
    make_generator,
    zipf_prior,
)

# ---------------------------------------------------------------------------------------------
# GaussianClass
# ---------------------------------------------------------------------------------------------


def test_gaussian_moments_and_dtype() -> None:
    mean = torch.tensor([1.0, -2.0, 0.5])
    g = GaussianClass(mean, std=0.7)
    assert g.input_shape == (3,)
    n = 20000
    x = g.sample(n, make_generator(0))
    assert x.shape == (n, 3) and x.dtype == torch.float32
    x64 = x.double()
    assert bool(((x64.mean(0) - mean.double()).abs() < 5 * 0.7 / math.sqrt(n)).all())
    cov = torch.cov(x64.T)
    torch.testing.assert_close(cov, 0.49 * torch.eye(3, dtype=torch.float64), atol=0.03, rtol=0)
    assert GaussianClass(mean, dtype=torch.float64).sample(2).dtype == torch.float64
    assert bool(g.contains(x).all())  # support R^d


def test_gaussian_reproducible() -> None:
    g = GaussianClass([0.0, 0.0], std=1.0, radius=1.0)
    assert torch.equal(g.sample(50, make_generator(3)), g.sample(50, make_generator(3)))
    assert not torch.equal(g.sample(50, make_generator(3)), g.sample(50, make_generator(4)))


def _truncated_chi_cdf(d: int, std: float, radius: float) -> Callable[[np.ndarray], np.ndarray]:
    mass = stats.chi2.cdf((radius / std) ** 2, d)
    return lambda r: np.asarray(stats.chi2.cdf((np.asarray(r) / std) ** 2, d) / mass)


@pytest.mark.parametrize("d, std, radius", [(3, 1.0, 2.0), (20, 1.0, 2.0), (1, 0.5, 0.3)])
def test_truncated_gaussian_law(d: int, std: float, radius: float) -> None:
    """Bounded support, radius ~ truncated chi_d, direction uniform (exact, any mass)."""
    mean = torch.linspace(-1, 1, d)
    g = GaussianClass(mean, std, radius, dtype=torch.float64)
    n = 20000
    x = g.sample(n, make_generator(1))
    r = (x - mean.double()).norm(dim=1).numpy()
    assert r.max() <= radius
    assert bool(g.contains(x).all())
    assert stats.kstest(r, _truncated_chi_cdf(d, std, radius)).pvalue > 1e-3
    directions = (x - mean.double()) / torch.from_numpy(r)[:, None]
    assert float(directions.mean(0).norm()) < 5 / math.sqrt(n)


def test_truncation_changes_the_law() -> None:
    """The KS test above can fail: the untruncated chi law is rejected."""
    d, std, radius = 3, 1.0, 1.5
    g = GaussianClass(torch.zeros(d), std, radius, dtype=torch.float64)
    r = g.sample(20000, make_generator(2)).norm(dim=1).numpy()
    assert stats.kstest(r, lambda t: stats.chi2.cdf(np.asarray(t) ** 2, d)).pvalue < 1e-6
    assert g.support_mass == pytest.approx(stats.chi2.cdf(radius**2, d), rel=1e-10)


def test_contains_rejects_outside_points() -> None:
    g = GaussianClass([0.0, 0.0], 1.0, radius=1.0)
    inside = g.contains(torch.tensor([[0.5, 0.5], [1.0, 0.0], [1.01, 0.0], [0.0, -2.0]]))
    assert inside.tolist() == [True, True, False, False]


# ---------------------------------------------------------------------------------------------
# SphericalCapClass
# ---------------------------------------------------------------------------------------------


def _angle(x: torch.Tensor, u: torch.Tensor) -> np.ndarray:
    x = x.double()
    u = u.double() / u.double().norm()
    par = x @ u
    perp = (x - par[:, None] * u).norm(dim=1)
    return torch.atan2(perp, par).numpy()


def test_cap_samples_are_unit_vectors_in_the_cap() -> None:
    u = torch.tensor([1.0, 2.0, 2.0, 0.0])
    s = SphericalCapClass(u, std=0.3, max_angle=0.35)
    x = s.sample(5000, make_generator(0))
    assert x.shape == (5000, 4) and x.dtype == torch.float32
    torch.testing.assert_close(x.double().norm(dim=1), torch.ones(5000, dtype=torch.float64))
    assert _angle(x, u).max() <= 0.35 + 1e-6
    assert bool(s.contains(x).all())
    assert not bool(s.contains(torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 2.0, 2.0, 0.0]])).any())


@pytest.mark.parametrize("max_angle", [0.3, 2.0])
def test_cap_law_is_the_conditioned_projected_normal(max_angle: float) -> None:
    """cap_probability matches the unrestricted law, and the capped law is its conditioning."""
    u = torch.tensor([0.0, 1.0, 0.0])
    std = 0.8 if max_angle < 1 else 1.5
    free = SphericalCapClass(u, std=std, dtype=torch.float64)
    capped = SphericalCapClass(u, std=std, max_angle=max_angle, dtype=torch.float64)
    n = 40000
    a_free = _angle(free.sample(n, make_generator(1)), u)
    frac = float((a_free <= max_angle).mean())
    p = capped.cap_probability
    assert abs(frac - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    a_cap = _angle(capped.sample(8000, make_generator(2)), u)
    assert a_cap.max() <= max_angle
    assert stats.ks_2samp(a_cap, a_free[a_free <= max_angle]).pvalue > 1e-3
    # and the unconditioned law is rejected by the same test
    assert stats.ks_2samp(a_cap, a_free).pvalue < 1e-6


def test_cap_reproducible_and_small_cap_is_fast() -> None:
    s = SphericalCapClass(torch.ones(8), std=1.0, max_angle=0.4)
    assert 1e-4 < s.cap_probability < 1e-2  # rejection needs batches sized by the acceptance
    x1 = s.sample(200, make_generator(5))
    assert torch.equal(x1, s.sample(200, make_generator(5)))
    assert not torch.equal(x1, s.sample(200, make_generator(6)))
    assert bool(s.contains(x1).all())


# ---------------------------------------------------------------------------------------------
# gaussian_mixture: the disjoint-support guarantee
# ---------------------------------------------------------------------------------------------

LAYOUTS = [(4, 8), (5, 4), (7, 4), (30, 3), (40, 2)]  # simplex, cross, grid/spread


def test_a_mixture_needs_two_classes() -> None:
    with pytest.raises(ValueError, match=r"C must be an integer >= 2"):
        gaussian_mixture(1, 3)


def _membership(model: LatentClassModel, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([s.contains(x) for s in model.samplers], 1)


@pytest.mark.parametrize("sphere", [False, True])
@pytest.mark.parametrize("C, dim", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_disjoint_supports_hold(C: int, dim: int, sphere: bool, dtype: torch.dtype) -> None:
    model = gaussian_mixture(C, dim, zipf_prior(C), sphere=sphere, seed=1, dtype=dtype)
    assert model.num_classes == C and model.input_shape == (dim,)
    x, y = model.sample(3000, make_generator(7))
    assert x.dtype == dtype
    member = _membership(model, x)
    assert bool(member[torch.arange(3000), y].all())  # each point in its own support
    assert bool((member.sum(1) == 1).all()) or C == 1  # and in no other
    if C == 1:
        return
    if sphere:
        centers = torch.stack([s.direction for s in model.samplers])
        cap = model.samplers[0].max_angle
        ang = torch.stack([torch.from_numpy(_angle(x, c)) for c in centers], 1)
        gaps = ang.gather(1, y[:, None]).squeeze(1)
        ang[torch.arange(3000), y] = math.inf
        assert float(gaps.max()) <= cap + 1e-6 and float(ang.min()) > cap
    else:
        means = torch.stack([s.mean for s in model.samplers])
        radius = model.samplers[0].radius
        dist = torch.cdist(x.double(), means)
        own = dist.gather(1, y[:, None]).squeeze(1)
        dist[torch.arange(3000), y] = math.inf
        assert float(own.max()) <= radius * (1 + 1e-6) and float(dist.min()) > radius
        pair = torch.cdist(means, means)
        pair.fill_diagonal_(math.inf)
        assert float(pair.min()) == pytest.approx(1.0, rel=1e-9)  # separation
        assert 2 * radius < float(pair.min())


def test_overlapping_mixture_overlaps() -> None:
    """disjoint=False with a wide std: some points are nearer another class's mean than the
    disjoint radius allows, so the disjointness check above can fail."""
    model = gaussian_mixture(5, 4, disjoint=False, std=0.5, seed=0, dtype=torch.float64)
    x, y = model.sample(3000, make_generator(8))
    means = torch.stack([s.mean for s in model.samplers])
    dist = torch.cdist(x, means)
    assert bool((dist.argmin(1) != y).any())
    assert all(s.radius is None for s in model.samplers)


def test_simplex_layout_and_seeding() -> None:
    model = gaussian_mixture(5, 6, sphere=True, seed=3)
    u = torch.stack([s.direction for s in model.samplers])
    gram = u @ u.T
    off = gram[~torch.eye(5, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -0.25), atol=1e-12, rtol=0)
    same = gaussian_mixture(5, 6, sphere=True, seed=3)
    other = gaussian_mixture(5, 6, sphere=True, seed=4)
    assert torch.equal(same.samplers[2].direction, model.samplers[2].direction)
    assert not torch.equal(other.samplers[2].direction, model.samplers[2].direction)


def test_mixture_separation_and_prior() -> None:
    model = gaussian_mixture(6, 3, [0.5, 0.1, 0.1, 0.1, 0.1, 0.1], separation=3.0, seed=2)
    means = torch.stack([s.mean for s in model.samplers])
    pair = torch.cdist(means, means)
    pair.fill_diagonal_(math.inf)
    assert float(pair.min()) == pytest.approx(3.0, rel=1e-9)
    assert float(model.prior[0]) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Bao et al.'s circle toy
# ---------------------------------------------------------------------------------------------


def test_circle_dataset_norms_and_layout() -> None:
    x, y = circle_toy_dataset()  # the paper's C = 100, 1000 per class
    assert x.shape == (100_000, 2) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert torch.equal(y, torch.arange(100).repeat_interleave(1000))
    torch.testing.assert_close(x.double().norm(dim=1), (y.double() + 1) / 2, rtol=1e-6, atol=0)


def test_circle_dataset_seeded() -> None:
    a, _ = circle_toy_dataset(5, 20, seed=1)
    b, _ = circle_toy_dataset(5, 20, seed=1)
    c, _ = circle_toy_dataset(5, 20, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _octant_tan(x: torch.Tensor) -> np.ndarray:
    a = x.double().abs()
    return (a.min(1).values / a.max(1).values).numpy()


def test_circle_directions_follow_the_normalized_square() -> None:
    """Bao et al. normalize a uniform point of [-0.5, 0.5)^2: within an octant, tan of the angle
    to the nearest axis is U(0, 1). Uniform angles would fail this test."""
    x, _ = circle_toy_dataset(2, 10000, seed=3, dtype=torch.float64)
    assert stats.kstest(_octant_tan(x), "uniform").pvalue > 1e-3
    theta = torch.rand(20000, dtype=torch.float64, generator=make_generator(4)) * 2 * math.pi
    uniform_angle = torch.stack([theta.cos(), theta.sin()], 1)
    assert stats.kstest(_octant_tan(uniform_angle), "uniform").pvalue < 1e-6


def test_circle_model() -> None:
    model = circle_toy()
    assert model.num_classes == 100 and model.input_shape == (2,)
    assert [s.radius for s in model.samplers[:3]] == [0.5, 1.0, 1.5]
    t = model.sample_tuples(200, 16, generator=make_generator(5))
    torch.testing.assert_close(
        t.negatives.double().norm(dim=-1), (t.negative_class.double() + 1) / 2, rtol=1e-6, atol=0
    )
    torch.testing.assert_close(
        t.positive.double().norm(dim=-1), (t.anchor_class.double() + 1) / 2, rtol=1e-6, atol=0
    )
    c = CircleClass(2.0)
    assert c.contains(torch.tensor([[2.0, 0.0], [1.0, 1.0]])).tolist() == [True, False]


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

BAD: list[tuple[str, Callable[[], Any]]] = [
    ("mean", lambda: GaussianClass([[0.0]])),
    ("mean", lambda: GaussianClass([])),
    ("std", lambda: GaussianClass([0.0], std=0.0)),
    ("radius", lambda: GaussianClass([0.0], radius=-1.0)),
    ("radius", lambda: GaussianClass(torch.zeros(50), std=1.0, radius=0.5)),  # mass < 1e-7
    ("dtype", lambda: GaussianClass([0.0], dtype=torch.int64)),
    ("n", lambda: GaussianClass([0.0]).sample(0)),
    ("generator", lambda: GaussianClass([0.0]).sample(2, generator=1)),
    ("direction", lambda: SphericalCapClass([0.0, 0.0])),
    ("direction", lambda: SphericalCapClass([1.0])),
    ("std", lambda: SphericalCapClass([1.0, 0.0], std=-1.0)),
    ("max_angle", lambda: SphericalCapClass([1.0, 0.0], max_angle=4.0)),
    ("max_angle", lambda: SphericalCapClass(torch.ones(64), std=10.0, max_angle=0.05)),
    ("C", lambda: gaussian_mixture(0, 3)),
    ("dim", lambda: gaussian_mixture(3, 0)),
    ("dim", lambda: gaussian_mixture(3, 1, sphere=True)),
    ("separation", lambda: gaussian_mixture(3, 3, sphere=True, separation=2.0)),
    ("separation", lambda: gaussian_mixture(3, 3, separation=0.0)),
    ("margin", lambda: gaussian_mixture(3, 3, margin=0.0)),
    ("margin", lambda: gaussian_mixture(3, 3, margin=1.0)),
    ("std", lambda: gaussian_mixture(3, 3, std=-0.1)),
    ("prior", lambda: gaussian_mixture(3, 3, prior=[0.5, 0.5])),
    ("seed", lambda: gaussian_mixture(3, 3, seed=-1)),
    ("disjoint", lambda: gaussian_mixture(3, 3, disjoint="yes")),
    ("radius", lambda: CircleClass(0.0)),
    ("C", lambda: circle_toy(0)),
    ("per_class", lambda: circle_toy_dataset(3, 0)),
]


@pytest.mark.parametrize("name, call", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_input_raises_one_line_value_error(name: str, call: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b") as info:
        call()
    assert "\n" not in str(info.value)

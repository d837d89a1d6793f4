"""Tests of contrastlab.data.latent: priors, the latent-class model and collision statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from contrastlab.data import (
    ClassSampler,
    ContrastiveTuples,
    GaussianClass,
    LatentClassModel,
    balanced_prior,
    binomial_pmf,
    check_prior,
    dirichlet_prior,
    make_generator,
    zipf_prior,
)


class Tagged:
    """Class sampler whose column 0 is the class index and column 1 a fresh U(0,1) draw."""

    def __init__(self, c: int) -> None:
        self.c = c
        self.input_shape = (2,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, dtype=torch.float64, generator=generator)
        return torch.stack([torch.full((n,), float(self.c), dtype=torch.float64), u], 1)


class Image:
    """Class sampler with a 2-D input shape."""

    input_shape = (2, 3)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, 2, 3, generator=generator)


def tagged_model(prior: Any = None, C: int | None = None) -> LatentClassModel:
    C = len(prior) if C is None else C
    return LatentClassModel([Tagged(c) for c in range(C)], prior)


def chisquare_p(counts: np.ndarray, expected: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value, cells with expected < 5 merged into one."""
    counts, expected = np.asarray(counts, float), np.asarray(expected, float)
    big = expected >= 5
    obs = list(counts[big])
    exp = list(expected[big])
    if (~big).any():
        obs.append(counts[~big].sum())
        exp.append(expected[~big].sum())
    obs_a, exp_a = np.array(obs), np.array(exp)
    exp_a *= obs_a.sum() / exp_a.sum()
    return float(stats.chisquare(obs_a, exp_a).pvalue)


# ---------------------------------------------------------------------------------------------
# priors
# ---------------------------------------------------------------------------------------------


def test_balanced_prior() -> None:
    rho = balanced_prior(7)
    assert rho.dtype == torch.float64 and rho.shape == (7,)
    torch.testing.assert_close(rho, torch.full((7,), 1 / 7, dtype=torch.float64))


def test_zipf_prior_ratios() -> None:
    rho = zipf_prior(6, s=1.5)
    assert rho.dtype == torch.float64
    assert abs(float(rho.sum()) - 1.0) < 1e-15
    ranks = torch.arange(1, 7, dtype=torch.float64)
    torch.testing.assert_close(rho[0] / rho, ranks**1.5, rtol=1e-13, atol=0)
    torch.testing.assert_close(zipf_prior(5, s=0.0), balanced_prior(5))


def test_dirichlet_prior_seeded() -> None:
    a = dirichlet_prior(5, 0.5, seed=3)
    assert a.dtype == torch.float64 and a.shape == (5,)
    assert bool((a >= 0).all()) and abs(float(a.sum()) - 1) < 1e-12
    torch.testing.assert_close(a, dirichlet_prior(5, 0.5, seed=3), rtol=0, atol=0)
    torch.testing.assert_close(a, dirichlet_prior(5, 0.5, generator=make_generator(3)))
    assert not torch.equal(a, dirichlet_prior(5, 0.5, seed=4))


def test_dirichlet_prior_mean() -> None:
    alpha = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    g = make_generator(0)
    draws = torch.stack([dirichlet_prior(4, alpha, generator=g) for _ in range(2000)])
    mean = alpha / alpha.sum()
    var = mean * (1 - mean) / (alpha.sum() + 1)
    z = (draws.mean(0) - mean) / torch.sqrt(var / 2000)
    assert bool((z.abs() < 4.5).all()), z
    # and tiny concentrations stay a valid prior (no NaN)
    sparse = dirichlet_prior(50, 1e-3, seed=1)
    assert bool(torch.isfinite(sparse).all()) and abs(float(sparse.sum()) - 1) < 1e-12


def test_check_prior_accepts_and_renormalizes() -> None:
    rho = check_prior([0.2, 0.3, 0.5 + 1e-9], 3)
    assert rho.dtype == torch.float64
    assert float(rho.sum()) == pytest.approx(1.0, abs=1e-15)
    check_prior(np.array([1.0, 0.0]))
    check_prior(torch.tensor([0.25] * 4, dtype=torch.float32))


@pytest.mark.parametrize(
    "rho, num_classes",
    [
        ([0.5, 0.6], None),  # sums to 1.1
        ([1.2, -0.2], None),  # negative entry
        ([0.5, 0.5], 3),  # wrong length
        ([[0.5, 0.5]], None),  # 2-D
        ([], None),  # empty
        ([float("nan"), 1.0], None),
        ("abc", None),
    ],
)
def test_check_prior_rejects(rho: Any, num_classes: int | None) -> None:
    with pytest.raises(ValueError, match=r"^prior\b") as info:
        check_prior(rho, num_classes)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# the model: construction, shapes, dtypes, reproducibility
# ---------------------------------------------------------------------------------------------


def test_protocol_and_properties() -> None:
    model = LatentClassModel([GaussianClass([0.0, 0.0]), GaussianClass([3.0, 0.0])], [0.3, 0.7])
    assert isinstance(model.samplers[0], ClassSampler)
    assert model.num_classes == 2
    assert model.input_shape == (2,)
    torch.testing.assert_close(model.prior, torch.tensor([0.3, 0.7], dtype=torch.float64))
    model.prior[0] = 5.0  # a copy: the model is unchanged
    assert float(model.prior[0]) == pytest.approx(0.3)
    torch.testing.assert_close(LatentClassModel([Tagged(0), Tagged(1)]).prior, balanced_prior(2))


def test_sample_shapes_and_dtypes() -> None:
    model = LatentClassModel([GaussianClass(torch.zeros(3)), GaussianClass(torch.ones(3))])
    x, y = model.sample(17, make_generator(0))
    assert x.shape == (17, 3) and x.dtype == torch.float32
    assert y.shape == (17,) and y.dtype == torch.int64
    t = model.sample_tuples(5, 9, generator=make_generator(0))
    assert isinstance(t, ContrastiveTuples)
    assert t.anchor.shape == (5, 3) and t.positive.shape == (5, 3)
    assert t.negatives.shape == (5, 9, 3)
    assert t.anchor_class.shape == (5,) and t.negative_class.shape == (5, 9)
    assert t.anchor_class.dtype == torch.int64 and t.negative_class.dtype == torch.int64
    assert (t.n, t.k) == (5, 9)
    assert t.collisions.shape == (5,)


def test_multi_dimensional_inputs() -> None:
    model = LatentClassModel([Image(), Image(), Image()])
    t = model.sample_tuples(4, 6, "other-class", make_generator(1))
    assert t.anchor.shape == (4, 2, 3) and t.negatives.shape == (4, 6, 2, 3)
    x, _ = model.sample(3)
    assert x.shape == (3, 2, 3)


def test_inputs_come_from_their_class_and_are_independent() -> None:
    model = tagged_model(zipf_prior(5))
    n = 4000
    t = model.sample_tuples(n, 7, generator=make_generator(2))
    assert torch.equal(t.anchor[:, 0].long(), t.anchor_class)
    assert torch.equal(t.positive[:, 0].long(), t.anchor_class)
    assert torch.equal(t.negatives[..., 0].long(), t.negative_class)
    # anchor and positive are two independent draws: distinct, uncorrelated
    a, p = t.anchor[:, 1], t.positive[:, 1]
    assert not bool((a == p).any())
    corr = float(torch.corrcoef(torch.stack([a, p]))[0, 1])
    assert abs(corr) < 4.5 / math.sqrt(n)
    x, y = model.sample(100, make_generator(3))
    assert torch.equal(x[:, 0].long(), y)


def test_positive_is_a_fresh_gaussian_draw() -> None:
    """Var(anchor - positive) = 2 std^2 when the positive is an independent draw from D_c."""
    model = LatentClassModel([GaussianClass([0.0], 0.5), GaussianClass([10.0], 0.5)])
    t = model.sample_tuples(20000, 1, generator=make_generator(4))
    diff = (t.anchor - t.positive).double().squeeze(1)
    assert float(diff.var()) == pytest.approx(2 * 0.25, rel=0.05)


def test_reproducible_with_a_seed() -> None:
    model = LatentClassModel([GaussianClass(torch.full((2,), float(c))) for c in range(4)])
    for negatives in ("marginal", "other-class"):
        t1 = model.sample_tuples(50, 8, negatives, make_generator(11))
        t2 = model.sample_tuples(50, 8, negatives, make_generator(11))
        t3 = model.sample_tuples(50, 8, negatives, make_generator(12))
        for field in ("anchor", "positive", "negatives", "anchor_class", "negative_class"):
            assert torch.equal(getattr(t1, field), getattr(t2, field))
        assert not torch.equal(t1.negatives, t3.negatives)
    x1, y1 = model.sample(30, make_generator(5))
    x2, y2 = model.sample(30, make_generator(5))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_global_generator_is_used_without_one() -> None:
    model = tagged_model(C=3)
    torch.manual_seed(123)
    a = model.sample_tuples(10, 4)
    torch.manual_seed(123)
    b = model.sample_tuples(10, 4)
    assert torch.equal(a.negatives, b.negatives)


# ---------------------------------------------------------------------------------------------
# laws of the classes
# ---------------------------------------------------------------------------------------------


def test_class_frequencies_match_the_prior() -> None:
    rho = zipf_prior(6, 1.0)
    model = tagged_model(rho)
    n = 40000
    _, y = model.sample(n, make_generator(6))
    counts = torch.bincount(y, minlength=6).numpy()
    assert chisquare_p(counts, n * rho.numpy()) > 1e-3
    # the same test rejects a wrong prior, so it can fail
    assert chisquare_p(counts, n * balanced_prior(6).numpy()) < 1e-10


def test_zero_probability_classes_never_drawn() -> None:
    model = tagged_model([0.5, 0.0, 0.5, 0.0])
    for negatives in ("marginal", "other-class"):
        t = model.sample_tuples(3000, 5, negatives, make_generator(7))
        assert not bool((t.anchor_class == 1).any()) and not bool((t.anchor_class == 3).any())
        assert not bool((t.negative_class == 1).any()) and not bool((t.negative_class == 3).any())


def test_marginal_negatives_follow_rho_whatever_the_anchor() -> None:
    rho = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    model = tagged_model(rho)
    t = model.sample_tuples(4000, 10, "marginal", make_generator(8))
    for c in range(3):
        neg = t.negative_class[t.anchor_class == c].reshape(-1)
        counts = torch.bincount(neg, minlength=3).numpy()
        assert chisquare_p(counts, neg.numel() * rho.numpy()) > 1e-3
    assert int(t.collisions.sum()) > 0


def test_other_class_negatives_never_collide_and_follow_renormalized_rho() -> None:
    rho = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)
    model = tagged_model(rho)
    t = model.sample_tuples(4000, 12, "other-class", make_generator(9))
    assert int(t.collisions.sum()) == 0
    assert not bool((t.negative_class == t.anchor_class[:, None]).any())
    for c in range(4):
        neg = t.negative_class[t.anchor_class == c].reshape(-1)
        want = rho.clone()
        want[c] = 0.0
        want = want / want.sum()
        counts = torch.bincount(neg, minlength=4).numpy()
        assert counts[c] == 0
        keep = np.arange(4) != c
        assert chisquare_p(counts[keep], neg.numel() * want.numpy()[keep]) > 1e-3
        # the marginal law (which allows class c) is rejected: the test can fail
        assert chisquare_p(counts, neg.numel() * rho.numpy()) < 1e-6


def test_other_class_with_extreme_prior_is_exact() -> None:
    """rho = (1 - 1e-9, 1e-9): a rejection sampler would stall; the exact one does not."""
    model = tagged_model([1 - 1e-9, 1e-9])
    t = model.sample_tuples(200, 50, "other-class", make_generator(10))
    assert bool((t.negative_class == 1 - t.anchor_class[:, None]).all())


def test_collision_counts_match_collision_pmf() -> None:
    rho = zipf_prior(4, 1.0)
    model = tagged_model(rho)
    n, k = 20000, 10
    t = model.sample_tuples(n, k, "marginal", make_generator(12))
    m = (t.negative_class == t.anchor_class[:, None]).sum(1)
    assert torch.equal(m, t.collisions)
    counts = torch.bincount(m, minlength=k + 1).numpy()
    pmf = model.collision_pmf(k).numpy()
    assert chisquare_p(counts, n * pmf) > 1e-3
    tv = 0.5 * np.abs(counts / n - pmf).sum()
    assert tv < 0.02
    # the balanced-prior prediction is rejected: the test can fail
    wrong = tagged_model(C=4).collision_pmf(k).numpy()
    assert chisquare_p(counts, n * wrong) < 1e-6
    # per anchor class: Binomial(k, rho_c)
    for c in range(4):
        mc = m[t.anchor_class == c]
        counts_c = torch.bincount(mc, minlength=k + 1).numpy()
        assert chisquare_p(counts_c, mc.numel() * model.collision_pmf(k, c).numpy()) > 1e-3


# ---------------------------------------------------------------------------------------------
# exact collision statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 64, 1000])
def test_collision_pmf_equals_scipy_binomial(k: int) -> None:
    rho = zipf_prior(5, 1.2)
    model = tagged_model(rho)
    m = np.arange(k + 1)
    for c in range(5):
        ours = model.collision_pmf(k, c)
        assert ours.dtype == torch.float64 and ours.shape == (k + 1,)
        ref = stats.binom.pmf(m, k, float(rho[c]))
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-11, atol=1e-300)
    mixture = sum(float(rho[c]) * stats.binom.pmf(m, k, float(rho[c])) for c in range(5))
    np.testing.assert_allclose(model.collision_pmf(k).numpy(), mixture, rtol=1e-11, atol=1e-300)


def test_collision_pmf_large_k() -> None:
    k = 10**6
    model = tagged_model([0.5, 0.3, 0.2])
    pmf = model.collision_pmf(k, 1).numpy()
    assert pmf.shape == (k + 1,)
    assert abs(pmf.sum() - 1.0) < 1e-12
    ref = stats.binom.pmf(np.arange(k + 1), k, 0.3)
    big = ref > 1e-300
    np.testing.assert_allclose(pmf[big], ref[big], rtol=1e-9)
    assert np.all(pmf[~big] < 1e-290)
    balanced = tagged_model(C=10).collision_pmf(k)
    assert abs(float(balanced.sum()) - 1.0) < 1e-12
    assert int(torch.argmax(balanced)) == k // 10


def test_binomial_pmf_edges_and_broadcast() -> None:
    assert torch.equal(binomial_pmf(4, 0.0), torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64))
    assert torch.equal(binomial_pmf(4, 1.0), torch.tensor([0.0, 0, 0, 0, 1], dtype=torch.float64))
    p = torch.tensor([[0.1, 0.2], [0.7, 0.99]], dtype=torch.float64)
    out = binomial_pmf(9, p)
    assert out.shape == (2, 2, 10)
    ref = stats.binom.pmf(np.arange(10), 9, p.numpy()[..., None])
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12)


def test_collision_probability_and_expectation() -> None:
    rho = zipf_prior(7, 0.8)
    model = tagged_model(rho)
    for k in (1, 3, 50):
        pmf = model.collision_pmf(k)
        expected = float((rho * (1 - (1 - rho) ** k)).sum())
        assert float(model.collision_probability(k)) == pytest.approx(expected, rel=1e-12)
        assert float(model.collision_probability(k)) == pytest.approx(1 - float(pmf[0]), rel=1e-10)
        mean = float((torch.arange(k + 1, dtype=torch.float64) * pmf).sum())
        assert float(model.expected_collisions(k)) == pytest.approx(mean, rel=1e-10)
        assert float(model.expected_collisions(k)) == pytest.approx(k * float((rho**2).sum()))
        assert float(model.expected_collisions(k, 2)) == pytest.approx(k * float(rho[2]))
        assert float(model.collision_probability(k, 0)) == pytest.approx(
            1 - (1 - float(rho[0])) ** k, rel=1e-12
        )


def test_collision_probability_is_accurate_for_tiny_rho() -> None:
    model = tagged_model([1 - 1e-12, 1e-12])
    got = float(model.collision_probability(10, c=1))
    assert got == pytest.approx(-math.expm1(10 * math.log1p(-1e-12)), rel=1e-12, abs=0)
    assert got == pytest.approx(1e-11, rel=1e-9, abs=0)  # 1 - (1 - rho)^k is off by 2e-5
    mixed = float(model.collision_probability(10))
    want = (1 - 1e-12) * -math.expm1(10 * math.log1p(-(1 - 1e-12))) + 1e-12 * got
    assert mixed == pytest.approx(want, rel=1e-12, abs=0)
    # all classes rare: sum_c rho_c (1 - (1 - rho_c)^k) = 1/C exactly for k = 1
    C = 10**5
    many = LatentClassModel([Tagged(0)] * C)
    assert float(many.collision_probability(1)) == pytest.approx(1 / C, rel=1e-13, abs=0)


def test_monte_carlo_collision_probability() -> None:
    model = tagged_model(zipf_prior(3))
    n, k = 20000, 3
    t = model.sample_tuples(n, k, generator=make_generator(13))
    p = float(model.collision_probability(k))
    freq = float((t.collisions > 0).double().mean())
    assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_class_counts_log_pmf_matches_scipy() -> None:
    rho = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    model = tagged_model(rho)
    counts = torch.tensor([[3, 1, 1], [0, 0, 5], [2, 2, 1], [10, 0, 0]])
    ours = model.class_counts_log_pmf(counts)
    ref = [stats.multinomial.logpmf(c, int(c.sum()), rho.numpy()) for c in counts.numpy()]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)
    zero = tagged_model([0.5, 0.0, 0.5]).class_counts_log_pmf(torch.tensor([1, 1, 1]))
    assert float(zero) == -math.inf


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=10**6),
)
def test_collision_pmf_properties(C: int, k: int, seed: int) -> None:
    rho = dirichlet_prior(C, 0.7, seed=seed)
    model = tagged_model(rho)
    pmf = model.collision_pmf(k)
    assert bool((pmf >= 0).all())
    assert float(pmf.sum()) == pytest.approx(1.0, abs=1e-12)
    mean = float((torch.arange(k + 1, dtype=torch.float64) * pmf).sum())
    assert mean == pytest.approx(float(model.expected_collisions(k)), rel=1e-9, abs=1e-12)
    assert float(pmf[0]) == pytest.approx(1 - float(model.collision_probability(k)), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# validation: one line, naming the argument
# ---------------------------------------------------------------------------------------------

_M = tagged_model(C=3)

BAD: list[tuple[str, Callable[[], Any]]] = [
    ("n", lambda: _M.sample(0)),
    ("n", lambda: _M.sample(-3)),
    ("n", lambda: _M.sample_tuples(0, 4)),
    ("n", lambda: _M.sample_tuples(2.5, 4)),
    ("k", lambda: _M.sample_tuples(4, 0)),
    ("k", lambda: _M.sample_tuples(4, True)),
    ("k", lambda: _M.sample_tuples(4, 1.0)),
    ("k", lambda: _M.collision_pmf(0)),
    ("k", lambda: _M.collision_probability(0)),
    ("k", lambda: _M.expected_collisions(-1)),
    ("k", lambda: binomial_pmf(0, 0.5)),
    ("p", lambda: binomial_pmf(3, 1.5)),
    ("c", lambda: _M.collision_pmf(3, c=3)),
    ("c", lambda: _M.collision_pmf(3, c=-1)),
    ("c", lambda: _M.collision_probability(3, c="a")),
    ("negatives", lambda: _M.sample_tuples(4, 2, "hard")),
    ("negatives", lambda: tagged_model(C=1).sample_tuples(4, 2, "other-class")),
    ("negatives", lambda: tagged_model([1.0, 0.0]).sample_tuples(4, 2, "other-class")),
    ("generator", lambda: _M.sample(3, 42)),
    ("prior", lambda: tagged_model([0.5, 0.5], C=3)),
    ("prior", lambda: tagged_model([0.6, 0.6, 0.1])),
    ("prior", lambda: tagged_model([1.5, -0.5])),
    ("samplers", lambda: LatentClassModel([])),
    ("samplers", lambda: LatentClassModel([Tagged(0), Image()])),
    ("samplers", lambda: LatentClassModel([object()])),
    ("samplers", lambda: LatentClassModel(Tagged(0))),
    ("C", lambda: balanced_prior(0)),
    ("C", lambda: zipf_prior(0)),
    ("s", lambda: zipf_prior(3, s=-1.0)),
    ("alpha", lambda: dirichlet_prior(3, 0.0, seed=0)),
    ("alpha", lambda: dirichlet_prior(3, [1.0, 2.0], seed=0)),
    ("seed", lambda: dirichlet_prior(3, 1.0, seed=0, generator=make_generator(0))),
    ("seed", lambda: make_generator(-1)),
    ("anchor_class", lambda: _M.sample_negative_classes(torch.tensor([0, 5]), 3)),
    ("classes", lambda: _M.sample_inputs(torch.tensor([0.5]))),
    ("counts", lambda: _M.class_counts_log_pmf(torch.tensor([1, 2]))),
]


@pytest.mark.parametrize("name, call", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_input_raises_one_line_value_error(name: str, call: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b") as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_sampler_output_is_reported() -> None:
    class Wrong:
        input_shape = (2,)

        def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
            return torch.zeros(n, 3)

    with pytest.raises(ValueError, match=r"^samplers\[0\]"):
        LatentClassModel([Wrong()]).sample(4)


def test_parse_prior_is_the_one_grammar_of_priors() -> None:
    from contrastlab.data.latent import (
        balanced_prior,
        dirichlet_prior,
        parse_prior,
        two_level_prior,
        zipf_prior,
    )

    assert torch.equal(parse_prior(None, 4), balanced_prior(4))
    assert torch.equal(parse_prior("balanced", 4), balanced_prior(4))
    assert torch.equal(parse_prior("zipf", 5), zipf_prior(5, 1.0))
    assert torch.equal(parse_prior("zipf:2", 5), zipf_prior(5, 2.0))
    assert torch.equal(parse_prior("dirichlet:0.5:7", 6), dirichlet_prior(6, 0.5, seed=7))
    assert torch.equal(parse_prior("dirichlet:0.5", 6), dirichlet_prior(6, 0.5, seed=0))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(parse_prior("dirichlet", 6, g1), dirichlet_prior(6, 1.0, generator=g2))
    assert torch.equal(parse_prior("two-level:2:4", 5), two_level_prior(5, 2, 4.0))
    torch.testing.assert_close(parse_prior("1,1,2", 3),
                               torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    torch.testing.assert_close(parse_prior([0.2, 0.8], 2),
                               torch.tensor([0.2, 0.8], dtype=torch.float64))
    for bad in ("zipf:-1", "zipf:x", "dirichlet:0", "balanced:2", "two-level:3:2", "1,2", "foo",
                "1,-1,2"):
        with pytest.raises(ValueError, match=r"^prior"):
            parse_prior(bad, 3)

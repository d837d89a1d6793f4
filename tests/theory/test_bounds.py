"""Bounds between contrastive and supervised losses (SPEC A6, C5, C6)."""

from __future__ import annotations

import json
import math
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.theory.bounds import (
    BoundsTable,
    CoverageEstimate,
    arora_bound,
    ash_bound,
    bao_delta_lower,
    bao_delta_upper,
    bao_lower_bound,
    bao_upper_bound,
    bounds_from_measurement,
    collision_probability,
    collision_term,
    coverage_estimate,
    coverage_probability,
    harmonic_number,
    idealized_bounds,
    idealized_contrastive_minimum,
    idealized_supervised_minimum,
    nozawa_sato_bound,
)

LOG_COSH_1 = math.log(math.cosh(1.0))


# --------------------------------------------------------------------------------------------
# independent references (written here, not imported from the library)
# --------------------------------------------------------------------------------------------


def coverage_fraction(C: int, n: int) -> Fraction:
    """Full inclusion-exclusion in exact rationals, no truncation."""
    return Fraction(sum((-1) ** j * math.comb(C, j) * (C - j) ** n for j in range(C + 1)), C**n)


def coverage_dp(C: int, n: int) -> float:
    """The DP of Bao's/Nozawa's code (p_i <- p_i i/C + p_{i-1} (C-i+1)/C), vectorized."""
    p = np.zeros(C + 1)
    p[0] = 1.0
    i = np.arange(1, C + 1)
    for _ in range(n):
        new = np.empty_like(p)
        new[0] = 0.0
        new[1:] = p[1:] * i / C + p[:-1] * (C - i + 1) / C
        p = new
    return float(p[C])


def coverage_naive_float(C: int, n: int) -> float:
    j = np.arange(C + 1)
    signs = np.where(j % 2 == 0, 1.0, -1.0)
    binom = np.array([float(math.comb(C, int(v))) for v in j])
    return float(np.sum(signs * binom * (1.0 - j / C) ** n))


def binomial_expectation(K: int, p: float, g) -> float:  # type: ignore[no-untyped-def]
    return math.fsum(math.comb(K, m) * p**m * (1 - p) ** (K - m) * g(m) for m in range(K + 1))


def within_printed(value: float, printed: str) -> bool:
    """Whether value rounds to the printed SPEC entry (to its last printed digit)."""
    text = printed.replace("−", "-")
    if "e" in text:
        mant, exp = text.split("e")
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        tol = 0.5 * 10.0 ** (int(exp) - decimals)
    else:
        decimals = len(text.split(".")[1]) if "." in text else 0
        tol = 0.5 * 10.0**-decimals
    return abs(value - float(text)) <= tol * (1 + 1e-9)


# --------------------------------------------------------------------------------------------
# SPEC A6 test vectors
# --------------------------------------------------------------------------------------------

# C, K, R*_cont, Col, tau, upsilon_{K+1}, Delta_U, Delta_L, Bao UB, Arora, N&S, Ash
SPEC_A6 = [
    ("10", "16", "1.4897", "0.8410", "0.8147", "0.1001", "0.3976", "−1.4588", "1.8873", "34.97",
     "21.36", "21.85"),
    ("10", "32", "2.0753", "1.3425", "0.9657", "0.7186", "−0.2956", "−2.0923", "1.7797", "29.7",
     "3.908", "66.61"),
    ("10", "64", "2.7117", "1.9434", "0.9988", "0.9894", "−0.9887", "−2.7549", "1.7230", "658.6",
     "3.517", "1303"),
    ("10", "512", "4.7398", "3.9465", "1.0000", "1", "−3.0682", "−4.8072", "1.6716", "overflow",
     "5.533", "overflow"),
    ("100", "128", "2.9656", "0.7009", "0.7237", "3.6e−22", "0.6207", "−1.1300", "3.5863",
     "2.3e22", "1.4e22", "131.2"),
    ("100", "512", "4.3134", "1.7360", "0.9942", "0.556", "−0.7656", "−2.5046", "3.5478",
     "795.9", "12.39", "1770"),
]  # fmt: skip
SPEC_COLUMNS = (
    "R_cont", "Col", "tau", "upsilon", "Delta_U", "Delta_L", "bao_upper", "arora", "nozawa_sato",
    "ash",
)  # fmt: skip


@pytest.mark.parametrize("entry", SPEC_A6, ids=lambda e: f"C{e[0]}-K{e[1]}")
def test_spec_a6_table_from_functions(entry: tuple[str, ...]) -> None:
    C, K = int(entry[0]), int(entry[1])
    r = idealized_contrastive_minimum(K, C)
    got = {
        "R_cont": r,
        "Col": collision_term(K, C),
        "tau": collision_probability(K, C),
        "upsilon": coverage_probability(K + 1, C),
        "Delta_U": bao_delta_upper(K, C),
        "Delta_L": bao_delta_lower(K, C),
        "bao_upper": bao_upper_bound(r, K, C),
        "arora": arora_bound(r, K, C),
        "nozawa_sato": nozawa_sato_bound(r, K, C),
        # the SPEC table (Bao's code) uses H_{C-1} ~ ln(C-1) + 0.577
        "ash": ash_bound(r, K, C, harmonic="approx"),
    }
    for name, printed in zip(SPEC_COLUMNS, entry[2:], strict=True):
        value = float(got[name])
        if printed == "overflow":
            # the authors' code rounds tau to 1 and divides by zero; here 1 - tau = 0.9^512 =
            # 3.7e-24 is kept, so the bound is a huge *finite* number
            assert math.isfinite(value) and value > 1e20, (name, value)
        else:
            assert within_printed(value, printed), (C, K, name, value, printed)


def test_spec_a6_table_from_idealized_bounds() -> None:
    for C, Ks in ((10, [16, 32, 64, 512]), (100, [128, 512])):
        table = idealized_bounds(C, Ks, harmonic="approx")
        entries = [e for e in SPEC_A6 if int(e[0]) == C]
        assert [row["K"] for row in table.rows] == [int(e[1]) for e in entries]
        for row, entry in zip(table.rows, entries, strict=True):
            for name, printed in zip(SPEC_COLUMNS, entry[2:], strict=True):
                if printed == "overflow":
                    assert 1e20 < row[name] < math.inf
                else:
                    assert within_printed(row[name], printed), (C, row["K"], name)
    # the overflow entries, concretely: (R - Col) / 0.9^512 and 2 (R - Col) / 0.9^512
    table = idealized_bounds(10, [512], harmonic="approx")
    row = table.rows[0]
    stay = 0.9**512
    assert row["arora"] == pytest.approx((row["R_cont"] - row["Col"]) / stay, rel=1e-9)
    assert row["ash"] == pytest.approx(2 * (row["R_cont"] - row["Col"]) / stay, rel=1e-9)
    assert row["arora"] == pytest.approx(2.125e23, rel=1e-3)


def test_exact_harmonic_number_moves_ash_off_the_spec_table() -> None:
    # SPEC's H_{C-1} ~ ln(C-1) + 0.577 is 0.055 low at C = 10; the exact H_9 gives 22.28, not 21.85
    r = idealized_contrastive_minimum(16, 10)
    assert float(ash_bound(r, 16, 10, harmonic="exact")) == pytest.approx(22.2816, abs=1e-4)
    assert float(ash_bound(r, 16, 10, harmonic="approx")) == pytest.approx(21.8505, abs=1e-4)


def test_idealized_supervised_minimum() -> None:
    assert idealized_supervised_minimum(10) == pytest.approx(0.7966, abs=5e-5)
    assert idealized_supervised_minimum(100) == pytest.approx(2.6671, abs=5e-5)
    assert idealized_supervised_minimum(10, b=2.0) == pytest.approx(math.log1p(9 * math.exp(-8)))


def test_idealized_contrastive_minimum_and_collision_term_match_direct_sums() -> None:
    for C, K in ((10, 7), (3, 40), (100, 128)):
        e = math.exp(-2.0)
        want = binomial_expectation(K, 1 / C, lambda m, K=K, e=e: math.log1p(m + (K - m) * e))
        assert float(idealized_contrastive_minimum(K, C)) == pytest.approx(want, rel=1e-12)
        assert float(collision_term(K, C)) == pytest.approx(
            binomial_expectation(K, 1 / C, math.log1p), rel=1e-12
        )
        e2 = math.exp(-2 * 0.7**2)
        want_b = binomial_expectation(K, 1 / C, lambda m, K=K, e2=e2: math.log1p(m + (K - m) * e2))
        assert float(idealized_contrastive_minimum(K, C, b=0.7)) == pytest.approx(want_b, rel=1e-12)


# --------------------------------------------------------------------------------------------
# coverage (SPEC C6)
# --------------------------------------------------------------------------------------------


def test_coverage_spec_values() -> None:
    assert float(coverage_probability(32, 10)) == pytest.approx(0.6909756, abs=5e-8)
    assert float(coverage_probability(63, 10)) == pytest.approx(0.9869351, abs=5e-8)
    assert float(coverage_probability(128, 100)) == pytest.approx(1.50e-22, rel=4e-3)
    assert float(coverage_probability(256, 100)) == pytest.approx(1.23e-4, rel=5e-3)
    # Nozawa's coupon.ipynb values (4.52e-4, 5.75e-4) are cancellation artefacts
    assert float(coverage_probability(128, 100)) < 1e-20
    assert float(coverage_probability(256, 100)) < 1.3e-4


def test_naive_float_inclusion_exclusion_fails() -> None:
    """Documents the trap (SPEC A6): float inclusion-exclusion cancels catastrophically."""
    exact = float(coverage_fraction(100, 128))
    assert exact == pytest.approx(1.5036e-22, rel=1e-4)
    naive = coverage_naive_float(100, 128)
    assert abs(naive - exact) > 1e10 * exact  # wrong by > 10 orders of magnitude (2.6e-6)
    # ... while the library (exact rationals) and the all-positive DP are right
    assert float(coverage_probability(128, 100)) == exact
    assert coverage_dp(100, 128) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(
    ("C", "ns"),
    [
        (2, [1, 2, 3, 10, 60]),
        (10, [5, 10, 11, 32, 63, 100, 300, 500]),
        (37, [36, 37, 50, 150, 300, 600, 1500, 3000]),
        (100, [100, 128, 256, 500, 700, 1000, 2000, 4000]),
    ],
)
def test_coverage_uniform_is_exact(C: int, ns: list[int]) -> None:
    got = coverage_probability(ns, C)
    assert isinstance(got, np.ndarray) and got.shape == (len(ns),) and got.dtype == np.float64
    for n, g in zip(ns, got, strict=True):
        want = float(coverage_fraction(C, n))  # correctly rounded
        assert g == want or abs(g - want) <= 2.3e-16 * want, (C, n, g, want)


def test_coverage_vectorization_and_scalars() -> None:
    v = coverage_probability(32, 10)
    assert isinstance(v, np.float64) and isinstance(v, float)
    arr = coverage_probability(np.array([32, 64]), 10)
    assert arr.shape == (2,) and arr[0] == v
    est = coverage_estimate([32, 64], 10)
    assert isinstance(est, CoverageEstimate) and est.method == "exact"
    assert np.all(np.asarray(est.stderr) == 0)
    assert float(coverage_probability(9, 10)) == 0.0  # fewer draws than classes


def test_coverage_large_is_fast_and_sane() -> None:
    v1 = float(coverage_probability(10_000, 1000))
    assert v1 == pytest.approx(coverage_dp(1000, 10_000), rel=1e-11)
    assert float(coverage_probability(100_000, 1000)) == 1.0
    assert float(coverage_probability(10_000, 100)) == 1.0


def zipf12() -> np.ndarray:
    w = 1.0 / np.arange(1, 13) ** 0.7
    return w / w.sum()


def test_coverage_prior_methods_agree() -> None:
    rho = zipf12()
    for n in (12, 30, 60, 150):
        exact = coverage_estimate(n, prior=rho, method="exact")
        conv = coverage_estimate(n, prior=rho, method="convolution")
        auto = coverage_estimate(n, prior=rho)
        assert exact.method == "exact" and conv.method == "convolution" == auto.method
        assert float(conv.value) == pytest.approx(float(exact.value), rel=1e-11)
        assert float(auto.value) == float(conv.value)
    # n = C: all classes drawn exactly once, C! prod(rho)
    want = math.factorial(12) * math.prod(rho.tolist())
    assert float(coverage_probability(12, prior=rho, method="exact")) == pytest.approx(want, 1e-12)


def test_coverage_monte_carlo_within_four_standard_errors() -> None:
    rho = zipf12()
    for n in (40, 70):
        exact = float(coverage_probability(n, prior=rho, method="exact"))
        mc = coverage_estimate(n, prior=rho, method="monte-carlo", num_samples=20_000, seed=3)
        assert mc.method == "monte-carlo"
        assert 0 < float(mc.stderr) < 0.01
        assert abs(float(mc.value) - exact) < 4 * float(mc.stderr), (n, mc, exact)


def test_coverage_prior_large_C_uses_convolution() -> None:
    rho = np.random.default_rng(0).dirichlet(np.ones(50))
    est = coverage_estimate(2000, prior=rho)
    assert est.method == "convolution"
    mc = coverage_estimate(2000, prior=rho, method="monte-carlo", num_samples=4000, seed=1)
    assert abs(float(mc.value) - float(est.value)) < 4 * float(mc.stderr) + 1e-3
    with pytest.raises(ValueError, match="method"):
        coverage_estimate(100, prior=rho, method="exact")  # 2^50 subsets


def test_coverage_class_of_prior_zero_is_never_covered() -> None:
    rho = np.array([0.5, 0.5, 0.0])
    for method in ("auto", "exact", "convolution", "monte-carlo"):
        assert float(coverage_probability(50, prior=rho, method=method, num_samples=100)) == 0.0


# --------------------------------------------------------------------------------------------
# non-uniform prior reduces to uniform
# --------------------------------------------------------------------------------------------


def test_uniform_prior_reduces_to_C() -> None:
    C, Ks = 10, [1, 9, 10, 16, 64]
    u = np.full(C, 1.0 / C)
    close = {"rtol": 1e-12, "atol": 0}
    np.testing.assert_allclose(collision_probability(Ks, prior=u), collision_probability(Ks, C))
    np.testing.assert_allclose(collision_term(Ks, prior=u), collision_term(Ks, C), **close)
    ns = [k + 1 for k in Ks]
    np.testing.assert_allclose(
        coverage_probability(ns, prior=u, method="convolution"), coverage_probability(ns, C), 1e-11
    )
    assert coverage_estimate(ns, prior=u).method == "exact"  # a uniform prior is detected
    np.testing.assert_allclose(bao_delta_upper(Ks, prior=u), bao_delta_upper(Ks, C), **close)
    np.testing.assert_allclose(bao_delta_lower(Ks, prior=u), bao_delta_lower(Ks, C), **close)
    r = idealized_contrastive_minimum(Ks, C)
    for f in (arora_bound, nozawa_sato_bound, ash_bound, bao_upper_bound, bao_lower_bound):
        np.testing.assert_allclose(f(r, Ks, prior=u), f(r, Ks, C), equal_nan=True, **close)


def test_prior_formulas() -> None:
    rho = np.array([0.5, 0.3, 0.2])
    K = 5
    tau = sum(p * (1 - (1 - p) ** K) for p in rho)
    assert float(collision_probability(K, prior=rho)) == pytest.approx(tau, rel=1e-14)
    assert float(collision_probability(1, prior=rho)) == pytest.approx(np.sum(rho**2))
    col = sum(p * binomial_expectation(K, p, math.log1p) for p in rho)
    assert float(collision_term(K, prior=rho)) == pytest.approx(col, rel=1e-12)
    entropy = -float(np.sum(rho * np.log(rho)))
    want_l = entropy + math.log(K) - 2 * math.log(1 + K) - 2 * LOG_COSH_1
    assert float(bao_delta_lower(K, prior=rho)) == pytest.approx(want_l, rel=1e-14)
    want_u = math.log(0.5 * 9 * math.cosh(1.0) ** 2 / K)
    assert float(bao_delta_upper(K, prior=rho)) == pytest.approx(want_u, rel=1e-14)
    # huge b: log cosh evaluated without overflow
    assert math.isfinite(float(bao_delta_upper(K, C=3, b=40.0)))


# --------------------------------------------------------------------------------------------
# SPEC C5 orderings at the idealized R*_cont
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("C", "Ks"), [(10, list(range(1, 1025))), (100, list(range(1, 1025, 9)))])
def test_spec_c5_orderings(C: int, Ks: list[int]) -> None:
    t = idealized_bounds(C, Ks)
    k = t.column("K")
    r, ub, lb = t.column("R_cont"), t.column("bao_upper"), t.column("bao_lower")
    arora, ns, ash = t.column("arora"), t.column("nozawa_sato"), t.column("ash")
    star = idealized_supervised_minimum(C)
    assert np.isfinite(ub).all() and np.isfinite(ash).all()
    # Arora and Nozawa-Sato are defined only for K >= C
    assert np.isnan(arora[k < C]).all() and np.isnan(ns[k < C]).all()
    assert not np.isnan(arora[k >= C]).any() and not np.isnan(ns[k >= C]).any()
    # Bao's upper bound is the smallest for K >= C
    big = k >= C
    assert (ub[big] < np.minimum(np.minimum(arora[big], ns[big]), ash[big])).all()
    # ... and decreases in K toward its limit from above. NB: the limit is R*_mu-supv +
    # 2 log cosh(b^2) (0.868 above R*_mu-supv at b = 1), not R*_mu-supv itself
    assert (np.diff(ub) < 0).all()
    limit = star + 2 * LOG_COSH_1
    assert (ub > limit).all() and (ub >= star).all()
    far = float(bao_upper_bound(idealized_contrastive_minimum(10**5, C), 10**5, C))
    assert limit < far < limit + 1e-3
    # the sandwich: R* - Delta_L >= R*_cont and R*_cont + Delta_U >= R*
    assert (star - t.column("Delta_L") >= r).all()
    assert (r + t.column("Delta_U") >= star).all()
    assert (lb <= star).all()
    # Ash grows with K (through 1 / (1 - tau_K)) once K > 2 (C-1) H_{C-1}
    tail = k >= 4 * C * math.log(C)
    assert (np.diff(ash[tail]) > 0).all()


# --------------------------------------------------------------------------------------------
# blow-ups: nan / inf, never an exception or a warning
# --------------------------------------------------------------------------------------------


def test_blow_ups_are_inf_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # 1 - tau = 0.9^10000 underflows to 0
        r = idealized_contrastive_minimum(10_000, 10)
        assert float(arora_bound(r, 10_000, 10)) == math.inf
        assert float(ash_bound(r, 10_000, 10)) == math.inf
        assert math.isfinite(float(nozawa_sato_bound(r, 10_000, 10)))
        assert math.isfinite(float(bao_upper_bound(r, 10_000, 10)))
        # upsilon_{K+1} underflows to 0 (C = 1000, K = C: ~e^-1000)
        assert float(coverage_probability(1001, 1000)) == 0.0
        assert float(nozawa_sato_bound(7.0, 1000, 1000)) == math.inf
        assert float(arora_bound(7.0, 1000, 1000)) == math.inf
        # a class of prior 0 is never covered
        rho = [0.5, 0.5, 0.0]
        assert float(nozawa_sato_bound(2.0, 8, prior=rho)) == math.inf
        # K < C: undefined
        out = arora_bound([1.0, 1.0], [3, 30], 10)
        assert np.isnan(out[0]) and math.isfinite(out[1])
        # a prior with a certain class (rho_c = 1 is allowed): tau = 1 exactly
        assert float(collision_probability(3, prior=[1.0, 0.0])) == 1.0
        assert float(ash_bound(1.0, 3, prior=[1.0, 0.0])) == math.inf


def test_broadcasting() -> None:
    out = bao_upper_bound([1.0, 2.0, 3.0], 16, 10)
    assert out.shape == (3,)
    np.testing.assert_allclose(np.diff(out), [1.0, 1.0])
    out2 = nozawa_sato_bound([2.0, 3.0], [16, 32], 10)
    assert out2.shape == (2,)
    assert out2[1] == float(nozawa_sato_bound(3.0, 32, 10))
    with pytest.raises(ValueError, match="R_cont"):
        bao_upper_bound([1.0, 2.0], [1, 2, 3], 10)


# --------------------------------------------------------------------------------------------
# harmonic numbers
# --------------------------------------------------------------------------------------------


def test_harmonic_number_is_exact() -> None:
    for n in (1, 2, 9, 99, 200, 201, 1000, 12345):
        want = float(sum(Fraction(1, i) for i in range(1, n + 1)))
        assert float(harmonic_number(n)) == pytest.approx(want, rel=2e-16), n
    assert float(harmonic_number(0)) == 0.0
    np.testing.assert_allclose(harmonic_number([1, 2, 3]), [1.0, 1.5, 11 / 6])
    # the approximation SPEC A6 quotes is 0.055 low at n = 9
    assert float(harmonic_number(9)) - (math.log(9) + 0.577) == pytest.approx(0.0548, abs=1e-4)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def test_idealized_table_outputs() -> None:
    t = idealized_bounds(10, [1, 16])
    assert isinstance(t, BoundsTable) and len(t.rows) == 2
    md = t.to_markdown().splitlines()
    assert len(md) == 4 and md[0].startswith("|") and set(md[1]) <= {"|", "-", ":"}
    assert "Bao UB" in md[0] and "1.8873" in md[3]
    assert len({len(line) for line in md}) == 1  # aligned
    text = t.to_text().splitlines()
    assert len({len(line) for line in text}) == 1
    data = json.loads(t.to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["rows"][0]["arora"] == "nan" and data["rows"][1]["K"] == 16
    assert data["meta"]["C"] == 10


def test_bounds_from_measurement() -> None:
    rho = zipf12()
    t = bounds_from_measurement([3.1, 3.6], [32, 64], 0.9, rho)
    assert t.meta["coverage_method"] == "convolution" and not t.meta["uniform_prior"]
    row = t.rows[1]
    assert row["C"] == 12 and row["K"] == 64
    assert row["bao_upper"] == pytest.approx(float(bao_upper_bound(3.6, 64, prior=rho, b=0.9)))
    assert row["bao_lower"] == pytest.approx(float(bao_lower_bound(3.6, 64, prior=rho, b=0.9)))
    assert row["arora"] == pytest.approx(float(arora_bound(3.6, 64, prior=rho)))
    assert row["nozawa_sato"] == pytest.approx(float(nozawa_sato_bound(3.6, 64, prior=rho)))
    assert row["ash"] == pytest.approx(float(ash_bound(3.6, 64, prior=rho)))
    assert row["upsilon_stderr"] == 0.0
    # uniform: the measurement table at R*_cont equals the idealized table
    ideal = idealized_bounds(10, [16, 64])
    meas = bounds_from_measurement(ideal.column("R_cont"), [16, 64], 1.0, C=10)
    for a, b in zip(ideal.rows, meas.rows, strict=True):
        for name in meas.columns:
            if name != "upsilon_stderr":
                assert a[name] == pytest.approx(b[name], rel=1e-14, nan_ok=True)
    # Monte Carlo coverage carries its standard error
    mc = bounds_from_measurement(3.0, 60, 1.0, rho, coverage_method="monte-carlo",
                                 num_samples=2000)  # fmt: skip
    assert mc.meta["coverage_method"] == "monte-carlo" and mc.rows[0]["upsilon_stderr"] > 0


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: collision_probability(-1, 10), "K"),
        (lambda: collision_probability(0, 10), "K"),
        (lambda: collision_term([4, -2], 10), "K"),
        (lambda: collision_term(2.5, 10), "K"),
        (lambda: collision_term(True, 10), "K"),
        (lambda: collision_term([[1, 2]], 10), "K"),
        (lambda: collision_probability(4, 1), "C"),
        (lambda: collision_probability(4), "C"),
        (lambda: collision_probability(4, 2.0), "C"),
        (lambda: coverage_probability(0, 10), "n"),
        (lambda: coverage_probability(10, prior=[0.5, 0.4]), "prior"),
        (lambda: coverage_probability(10, prior=[1.5, -0.5]), "prior"),
        (lambda: coverage_probability(10, prior=[1.0]), "prior"),
        (lambda: coverage_probability(10, C=3, prior=[0.5, 0.5]), "prior"),
        (lambda: coverage_probability(10, 3, method="fast"), "method"),
        (lambda: coverage_probability(10, 3, num_samples=0), "num_samples"),
        (lambda: bao_upper_bound(1.0, 4, 10, b=0.0), "b"),
        (lambda: bao_lower_bound(1.0, 4, 10, b=-1.0), "b"),
        (lambda: bao_delta_upper(4, 10, b=math.inf), "b"),
        (lambda: idealized_contrastive_minimum(4, 10, b=0), "b"),
        (lambda: idealized_supervised_minimum(1), "C"),
        (lambda: arora_bound(math.nan, 16, 10), "R_cont"),
        (lambda: ash_bound(1.0, 16, 10, harmonic="euler"), "harmonic"),
        (lambda: harmonic_number(-1), "n"),
        (lambda: idealized_bounds(10, [4, 0]), "Ks"),
        (lambda: bounds_from_measurement(1.0, 4, 0.0, C=10), "b"),
        (lambda: bounds_from_measurement(1.0, 4, 1.0, [0.2, 0.2]), "prior"),
    ],
)
def test_bad_input_names_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=rf"^{name}\b") as info:
        call()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_bounds_table_and_json() -> None:
    runner = CliRunner()
    args = ["bounds", "--classes", "10", "--k", "16,32", "--harmonic", "approx"]
    res = runner.invoke(app, [*args, "--wide"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert "Bao UB" in lines[0] and len(lines) == 3
    assert "1.8873" in lines[1] and "34.9725" in lines[1] and "21.8505" in lines[1]
    fitted = runner.invoke(app, args).output.strip()  # fits 100 columns: blocks repeating C, K
    assert max(len(line) for line in fitted.splitlines()) <= 100
    blocks = fitted.split("\n\n")
    assert len(blocks) == 2 and all(b.split()[:2] == ["C", "K"] for b in blocks)
    assert set(fitted.split()) == set(res.output.split())  # nothing lost
    res = runner.invoke(app, ["bounds", "--classes", "100", "--k", "128", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["rows"][0]["K"] == 128 and data["rows"][0]["upsilon"] == pytest.approx(
        3.631e-22, rel=1e-3
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--k", "1,x"], "--k"),
        (["--k", "4,0"], "--k"),
        (["--k", "2.5"], "--k"),
        (["--k", ""], "--k"),
        (["--classes", "1"], "--classes"),
        (["--b", "0"], "--b"),
        (["--harmonic", "euler"], "--harmonic"),
        (["--plot", "out.txt"], "--plot"),
    ],
)
def test_cli_bounds_bad_input(args: list[str], needle: str) -> None:
    full = ["bounds", "--classes", "10", *args] if "--classes" not in args else ["bounds", *args]
    res = CliRunner().invoke(app, full)
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and needle in errors[0], res.output


def test_cli_bounds_plot_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    res = CliRunner().invoke(app, ["bounds", "--classes", "10", "--plot", str(tmp_path / "b.png")])
    assert res.exit_code == 2
    assert "pip install matplotlib" in res.output and "--plot" in res.output
    assert not (tmp_path / "b.png").exists()


def test_cli_bounds_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for name in ("b.png", "b.svg"):
        out = tmp_path / name
        res = CliRunner().invoke(app, ["bounds", "--classes", "10", "--k", "1,4,16,64",
                                       "--plot", str(out)])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 1000

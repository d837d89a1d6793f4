"""Neural-collapse and dimensional-collapse measures (contrastlab.geometry; SPEC A8)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from contrastlab.geometry import (
    GeometryAccumulator,
    effective_rank,
    etf_distance,
    geometry_from_stats,
    geometry_report,
    nc4_disagreements,
    rankme,
)
from tests.conftest import simplex_etf

SCALE_FREE = (
    "nc1",
    "nc2_equinorm",
    "nc2_equiangularity",
    "nc2_max_angle",
    "equiangularity_mean",
    "equiangularity_max",
    "etf_distance",
    "etf_distance_uncentered",
    "effective_rank",
    "class_mean_effective_rank",
    "rankme",
    "nc3",
    "nc4",
)
EXACT_INT = ("numerical_rank", "collapsed_dims", "dims_99", "dimensionally_collapsed")


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _noisy_etf(
    c: int, d: int, n_per: int, noise: float, seed: int = 0, offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    V = simplex_etf(c, d) @ _orthogonal(d, seed + 1)
    y = torch.arange(c).repeat_interleave(n_per)
    y = y[torch.randperm(y.shape[0], generator=g)]
    H = V[y] + noise * torch.randn(y.shape[0], d, generator=g, dtype=torch.float64) + offset
    return H, y


# --------------------------------------------------------------------------------------------
# exact ETF, noise, streaming
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "extra", "radius"), [(3, 0, 1.0), (10, 0, 1.0), (5, 7, 2.5)])
def test_exact_etf_has_zero_collapse_measures(c: int, extra: int, radius: float) -> None:
    d = c - 1 + extra
    V = radius * simplex_etf(c, d) @ _orthogonal(d, 3)
    y = torch.arange(c).repeat(40)
    r = geometry_report(V[y], y)
    assert r.nc1 == pytest.approx(0.0, abs=1e-12)
    assert r.etf_distance == pytest.approx(0.0, abs=1e-12)
    assert r.etf_distance_uncentered == pytest.approx(0.0, abs=1e-12)
    for name in ("nc2_equinorm", "nc2_equiangularity", "nc2_max_angle",
                 "equiangularity_mean", "equiangularity_max", "zero_sum_norm",
                 "within_class_rms", "trace_within"):
        assert getattr(r, name) == pytest.approx(0.0, abs=1e-12), name
    assert r.unit_norm_error == pytest.approx(abs(radius - 1.0), abs=1e-12)
    assert r.effective_rank == pytest.approx(c - 1, abs=1e-9)
    assert r.class_mean_effective_rank == pytest.approx(c - 1, abs=1e-9)
    assert r.numerical_rank == c - 1
    assert r.rankme == pytest.approx(c - 1, abs=1e-3)  # the 1e-7 epsilon of Garrido et al.
    assert r.collapsed_dims == extra and r.dimensionally_collapsed == (extra > 0)
    assert r.dims_99 == c - 1
    want_cos = torch.full((c, c), -1.0 / (c - 1), dtype=torch.float64) + torch.eye(c) * c / (c - 1)
    assert torch.allclose(torch.tensor(r.cosine, dtype=torch.float64), want_cos, atol=1e-12)
    assert torch.allclose(torch.tensor(r.cosine_centered, dtype=torch.float64), want_cos,
                          atol=1e-12)


def test_nc1_increases_monotonically_with_within_class_noise() -> None:
    c, d = 6, 12
    g = torch.Generator().manual_seed(5)
    V = simplex_etf(c, d) @ _orthogonal(d, 6)
    y = torch.arange(c).repeat(100)
    Z = torch.randn(y.shape[0], d, generator=g, dtype=torch.float64)
    levels = [0.0, 0.01, 0.05, 0.1, 0.3, 0.6, 1.0, 2.0]
    reports = [geometry_report(V[y] + s * Z, y) for s in levels]
    nc1 = [r.nc1 for r in reports]
    assert nc1[0] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in itertools.pairwise(nc1)), nc1
    # for small noise NC1 ~ s^2 tr(Sigma_W^0 Sigma_B^+) / C: quadratic growth
    assert nc1[2] / nc1[1] == pytest.approx(25.0, rel=0.05)
    rms = [r.within_class_rms for r in reports]
    assert all(a < b for a, b in itertools.pairwise(rms))


def test_streaming_equals_one_shot() -> None:
    c, d = 7, 9
    g = torch.Generator().manual_seed(11)
    n = 1003
    y = torch.randint(0, c, (n,), generator=g)
    y[:c] = torch.arange(c)  # every class present
    H = 3.0 * torch.randn(n, d, generator=g, dtype=torch.float64) + 25.0  # large common offset
    H += torch.randn(c, d, generator=g, dtype=torch.float64)[y]
    W = torch.randn(c, d, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    one = geometry_report(H, y, classifier=(W, b))
    # uneven batches in a shuffled order, float32-free
    perm = torch.randperm(n, generator=g)
    cuts = [0, 1, 2, 50, 51, 400, 777, n]
    acc = GeometryAccumulator(c)
    for lo, hi in itertools.pairwise(cuts):
        acc.update(H[perm[lo:hi]], y[perm[lo:hi]])
    assert acc.num_samples == n
    streamed = acc.report(classifier=(W, b))
    assert one.stats is not None and streamed.stats is not None
    for name in ("class_means", "global_mean", "sigma_w", "sigma_b", "covariance",
                 "second_moment", "within_sq_dist"):
        a, s = getattr(one.stats, name), getattr(streamed.stats, name)
        assert torch.allclose(a, s, atol=1e-10, rtol=1e-10), name
    assert torch.equal(one.stats.counts, streamed.stats.counts)
    d_one, d_str = one.to_dict(), streamed.to_dict()
    d_str["nc4"] = d_one["nc4"]  # the accumulator cannot do the second pass of NC4
    _assert_dicts_close(d_one, d_str, 1e-10)
    # and geometry_report in small batches
    _assert_dicts_close(d_one, geometry_report(H, y, classifier=(W, b), batch_size=64).to_dict(),
                        1e-10)


def _assert_dicts_close(a: dict, b: dict, tol: float, keys: tuple[str, ...] | None = None) -> None:
    for key in keys or tuple(a):
        va, vb = a[key], b[key]
        if isinstance(va, float):
            assert vb == pytest.approx(va, abs=tol, rel=tol), key
        elif isinstance(va, list) and va and isinstance(va[0], (float, list)):
            np.testing.assert_allclose(np.asarray(vb), np.asarray(va), atol=tol, rtol=tol,
                                       err_msg=key)
        else:
            assert va == vb, key


def test_moments_match_a_naive_numpy_computation() -> None:
    c, d = 4, 6
    g = torch.Generator().manual_seed(2)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 2, 0])
    H = torch.randn(y.shape[0], d, generator=g, dtype=torch.float64)
    r = geometry_report(H, y)
    X, lab = H.numpy(), y.numpy()
    mu = np.stack([X[lab == k].mean(0) for k in range(c)])
    mu_g = X.mean(0)
    sw = sum(np.outer(x - mu[k], x - mu[k]) for x, k in zip(X, lab, strict=True)) / len(X)
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / c
    assert r.nc1 == pytest.approx(np.trace(sw @ np.linalg.pinv(sb)) / c, rel=1e-9)
    cov = np.cov(X.T, bias=True)
    assert r.covariance_spectrum == pytest.approx(sorted(np.linalg.eigvalsh(cov))[::-1],
                                                  abs=1e-12)
    cm = np.linalg.svd(np.cov(mu.T), compute_uv=False)
    assert r.class_mean_spectrum == pytest.approx(list(cm), abs=1e-12)
    norms = np.linalg.norm(mu - mu_g, axis=1)
    assert r.nc2_equinorm == pytest.approx(norms.std(ddof=1) / norms.mean(), rel=1e-9)
    s = np.linalg.svd(X, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert r.rankme == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    ev = np.clip(np.linalg.eigvalsh(cov), 0, None)
    q = ev[ev > 0] / ev.sum()
    assert r.effective_rank == pytest.approx(math.exp(-(q * np.log(q)).sum()), rel=1e-9)
    inner = np.mean([np.sqrt(((X[lab == k] - mu[k]) ** 2).sum(1).mean()) for k in range(c)])
    assert r.within_class_rms == pytest.approx(inner, rel=1e-9)


# --------------------------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------------------------


def test_rotation_and_scaling_leave_scale_free_measures_unchanged() -> None:
    c, d = 5, 8
    H, y = _noisy_etf(c, d, 60, noise=0.3, seed=21, offset=0.2)
    g = torch.Generator().manual_seed(22)
    W = torch.randn(c, d, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    base = geometry_report(H, y, classifier=(W, b)).to_dict()
    Q, s = _orthogonal(d, 23), 3.7
    moved = geometry_report(s * H @ Q, y, classifier=(W @ Q, s * b)).to_dict()
    _assert_dicts_close(base, moved, 1e-9, SCALE_FREE + EXACT_INT + ("cosine", "cosine_centered"))
    # the spectra scale with s^2; the scale-dependent Jiang unit-norm error does change
    np.testing.assert_allclose(np.asarray(moved["covariance_spectrum"]),
                               s**2 * np.asarray(base["covariance_spectrum"]), rtol=1e-9,
                               atol=1e-12)
    assert moved["unit_norm_error"] != pytest.approx(base["unit_norm_error"], rel=1e-3)


def test_translation_leaves_centered_measures_unchanged_but_not_uncentered() -> None:
    H, y = _noisy_etf(4, 6, 50, noise=0.2, seed=31)
    base = geometry_report(H, y).to_dict()
    moved = geometry_report(H + 0.7, y).to_dict()
    _assert_dicts_close(base, moved, 1e-9, ("nc1", "nc2_equinorm", "nc2_equiangularity",
                                            "nc2_max_angle", "etf_distance", "effective_rank"))
    assert moved["etf_distance_uncentered"] > base["etf_distance_uncentered"] + 0.05
    assert moved["zero_sum_norm"] > base["zero_sum_norm"] + 1.0


# --------------------------------------------------------------------------------------------
# dimensional collapse, spectra and ETF distance
# --------------------------------------------------------------------------------------------


def test_rank_two_embedding_is_dimensionally_collapsed() -> None:
    g = torch.Generator().manual_seed(41)
    n, d, c = 600, 16, 4
    y = torch.arange(c).repeat(n // c)
    Z = torch.randn(n, 2, generator=g, dtype=torch.float64) + 2.0 * torch.randn(
        c, 2, generator=g, dtype=torch.float64)[y]
    A = torch.randn(2, d, generator=g, dtype=torch.float64)
    r = geometry_report((Z @ A).to(torch.float32), y)
    assert r.dimensionally_collapsed
    assert r.collapsed_dims == d - 2
    assert r.numerical_rank == 2
    assert r.effective_rank <= 2.0 + 1e-9
    assert r.class_mean_effective_rank <= 2.0 + 1e-9
    assert r.rankme <= 2.0 + 1e-3
    # the same labels with a full-rank embedding are not collapsed
    full = geometry_report(torch.randn(n, d, generator=g) + Z @ A, y)
    assert not full.dimensionally_collapsed and full.numerical_rank == d
    assert full.effective_rank > 2.5


def test_effective_rank_and_rankme_values() -> None:
    assert effective_rank(torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(torch.tensor([5.0, 0.0])) == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    want = math.exp(-float((p * p.log()).sum()))
    assert effective_rank(2 * p) == pytest.approx(want)
    assert rankme(torch.tensor([2.0, 2.0])) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="spectrum"):
        effective_rank(torch.zeros(3))
    with pytest.raises(ValueError, match="spectrum"):
        effective_rank(torch.tensor([1.0, -1.0]))


def test_etf_distance_detects_departures() -> None:
    V = simplex_etf(4, 5)
    assert etf_distance(3.0 * V) == pytest.approx(0.0, abs=1e-12)
    bent = V.clone()
    bent[0] = bent[1]  # two classes merged
    dist = etf_distance(bent)
    assert 0.1 < dist <= 2.0
    assert etf_distance(V + 1.0) == pytest.approx(0.0, abs=1e-12)
    assert etf_distance(V + 1.0, center=False) > 0.1
    # unequal norms are not an ETF either
    assert etf_distance(V * torch.tensor([[1.0], [1.0], [1.0], [2.0]], dtype=V.dtype)) > 0.05
    with pytest.raises(ValueError, match="coincide"):
        etf_distance(torch.ones(3, 4))


def test_nc3_and_nc4() -> None:
    H, y = _noisy_etf(5, 7, 80, noise=0.5, seed=51)
    first = geometry_report(H, y)
    assert first.nc3 is None and first.nc4 is None and first.stats is not None
    M = first.stats.class_means
    Mc = M - first.stats.global_mean
    # the nearest-class-mean rule written as a linear classifier: NC4 = 0
    ncc = geometry_report(H, y, classifier=(M, -(M * M).sum(1) / 2))
    assert ncc.nc4 == 0.0
    # NC3 of the centred means themselves is 0; of a permuted assignment it is not
    assert geometry_report(H, y, classifier=2.0 * Mc).nc3 == pytest.approx(0.0, abs=1e-12)
    perm = torch.tensor([1, 0, 2, 3, 4])
    swapped = geometry_report(H, y, classifier=(M[perm], -(M[perm] ** 2).sum(1) / 2))
    assert swapped.nc3 is not None and swapped.nc3 > 0.5
    assert swapped.nc4 is not None and swapped.nc4 > 0.3
    count = nc4_disagreements(H, M, M[perm], -(M[perm] ** 2).sum(1) / 2, batch_size=17)
    assert count / H.shape[0] == pytest.approx(swapped.nc4)


def test_report_is_json_serializable_and_readable() -> None:
    H, y = _noisy_etf(3, 4, 30, noise=0.1, seed=61)
    r = geometry_report(H.float(), y, classifier=torch.eye(3, 4))
    text = json.dumps(r.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert "stats" not in back and back["num_classes"] == 3 and len(back["cosine"]) == 3
    table = r.to_text()
    assert "NC1" in table and "effective rank" in table and "ETF distance" in table


def test_accumulator_stats_reused_by_geometry_from_stats() -> None:
    H, y = _noisy_etf(3, 4, 30, noise=0.1, seed=71)
    acc = GeometryAccumulator(3)
    acc.update(H, y)
    stats = acc.finalize()
    a = geometry_from_stats(stats, collapse_threshold=0.3).to_dict()
    assert a["collapse_threshold"] == 0.3 and a["collapsed_dims"] >= 1  # 4th direction is noise


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_value_errors() -> None:
    g = torch.Generator().manual_seed(0)
    H = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.arange(4).repeat(3)
    nan = H.clone()
    nan[7, 2] = float("nan")
    cases = [
        (lambda: geometry_report(H, y, num_classes=5), "missing: 4"),  # labels do not cover
        (lambda: geometry_report(H[:3], torch.tensor([0, 1, 2]), num_classes=4), "N >= C"),
        (lambda: geometry_report(nan, y), "row 7 is not finite"),
        (lambda: geometry_report(H, y.float()), "integer"),
        (lambda: geometry_report(H, y - 1, num_classes=4), "0..3"),
        (lambda: geometry_report(H, torch.zeros(12, dtype=torch.int64)), "2 classes"),
        (lambda: geometry_report(H[:, 0], y), "dimensions"),
        (lambda: geometry_report(H, y[:5]), r"shape \(12,\)"),
        (lambda: geometry_report(torch.ones(12, 3), y), "coincide"),
        (lambda: geometry_report(H, y, classifier=torch.ones(4, 2)), "classifier W"),
        (lambda: geometry_report(H, y, classifier=torch.zeros(4, 3)), "all zeros"),
        (lambda: geometry_report(H, y, classifier=(torch.ones(4, 3), torch.ones(3))),
         "classifier b"),
        (lambda: geometry_report(H, y, batch_size=0), "batch_size"),
        (lambda: geometry_report(H, y, rank_tol=1.5), "rank_tol"),
        (lambda: GeometryAccumulator(1), "num_classes"),
        (lambda: GeometryAccumulator(4).finalize(), "no samples"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
    acc = GeometryAccumulator(4)
    acc.update(H, y)
    with pytest.raises(ValueError, match="columns"):
        acc.update(torch.ones(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="finite"):
        acc.update(torch.tensor([[0.0, float("inf"), 0.0]]), torch.tensor([0]))


def test_small_inputs_leave_the_thread_setting_unchanged() -> None:
    threads = torch.get_num_threads()
    H, y = _noisy_etf(3, 4, 10, noise=0.1, seed=81)
    geometry_report(H, y)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError):
        geometry_report(H, y, num_classes=7)
    assert torch.get_num_threads() == threads

"""The measurements of the theorem recipes (awasthi-lemma1, jiang-lower-bounds, jiang-nc-optimal)
on hand-made inputs: the metrics are real (they see what they should), the exact pair losses are
the enumerated expectation, and the optimizer finds the NC geometry, or nothing without a norm."""

import itertools
import math

import pytest
import torch
from matplotlib.figure import Figure

from contrastlab.losses.scl import hscl, hucl
from contrastlab.recipes.lower_bounds import _representation, jiang_lower_bounds
from contrastlab.recipes.measures import (
    beta_increments,
    class_mean_geometry,
    exact_pair_losses,
    hard_log_law,
    optimize_free_features,
    projected_grad_norm,
    sampled_pair_losses,
    within_class_spread,
)
from contrastlab.recipes.nc_optimal import _loss_specs
from contrastlab.recipes.runners import RunContext
from contrastlab.report.claim_figures import (
    embedding_panels,
    harris_gaps,
    labelled_heatmaps,
    metric_strips,
    metric_vs_budget,
)
from contrastlab.theory.etf import etf_loss, simplex_etf

F64 = torch.float64


def _random_features(n_per_class=3, classes=3, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(classes * n_per_class, dim, generator=g, dtype=F64)
    return z / z.norm(dim=1, keepdim=True), torch.arange(classes).repeat_interleave(n_per_class)


def test_within_class_spread_is_the_largest_same_class_distance():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 1.0]], dtype=F64)
    y = torch.tensor([0, 0, 1, 1])
    assert within_class_spread(z, y) == pytest.approx(5.0)
    assert within_class_spread(z[[0, 0, 2, 2]], y) == 0.0  # collapsed classes
    assert within_class_spread(z[[0, 2]], torch.tensor([0, 1])) == 0.0  # one sample a class


def test_class_mean_geometry_of_the_etf_and_of_a_non_etf():
    y = torch.arange(4).repeat_interleave(2)
    geo = class_mean_geometry(simplex_etf(4, rotation_seed=1).repeat_interleave(2, 0), y)
    assert geo["etf_cosine_error"] < 1e-12 and geo["zero_sum"] < 1e-12
    assert geo["unit_norm_error"] < 1e-12
    # four orthonormal classes: cosine 0 instead of -1/3, sum of norm 2, norms 1
    geo = class_mean_geometry(torch.eye(4, dtype=F64).repeat_interleave(2, 0), y)
    assert geo["etf_cosine_error"] == pytest.approx(1 / 3)
    assert geo["zero_sum"] == pytest.approx(2.0)
    geo = class_mean_geometry(0.5 * torch.eye(4, dtype=F64).repeat_interleave(2, 0), y)
    assert geo["unit_norm_error"] == pytest.approx(0.5)


def test_projected_grad_norm_keeps_only_feasible_descent():
    z = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=F64)  # on the sphere, inside the ball
    radial = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=F64)
    tangent = torch.tensor([[0.0, 3.0], [0.0, 0.0]], dtype=F64)
    assert projected_grad_norm(z, radial, "sphere") == pytest.approx(0.0)
    assert projected_grad_norm(z, tangent, "sphere") == pytest.approx(3.0)
    # ball, boundary: descent -grad points outward when grad . z < 0 -> that part is dropped
    assert projected_grad_norm(z, -radial, "ball") == pytest.approx(0.0)
    assert projected_grad_norm(z, radial, "ball") == pytest.approx(2.0)  # descent goes inward
    interior = torch.tensor([[0.0, 0.0], [0.0, -4.0]], dtype=F64)
    assert projected_grad_norm(z, interior, "ball") == pytest.approx(4.0)
    assert projected_grad_norm(z, -radial, "none") == pytest.approx(2.0)


def test_hard_log_law_masks_tilts_and_accepts_a_negative_beta():
    z, y = _random_features()
    q = hard_log_law(z, y, "other-class", 2.0).exp()
    assert torch.allclose(q.sum(1), torch.ones(len(y), dtype=F64))
    assert float(q[y[:, None] == y[None, :]].abs().max()) == 0.0
    u = hard_log_law(z, y, "marginal", 0.0).exp()
    assert torch.allclose(u, torch.full_like(u, 1 / len(y)))
    s = z @ z.T
    for beta, pick in ((3.0, torch.argmax), (-3.0, torch.argmin)):
        qb = hard_log_law(z, y, "marginal", beta).exp()
        assert torch.equal(torch.argmax(qb, 1), pick(s, 1))  # hard (easy) negatives favoured
    with pytest.raises(ValueError, match="negatives must be"):
        hard_log_law(z, y, "supervised", 1.0)


def _enumerated(z, y, negatives, beta, k, t=1.0, reduction="sum"):
    """E over all N^k negative tuples, pair by pair (the definition)."""
    q = hard_log_law(z, y, negatives, beta).exp()
    s = z @ z.T / t
    out = []
    for i, p in zip(*torch.nonzero(y[:, None] == y[None, :], as_tuple=True), strict=True):
        total = 0.0
        for tup in itertools.product(range(len(y)), repeat=k):
            w = math.prod(float(q[i, j]) for j in tup)
            if w == 0.0:
                continue
            neg = sum(math.exp(float(s[i, j] - s[i, p])) for j in tup)
            total += w * math.log1p(neg / (k if reduction == "mean" else 1))
        out.append(total)
    return torch.tensor(out, dtype=F64)


@pytest.mark.parametrize("negatives", ["other-class", "marginal"])
@pytest.mark.parametrize("beta", [0.0, 1.5, -1.5])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_exact_pair_losses_are_the_enumerated_expectation(negatives, beta, reduction):
    z, y = _random_features(n_per_class=2, classes=3, dim=3, seed=1)
    got = exact_pair_losses(z, y, negatives, beta, 2, 0.7, reduction)
    want = _enumerated(z, y, negatives, beta, 2, 0.7, reduction)
    assert torch.allclose(got, want, rtol=1e-11, atol=1e-12)


def test_exact_pair_losses_match_the_library_and_the_harris_direction():
    z, y = _random_features(n_per_class=4, classes=3, dim=5, seed=2)
    for neg, fn in (("other-class", hscl), ("marginal", hucl)):
        base = exact_pair_losses(z, y, neg, 0.0, 16)
        for beta in (0.5, 4.0):
            hard = exact_pair_losses(z, y, neg, beta, 16)
            lib = fn(z, y, beta=beta, k=16, normalize="none", exact=True,
                     negatives_reduction="sum", reduction="none", tiled=False)
            assert torch.allclose(hard, lib, rtol=0, atol=1e-13)
            assert float((hard - base).min()) > 0  # Harris: hard >= plain, pair by pair
            easy = exact_pair_losses(z, y, neg, -beta, 16)
            assert float((easy - base).max()) < 0  # the corruption goes the other way


def test_sampled_pair_losses_average_to_the_exact_ones():
    z, y = _random_features(n_per_class=3, classes=3, dim=4, seed=3)
    exact = float(exact_pair_losses(z, y, "marginal", 2.0, 8).mean())
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sampled_pair_losses(z, y, "marginal", 2.0, 8, g).mean()
                         for _ in range(400)])
    se = float(draws.std()) / math.sqrt(400)
    assert abs(float(draws.mean()) - exact) < 5 * se


def test_beta_increments_find_the_smallest_step_pair_by_pair():
    losses = {0.0: torch.tensor([1.0, 2.0]), 2.0: torch.tensor([1.5, 2.1]),
              1.0: torch.tensor([1.2, 2.3])}
    assert beta_increments(losses) == pytest.approx(-0.2)  # pair 1 from beta 1 to 2
    assert math.isnan(beta_increments({0.0: torch.tensor([1.0])}))


def test_free_features_reach_the_etf_on_the_sphere_and_in_the_ball():
    y = torch.arange(3).repeat_interleave(2)
    for cons in ("sphere", "ball"):
        res = min((optimize_free_features(y, k=4, negatives="other-class", beta=1.0,
                                          constraint=cons, seed=s) for s in range(3)),
                  key=lambda r: r.loss)
        geo = class_mean_geometry(res.z, y)
        assert geo["etf_cosine_error"] < 1e-5 and within_class_spread(res.z, y) < 1e-5
        assert geo["unit_norm_error"] < 1e-8
        assert res.loss == pytest.approx(etf_loss(3, 4, negatives="other-class"), abs=1e-9)
        assert res.grad_norm < 1e-6


def test_hscl_has_a_spurious_local_minimum_hence_the_restarts():
    # C = 3 on the circle, seed 0: class 1 split into antipodal points, classes 0 and 2 at the
    # two other antipodes; stationary, above the ETF's value, and a perturbation returns to it
    y = torch.arange(3).repeat_interleave(2)
    res = optimize_free_features(y, k=4, negatives="other-class", beta=1.0, seed=0)
    assert res.grad_norm < 1e-6 and within_class_spread(res.z, y) == pytest.approx(2.0)
    assert res.loss > etf_loss(3, 4, negatives="other-class") + 0.4


def test_hucl_optimum_is_not_neural_collapse():
    # observed in jiang-nc-optimal: HUCL (beta = 1), C = 4, 3 samples a class, k = 16: a start
    # ends below the ETF's value with the classes spread out (not a claim of the seeds: Jiang et
    # al. leave HUCL's minimizer open; Lemma 1 needs a law of the negatives independent of f)
    y = torch.arange(4).repeat_interleave(3)
    res = optimize_free_features(y, k=16, negatives="marginal", beta=1.0, seed=16)
    assert res.grad_norm < 1e-6
    assert res.loss < etf_loss(4, 16, beta=1.0) - 1e-5
    assert within_class_spread(res.z, y) > 0.1


def test_free_features_without_normalization_have_no_minimizer():
    y = torch.arange(3).repeat_interleave(2)
    res = optimize_free_features(y, k=4, negatives="other-class", constraint="none", max_iter=20)
    assert res.loss < etf_loss(3, 4, negatives="other-class") - 0.1
    assert float(res.z.norm(dim=1).min()) > 1.5


def test_representations_and_loss_specs_refuse_bad_input():
    x = torch.randn(6, 5, dtype=F64)
    y = torch.arange(3).repeat_interleave(2)
    assert _representation("mlp-sphere", x, y, 2, 0).norm(dim=1).sub(1).abs().max() < 1e-12
    ball = _representation("mlp-ball", x, y, 2, 0).norm(dim=1)
    assert float(ball.max()) <= 1 + 1e-12 and float(ball.min()) < 1  # clips about half
    with pytest.raises(ValueError, match="representations must be among"):
        _representation("resnet", x, y, 2, 0)
    assert _loss_specs([{"name": "hscl", "beta": 2}], "p") == [("hscl", 2.0)]
    with pytest.raises(ValueError, match=r"p\[0\]\.beta must be >= 0 \(and 0 for scl/ucl\)"):
        _loss_specs([{"name": "scl", "beta": 1}], "p")
    with pytest.raises(ValueError, match=r"p\[0\]\.name must be one of"):
        _loss_specs([{"name": "nce"}], "p")


def test_lower_bounds_runner_on_a_tiny_grid(tmp_path):
    params = {"classes": 3, "per_class": 3, "representations": ["random-sphere"], "seeds": [0],
              "ks": [2], "betas": [0, 1], "nc": {"classes": 4, "per_class": 1, "k": 2,
                                                  "betas": [1]}, "mc": {"draws": 20, "k": 2}}
    good = jiang_lower_bounds(params, RunContext(tmp_path))
    bad = jiang_lower_bounds(params, RunContext(tmp_path, corrupt=True))
    assert good.metrics["min_hscl_minus_scl"] > 0 and bad.metrics["min_hscl_minus_scl"] < 0
    assert good.metrics["nc_min_hucl_minus_ucl"] > 0 > bad.metrics["nc_min_hucl_minus_ucl"]
    assert good.metrics["engine_agreement"] < 1e-12
    with pytest.raises(ValueError, match="unknown parameter"):
        jiang_lower_bounds({"classs": 3}, RunContext(tmp_path))


def test_claim_figures_are_figures():
    from tests.figure_layout import layout_problems

    rows = [{"g": "a", "m": 1e-8, "budget": 1}, {"g": "b", "m": 0.0, "budget": 10}]
    z, y = _random_features(classes=2, dim=2)
    gaps = [{"family": f, "representation": "r", "beta": b, "gap_mean": b * 0.1}
            for f in ("other-class", "marginal") for b in (0.0, 1.0)]
    figs = [metric_strips(rows, [("m", "m", 1e-6)], "g"), metric_vs_budget(rows, [("m", "m")]),
            embedding_panels([("t", z.numpy(), y.numpy())]),
            labelled_heatmaps([("t", torch.eye(3).numpy())]),
            harris_gaps(gaps, [{"family": "marginal", "beta": 1.0, "gap": 0.2}])]
    for fig in figs:
        assert isinstance(fig, Figure)
        assert layout_problems(fig) == []  # nothing clipped, no legend over the data
    with pytest.raises(ValueError, match="at least one"):
        metric_strips([], [("m", "m", None)], "g")

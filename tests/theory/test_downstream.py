"""Downstream quality of class-collapsed representations (contrastlab.theory.downstream)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from contrastlab.data.latent import zipf_prior
from contrastlab.losses.family import LOSSES, score_loss
from contrastlab.theory import study
from contrastlab.theory.downstream import (
    SupervisedLossResult,
    downstream_report,
    downstream_temperature,
    mean_classifier_accuracy,
    mean_classifier_loss,
    supervised_loss,
    supervised_objective,
)
from contrastlab.theory.etf import simplex_etf

F64 = torch.float64


def _random_v(c: int, d: int, seed: int, norm: float | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(c, d, generator=g, dtype=F64)
    if norm is not None:
        v = norm * v / v.norm(dim=1, keepdim=True)
    return v


def _degenerate(c: int = 4) -> torch.Tensor:
    """A unit ETF with class 1 moved onto class 0 (two classes at the same point)."""
    v = simplex_etf(c).clone()
    v[1] = v[0]
    return v


def _slsqp(
    V: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    prior: torch.Tensor | None = None,
    sphere: bool = False,
    starts: int = 8,
) -> float:
    """Best value of a multi-start SLSQP solve of the (relaxed or unit-norm) L_sup program.

    Hinge is solved in its smooth epigraph form (variables W and xi).
    """
    c, d = V.shape
    rho = np.full(c, 1.0 / c) if prior is None else prior.numpy()
    Vn = V.numpy()
    hinge = loss == "hinge"
    n_w = c * d

    def split(x: np.ndarray) -> np.ndarray:
        return x[:n_w].reshape(c, d)

    def scores(W: np.ndarray) -> np.ndarray:
        A = Vn @ W.T
        return np.diag(A)[:, None] - A

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        if hinge:
            return float(rho @ x[n_w:]), np.concatenate([np.zeros(n_w), rho])
        w = torch.from_numpy(split(x).copy()).requires_grad_(True)
        val = supervised_objective(V, w, prior, loss, temperature)
        val.backward()
        assert w.grad is not None
        return float(val.detach()), w.grad.numpy().ravel()

    cons: list[dict[str, Any]] = []
    for k in range(c):
        cons.append({
            "type": "eq" if sphere else "ineq",
            "fun": lambda x, k=k: (1.0 - split(x)[k] @ split(x)[k]) * (-1.0 if sphere else 1.0),
        })
    if hinge:
        off = ~np.eye(c, dtype=bool)
        cons.append({
            "type": "ineq", "fun": lambda x: (x[n_w:, None] - 1.0 + scores(split(x)))[off]
        })
        cons.append({"type": "ineq", "fun": lambda x: x[n_w:]})
    rng = np.random.default_rng(0)
    best = math.inf
    for _ in range(starts):
        w0 = rng.standard_normal(n_w)
        w0 = (w0.reshape(c, d) / np.linalg.norm(w0.reshape(c, d), axis=1, keepdims=True)).ravel()
        x0 = np.concatenate([w0, np.full(c, 3.0)]) if hinge else w0
        res = minimize(fun, x0, method="SLSQP", jac=True, constraints=cons,
                       options={"ftol": 1e-14, "maxiter": 2000})
        x = res.x
        W = split(x)
        norms = np.linalg.norm(W, axis=1)
        if sphere:
            W = W / norms[:, None]
        else:
            W = W / np.maximum(norms, 1.0)[:, None]
        # re-evaluate at the exactly feasible point
        best = min(best, float(supervised_objective(V, torch.from_numpy(W), prior, loss,
                                                    temperature)))
    return best


# --------------------------------------------------------------------------------------------
# mean classifier
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 5, 10])
@pytest.mark.parametrize("t", [1.0, 0.5])
@pytest.mark.parametrize("extra", [0, 3])
def test_mean_classifier_loss_at_etf(c: int, t: float, extra: int) -> None:
    v = simplex_etf(c, c - 1 + extra, rotation_seed=extra or None)
    a = c / ((c - 1) * t)
    want = math.log1p((c - 1) * math.exp(-a))
    assert float(mean_classifier_loss(v, temperature=t)) == pytest.approx(want, abs=1e-12)
    # unit norm: renormalizing the means changes nothing
    got = float(mean_classifier_loss(v, temperature=t, normalize_means=True))
    assert got == pytest.approx(want, abs=1e-12)
    assert mean_classifier_accuracy(v) == 1.0


def test_mean_classifier_loss_reference_values() -> None:
    # SPEC A7 table, t = 1: L^mu = 0.1269 (C = 2), 1.3769 (C = 10), 3.6124 (C = 100)
    for c, want in [(2, 0.1269), (10, 1.3769), (100, 3.6124)]:
        assert float(mean_classifier_loss(simplex_etf(c))) == pytest.approx(want, abs=5e-5)


def test_mean_classifier_loss_matches_cross_entropy() -> None:
    v = _random_v(6, 4, seed=1)
    prior = torch.tensor([0.3, 0.1, 0.2, 0.05, 0.15, 0.2], dtype=F64)
    for normalize in (False, True):
        mu = v / v.norm(dim=1, keepdim=True) if normalize else v
        per = torch.nn.functional.cross_entropy(v @ mu.T / 0.7, torch.arange(6), reduction="none")
        got = mean_classifier_loss(v, prior, temperature=0.7, normalize_means=normalize)
        assert float(got) == pytest.approx(float((prior * per).sum()), abs=1e-12)
    # normalizing the means matters when the norms differ
    assert float(mean_classifier_loss(v, normalize_means=True)) != pytest.approx(
        float(mean_classifier_loss(v)), abs=1e-6
    )


@pytest.mark.parametrize("normalize", [False, True])
def test_mean_classifier_loss_gradcheck(normalize: bool) -> None:
    v = _random_v(4, 3, seed=2).requires_grad_(True)
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return mean_classifier_loss(x, prior, temperature=0.7, normalize_means=normalize)

    assert torch.autograd.gradcheck(f, (v,), eps=1e-6, atol=1e-8)


def test_mean_classifier_accuracy_ties_and_prior() -> None:
    v = _degenerate(4)  # classes 0 and 1 coincide: both tie, so both count as errors
    assert mean_classifier_accuracy(v) == pytest.approx(0.5)
    prior = torch.tensor([0.4, 0.4, 0.1, 0.1], dtype=F64)
    assert mean_classifier_accuracy(v, prior) == pytest.approx(0.2)
    # break the tie: class 0 gets a longer vector, so class 0 wins both rows
    w = v.clone()
    w[0] = 1.5 * w[0]
    assert mean_classifier_accuracy(w) == pytest.approx(0.75)
    # argmax is scale-free
    assert mean_classifier_accuracy(3.0 * w) == pytest.approx(0.75)


# --------------------------------------------------------------------------------------------
# L_sup at the ETF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 3, 5, 10])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("t", [1.0, 0.5])
def test_supervised_loss_at_etf(c: int, loss: str, t: float) -> None:
    v = simplex_etf(c, c + 1, rotation_seed=c)
    res = supervised_loss(v, loss=loss, temperature=t)
    assert isinstance(res, SupervisedLossResult)
    # by symmetry W = V: every score is v_y^T (v_y - v_c') = C / (C - 1)
    want = float(score_loss(torch.full((c - 1,), c / (c - 1), dtype=F64), loss, t))
    assert res.value == pytest.approx(want, abs=1e-9)
    assert res.tight and res.converged
    assert res.gap <= 1e-9
    assert torch.allclose(res.norms, torch.ones(c, dtype=F64), atol=1e-6)
    if loss != "hinge":  # hinge is 0 on a whole neighbourhood of V: the optimizer is not unique
        assert torch.allclose(res.W, v, atol=1e-4)
    # the value is the objective at the returned W
    assert float(supervised_objective(v, res.W, loss=loss, temperature=t)) == pytest.approx(
        res.value, abs=1e-12
    )


@pytest.mark.parametrize("loss", ["infonce", "logistic", "infonce-mean", "hinge"])
def test_supervised_loss_etf_random_feasible_perturbations(loss: str) -> None:
    c = 5
    v = simplex_etf(c)
    res = supervised_loss(v, loss=loss, temperature=0.7)
    g = torch.Generator().manual_seed(3)
    for scale in (1e-1, 1e-2, 1e-3):
        for _ in range(50):
            w = res.W + scale * torch.randn(c, c - 1, generator=g, dtype=F64)
            ball = w / w.norm(dim=1, keepdim=True).clamp(min=1.0)
            sphere = w / w.norm(dim=1, keepdim=True)
            for cand in (ball, sphere):
                val = float(supervised_objective(v, cand, loss=loss, temperature=0.7))
                assert val >= res.value - 1e-12


def test_supervised_loss_kkt_at_etf() -> None:
    """Stationarity: the gradient at W = V is -nu_c w_c with nu_c >= 0 (active balls)."""
    v = simplex_etf(4)
    res = supervised_loss(v, temperature=0.5)
    w = res.W.clone().requires_grad_(True)
    supervised_objective(v, w, temperature=0.5).backward()
    assert w.grad is not None
    grad = w.grad
    nu = -(grad * res.W).sum(dim=1)
    assert bool((nu > 0).all())
    assert torch.allclose(grad, -nu[:, None] * res.W, atol=1e-6)


@pytest.mark.parametrize("loss", ["infonce", "hinge"])
def test_supervised_loss_matches_slsqp_tiny(loss: str) -> None:
    v = simplex_etf(3)  # C = 3, d = 2
    res = supervised_loss(v, loss=loss)
    assert res.value == pytest.approx(_slsqp(v, loss), abs=1e-7)
    w = _random_v(3, 2, seed=4)
    res = supervised_loss(w, loss=loss, temperature=0.8)
    assert res.converged
    assert res.relaxed_value == pytest.approx(_slsqp(w, loss, temperature=0.8), abs=1e-7)


# --------------------------------------------------------------------------------------------
# degenerate and scaled representations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_degenerate_v_is_worse(loss: str) -> None:
    etf, deg = simplex_etf(4), _degenerate(4)
    assert mean_classifier_accuracy(deg) < 1.0
    assert float(mean_classifier_loss(deg)) > float(mean_classifier_loss(etf))
    good, bad = supervised_loss(etf, loss=loss), supervised_loss(deg, loss=loss)
    assert bad.converged
    assert bad.value > good.value + 1e-3
    # classes 0 and 1 share their feature, so s_01 = -s_10; l is at least its value with the
    # other C - 2 scores at +infinity, and by convexity the two rows (weight 1/4 each) cost at
    # least half of that at s_01 = 0
    one_hot = torch.tensor([0.0, 1e3, 1e3], dtype=F64)
    assert bad.value >= 0.5 * float(score_loss(one_hot, loss)) - 1e-9
    assert bad.value == pytest.approx(_slsqp(deg, loss, starts=4), abs=1e-6)


@pytest.mark.parametrize("loss", ["infonce", "infonce-mean", "hinge"])
def test_small_norm_v_relaxation_is_solved(loss: str) -> None:
    v = _random_v(4, 3, seed=5, norm=0.1)
    res = supervised_loss(v, loss=loss, temperature=0.5)
    assert res.converged and res.gap <= 1e-9
    assert res.relaxed_value == pytest.approx(_slsqp(v, loss, temperature=0.5, starts=3), abs=1e-8)
    # small scores: close to l(0) - the value cannot drop far below it
    assert res.value > float(score_loss(torch.zeros(3, dtype=F64), loss, 0.5)) - 0.2
    etf = supervised_loss(0.1 * simplex_etf(4), loss=loss)
    assert etf.tight


def test_zero_class_vector_sphere_not_tight() -> None:
    """A zero class vector in d = rank(V): its weight is 0 in the relaxation, not on the sphere."""
    v = torch.cat([simplex_etf(3), torch.zeros(1, 2, dtype=F64)])
    ball = supervised_loss(v)
    sphere = supervised_loss(v, constraint="sphere")
    assert not ball.tight and not sphere.tight
    assert float(ball.norms[3]) < 1e-6
    assert ball.value == pytest.approx(ball.relaxed_value, abs=1e-12)
    assert ball.value == pytest.approx(_slsqp(v, starts=4), abs=1e-8)
    assert torch.allclose(sphere.norms, torch.ones(4, dtype=F64), atol=1e-12)
    assert sphere.value > ball.value + 1e-3
    # the local sphere solve reaches the best multi-start SLSQP value on the sphere
    assert sphere.value == pytest.approx(_slsqp(v, sphere=True, starts=8), abs=1e-7)
    # one more dimension: a component orthogonal to span(V) makes the relaxation tight
    v3 = torch.cat([v, torch.zeros(4, 1, dtype=F64)], dim=1)
    lifted = supervised_loss(v3, constraint="sphere")
    assert lifted.tight
    assert torch.allclose(lifted.norms, torch.ones(4, dtype=F64), atol=1e-12)
    assert lifted.value == pytest.approx(ball.value, abs=1e-9)


# --------------------------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------------------------


def test_prior_changes_values_in_expected_direction() -> None:
    deg = _degenerate(4)  # classes 0, 1 collide; classes 2, 3 are well separated
    on_bad = torch.tensor([0.4, 0.4, 0.1, 0.1], dtype=F64)
    on_good = torch.tensor([0.1, 0.1, 0.4, 0.4], dtype=F64)
    assert float(mean_classifier_loss(deg, on_bad)) > float(mean_classifier_loss(deg))
    assert float(mean_classifier_loss(deg)) > float(mean_classifier_loss(deg, on_good))
    assert mean_classifier_accuracy(deg, on_bad) < mean_classifier_accuracy(deg)
    assert mean_classifier_accuracy(deg) < mean_classifier_accuracy(deg, on_good)
    bad = supervised_loss(deg, on_bad).value
    mid = supervised_loss(deg).value
    good = supervised_loss(deg, on_good).value
    assert bad > mid > good


def test_prior_linearity_and_concavity() -> None:
    v = _random_v(5, 3, seed=6)
    p = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1], dtype=F64)
    q = torch.tensor([0.1, 0.1, 0.2, 0.2, 0.4], dtype=F64)
    mix = 0.5 * (p + q)
    # the mean-classifier loss is linear in the prior
    lin = 0.5 * (float(mean_classifier_loss(v, p)) + float(mean_classifier_loss(v, q)))
    assert float(mean_classifier_loss(v, mix)) == pytest.approx(lin, abs=1e-12)
    # L_sup is an infimum of functions linear in rho: concave in the prior (strictly here)
    for loss in ("infonce", "hinge"):
        lp, lq = supervised_loss(v, p, loss).value, supervised_loss(v, q, loss).value
        assert supervised_loss(v, mix, loss).value >= 0.5 * (lp + lq) - 1e-8
    # a class of zero prior mass still acts as a negative
    z = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0], dtype=F64)
    res = supervised_loss(v, z, "hinge")
    assert res.converged
    assert res.value == pytest.approx(_slsqp(v, "hinge", prior=z, starts=4), abs=1e-7)


@pytest.mark.parametrize(
    "prior", [[0.5, 0.5], [0.5, 0.6, -0.1], [0.2, 0.2, 0.2], [float("nan"), 0.5, 0.5]]
)
def test_check_prior_errors_propagate(prior: list[float]) -> None:
    v = simplex_etf(3)
    for call in (
        lambda: mean_classifier_loss(v, prior),
        lambda: mean_classifier_accuracy(v, prior),
        lambda: supervised_loss(v, prior),
        lambda: downstream_report(v, prior),
    ):
        with pytest.raises(ValueError, match="prior"):
            call()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"loss": "cosine"}, "loss"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"constraint": "cube"}, "constraint"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        supervised_loss(simplex_etf(3), **kwargs)


def test_bad_arguments_other_functions() -> None:
    v = simplex_etf(3)
    with pytest.raises(ValueError, match="temperature"):
        mean_classifier_loss(v, temperature=-1.0)
    with pytest.raises(ValueError, match="loss"):
        downstream_report(v, loss="l2")
    with pytest.raises(ValueError, match="temperature"):
        downstream_report(v, temperature=0.0)
    bads: list[Any] = [torch.zeros(3, dtype=F64), torch.zeros(1, 2, dtype=F64),
                       torch.ones(3, 2, dtype=torch.int64), [[1.0, 0.0]],
                       torch.tensor([[1.0, float("nan")], [0.0, 1.0]])]
    fns: list[Callable[[Any], Any]] = [mean_classifier_loss, mean_classifier_accuracy,
                                       supervised_loss, downstream_report]
    for bad in bads:
        for fn in fns:
            with pytest.raises(ValueError, match="V"):
                fn(bad)
    with pytest.raises(ValueError, match="V"):
        mean_classifier_loss(torch.cat([v, torch.zeros(1, 2, dtype=F64)]), normalize_means=True)


# --------------------------------------------------------------------------------------------
# report and sizes
# --------------------------------------------------------------------------------------------


def test_downstream_report() -> None:
    c = 6
    v = simplex_etf(c)
    rep = downstream_report(v, temperature=0.5)
    assert set(rep) >= {"mean_classifier_loss", "mean_classifier_accuracy", "supervised_loss",
                        "supervised_loss_tight", "cosine"}
    # one temperature: R_mu-supv at the loss's t = 0.5, like L_sup (SPEC A7 closed form)
    want_mu = math.log1p((c - 1) * math.exp(-c / ((c - 1) * 0.5)))
    assert rep["mean_classifier_loss"] == pytest.approx(want_mu, abs=1e-12)
    assert rep["downstream_temperature"] == 0.5
    assert rep["mean_classifier_accuracy"] == 1.0
    assert rep["supervised_loss"] == pytest.approx(supervised_loss(v, temperature=0.5).value)
    assert rep["supervised_loss_tight"] is True
    eye = torch.eye(c, dtype=F64)
    want = torch.full((c, c), -1.0 / (c - 1), dtype=F64) + (1 + 1.0 / (c - 1)) * eye
    assert torch.allclose(rep["cosine"], want, atol=1e-12)
    deg = downstream_report(_degenerate(4))
    assert deg["mean_classifier_accuracy"] == 0.5
    assert float(deg["cosine"][0, 1]) == pytest.approx(1.0)


def test_supervised_loss_medium_size_converges() -> None:
    v = _random_v(30, 29, seed=7, norm=1.0)
    for loss in ("infonce", "infonce-mean"):
        res = supervised_loss(v, loss=loss, temperature=0.5)
        assert res.converged and res.gap <= 1e-9 and res.tight
        # no feasible random perturbation does better
        g = torch.Generator().manual_seed(8)
        for _ in range(20):
            w = res.W + 1e-3 * torch.randn(30, 29, generator=g, dtype=F64)
            w = w / w.norm(dim=1, keepdim=True).clamp(min=1.0)
            val = float(supervised_objective(v, w, loss=loss, temperature=0.5))
            assert val >= res.value - 1e-12


def test_zero_representation() -> None:
    v = torch.zeros(3, 2, dtype=F64)
    for loss in LOSSES:
        res = supervised_loss(v, loss=loss)
        assert res.tight and res.converged
        assert res.value == pytest.approx(float(score_loss(torch.zeros(2, dtype=F64), loss)))
    assert mean_classifier_accuracy(v) == 0.0


# --------------------------------------------------------------------------------------------
# one temperature convention for R_mu-supv and L_sup
# --------------------------------------------------------------------------------------------


def _r_mu_supv_by_hand(v: torch.Tensor, prior: list[float], t: float) -> float:
    """sum_y rho_y -log(exp(v_y . v_y / t) / sum_c exp(v_y . v_c / t)), in plain Python."""
    rows = v.tolist()
    total = 0.0
    for y, fy in enumerate(rows):
        scores = [sum(a * b for a, b in zip(fy, mu, strict=True)) / t for mu in rows]
        m = max(scores)
        log_z = m + math.log(sum(math.exp(s - m) for s in scores))
        total += prior[y] * (log_z - scores[y])
    return total


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_mean_classifier_loss_is_the_hand_formula_at_t(t: float) -> None:
    v = _random_v(5, 3, seed=11)
    prior = [0.35, 0.25, 0.2, 0.15, 0.05]
    want = _r_mu_supv_by_hand(v, prior, t)
    got = float(mean_classifier_loss(v, torch.tensor(prior, dtype=F64), temperature=t))
    assert got == pytest.approx(want, rel=1e-13, abs=1e-13)
    # the report evaluates R_mu-supv at the InfoNCE loss's t
    rep = downstream_report(v, torch.tensor(prior, dtype=F64), temperature=t)
    assert rep["mean_classifier_loss"] == pytest.approx(want, rel=1e-13, abs=1e-13)
    assert rep["downstream_temperature"] == t


def test_downstream_temperature() -> None:
    for t in (0.1, 0.5, 1.0, 2.0):
        assert downstream_temperature("infonce", t) == t
        assert downstream_temperature("infonce-mean", t) == t
        assert downstream_temperature("logistic", t) == 1.0  # InfoNCE at t = 1
        assert downstream_temperature("hinge", t) == 1.0  # no temperature
    assert downstream_temperature("infonce") == 1.0
    with pytest.raises(ValueError, match="loss"):
        downstream_temperature("l2", 0.5)
    with pytest.raises(ValueError, match="temperature"):
        downstream_temperature("infonce", 0.0)


@pytest.mark.parametrize("loss", ["infonce", "infonce-mean"])
def test_report_uses_one_temperature(loss: str) -> None:
    v = _random_v(4, 3, seed=12)
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64)
    at = {t: downstream_report(v, prior, loss=loss, temperature=t) for t in (0.5, 1.0)}
    for t, rep in at.items():
        assert rep["mean_classifier_loss"] == pytest.approx(
            float(mean_classifier_loss(v, prior, temperature=t)), abs=1e-14)
        assert rep["supervised_loss"] == pytest.approx(
            supervised_loss(v, prior, loss=loss, temperature=t).value, abs=1e-12)
    # both losses move with t
    assert abs(at[0.5]["mean_classifier_loss"] - at[1.0]["mean_classifier_loss"]) > 1e-3
    assert abs(at[0.5]["supervised_loss"] - at[1.0]["supervised_loss"]) > 1e-3


# values of the code before the temperature convention (R_mu-supv always at t = 1); a
# temperature-free loss or t = 1 must reproduce them (no regression for Bao's t = 1)
_BEFORE_REPORT = {
    ("infonce", 1.0): (0.7150150088901771, 0.651518661075311),
    ("logistic", 0.5): (0.7150150088901771, 0.651518661075311),
    ("hinge", 0.5): (0.7150150088901771, 0.2065930856318205),
    ("infonce-mean", 1.0): (0.7150150088901771, 0.26953270271935775),
}
_BEFORE_STUDY = {  # C = 3, zipf(1), k -> (contrastive, R_mu-supv, L_sup), t = 1
    1: (0.3937383497757525, 0.3682203208932714, 0.3682161314735796),
    4: (1.0981829320873162, 0.36526345732728355, 0.36497890153296164),
}


def test_t1_reproduces_previous_values() -> None:
    g = torch.Generator().manual_seed(3)
    v = torch.randn(4, 3, generator=g, dtype=F64)
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64)
    for (loss, t), (mu, sup) in _BEFORE_REPORT.items():
        rep = downstream_report(v, prior, loss=loss, temperature=t)
        assert rep["mean_classifier_loss"] == mu  # bit for bit: the same computation
        assert rep["downstream_temperature"] == 1.0
        assert rep["supervised_loss"] == pytest.approx(sup, abs=1e-12)
    res = study.monotonicity_study(3, {"zipf(1)": zipf_prior(3, 1.0)}, ks=[1, 4], restarts=1,
                                   recheck_restarts=1)
    assert res.config["downstream_temperature"] == 1.0
    for row in res.rows:
        con, mu, sup = _BEFORE_STUDY[row["k"]]
        assert row["contrastive_loss"] == pytest.approx(con, abs=1e-9)
        assert row["mean_classifier_loss"] == pytest.approx(mu, abs=1e-9)
        assert row["supervised_loss"] == pytest.approx(sup, abs=1e-9)


def test_study_downstream_losses_use_the_study_temperature() -> None:
    c = 3
    prior = zipf_prior(c, 1.0)
    objective = {"loss": "infonce", "temperature": 0.5, "negatives": "marginal", "dim": None,
                 "max_iter": 3000}
    best = study._solve(prior, 4, 1, 0, [], **objective)
    ds = best.downstream
    assert ds["downstream_temperature"] == 0.5
    assert ds["mean_classifier_loss"] == pytest.approx(
        float(mean_classifier_loss(best.V, prior, temperature=0.5)), abs=1e-14)
    assert ds["supervised_loss"] == pytest.approx(
        supervised_loss(best.V, prior, temperature=0.5).value, abs=1e-12)
    # end to end: balanced classes, the optimum is the unit ETF at every k, so both columns
    # equal their ETF values at the study's t (SPEC A7), and they move together with t
    rows = {}
    for t in (0.5, 1.0):
        res = study.monotonicity_study(
            c, {"balanced": torch.full((c,), 1.0 / c, dtype=F64)}, ks=[1, 4], temperature=t,
            restarts=1, recheck_restarts=1)
        assert res.config["downstream_temperature"] == t
        want_mu = math.log1p((c - 1) * math.exp(-c / ((c - 1) * t)))
        want_sup = supervised_loss(simplex_etf(c), temperature=t).value
        for row in res.rows:
            assert row["mean_classifier_loss"] == pytest.approx(want_mu, abs=1e-6)
            assert row["supervised_loss"] == pytest.approx(want_sup, abs=1e-6)
        rows[t] = res.rows
    for lo, hi in zip(rows[0.5], rows[1.0], strict=True):
        assert lo["mean_classifier_loss"] < hi["mean_classifier_loss"] - 1e-2
        assert lo["supervised_loss"] < hi["supervised_loss"] - 1e-2

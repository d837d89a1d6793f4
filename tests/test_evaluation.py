"""Downstream evaluation (contrastlab.evaluation; SPEC A5): mean classifier, linear probe, L_sup,
weighted kNN, the report and the `contrastlab geometry` output."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from contrastlab.evaluation import (
    LSUP_LOSSES,
    downstream_report,
    geometry_command_output,
    knn_classifier,
    linear_probe,
    mean_classifier,
    unit_norm_supervised_loss,
)
from contrastlab.evaluation import (
    holdout_split as stratified_split,
)
from contrastlab.geometry import geometry_report
from contrastlab.losses.family import score_loss
from tests.conftest import simplex_etf


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _mixture(
    means: torch.Tensor, n: int, sigma: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c, d = means.shape
    y = torch.randint(0, c, (n,), generator=g)
    y[:c] = torch.arange(c)
    return means[y] + sigma * torch.randn(n, d, generator=g, dtype=means.dtype), y


def _etf_data(c: int, d: int, reps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    V = simplex_etf(c, d) @ _orthogonal(d, 7)
    y = torch.arange(c).repeat(reps)
    return V, V[y], y


# --------------------------------------------------------------------------------------------
# the exact ETF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [3, 10])
def test_exact_etf_downstream_values(c: int) -> None:
    _, H, y = _etf_data(c, c - 1, 20)
    a = c / (c - 1)  # v_y^T (v_y - v_c) for the unit ETF, t = 1
    closed = math.log1p((c - 1) * math.exp(-a))  # SPEC A7: log(1 + (C-1) e^{-a})
    for nf, nm in [(False, False), (True, False), (True, True)]:
        mc = mean_classifier(H, y, H, y, normalize_features=nf, normalize_means=nm)
        assert mc.accuracy == 1.0
        assert mc.cross_entropy == pytest.approx(closed, abs=1e-12)
    assert knn_classifier(H, y, H, y, k=5).accuracy == 1.0
    # L_sup with unit-norm weights: the ETF itself is optimal, value = the same closed form
    ls = unit_norm_supervised_loss(H, y)
    assert ls.tight and ls.converged
    assert ls.value == pytest.approx(closed, abs=1e-6)
    assert ls.relaxed_value <= ls.value + 1e-12
    assert torch.allclose(ls.weight.norm(dim=1), torch.ones(c, dtype=ls.weight.dtype))
    probe = linear_probe(H, y, H, y, bias=True)
    assert probe.accuracy == 1.0 and probe.converged
    # by symmetry the probe's weights are proportional to the class means: NC3 ~ 0, NC4 = 0
    geo = geometry_report(H, y, classifier=(probe.weight, probe.bias_vector))
    assert geo.nc3 is not None and geo.nc3 < 1e-2 and geo.nc4 == 0.0


def test_lsup_matches_the_class_level_solver_on_collapsed_data() -> None:
    downstream = pytest.importorskip(
        "contrastlab.theory.downstream", reason="contrastlab.theory.downstream not available"
    )
    g = torch.Generator().manual_seed(3)
    c, d = 4, 6
    V = torch.randn(c, d, generator=g, dtype=torch.float64)
    counts = torch.tensor([10, 20, 30, 40])
    y = torch.repeat_interleave(torch.arange(c), counts)
    for loss in LSUP_LOSSES:
        ours = unit_norm_supervised_loss(V[y], y, loss=loss, temperature=0.5, tol=1e-9)
        ref = downstream.supervised_loss(V, prior=counts / counts.sum(), loss=loss,
                                         temperature=0.5)
        assert ours.value == pytest.approx(ref.value, abs=1e-7), loss


@pytest.mark.parametrize("loss", LSUP_LOSSES)
def test_lsup_value_is_the_loss_family_at_the_returned_unit_weights(loss: str) -> None:
    H, y = _mixture(simplex_etf(5, 8), 400, 0.6, seed=9)
    res = unit_norm_supervised_loss(H, y, loss=loss, temperature=0.7)
    W = res.weight.to(torch.float64)
    assert torch.allclose(W.norm(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-9)
    A = H @ W.T
    scores = (A.gather(1, y[:, None]) - A)[torch.arange(5)[None, :] != y[:, None]].view(-1, 4)
    direct = float(score_loss(scores, loss, 0.7).mean())
    assert res.value == pytest.approx(direct, abs=1e-9)
    # optimality: no random unit-norm W does better, and the gap certifies the relaxation
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        Wr = torch.nn.functional.normalize(W + 0.3 * torch.randn(W.shape, generator=g,
                                                                 dtype=torch.float64), dim=1)
        Ar = H @ Wr.T
        sr = (Ar.gather(1, y[:, None]) - Ar)[torch.arange(5)[None, :] != y[:, None]].view(-1, 4)
        assert float(score_loss(sr, loss, 0.7).mean()) >= res.value - 1e-9
    assert res.converged and res.gap <= 1e-6


def test_lsup_tightness_branches() -> None:
    g = torch.Generator().manual_seed(8)
    y = torch.randint(0, 3, (300,), generator=g)
    # labels independent of the features: the relaxed optimum has short rows (near W = 0)
    H = torch.randn(300, 4, generator=g, dtype=torch.float64)
    # (a) rank-deficient embedding (dimensional collapse): the short rows are lifted for free
    collapsed = torch.cat([H[:, :2], torch.zeros(300, 2, dtype=torch.float64)], dim=1)
    lifted = unit_norm_supervised_loss(collapsed, y)
    assert lifted.tight and lifted.value == pytest.approx(lifted.relaxed_value, abs=1e-9)
    assert torch.allclose(lifted.weight.norm(dim=1), torch.ones(3, dtype=torch.float64))
    # (b) d = 1: unit-norm weights are +-1 and cannot reach the interior optimum
    one_d = unit_norm_supervised_loss(H[:, :1], y)
    assert not one_d.tight
    assert one_d.relaxed_value < math.log(3) <= one_d.value + 1e-12
    assert one_d.value > one_d.relaxed_value + 1e-5
    assert set(one_d.weight.abs().flatten().tolist()) == {1.0}


# --------------------------------------------------------------------------------------------
# the linear probe against the Bayes rule and scikit-learn
# --------------------------------------------------------------------------------------------


def test_probe_reaches_the_closed_form_bayes_accuracy_two_classes() -> None:
    # N(+-m e_1, I) in d = 5, equal priors: Bayes rule sign(x_1), accuracy Phi(m)
    m = 1.2816  # Phi(m) = 0.9
    means = torch.zeros(2, 5, dtype=torch.float64)
    means[0, 0], means[1, 0] = m, -m
    bayes = 0.5 * (1.0 + math.erf(m / math.sqrt(2.0)))
    Htr, ytr = _mixture(means, 4000, 1.0, seed=1)
    Hte, yte = _mixture(means, 40000, 1.0, seed=2)
    for bias in (False, True):
        probe = linear_probe(Htr, ytr, Hte, yte, bias=bias)
        assert probe.converged
        assert abs(probe.accuracy - bayes) <= 0.01, (bias, probe.accuracy, bayes)


def test_probe_matches_bayes_rule_and_sklearn_on_a_gaussian_mixture() -> None:
    # separable-ish mixture of 4 isotropic Gaussians: the Bayes rule is nearest mean
    means = 2.0 * simplex_etf(4, 6) @ _orthogonal(6, 4)
    Htr, ytr = _mixture(means, 6000, 1.0, seed=5)
    Hte, yte = _mixture(means, 20000, 1.0, seed=6)
    bayes = float((torch.cdist(Hte, means).argmin(1) == yte).double().mean())
    assert 0.8 < bayes < 0.97  # neither trivial nor hopeless
    ours = {bias: linear_probe(Htr, ytr, Hte, yte, bias=bias) for bias in (False, True)}
    for bias, probe in ours.items():
        assert probe.converged, bias
        assert abs(probe.accuracy - bayes) <= 0.01, (bias, probe.accuracy, bayes)
        val = probe.validation
        assert val and probe.selected_by == "accuracy"
        chosen = next(v for v in val if v["weight_decay"] == probe.weight_decay)
        assert chosen["val_accuracy"] == max(v["val_accuracy"] for v in val)
    sklearn_lm = pytest.importorskip(
        "sklearn.linear_model", reason="scikit-learn (test-only reference) is not installed"
    )
    for bias, probe in ours.items():
        ref = sklearn_lm.LogisticRegression(C=1.0, fit_intercept=bias, max_iter=2000, tol=1e-8)
        ref.fit(Htr.numpy(), ytr.numpy())
        sk_acc = float(ref.score(Hte.numpy(), yte.numpy()))
        assert abs(probe.accuracy - sk_acc) <= 0.005, (bias, probe.accuracy, sk_acc)


def test_probe_selection_rules() -> None:
    means = 1.2 * simplex_etf(5, 8) @ _orthogonal(8, 30)
    Htr, ytr = _mixture(means, 400, 1.0, seed=31)
    Hte, yte = _mixture(means, 200, 1.0, seed=32)
    by_ce = linear_probe(Htr, ytr, Hte, yte, select="cross_entropy", patience=10)
    assert len(by_ce.validation) == 7  # patience 10: the whole default grid is walked
    chosen = next(v for v in by_ce.validation if v["weight_decay"] == by_ce.weight_decay)
    assert chosen["val_cross_entropy"] == min(v["val_cross_entropy"] for v in by_ce.validation)
    by_acc = linear_probe(Htr, ytr, Hte, yte, select="accuracy", patience=10)
    best = max(v["val_accuracy"] for v in by_acc.validation)
    ties = [v for v in by_acc.validation if v["val_accuracy"] == best]
    chosen = next(v for v in by_acc.validation if v["weight_decay"] == by_acc.weight_decay)
    assert chosen["val_cross_entropy"] == min(v["val_cross_entropy"] for v in ties)
    # each rule also reports the other's choice on the same walk, refit identically
    assert by_acc.other_selection is not None and by_ce.other_selection is not None
    assert by_acc.other_selection["weight_decay"] == by_ce.weight_decay
    assert by_acc.other_selection["cross_entropy"] == pytest.approx(by_ce.cross_entropy, abs=1e-9)
    assert by_ce.other_selection["accuracy"] == by_acc.accuracy
    fixed = linear_probe(Htr, ytr, Hte, yte, weight_decay=0.01)
    assert fixed.selected_by == "fixed" and fixed.validation == []
    assert fixed.other_selection is None


def test_probe_with_fixed_weight_decay_matches_sklearn_objective() -> None:
    # lambda/2 ||W||^2 + mean CE  ==  sklearn's C = 1 / (lambda N) (sum CE + ||W||^2 / 2)
    sklearn_lm = pytest.importorskip(
        "sklearn.linear_model", reason="scikit-learn (test-only reference) is not installed"
    )
    means = 1.5 * simplex_etf(3, 4)
    Htr, ytr = _mixture(means, 900, 1.0, seed=12)
    lam = 1e-2
    ours = linear_probe(Htr, ytr, Htr, ytr, bias=True, weight_decay=lam, tol=1e-9,
                        dtype=torch.float64, max_iter=5000)
    ref = sklearn_lm.LogisticRegression(C=1.0 / (lam * Htr.shape[0]), max_iter=5000, tol=1e-12)
    ref.fit(Htr.numpy(), ytr.numpy())
    # multinomial logits are defined up to a common shift: compare centred weights
    W = ours.weight - ours.weight.mean(0)
    W_ref = torch.from_numpy(ref.coef_) - torch.from_numpy(ref.coef_).mean(0)
    assert torch.allclose(W, W_ref, atol=1e-5)


def test_probe_is_scale_invariant_and_robust_to_ill_conditioning() -> None:
    means = 1.5 * simplex_etf(4, 8) @ _orthogonal(8, 20)
    Htr, ytr = _mixture(means, 1500, 1.0, seed=21)
    Hte, yte = _mixture(means, 1500, 1.0, seed=22)
    base = linear_probe(Htr, ytr, Hte, yte, bias=True, dtype=torch.float64)
    scaled = linear_probe(10.0 * Htr, ytr, 10.0 * Hte, yte, bias=True, dtype=torch.float64)
    assert scaled.accuracy == base.accuracy
    assert scaled.cross_entropy == pytest.approx(base.cross_entropy, abs=1e-8)
    assert scaled.weight_decay == pytest.approx(base.weight_decay * 100.0, rel=1e-9)
    # an anisotropic linear map (condition number 1e4 of the covariance): still converges fast
    A = _orthogonal(8, 23) @ torch.diag(torch.logspace(0, -2, 8, dtype=torch.float64))
    ill = linear_probe(Htr @ A, ytr, Hte @ A, yte, bias=True, dtype=torch.float64)
    assert ill.converged and ill.iterations <= 100
    assert all(v["iterations"] <= 100 for v in ill.validation)
    assert ill.accuracy == pytest.approx(base.accuracy, abs=0.01)


# --------------------------------------------------------------------------------------------
# mean classifier conventions and kNN against references
# --------------------------------------------------------------------------------------------


def test_mean_classifier_conventions_by_hand() -> None:
    Htr = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    ytr = torch.tensor([0, 0, 1, 1])
    Hte = torch.tensor([[1.0, 1.0], [0.2, 1.0]], dtype=torch.float64)
    yte = torch.tensor([1, 1])
    # raw: mu = (3, 0), (0, 1); logits (3, 1) and (0.6, 1)
    raw = mean_classifier(Htr, ytr, Hte, yte)
    want = 0.5 * (math.log(math.exp(3) + math.exp(1)) - 1 + math.log(math.exp(0.6) + math.e) - 1)
    assert raw.cross_entropy == pytest.approx(want)
    assert raw.accuracy == 0.5
    # normalized features: mu = (1, 0), (0, 1); the same argmax here but another loss
    nf = mean_classifier(Htr, ytr, Hte, yte, normalize_features=True, temperature=0.5)
    f = torch.nn.functional.normalize(Hte, dim=1)
    logits = f @ torch.eye(2, dtype=torch.float64) / 0.5
    ce = float(torch.nn.functional.cross_entropy(logits, yte))
    assert nf.cross_entropy == pytest.approx(ce)
    # cosine (unit means) differs from normalized features when the means have unequal norms
    Htr2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]],
                        dtype=torch.float64)
    ytr2 = torch.tensor([0, 0, 1, 1, 1])  # mu_0 = (.5, .5), mu_1 = (2/3, 1/3)
    Hte2 = torch.tensor([[0.766, 0.643]], dtype=torch.float64)  # at 40 degrees
    yte2 = torch.tensor([0])
    a = mean_classifier(Htr2, ytr2, Hte2, yte2, normalize_features=True)
    b = mean_classifier(Htr2, ytr2, Hte2, yte2, normalize_features=True, normalize_means=True)
    # f.mu_0 = 0.704 < f.mu_1 = 0.725, but cos(f, mu_0) = 0.996 > cos(f, mu_1) = 0.972
    assert a.accuracy == 0.0 and b.accuracy == 1.0
    assert torch.allclose(b.means.norm(dim=1), torch.ones(2, dtype=torch.float64))


def _knn_reference(
    Htr: np.ndarray, ytr: np.ndarray, Hte: np.ndarray, k: int, t: float, c: int
) -> np.ndarray:
    A = Htr / np.linalg.norm(Htr, axis=1, keepdims=True)
    B = Hte / np.linalg.norm(Hte, axis=1, keepdims=True)
    preds = []
    for q in B:
        s = A @ q
        top = np.argsort(-s, kind="stable")[:k]
        votes = np.zeros(c)
        for j in top:
            votes[ytr[j]] += math.exp(s[j] / t)
        preds.append(int(np.argmax(votes)))
    return np.asarray(preds)


@pytest.mark.parametrize(("k", "t"), [(1, 0.07), (7, 0.07), (25, 0.5), (500, 1.0)])
def test_knn_matches_a_brute_force_reference(k: int, t: float) -> None:
    Htr, ytr = _mixture(simplex_etf(4, 5), 300, 0.8, seed=13)
    Hte, yte = _mixture(simplex_etf(4, 5), 120, 0.8, seed=14)
    res = knn_classifier(Htr, ytr, Hte, yte, k=k, temperature=t, chunk_size=16)
    ref = _knn_reference(Htr.numpy(), ytr.numpy(), Hte.numpy(), min(k, 300), t, 4)
    assert res.k == min(k, 300)
    assert res.accuracy == pytest.approx(float((ref == yte.numpy()).mean()), abs=1.5 / 120)


def test_scale_free_downstream_measures_are_rotation_and_scale_invariant() -> None:
    means = simplex_etf(3, 5)
    Htr, ytr = _mixture(means, 300, 0.7, seed=15)
    Hte, yte = _mixture(means, 300, 0.7, seed=16)
    Q, s = _orthogonal(5, 17), 4.0
    a = knn_classifier(Htr, ytr, Hte, yte, k=10)
    b = knn_classifier(s * Htr @ Q, ytr, s * Hte @ Q, yte, k=10)
    assert a.accuracy == b.accuracy
    ma = mean_classifier(Htr, ytr, Hte, yte)
    mb = mean_classifier(s * Htr @ Q, ytr, s * Hte @ Q, yte)
    assert ma.accuracy == mb.accuracy
    assert ma.cross_entropy != pytest.approx(mb.cross_entropy)  # the loss is not scale-free


# --------------------------------------------------------------------------------------------
# one temperature for R_mu-supv and L_sup
# --------------------------------------------------------------------------------------------


def _r_mu_supv_by_hand(Htr: torch.Tensor, ytr: torch.Tensor, Hte: torch.Tensor,
                       yte: torch.Tensor, t: float) -> float:
    """Mean test -log softmax_y(f(x)^T mu_c / t), raw means, in plain Python."""
    c = int(ytr.max()) + 1
    rows, labels = Htr.tolist(), ytr.tolist()
    means = []
    for k in range(c):
        members = [r for r, lab in zip(rows, labels, strict=True) if lab == k]
        means.append([sum(col) / len(members) for col in zip(*members, strict=True)])
    total = 0.0
    for f, y in zip(Hte.tolist(), yte.tolist(), strict=True):
        scores = [sum(a * b for a, b in zip(f, mu, strict=True)) / t for mu in means]
        m = max(scores)
        total += m + math.log(sum(math.exp(s - m) for s in scores)) - scores[y]
    return total / len(yte)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_mean_classifier_cross_entropy_at_t_by_hand(t: float) -> None:
    means = simplex_etf(4, 5)
    Htr, ytr = _mixture(means, 80, 0.5, seed=40)
    Hte, yte = _mixture(means, 30, 0.5, seed=41)
    want = _r_mu_supv_by_hand(Htr, ytr, Hte, yte, t)
    mc = mean_classifier(Htr, ytr, Hte, yte, temperature=t)
    assert mc.cross_entropy == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert mc.temperature == t
    rep = downstream_report(Htr, ytr, Hte, yte, temperature=t, mean_classifiers=("raw",),
                            probes=(), knn=False)
    assert rep.mean_classifier["raw"].cross_entropy == pytest.approx(want, rel=1e-12, abs=1e-12)
    # L_sup at the same t
    assert rep.lsup is not None and rep.lsup.temperature == t
    assert rep.lsup.value == pytest.approx(
        unit_norm_supervised_loss(Htr, ytr, temperature=t).value, abs=1e-9)


def test_downstream_report_temperature_defaults_and_overrides() -> None:
    means = simplex_etf(3, 4)
    Htr, ytr = _mixture(means, 60, 0.5, seed=42)
    Hte, yte = _mixture(means, 30, 0.5, seed=43)
    kw: dict[str, Any] = {"mean_classifiers": ("raw",), "probes": (), "knn": False}
    default = downstream_report(Htr, ytr, Hte, yte, **kw)
    # the default is t = 1 for both (no regression: the values of the old defaults)
    assert default.mean_classifier["raw"].temperature == 1.0
    assert default.lsup is not None and default.lsup.temperature == 1.0
    old = downstream_report(Htr, ytr, Hte, yte, mean_temperature=1.0, lsup_temperature=1.0,
                            **kw)
    assert default.mean_classifier["raw"].cross_entropy == old.mean_classifier[
        "raw"].cross_entropy == mean_classifier(Htr, ytr, Hte, yte).cross_entropy
    assert old.lsup is not None and default.lsup.value == old.lsup.value
    # the specific temperatures override the shared one
    mixed = downstream_report(Htr, ytr, Hte, yte, temperature=0.5, lsup_temperature=0.2, **kw)
    assert mixed.mean_classifier["raw"].temperature == 0.5
    assert mixed.lsup is not None and mixed.lsup.temperature == 0.2
    mixed = downstream_report(Htr, ytr, Hte, yte, temperature=0.5, mean_temperature=2.0, **kw)
    assert mixed.mean_classifier["raw"].temperature == 2.0
    assert mixed.lsup is not None and mixed.lsup.temperature == 0.5
    bads: list[dict[str, Any]] = [{"temperature": 0.0}, {"mean_temperature": -1.0},
                                  {"lsup_temperature": 0.0}]
    for bad in bads:
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            downstream_report(Htr, ytr, Hte, yte, **kw, **bad)


# --------------------------------------------------------------------------------------------
# report, split, command output
# --------------------------------------------------------------------------------------------


def test_downstream_report_is_json_serializable() -> None:
    means = 2.0 * simplex_etf(3, 4)
    Htr, ytr = _mixture(means, 300, 1.0, seed=18)
    Hte, yte = _mixture(means, 200, 1.0, seed=19)
    rep = downstream_report(Htr.float(), ytr, Hte.float(), yte, knn_k=500)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert set(d["mean_classifier"]) == {"raw", "normalized", "cosine"}
    assert set(d["linear_probe"]) == {"bias-free", "bias"}
    assert "weight" not in d["linear_probe"]["bias"] and "weight" not in d["lsup"]
    assert d["knn"]["k"] == 300 and any("k reduced" in n for n in d["notes"])
    assert 0.7 < d["linear_probe"]["bias"]["accuracy"] <= 1.0
    assert "linear probe" in rep.to_text()
    slim = downstream_report(Htr, ytr, Hte, yte, probes=(), lsup=False, knn=False,
                             mean_classifiers=("raw",))
    assert slim.linear_probe == {} and slim.lsup is None and slim.knn is None


def test_stratified_split() -> None:
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    kept, held = stratified_split(y, 0.2, seed=3)
    assert torch.bincount(y[held], minlength=3).tolist() == [2, 1, 0]
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(16))
    again = stratified_split(y, 0.2, seed=3)
    assert torch.equal(again[1], held)
    assert not torch.equal(stratified_split(y, 0.2, seed=4)[1], held)


def _write_npz(path: Path, with_test: bool) -> None:
    means = 2.0 * simplex_etf(3, 4).numpy()
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    arrays = {"H_train": (means[y] + rng.normal(size=(120, 4))).astype(np.float32), "y_train": y}
    if with_test:
        yt = np.repeat(np.arange(3), 10)
        arrays |= {"H_test": (means[yt] + rng.normal(size=(30, 4))).astype(np.float32),
                   "y_test": yt}
    np.savez(path, **arrays)


def test_geometry_command_output(tmp_path: Path) -> None:
    with_test = tmp_path / "emb.npz"
    _write_npz(with_test, with_test=True)
    text = geometry_command_output(str(with_test), as_json=False)
    assert "geometry:" in text and "downstream:" in text and "NC1" in text
    assert "held out" not in text
    data = json.loads(geometry_command_output(str(with_test), as_json=True))
    assert data["input"]["n_train"] == 120 and data["input"]["n_test"] == 30
    assert data["geometry"]["nc3"] is not None and data["geometry"]["nc4"] is not None
    assert data["downstream"]["linear_probe"]["bias"]["accuracy"] > 0.5

    no_test = tmp_path / "train_only.npz"
    _write_npz(no_test, with_test=False)
    data = json.loads(geometry_command_output(str(no_test), as_json=True))
    assert data["input"]["n_test"] == 24 and data["input"]["n_train"] == 96
    assert any("held out 20%" in n for n in data["notes"])

    bad = tmp_path / "bad.npz"
    np.savez(bad, H_train=np.zeros((4, 2)), y_train=np.arange(4), H_test=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="both H_test and y_test"):
        geometry_command_output(str(bad), as_json=False)
    missing = tmp_path / "missing.npz"
    np.savez(missing, H=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="H_train"):
        geometry_command_output(str(missing), as_json=False)
    with pytest.raises(ValueError, match="no such file"):
        geometry_command_output(str(tmp_path / "nope.npz"), as_json=True)
    floats = tmp_path / "float_labels.npz"
    np.savez(floats, H_train=np.zeros((4, 2)), y_train=np.arange(4.0))
    with pytest.raises(ValueError, match="y_train"):
        geometry_command_output(str(floats), as_json=True)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_value_errors() -> None:
    g = torch.Generator().manual_seed(0)
    H = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.arange(4).repeat(3)
    nan = H.clone()
    nan[5, 1] = float("nan")
    cases = [
        (lambda: mean_classifier(H, y, H, y, num_classes=5), "missing: 4"),
        (lambda: linear_probe(H[:3], torch.tensor([0, 1, 2]), H, y, num_classes=4),
         "at least num_classes=4"),
        (lambda: knn_classifier(nan, y, H, y), "H_train must have finite"),
        (lambda: downstream_report(H, y, nan, y), "H_test must have finite"),
        (lambda: mean_classifier(H, y, H[:, :2], y), "dimension of H_train"),
        (lambda: mean_classifier(H, y, H, y + 10), "y_test"),
        (lambda: knn_classifier(H, y, H, y, k=0), "k must be"),
        (lambda: knn_classifier(H, y, H, y, temperature=0.0), "temperature"),
        (lambda: linear_probe(H, y, H, y, weight_decays=[]), "weight_decays"),
        (lambda: linear_probe(H, y, H, y, weight_decays=[-1.0]), "weight_decays"),
        (lambda: linear_probe(H, y, H, y, dtype=torch.float16), "dtype"),
        (lambda: linear_probe(H, y, H, y, val_fraction=0.0), "val_fraction"),
        (lambda: linear_probe(H, y, H, y, select="loss"), "select"),
        (lambda: unit_norm_supervised_loss(H, y, loss="hinge"), "loss must be one of"),
        (lambda: unit_norm_supervised_loss(nan, y), "finite"),
        (lambda: downstream_report(H, y, H, y, probes=("nope",)), "probes"),
        (lambda: downstream_report(H, y, H, y, mean_classifiers="raw"), "not a string"),
        (lambda: stratified_split(y, 1.0), "fraction"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)


def test_benchmark_script_runs(tmp_path: Path) -> None:
    import importlib.util

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_eval.py"
    spec = importlib.util.spec_from_file_location("bench_eval", bench)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "table.md"
    args = ["--quick", "--repeats", "1", "--n", "300", "--no-sklearn", "--out", str(out)]
    assert mod.main(args) == 0
    table = out.read_text()
    assert "| geometry report | contrastlab |" in table and "weighted kNN" in table

"""Exact population losses of class-collapsed representations (issue: theory engine)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from contrastlab.losses import LOSSES
from contrastlab.theory.etf import etf_loss, simplex_etf
from contrastlab.theory.population import population_loss, sample_level_loss


def _enumerate(V, rho, k, loss, t, negatives, beta):
    """Brute force over all C^k negative class tuples, float64 loops (independent of the lib)."""
    C = V.shape[0]
    s = (V @ V.T).tolist()
    total = 0.0
    for c in range(C):
        w = [rho[j] * math.exp(beta * s[c][j]) for j in range(C)]
        if negatives == "other-class":
            w[c] = 0.0
        z = sum(w)
        q = [x / z for x in w]
        for tup in itertools.product(range(C), repeat=k):
            pr = math.prod(q[j] for j in tup)
            if pr == 0.0:
                continue
            gaps = [s[c][j] - s[c][c] for j in tup]  # = -v_i
            if loss == "hinge":
                val = max(0.0, 1.0 + max(gaps))
            else:
                tt = 1.0 if loss == "logistic" else t
                terms = sum(math.exp(g / tt) for g in gaps)
                val = math.log1p(terms / k if loss == "infonce-mean" else terms)
            total += rho[c] * pr * val
    return total


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("negatives", ["marginal", "other-class"])
@pytest.mark.parametrize("beta", [0.0, 2.0])
@pytest.mark.parametrize(("C", "k"), [(2, 1), (3, 4), (5, 2), (4, 3)])
def test_equals_enumeration(loss, negatives, beta, C, k) -> None:
    g = torch.Generator().manual_seed(C * 10 + k)
    V = torch.randn(C, 3, generator=g, dtype=torch.float64)
    rho = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    got = population_loss(V, rho, k, loss, 0.4, negatives, beta).item()
    want = _enumerate(V, rho.tolist(), k, loss, 0.4, negatives, beta)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("loss", ["infonce", "infonce-mean", "hinge"])
@pytest.mark.parametrize(
    ("negatives", "beta"), [("marginal", 0.0), ("other-class", 1.0), ("marginal", 1.5)]
)
def test_gradient_matches_finite_differences(loss, negatives, beta) -> None:
    g = torch.Generator().manual_seed(3)
    V = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    rho = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: population_loss(v, rho, 5, loss, 0.7, negatives, beta), (V,), atol=1e-7
    )


SPEC_A7 = {  # C: (L_mu, {k: (UCL, SCL)})
    2: {
        1: (0.4100, 0.1269),
        4: (1.1464, 0.4327),
        16: (2.2954, 1.1523),
        64: (3.6155, 2.2681),
        256: (4.9847, 3.5736),
    },
    10: {
        1: (0.3254, 0.2846),
        4: (0.9389, 0.8402),
        16: (1.9876, 1.8353),
        64: (3.2701, 3.0941),
        256: (4.6288, 4.4459),
    },
    100: {
        1: (0.3144, 0.3106),
        4: (0.9080, 0.8988),
        16: (1.9350, 1.9209),
        64: (3.2072, 3.1908),
        256: (4.5628, 4.5457),
    },
}


@pytest.mark.parametrize("C", sorted(SPEC_A7))
def test_spec_reference_values(C: int) -> None:
    V = simplex_etf(C)
    for k, (ucl, scl) in SPEC_A7[C].items():
        assert population_loss(V, None, k, "infonce", 1.0, "marginal").item() == pytest.approx(
            ucl, abs=1e-4
        )
        assert population_loss(V, None, k, "infonce", 1.0, "other-class").item() == pytest.approx(
            scl, abs=1e-4
        )
        assert etf_loss(C, k, "infonce", 1.0, "marginal") == pytest.approx(ucl, abs=1e-4)
        assert etf_loss(C, k, "infonce", 1.0, "other-class") == pytest.approx(scl, abs=1e-4)


def test_spec_hucl_and_temperature_values() -> None:
    V = simplex_etf(10)
    for beta, want in [(0.0, 1.9876), (1.0, 2.1861), (5.0, 2.8113)]:
        assert population_loss(V, None, 16, "infonce", 1.0, "marginal", beta).item() == (
            pytest.approx(want, abs=1e-4)
        )
    for k, want in [(1, 0.1619), (16, 1.3935), (256, 3.9395)]:
        assert population_loss(V, None, k, "infonce", 0.5).item() == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(
    ("negatives", "beta"),
    [("marginal", 0.0), ("marginal", 2.0), ("other-class", 0.0), ("other-class", 3.0)],
)
@pytest.mark.parametrize("radius", [1.0, 0.6])
def test_closed_forms_at_the_etf(loss, negatives, beta, radius) -> None:
    for C, k in [(3, 1), (6, 7), (20, 300)]:
        V = simplex_etf(C, radius=radius)
        got = population_loss(V, None, k, loss, 0.5, negatives, beta).item()
        assert got == pytest.approx(etf_loss(C, k, loss, 0.5, negatives, beta, radius), abs=1e-11)


def test_hinge_ucl_at_unit_etf_is_tau() -> None:
    for C, k in [(4, 3), (10, 16)]:
        assert etf_loss(C, k, "hinge") == pytest.approx(1 - (1 - 1 / C) ** k, abs=1e-14)


def test_large_cases_are_finite_and_ordered() -> None:
    g = torch.Generator().manual_seed(0)
    V = torch.randn(100, 99, generator=g, dtype=torch.float64)
    V = V / V.norm(dim=1, keepdim=True)
    values = [population_loss(V, None, k).item() for k in (1, 64, 4096, 10**6)]
    assert all(math.isfinite(v) for v in values)
    assert values == sorted(values)


def test_sample_level_loss_reduces_to_class_level_when_collapsed() -> None:
    V = simplex_etf(4, 5, rotation_seed=1)
    rho = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(3)
    for loss in LOSSES:
        a = sample_level_loss(V[labels], labels, rho, 4, loss, 0.5, "marginal", 1.0).item()
        b = population_loss(V, rho, 4, loss, 0.5, "marginal", 1.0).item()
        assert a == pytest.approx(b, abs=1e-11)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0}, "k"),
        ({"k": -3}, "k"),
        ({"prior": torch.tensor([0.5, 0.6, 0.1])}, "prior"),
        ({"prior": torch.tensor([0.5, 0.5])}, "prior"),
        ({"loss": "squared"}, "loss"),
        ({"temperature": 0.0}, "temperature"),
        ({"negatives": "hard"}, "negatives"),
        ({"beta": -1.0}, "beta"),
    ],
)
def test_bad_input(kwargs: dict, name: str) -> None:
    V = torch.randn(3, 2, dtype=torch.float64)
    args = {"prior": None, "k": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        population_loss(V, **args)
    with pytest.raises(ValueError, match="dim"):
        simplex_etf(5, 2)

"""The loss family on score vectors: values, documented properties, numerics."""

from __future__ import annotations

import math

import pytest
import torch

import contrastlab.losses as L


@pytest.mark.parametrize("loss", L.LOSSES)
def test_documented_properties_hold_numerically(loss: str) -> None:
    observed = L.check_loss_properties(loss, k=6, trials=3000)
    documented = L.LOSS_PROPERTIES[loss]
    assert observed["convex"] == documented.convex
    assert observed["symmetric"] == documented.symmetric
    assert observed["non_increasing"] == documented.non_increasing
    assert observed["strictly_decreasing"] == documented.strictly_decreasing


def test_infonce_at_unit_temperature_is_logistic() -> None:
    v = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(L.score_loss(v, "infonce", 1.0), L.score_loss(v, "logistic"))


def test_values_on_a_hand_example() -> None:
    v = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    t = 0.5
    e = [math.exp(-x / t) for x in (0.5, -1.0, 2.0)]
    assert L.score_loss(v, "infonce", t).item() == pytest.approx(math.log(1 + sum(e)))
    assert L.score_loss(v, "infonce-mean", t).item() == pytest.approx(math.log(1 + sum(e) / 3))
    assert L.score_loss(v, "hinge").item() == pytest.approx(2.0)
    assert L.score_loss(-v.abs() - 5, "hinge").item() == pytest.approx(1 + 7.0)
    assert L.score_loss(v + 10, "hinge").item() == 0.0


@pytest.mark.parametrize("loss", L.LOSSES)
def test_finite_in_float32_for_huge_scores(loss: str) -> None:
    v = torch.tensor([[-1e4, 3e3, 0.0], [1e4, 1e4, 1e4]], dtype=torch.float32, requires_grad=True)
    out = L.score_loss(v, loss, temperature=0.01)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(v.grad).all()
    if loss != "hinge":
        # log(1 + e^{1e4 / t}) = 1e4 / t to float precision
        scale = 1.0 if loss == "logistic" else 100.0
        want = 1e4 * scale - (math.log(3) if loss == "infonce-mean" else 0.0)
        assert out[0].item() == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"loss": "squared"}, "loss"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        L.score_loss(torch.zeros(2, 3), **kwargs)

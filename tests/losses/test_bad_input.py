"""Bad input: a ValueError naming the argument and the allowed values, never a torch traceback."""

from __future__ import annotations

import pytest
import torch

import contrastlab.losses as L

Z = torch.randn(6, 4)
Y = torch.tensor([0, 0, 1, 1, 2, 2])


CASES = [
    # (callable, argument name expected in the message)
    (lambda: L.normalize(Z, "l2"), "normalize"),
    (lambda: L.info_nce(Z, Z, temperature=-0.1), "temperature"),
    (lambda: L.info_nce(Z, Z[:5]), "z2"),
    (lambda: L.info_nce(Z, Z, normalize="unit"), "normalize"),
    (lambda: L.info_nce(Z[0], Z[0]), "z1"),
    (lambda: L.info_nce(Z, Z, reduction="avg"), "reduction"),
    (lambda: L.supcon(Z, Z, torch.tensor([0, 1])), "labels"),
    (lambda: L.supcon(Z, Z, Y.float()), "labels"),
    (lambda: L.supcon(Z, Z, Y, temperature=0.0), "temperature"),
    (lambda: L.debiased_hard(Z, Z, tau_plus=1.0), "tau_plus"),
    (lambda: L.debiased_hard(Z, Z, tau_plus=-0.1), "tau_plus"),
    (lambda: L.debiased_hard(Z, Z, beta=-1.0), "beta"),
    (lambda: L.debiased_hard(Z[:1], Z[:1]), "batch size"),
    (lambda: L.nce_loss(Z, Z, torch.randn(6, 0, 4)), "negatives"),
    (lambda: L.nce_loss(Z, Z, torch.randn(5, 3, 4)), "negatives"),
    (lambda: L.nce_loss(Z, Z, torch.randn(6, 3, 5)), "negatives"),
    (lambda: L.nce_loss(Z, Z[:, :3], torch.randn(6, 3, 4)), "positive"),
    (lambda: L.nce_loss(Z, Z, torch.randn(6, 3, 4), loss="softmax"), "loss"),
    (lambda: L.nce_loss(Z, Z, torch.randn(6, 3, 4), temperature=-2), "temperature"),
    (lambda: L.nce_loss(Z.long(), Z, torch.randn(6, 3, 4)), "anchor"),
    (lambda: L.scl(Z, Y, k=0), "k"),
    (lambda: L.scl(Z, Y, k=2.5), "k"),
    (lambda: L.hscl(Z, Y, beta=-0.5), "beta"),
    (lambda: L.hucl(Z, Y, temperature=-1), "temperature"),
    (lambda: L.ucl(Z, Y, normalize="cube"), "normalize"),
    (lambda: L.scl(Z, Y, exact="median"), "exact"),
    (lambda: L.scl(Z, Y, negatives_reduction="max"), "negatives_reduction"),
    (lambda: L.scl(Z, Y[:4]), "labels"),
    (lambda: L.scl(Z, torch.zeros(6, dtype=torch.long)), "other-class"),
    (lambda: L.sample_uniform(3, 5, 0), "k"),
    (lambda: L.sample_tilted(torch.randn(3, 4), -1.0, 2), "beta"),
    (lambda: L.sample_tilted(torch.randn(3, 4), 1.0, 5, replace=False), "k"),
    (lambda: L.NegativeSampler(kind="hardest"), "kind"),
    (lambda: L.InfoNCELoss(temperature=0), "temperature"),
    (lambda: L.HardContrastiveLoss(negatives="all"), "negatives"),
    (lambda: L.expected_log1p_sum(torch.zeros(2, 3), torch.zeros(2, 4), 3), "log_y"),
]


@pytest.mark.parametrize(("call", "name"), CASES)
def test_bad_input_raises_value_error_naming_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=name) as err:
        call()
    assert "\n" not in str(err.value)


def test_allowed_values_are_listed() -> None:
    with pytest.raises(ValueError, match="'sphere', 'ball', 'none'"):
        L.normalize(Z, "l2")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        L.debiased_hard(Z, Z, tau_plus=1.5)

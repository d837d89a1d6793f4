"""Invariances, module wrappers and the exact expectation engine."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import contrastlab.losses as L


@pytest.mark.parametrize("loss", L.LOSSES)
def test_permuting_negatives_does_not_change_nce(loss: str) -> None:
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    n = torch.randn(4, 9, 3, generator=g)
    perm = torch.randperm(9, generator=g)
    base = L.nce_loss(a, p, n, loss=loss, temperature=0.3, reduction="none")
    assert torch.allclose(
        base, L.nce_loss(a, p, n[:, perm], loss=loss, temperature=0.3, reduction="none"), atol=1e-6
    )
    # shared (k, d) negatives equal the broadcast (B, k, d) form
    shared = n[0]
    assert torch.allclose(
        L.nce_loss(a, p, shared, loss=loss, temperature=0.3),
        L.nce_loss(a, p, shared.expand(4, -1, -1), loss=loss, temperature=0.3),
        atol=1e-6,
    )


def test_permuting_the_batch_does_not_change_in_batch_losses() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = (
        torch.randn(10, 5, generator=g, dtype=torch.float64),
        torch.randn(10, 5, generator=g, dtype=torch.float64),
    )
    y = torch.arange(10) % 3
    perm = torch.randperm(10, generator=g)
    for fn in (
        lambda a, b, lab: L.info_nce(a, b, 0.2),
        lambda a, b, lab: L.supcon(a, b, lab, 0.2),
        lambda a, b, lab: L.debiased_hard(a, b, 0.2, 0.1, 1.0),
    ):
        assert torch.allclose(fn(z1, z2, y), fn(z1[perm], z2[perm], y[perm]))
    for fn in (L.scl, L.ucl):
        assert torch.allclose(fn(z1, y, k=5, exact=True), fn(z1[perm], y[perm], k=5, exact=True))


def test_modules_equal_functions() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    y = torch.arange(8) % 4
    assert torch.equal(L.InfoNCELoss(0.3)(z1, z2), L.info_nce(z1, z2, 0.3))
    assert torch.equal(L.SupConLoss(0.3)(z1, z2, y), L.supcon(z1, z2, y, 0.3))
    assert torch.equal(
        L.DebiasedHardLoss(0.3, 0.1, 2.0)(z1, z2), L.debiased_hard(z1, z2, 0.3, 0.1, 2.0)
    )
    n = torch.randn(8, 5, 4, generator=g)
    assert torch.equal(L.NCELoss("hinge")(z1, z2, n), L.nce_loss(z1, z2, n, loss="hinge"))
    for module, fn in [
        (L.SCLLoss(k=7, exact=True), lambda: L.scl(z1, y, k=7, exact=True)),
        (L.HSCLLoss(beta=2.0, k=7, exact=True), lambda: L.hscl(z1, y, beta=2.0, k=7, exact=True)),
        (L.UCLLoss(k=7, exact=True), lambda: L.ucl(z1, y, k=7, exact=True)),
        (L.HUCLLoss(beta=2.0, k=7, exact=True), lambda: L.hucl(z1, y, beta=2.0, k=7, exact=True)),
    ]:
        assert torch.equal(module(z1, y), fn())


def test_supcon_with_base_temperature_scales_like_the_reference_code() -> None:
    z1, z2 = torch.randn(6, 3), torch.randn(6, 3)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    plain = L.supcon(z1, z2, y, temperature=0.1)
    scaled = L.supcon(z1, z2, y, temperature=0.1, base_temperature=0.07)
    assert torch.allclose(scaled, plain * 0.1 / 0.07)


def _enumerate(log_y: torch.Tensor, log_p: torch.Tensor, k: int) -> float:
    y, p = log_y.exp().tolist(), log_p.exp().tolist()
    total = 0.0
    for tup in itertools.product(range(len(y)), repeat=k):
        total += math.prod(p[j] for j in tup) * math.log1p(sum(y[j] for j in tup))
    return total


@pytest.mark.parametrize(("n", "k"), [(1, 3), (2, 1), (3, 4), (5, 3), (4, 6)])
def test_expected_log1p_sum_against_enumeration(n: int, k: int) -> None:
    g = torch.Generator().manual_seed(n * 10 + k)
    log_y = 4 * torch.randn(3, n, generator=g, dtype=torch.float64)
    log_p = torch.log_softmax(torch.randn(3, n, generator=g, dtype=torch.float64), 1)
    got = L.expected_log1p_sum(log_y, log_p, k)
    for r in range(3):
        want = _enumerate(log_y[r], log_p[r], k)
        assert got[r].item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_expected_log1p_sum_handles_unsupported_values_and_extremes() -> None:
    log_y = torch.tensor([[0.0, 50.0, -80.0, 3.0]], dtype=torch.float64)
    log_p = torch.log(torch.tensor([[0.5, 0.0, 0.25, 0.25]], dtype=torch.float64))
    want = _enumerate(log_y[0, [0, 2, 3]], log_p[0, [0, 2, 3]], 3)
    assert L.expected_log1p_sum(log_y, log_p, 3).item() == pytest.approx(want, rel=1e-10)
    # huge values: E log(1 + sum) ~ E log(sum of the huge values)
    big = torch.tensor([[700.0, 701.0]], dtype=torch.float64)
    half = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    want = (
        0.25 * (math.log(2) + 700) + 0.25 * (math.log(2) + 701) + 0.5 * (700 + math.log1p(math.e))
    )
    assert L.expected_log1p_sum(big, half, 2).item() == pytest.approx(want, rel=1e-10)


def test_expected_log1p_sum_gradcheck() -> None:
    g = torch.Generator().manual_seed(5)
    log_y = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    log_p = torch.log_softmax(torch.randn(2, 4, generator=g, dtype=torch.float64), 1)
    assert torch.autograd.gradcheck(lambda x: L.expected_log1p_sum(x, log_p, 5), (log_y,))


def test_help_shows_the_whole_family() -> None:
    doc = L.__doc__ or ""
    for name in (
        "nce_loss",
        "info_nce",
        "supcon",
        "debiased_hard",
        "scl",
        "hscl",
        "ucl",
        "hucl",
        "normalize",
        "NegativeSampler",
    ):
        assert name in doc and hasattr(L, name)


def test_grouped_expectation_equals_ungrouped_and_gradchecks() -> None:
    g = torch.Generator().manual_seed(11)
    log_x = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    owner = torch.tensor([0, 0, 1, 2, 2, 2])
    shift = (2 * torch.randn(6, generator=g, dtype=torch.float64)).requires_grad_(True)

    def grouped(x: torch.Tensor, lg: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        return L.expected_log1p_sum_grouped(x, torch.log_softmax(lg, 1), owner, sh, 4)

    flat = L.expected_log1p_sum(
        log_x[owner] + shift[:, None], torch.log_softmax(logits, 1)[owner], 4
    )
    assert torch.allclose(grouped(log_x, logits, shift), flat, atol=1e-12)
    assert torch.autograd.gradcheck(grouped, (log_x, logits, shift))

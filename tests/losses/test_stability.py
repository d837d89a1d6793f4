"""Float32 stability: k = 4096, beta = 30, temperature = 0.05, unnormalized norm-100 features."""

from __future__ import annotations

import pytest
import torch

import contrastlab.losses as L

K_BIG = 4096


def _finite(loss: torch.Tensor, *leaves: torch.Tensor) -> None:
    loss.backward()
    assert torch.isfinite(loss), loss
    for x in leaves:
        assert x.grad is not None and torch.isfinite(x.grad).all()


def _feat(*shape: int, norm: float | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if norm is not None:
        x = norm * x / x.norm(dim=-1, keepdim=True)
    return x.requires_grad_(True)


@pytest.mark.parametrize("normalize", ["sphere", "none"])
@pytest.mark.parametrize("loss", L.LOSSES)
def test_nce_loss_k4096(loss: str, normalize: str) -> None:
    a, p, n = (
        _feat(8, 16, norm=100.0),
        _feat(8, 16, norm=100.0, seed=1),
        _feat(8, K_BIG, 16, norm=100.0, seed=2),
    )
    _finite(L.nce_loss(a, p, n, loss=loss, temperature=0.05, normalize=normalize), a, p, n)


@pytest.mark.parametrize("normalize", ["sphere", "none"])
def test_info_nce_and_supcon(normalize: str) -> None:
    z1, z2 = _feat(64, 16, norm=100.0), _feat(64, 16, norm=100.0, seed=1)
    _finite(L.info_nce(z1, z2, temperature=0.05, normalize=normalize), z1, z2)
    z1, z2 = _feat(64, 16, norm=100.0), _feat(64, 16, norm=100.0, seed=1)
    labels = torch.arange(64) % 5
    _finite(L.supcon(z1, z2, labels, temperature=0.05, normalize=normalize), z1, z2)


@pytest.mark.parametrize("normalize", ["sphere", "none"])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.5])
def test_debiased_hard_beta30(normalize: str, tau_plus: float) -> None:
    z1, z2 = _feat(64, 16, norm=100.0), _feat(64, 16, norm=100.0, seed=1)
    _finite(
        L.debiased_hard(
            z1, z2, temperature=0.05, tau_plus=tau_plus, beta=30.0, normalize=normalize
        ),
        z1,
        z2,
    )


@pytest.mark.parametrize("fn", [L.hscl, L.hucl])
@pytest.mark.parametrize("normalize", ["ball", "none"])
@pytest.mark.parametrize("exact", [False, "mean", True])
def test_hard_family_k4096_beta30(fn, normalize: str, exact) -> None:
    z = _feat(24, 8, norm=100.0)
    labels = torch.arange(24) % 4
    g = torch.Generator().manual_seed(0)
    out = fn(
        z,
        labels,
        beta=30.0,
        k=K_BIG,
        temperature=0.05,
        normalize=normalize,
        exact=exact,
        generator=g,
    )
    _finite(out, z)


def test_exact_form_matches_the_dominant_term_for_norm_100() -> None:
    # Far-apart unnormalized features: every negative term is astronomically small or large, and
    # the exact expectation must still be finite and sensible (between the min and max of l_ip).
    z = _feat(12, 6, norm=100.0, seed=3)
    labels = torch.arange(12) % 3
    exact = L.ucl(z, labels, k=64, temperature=1.0, normalize="none", exact=True)
    upper = L.ucl(z, labels, k=64, temperature=1.0, normalize="none", exact="mean")
    assert torch.isfinite(exact) and exact.item() <= upper.item() + 1e-3 * abs(upper.item())

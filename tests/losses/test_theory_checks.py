"""Checks against theory: closed forms at the simplex ETF (SPEC A7) and the Harris inequality
(Jiang et al. 2023): HSCL >= SCL, HUCL >= UCL, non-decreasing in beta."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import binom

import contrastlab.losses as L
from tests.conftest import simplex_etf


def _etf_batch(c: int, per_class: int = 3, dim: int | None = None):
    v = simplex_etf(c, dim)
    labels = torch.arange(c).repeat(per_class)
    return v[labels], labels


def _ucl_closed(c: int, k: int, a: float, p: float) -> float:
    m = torch.arange(k + 1, dtype=torch.float64)
    pmf = torch.from_numpy(binom.pmf(m.numpy(), k, p))
    return float((pmf * torch.log(1 + m + (k - m) * math.exp(-a))).sum())


@pytest.mark.parametrize("c", [2, 4, 10])
@pytest.mark.parametrize("k", [1, 4, 16, 256])
@pytest.mark.parametrize("t", [1.0, 0.5])
def test_scl_ucl_hscl_at_etf(c: int, k: int, t: float) -> None:
    z, y = _etf_batch(c, dim=c + 2)
    a = c / ((c - 1) * t)
    kw = {"k": k, "temperature": t, "exact": True, "negatives_reduction": "sum"}
    assert L.scl(z, y, **kw).item() == pytest.approx(math.log1p(k * math.exp(-a)), abs=1e-9)
    # every negative is equidistant from the anchor: hardness changes nothing
    assert L.hscl(z, y, beta=3.0, **kw).item() == pytest.approx(
        math.log1p(k * math.exp(-a)), abs=1e-9
    )
    assert L.ucl(z, y, **kw).item() == pytest.approx(_ucl_closed(c, k, a, 1 / c), abs=1e-9)
    # Jiang-code convention (mean over negatives): log(1 + e^{-a})
    kw["negatives_reduction"] = "mean"
    assert L.scl(z, y, **kw).item() == pytest.approx(math.log1p(math.exp(-a)), abs=1e-9)


@pytest.mark.parametrize("beta", [0.0, 1.0, 5.0])
def test_hucl_at_etf(beta: float) -> None:
    c, k = 10, 16
    z, y = _etf_batch(c)
    p_beta = math.exp(beta) / (math.exp(beta) + (c - 1) * math.exp(-beta / (c - 1)))
    want = _ucl_closed(c, k, c / (c - 1), p_beta)
    got = L.hucl(z, y, beta=beta, k=k, exact=True, negatives_reduction="sum").item()
    assert got == pytest.approx(want, abs=1e-9)


def test_spec_reference_values() -> None:
    # SPEC A7 table, C = 10, t = 1 (UCL / SCL) and HUCL at k = 16.
    z, y = _etf_batch(10)
    kw = {"exact": True, "negatives_reduction": "sum"}
    table = {
        1: (0.3254, 0.2846),
        4: (0.9389, 0.8402),
        16: (1.9876, 1.8353),
        64: (3.2701, 3.0941),
        256: (4.6288, 4.4459),
    }
    for k, (u, s) in table.items():
        assert L.ucl(z, y, k=k, **kw).item() == pytest.approx(u, abs=6e-5)
        assert L.scl(z, y, k=k, **kw).item() == pytest.approx(s, abs=6e-5)
    for beta, want in [(0.0, 1.9876), (1.0, 2.1861), (5.0, 2.8113)]:
        assert L.hucl(z, y, beta=beta, k=16, **kw).item() == pytest.approx(want, abs=6e-5)
    for k, want in [(1, 0.1619), (16, 1.3935), (256, 3.9395)]:
        assert L.ucl(z, y, k=k, temperature=0.5, **kw).item() == pytest.approx(want, abs=6e-5)


def test_etf_nce_and_infonce_values() -> None:
    # explicit-k NCE with all k negatives from other ETF classes: log(1 + k e^{-a})
    c, k, t = 6, 7, 0.5
    v = simplex_etf(c)
    anchor = v[[0, 1]]
    negatives = torch.stack([v[[1, 2, 3, 4, 5, 1, 2]], v[[0, 2, 3, 4, 5, 0, 2]]])
    got = L.nce_loss(anchor, anchor, negatives, temperature=t)
    assert got.item() == pytest.approx(math.log1p(k * math.exp(-c / ((c - 1) * t))), abs=1e-12)


def _mixture_batch(seed: int, c: int = 4, per_class: int = 8, dim: int = 6, out: int = 5):
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(c, dim, generator=g, dtype=torch.float64)
    y = torch.arange(c).repeat_interleave(per_class)
    x = means[y] + torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    w = torch.randn(dim, out, generator=g, dtype=torch.float64) / math.sqrt(dim)
    return x @ w, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 8, 64])
@pytest.mark.parametrize("exact", [True, "mean"])
def test_harris_inequality(seed: int, k: int, exact) -> None:
    z, y = _mixture_batch(seed)
    betas = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0]
    for hard in (L.hscl, L.hucl):
        values = [hard(z, y, beta=b, k=k, exact=exact).item() for b in betas]
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values)), values
    assert L.hscl(z, y, beta=2.0, k=k, exact=exact) >= L.scl(z, y, k=k, exact=exact)
    assert L.hucl(z, y, beta=2.0, k=k, exact=exact) >= L.ucl(z, y, k=k, exact=exact)
    # and strictly for a non-degenerate batch
    assert L.hucl(z, y, beta=5.0, k=k, exact=exact) > L.ucl(z, y, k=k, exact=exact) + 1e-6


def test_harris_inequality_monte_carlo() -> None:
    # the sampled estimates (SPEC C4): mean over draws is ordered in beta beyond the noise
    z, y = _mixture_batch(5)
    g = torch.Generator().manual_seed(0)
    means = []
    for b in (0.0, 2.0, 8.0):
        draws = torch.stack([L.hscl(z, y, beta=b, k=16, generator=g) for _ in range(200)])
        means.append((draws.mean().item(), draws.std().item() / math.sqrt(200)))
    for (m0, s0), (m1, s1) in itertools.pairwise(means):
        assert m1 > m0 - 3 * math.hypot(s0, s1)
    assert means[-1][0] > means[0][0] + 3 * math.hypot(means[-1][1], means[0][1])

"""The simplex ETF construction."""

from __future__ import annotations

import pytest
import torch

from contrastlab.theory import etf_cosine, simplex_etf


@pytest.mark.parametrize("c", [2, 3, 5, 10, 50])
@pytest.mark.parametrize("extra", [0, 3])
@pytest.mark.parametrize("radius", [1.0, 2.5])
def test_etf_gram_matrix(c: int, extra: int, radius: float) -> None:
    v = simplex_etf(c, c - 1 + extra, radius=radius, rotation_seed=extra or None)
    assert v.shape == (c, c - 1 + extra)
    gram = v @ v.T
    want = radius**2 * (torch.full((c, c), etf_cosine(c), dtype=torch.float64)
                        + (1 - etf_cosine(c)) * torch.eye(c, dtype=torch.float64))
    assert torch.allclose(gram, want, atol=1e-12)
    assert v.sum(0).norm() < 1e-12


@pytest.mark.parametrize(("kwargs", "name"), [({"num_classes": 1}, "num_classes"),
                                              ({"num_classes": 5, "dim": 3}, "dim"),
                                              ({"num_classes": 4, "radius": 0.0}, "radius")])
def test_bad_input(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        simplex_etf(**kwargs)

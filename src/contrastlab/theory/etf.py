"""The simplex equiangular tight frame (SPEC A7; Papyan et al. 2020; Awasthi et al. 2022).

C vectors v_1..v_C in R^d (d >= C - 1) with ||v_c|| = r, v_c^T v_c' = -r^2 / (C - 1) for c != c'
and sum_c v_c = 0. Construction: the columns of sqrt(C/(C-1)) (I_C - 11^T / C) expressed in an
orthonormal basis of their (C-1)-dimensional range, padded with zeros to d, scaled by r.
"""

from __future__ import annotations

import math

import torch

from contrastlab._validation import check_positive, check_positive_int


def simplex_etf(
    num_classes: int,
    dim: int | None = None,
    radius: float = 1.0,
    dtype: torch.dtype = torch.float64,
    rotation_seed: int | None = None,
) -> torch.Tensor:
    """Return a (C, d) simplex ETF of the given radius.

    Args:
        num_classes: C >= 2.
        dim: d >= C - 1 (default C - 1).
        radius: the common norm r > 0.
        dtype: floating dtype of the result.
        rotation_seed: if given, apply a random orthogonal map of R^d (seeded), to get an ETF in
            general position instead of the canonical one.
    """
    c = check_positive_int("num_classes", num_classes)
    if c < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes}")
    d = c - 1 if dim is None else check_positive_int("dim", dim)
    if d < c - 1:
        raise ValueError(f"dim must be >= num_classes - 1 = {c - 1}; got {dim}")
    r = check_positive("radius", radius)
    centered = torch.eye(c, dtype=torch.float64) - 1.0 / c
    # orthonormal basis of the range: eigenvectors of the projector with eigenvalue 1
    _, vecs = torch.linalg.eigh(centered)
    basis = vecs[:, 1:]  # (C, C-1); eigenvalue 0 (the all-ones direction) comes first
    coords = centered @ basis * math.sqrt(c / (c - 1))  # (C, C-1), unit rows
    out = torch.zeros(c, d, dtype=torch.float64)
    out[:, : c - 1] = coords
    if rotation_seed is not None:
        g = torch.Generator().manual_seed(rotation_seed)
        q, rr = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        out = out @ (q * torch.sign(torch.diagonal(rr)))
    return (r * out).to(dtype)


def etf_cosine(num_classes: int) -> float:
    """The pairwise cosine of a simplex ETF, -1 / (C - 1)."""
    c = check_positive_int("num_classes", num_classes)
    if c < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes}")
    return -1.0 / (c - 1)

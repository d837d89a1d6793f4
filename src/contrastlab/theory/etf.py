"""The simplex equiangular tight frame (Papyan et al. 2020; Awasthi et al. 2022).

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


def etf_loss(
    num_classes: int,
    k: int,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    beta: float = 0.0,
    radius: float = 1.0,
) -> float:
    """Closed-form population loss of a simplex ETF of radius r under a balanced prior.

    With Delta = r^2 C / (C - 1) (the gap v_c^T v_c - v_c^T v_j) and a = Delta / t
    (t = 1 for ``logistic``):

    - ``marginal`` (UCL), InfoNCE forms: E_{m ~ Bin(k, p)} log(1 + m + (k - m) e^{-a}) (``sum``)
      or log(1 + (m + (k - m) e^{-a}) / k) (``infonce-mean``), where m counts the negatives of
      the anchor's class: p = 1/C, or with hardness beta (HUCL)
      p_beta = e^{beta r^2} / (e^{beta r^2} + (C - 1) e^{-beta r^2 / (C - 1)});
    - ``other-class`` (SCL, and HSCL for any beta: all negatives are equidistant):
      log(1 + k e^{-a}), or log(1 + e^{-a}) for ``infonce-mean``;
    - ``hinge``: a collision gives 1, otherwise max(0, 1 - Delta): UCL = P(m >= 1) +
      P(m = 0) max(0, 1 - Delta) (= tau_k for the unit ETF), SCL = max(0, 1 - Delta).
    """
    from contrastlab._validation import check_choice, check_nonnegative
    from contrastlab.data.latent import binomial_pmf
    from contrastlab.losses.family import LOSSES

    c = check_positive_int("num_classes", num_classes)
    if c < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes}")
    check_positive_int("k", k)
    check_choice("loss", loss, LOSSES)
    t = check_positive("temperature", temperature)
    check_choice("negatives", negatives, ("marginal", "other-class"))
    beta = check_nonnegative("beta", beta)
    r2 = check_positive("radius", radius) ** 2
    delta = r2 * c / (c - 1)
    if loss == "hinge":
        miss = max(0.0, 1.0 - delta)
        if negatives == "other-class":
            return miss
    else:
        a = delta / (1.0 if loss == "logistic" else t)
        if negatives == "other-class":
            return (
                math.log1p(math.exp(-a)) if loss == "infonce-mean" else math.log1p(k * math.exp(-a))
            )
    up, down = beta * r2, -beta * r2 / (c - 1)
    p = 1.0 / (1.0 + (c - 1) * math.exp(down - up))
    pmf = binomial_pmf(k, p).to(torch.float64)
    if loss == "hinge":
        p0 = float(pmf[0])
        return (1.0 - p0) + p0 * miss
    m = torch.arange(k + 1, dtype=torch.float64)
    inner = m + (k - m) * math.exp(-a)
    if loss == "infonce-mean":
        inner = inner / k
    return float((pmf * torch.log1p(inner)).sum())

"""The measurements shared by the theorem recipes (:mod:`.lemma1`, :mod:`.lower_bounds`,
:mod:`.nc_optimal`): pure functions, unit-tested on hand-made inputs.

- the geometry of a representation: :func:`within_class_spread`, :func:`class_mean_geometry`,
  :func:`projected_grad_norm`;
- the exact and sampled losses of every (anchor, positive) pair under hard negatives:
  :func:`hard_log_law`, :func:`exact_pair_losses`, :func:`sampled_pair_losses`,
  :func:`beta_increments`;
- the free-feature optimizer: :func:`optimize_free_features`;
- the loss families of Jiang et al.: :data:`FAMILIES`, :data:`HARD_LOSS`, :data:`SOFT_LOSS`.

The pair convention of :func:`exact_pair_losses` is the Jiang et al. code's: the
anchor i counts among its own positives, the negatives are i.i.d. from
q_i(j) ∝ exp(beta z_i^T z_j) on the other classes (supervised) or on every sample (unsupervised),
and the loss of the pair (i, p) is log(1 + sum_r exp((s_ij_r - s_ip) / t)) (``sum``, the paper)
or with the mean over the k negatives (``mean``, their code).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "FAMILIES",
    "HARD_LOSS",
    "SOFT_LOSS",
    "FreeFeatures",
    "beta_increments",
    "class_mean_geometry",
    "exact_pair_losses",
    "hard_log_law",
    "optimize_free_features",
    "projected_grad_norm",
    "sampled_pair_losses",
    "within_class_spread",
]

#: the supervised / unsupervised families of Jiang et al.: loss name -> law of the negatives
FAMILIES = {"scl": "other-class", "hscl": "other-class", "ucl": "marginal", "hucl": "marginal"}
#: the family's hard loss (beta > 0) and soft loss (beta = 0), by law of the negatives
HARD_LOSS = {"other-class": "hscl", "marginal": "hucl"}
SOFT_LOSS = {"other-class": "scl", "marginal": "ucl"}


# ------------------------------------------------------------------------------------------
# measurements (pure functions, unit-tested on hand-made inputs)
# ------------------------------------------------------------------------------------------


def within_class_spread(z: torch.Tensor, labels: torch.Tensor) -> float:
    """The largest distance between two samples of the same class (0 iff every class sits at
    one point: latent indistinguishability)."""
    z = z.detach().to(torch.float64)
    out = 0.0
    for c in torch.unique(labels):
        zc = z[labels == c]
        if zc.shape[0] > 1:
            out = max(out, float(torch.cdist(zc, zc).max()))
    return out


def class_mean_geometry(z: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Geometry of the class means mu_c of ``z`` (classes 0..C-1): ``etf_cosine_error`` =
    max_{c != c'} |cos(mu_c, mu_c') + 1/(C-1)|, ``zero_sum`` = ||sum_c mu_c||,
    ``unit_norm_error`` = max_i | ||z_i|| - 1 | over the samples, and the cosine matrix."""
    z = z.detach().to(torch.float64)
    c = int(labels.max()) + 1
    means = torch.stack([z[labels == j].mean(0) for j in range(c)])
    unit = means / means.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.T
    off = ~torch.eye(c, dtype=torch.bool)
    return {
        "etf_cosine_error": float((cos[off] + 1.0 / (c - 1)).abs().max()),
        "zero_sum": float(means.sum(0).norm()),
        "unit_norm_error": float((z.norm(dim=1) - 1.0).abs().max()),
        "cosine": cos,
    }


def projected_grad_norm(z: torch.Tensor, grad: torch.Tensor, constraint: str) -> float:
    """Norm of the part of ``grad`` (dL/dz) a feasible descent can use: tangent to the sphere
    (``sphere``); the full gradient inside the unit ball, and on its boundary without the
    component that points out of it (``ball``); the full gradient (``none``). Zero at a
    first-order stationary point of the constrained problem."""
    if constraint == "none":
        return float(grad.norm())
    norms = z.norm(dim=1, keepdim=True).clamp_min(1e-300)
    radial = (grad * z).sum(dim=1, keepdim=True) / norms  # d L / d ||z|| along z
    if constraint == "sphere":
        return float((grad - radial * z / norms).norm())
    on_boundary = norms > 1.0 - 1e-9
    # on the boundary descent (-grad) leaves the ball iff radial < 0: drop that component
    proj = torch.where(on_boundary & (radial < 0), grad - radial * z / norms, grad)
    return float(proj.norm())


def hard_log_law(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float
                 ) -> torch.Tensor:
    """(B, B) log-probabilities of the negatives' law q_i(j) ∝ exp(beta z_i^T z_j) on the
    allowed candidates (other classes for ``other-class``, all for ``marginal``). Any real beta
    (a negative one tilts toward easy negatives: the corruption of ``jiang-lower-bounds``)."""
    if negatives not in ("other-class", "marginal"):
        raise ValueError(f"negatives must be 'other-class' or 'marginal'; got {negatives!r}")
    z = z.to(torch.float64)
    logits = float(beta) * (z @ z.T)
    if negatives == "other-class":
        logits = logits.masked_fill(labels[:, None] == labels[None, :], -math.inf)
    return torch.log_softmax(logits, dim=1)


def _pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos_i, pos_p = torch.nonzero(labels[:, None] == labels[None, :], as_tuple=True)
    return pos_i, pos_p


def exact_pair_losses(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float,
                      k: int, temperature: float = 1.0, reduction: str = "sum"
                      ) -> torch.Tensor:
    """The exact expected loss of every (anchor, positive) pair (row-major over (i, p) with
    y_p = y_i, p = i included) over k i.i.d. negatives from :func:`hard_log_law` (the
    one-dimensional integral of :mod:`contrastlab.losses.expectation`: error ~1e-14 relative).
    For beta >= 0 it equals ``hscl``/``hucl(..., exact=True, reduction="none")``."""
    from contrastlab.losses.hard_pairs import pair_losses

    z = z.to(torch.float64)
    log_q = hard_log_law(z, labels, negatives, beta)
    logits = (z @ z.T) / temperature
    pos_i, pos_p = _pairs(labels)
    return pair_losses(logits, log_q, pos_i, logits[pos_i, pos_p], k, "loss", reduction)


def sampled_pair_losses(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float,
                        k: int, generator: torch.Generator, temperature: float = 1.0,
                        reduction: str = "sum") -> torch.Tensor:
    """One Monte-Carlo draw of the losses of :func:`exact_pair_losses` (k negatives drawn per
    pair from the same law)."""
    from contrastlab.losses.hard_pairs import pair_losses

    z = z.to(torch.float64)
    log_q = hard_log_law(z, labels, negatives, beta)
    logits = (z @ z.T) / temperature
    pos_i, pos_p = _pairs(labels)
    return pair_losses(logits, log_q, pos_i, logits[pos_i, pos_p], k, "sampled", reduction,
                       generator)


def beta_increments(losses: Mapping[float, torch.Tensor]) -> float:
    """The smallest increase, over consecutive betas (sorted) and elementwise over the pairs, of
    the per-pair losses ``{beta: (R,) tensor}`` (>= 0 iff every pair's loss is non-decreasing in
    beta)."""
    betas = sorted(losses)
    steps = [float((losses[b] - losses[a]).min()) for a, b in itertools.pairwise(betas)]
    return min(steps) if steps else math.nan


# ------------------------------------------------------------------------------------------
# free-feature optimizer (sphere, ball, or none)
# ------------------------------------------------------------------------------------------


@dataclass
class FreeFeatures:
    """Result of :func:`optimize_free_features`."""

    z: torch.Tensor
    loss: float
    grad_norm: float
    iterations: int


def optimize_free_features(
    labels: torch.Tensor,
    prior: torch.Tensor | None = None,
    k: int = 1,
    negatives: str = "marginal",
    beta: float = 0.0,
    temperature: float = 1.0,
    dim: int | None = None,
    constraint: str = "sphere",
    seed: int = 0,
    max_iter: int = 3000,
    tol: float = 1e-11,
    init_norm: float = 0.5,
) -> FreeFeatures:
    """Minimize the exact population loss of free per-sample features
    (:func:`contrastlab.theory.population.sample_level_loss`: anchor and positive uniform in a
    class, k negatives i.i.d. from the marginal or the other classes, tilted by
    exp(beta z_a^T z_j) with the gradient through the law) by L-BFGS (strong Wolfe) over
    z = normalize(u, constraint) (:func:`contrastlab.losses.normalize.normalize`: the sphere, the
    unit ball of Jiang et al.'s ``model.py``, or none).

    The start is Gaussian; for ``ball`` and ``none`` it is rescaled to norm ``init_norm`` (inside
    the ball, so the ball's interior is explored). ``grad_norm`` is
    :func:`projected_grad_norm` at the result.
    """
    from contrastlab.losses.normalize import normalize
    from contrastlab.theory.optimize import strong_wolfe_lbfgs
    from contrastlab.theory.population import sample_level_loss

    c = int(labels.max()) + 1
    d = c - 1 if dim is None else int(dim)
    objective: dict[str, Any] = {"prior": prior, "k": k, "loss": "infonce",
                                 "temperature": temperature, "negatives": negatives,
                                 "beta": beta}
    g = torch.Generator().manual_seed(seed)
    u0 = torch.randn(labels.numel(), d, generator=g, dtype=torch.float64)
    if constraint != "sphere":
        u0 = init_norm * u0 / u0.norm(dim=1, keepdim=True)
    u = u0.requires_grad_(True)

    def objective_fn() -> torch.Tensor:
        return sample_level_loss(normalize(u, constraint), labels, **objective)

    iters = strong_wolfe_lbfgs([u], objective_fn, max_iter, tol)
    z = normalize(u.detach(), constraint).requires_grad_(True)
    value = sample_level_loss(z, labels, **objective)
    value.backward()
    assert z.grad is not None
    return FreeFeatures(z.detach(), float(value.detach()),
                        projected_grad_norm(z.detach(), z.grad, constraint), iters)

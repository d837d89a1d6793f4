"""The loss family on score vectors (Arora et al. 2019, Awasthi et al. 2022 eq. (1)).

For an anchor f = f(x), a positive f+ and negatives f_1^-..f_k^-, the score vector is
``v_i = f^T (f+ - f_i^-)`` (i = 1..k); a loss ``l(v)`` is large when some negative scores close
to the positive. Jiang et al. (2023) write the same loss as psi(t) with ``t_i = -v_i``.

=================  ======================================  ==================================
name               l(v)                                    properties
=================  ======================================  ==================================
``logistic``       log(1 + sum_i exp(-v_i))                convex, symmetric, strictly
                                                           decreasing in each v_i, smooth
``infonce``        log(1 + sum_i exp(-v_i / t))            same; equals ``logistic`` at t = 1;
                                                           = -log softmax of the positive
``infonce-mean``   log(1 + (1/k) sum_i exp(-v_i / t))      same; the mean-over-negatives form
                                                           of the Jiang et al. code
``hinge``          max(0, 1 + max_i(-v_i))                 convex, symmetric, non-increasing,
                                                           not smooth, not strictly convex
=================  ======================================  ==================================

Natural logarithms throughout (Arora et al. use log2; divide by log 2 to compare). ``temperature``
applies to ``infonce`` and ``infonce-mean`` only. All forms are evaluated with log-sum-exp, so
they are finite for any finite v in float32.

Awasthi et al.'s structural result is stated for losses that are convex, permutation-symmetric
and non-increasing in each coordinate (recalled, not checked against the paper's
text). :data:`LOSS_PROPERTIES` records these properties for each member and
:func:`check_loss_properties` verifies them numerically; the tests run it on every member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from contrastlab._validation import check_choice, check_positive, check_positive_int, check_tensor

LOSSES = ("logistic", "infonce", "infonce-mean", "hinge")


@dataclass(frozen=True)
class LossProperties:
    """Structural properties of a member of the loss family (as functions of v)."""

    convex: bool
    symmetric: bool
    non_increasing: bool
    strictly_decreasing: bool
    smooth: bool
    uses_temperature: bool


LOSS_PROPERTIES: dict[str, LossProperties] = {
    "logistic": LossProperties(True, True, True, True, True, False),
    "infonce": LossProperties(True, True, True, True, True, True),
    "infonce-mean": LossProperties(True, True, True, True, True, True),
    "hinge": LossProperties(True, True, True, False, False, False),
}


def lse_scale(loss: str, temperature: float, k: int) -> tuple[float, float]:
    """(t, shift) of a log-sum-exp member with k negatives: ``l = log(1 + e^{-shift} sum_i
    exp(-v_i / t))``, t = 1 for ``logistic`` (``infonce`` at t = 1), shift = log k for
    ``infonce-mean`` (the mean over the negatives) and 0 otherwise."""
    t = 1.0 if loss == "logistic" else temperature
    shift = math.log(k) if loss == "infonce-mean" else 0.0
    return t, shift


def score_loss(v: torch.Tensor, loss: str = "infonce", temperature: float = 1.0) -> torch.Tensor:
    """Evaluate a member of the loss family on score vectors ``v`` of shape (..., k).

    Args:
        v: scores ``v_i = f^T (f+ - f_i^-)``, last dimension k >= 1 (the negatives).
        loss: one of :data:`LOSSES`.
        temperature: t > 0 for ``infonce`` / ``infonce-mean`` (ignored by the others).

    Returns:
        The loss for each leading index, shape ``v.shape[:-1]``.
    """
    check_choice("loss", loss, LOSSES)
    check_positive("temperature", temperature)
    check_tensor("v", v, ndim=(1, 2, 3), shape_hint="(..., k)")
    if loss == "hinge":
        return torch.clamp(1.0 - v.amin(dim=-1), min=0.0)
    t, shift = lse_scale(loss, temperature, v.shape[-1])
    neg = -v / t
    if loss == "infonce-mean":
        neg = neg - shift
    zero = torch.zeros_like(neg[..., :1])
    return torch.logsumexp(torch.cat([zero, neg], dim=-1), dim=-1)


def check_loss_properties(
    loss: str,
    k: int = 5,
    trials: int = 2000,
    temperature: float = 0.7,
    seed: int = 0,
) -> dict[str, bool]:
    """Numerically test convexity, symmetry and monotonicity of a loss on random score vectors.

    Convexity: l((u + w)/2) <= (l(u) + l(w))/2; symmetry: l(P v) = l(v) for a random
    permutation P; monotonicity: l(v + delta e_i) <= l(v) for delta > 0 (strictly for
    ``strictly_decreasing``). Returns a dict with the observed truth of each property; the
    documented :data:`LOSS_PROPERTIES` must agree with it.
    """
    check_choice("loss", loss, LOSSES)
    check_positive_int("k", k)
    check_positive_int("trials", trials)
    g = torch.Generator().manual_seed(seed)
    scale = 3.0
    u = scale * torch.randn(trials, k, generator=g, dtype=torch.float64)
    w = scale * torch.randn(trials, k, generator=g, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return score_loss(x, loss, temperature)

    tol = 1e-12
    convex = bool((f((u + w) / 2) <= (f(u) + f(w)) / 2 + tol).all())
    perm = torch.randperm(k, generator=g)
    symmetric = bool(torch.allclose(f(u[:, perm]), f(u), atol=1e-12, rtol=0))
    coord = torch.randint(0, k, (trials,), generator=g)
    bump = torch.zeros_like(u)
    bump[torch.arange(trials), coord] = 0.5
    # hinge is flat where it is zero or where the bumped coordinate is not the minimum
    non_increasing = bool((f(u + bump) <= f(u) + tol).all())
    strictly = bool((f(u + bump) < f(u)).all())
    return {
        "convex": convex,
        "symmetric": symmetric,
        "non_increasing": non_increasing,
        "strictly_decreasing": strictly,
    }

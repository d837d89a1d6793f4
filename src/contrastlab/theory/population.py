"""Exact population contrastive losses of class-collapsed representations.

Under the latent-class model (Arora et al. 2019) with class prior rho, a class-collapsed
representation maps every input of class c to one vector v_c (V is C x d). The anchor's class is
c ~ rho, its positive is v_c (x and x+ share the class), and k negatives are drawn i.i.d. from a
law q_c over the classes:

- ``marginal`` (UCL, Awasthi et al. 2022 / Jiang et al. 2023): q_c(j) = rho_j (collisions with
  the anchor's class allowed);
- ``other-class`` (SCL): q_c(j) = rho_j 1[j != c] / (1 - rho_c);
- with ``beta > 0`` the law is tilted by the hardening function eta(s) = exp(beta s),
  q_c(j) ∝ rho_j exp(beta v_c^T v_j) (HUCL / HSCL; the raw inner product, not tempered).

The loss is l(v) with v_i = v_c^T (v_c - v_{c_i}) (Awasthi et al. eq. (1)), from the family of
:mod:`contrastlab.losses.family`, so the population loss is::

    L(V) = sum_c rho_c  E_{c_1..c_k ~ q_c i.i.d.}  l( v_c^T (v_c - v_{c_i}), i = 1..k )

computed **exactly**, for any k, without enumerating the C^k tuples:

- ``logistic`` / ``infonce`` / ``infonce-mean``: l = log(1 + sum_i Y_i) with
  Y_i = exp((s_{c c_i} - s_cc)/t) (divided by k for the mean form); its expectation is the
  one-dimensional integral of :func:`contrastlab.losses.expected_log1p_sum` (Frullani:
  E log(1 + sum Y) = int_0^inf e^{-u}(1 - M(u)^k)/u du, M(u) = sum_j q_c(j) e^{-u y_j}); error
  ~1e-14 relative;
- ``hinge``: l = max(0, 1 + max_i (s_{c c_i} - s_cc)); the maximum of k i.i.d. draws has CDF
  F^k, so the expectation is a finite sum over the sorted values (exact).

Gradients in V are exact (autograd through the quadrature's custom backward, including the
dependence of the tilted law on V unless ``detach_law=True``, the convention of the training
code where the sampling weights are detached).
"""

from __future__ import annotations

import math

import torch

from contrastlab._validation import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_tensor,
)
from contrastlab.data.latent import check_prior
from contrastlab.losses.expectation import expected_log1p_sum
from contrastlab.losses.family import LOSSES

NEGATIVE_LAWS = ("marginal", "other-class")


def negative_log_law(
    V: torch.Tensor,
    prior: torch.Tensor,
    negatives: str = "marginal",
    beta: float = 0.0,
    detach_law: bool = False,
) -> torch.Tensor:
    """Log-probabilities (C, C): row c is the law q_c of a negative's class given anchor class c."""
    check_choice("negatives", negatives, NEGATIVE_LAWS)
    beta = check_nonnegative("beta", beta)
    c = V.shape[0]
    logits = torch.log(prior.to(V.dtype))[None, :].expand(c, c).clone()
    if negatives == "other-class":
        logits = logits.masked_fill(torch.eye(c, dtype=torch.bool, device=V.device), -math.inf)
    if beta > 0.0:
        s = V @ V.T
        if detach_law:
            s = s.detach()
        logits = logits + beta * s
    return torch.log_softmax(logits, dim=1)


def _expected_hinge(h: torch.Tensor, log_q: torch.Tensor, k: int) -> torch.Tensor:
    """E max(0, 1 + max_i h_{c_i}) for k i.i.d. draws c_i ~ q, row by row (exact)."""
    order = torch.argsort(h.detach(), dim=1)
    hs = torch.gather(h, 1, order)
    qs = torch.gather(log_q.exp(), 1, order)
    # tail T_m = P(draw > h_(m)) by a reverse cumulative sum (no cancellation near 1)
    tail = torch.flip(torch.cumsum(torch.flip(qs, [1]), 1), [1]) - qs
    tail = tail.clamp(min=0.0, max=1.0)
    below_incl = torch.exp(k * torch.log1p(-tail))  # P(max <= h_(m)) = (1 - T_m)^k
    below_excl = torch.cat([torch.zeros_like(below_incl[:, :1]), below_incl[:, :-1]], dim=1)
    p_max = (below_incl - below_excl).clamp(min=0.0)
    return (p_max * torch.clamp(1.0 + hs, min=0.0)).sum(dim=1)


def _check_objective(k: int, loss: str, temperature: float, negatives: str) -> float:
    """Check k, the loss, the temperature and the negative law; the temperature as a float."""
    check_positive_int("k", k)
    check_choice("loss", loss, LOSSES)
    t = check_positive("temperature", temperature)
    check_choice("negatives", negatives, NEGATIVE_LAWS)
    return t


def population_loss(
    V: torch.Tensor,
    prior: torch.Tensor | None = None,
    k: int = 1,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    beta: float = 0.0,
    detach_law: bool = False,
    per_class: bool = False,
) -> torch.Tensor:
    """The exact population contrastive loss of the class vectors V.

    Args:
        V: (C, d) class vectors (no normalization is applied: put them on the sphere or in the
            ball yourself, or use :func:`contrastlab.theory.optimize_population`).
        prior: (C,) class prior rho (None: balanced).
        k: number of negatives, >= 1.
        loss: ``logistic``, ``infonce`` (temperature t), ``infonce-mean`` (mean over the k
            negatives, the Jiang et al. code) or ``hinge``.
        temperature: t > 0 for the InfoNCE forms.
        negatives: ``marginal`` (UCL/HUCL) or ``other-class`` (SCL/HSCL).
        beta: hardness of the tilted law, >= 0.
        detach_law: treat the tilted law as a constant in the gradient.
        per_class: return the (C,) conditional losses given the anchor's class instead of the
            rho-weighted sum.
    """
    check_tensor("V", V, ndim=2, shape_hint="(C, d)")
    c = V.shape[0]
    if c < 2:
        raise ValueError(f"V must hold at least 2 class vectors; got shape {tuple(V.shape)}")
    rho = check_prior(torch.full((c,), 1.0 / c) if prior is None else prior, c)
    rho = rho.to(device=V.device, dtype=torch.float64)
    t = _check_objective(k, loss, temperature, negatives)
    if negatives == "other-class" and bool((rho >= 1.0 - 1e-15).any()):
        raise ValueError("prior: other-class negatives need at least two classes of positive mass")
    V64 = V.to(torch.float64)
    log_q = negative_log_law(V64, rho, negatives, beta, detach_law)
    s = V64 @ V64.T
    h = s - s.diagonal()[:, None]  # h_cj = s_cj - s_cc = -v_j of the score vector
    if loss == "hinge":
        values = _expected_hinge(h, log_q, k)
    else:
        scale = 1.0 if loss == "logistic" else t
        log_y = h / scale
        if loss == "infonce-mean":
            log_y = log_y - math.log(k)
        values = expected_log1p_sum(log_y, log_q, k)
    if per_class:
        return values.to(V.dtype)
    return (rho * values).sum().to(V.dtype)


def sample_level_loss(
    Z: torch.Tensor,
    labels: torch.Tensor,
    prior: torch.Tensor | None = None,
    k: int = 1,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    beta: float = 0.0,
) -> torch.Tensor:
    """Exact population loss of free per-sample embeddings (Awasthi et al. 2022, Lemma 1).

    Each class c is a finite set of samples (the rows of Z with label c), drawn uniformly; the
    anchor's class is c ~ rho, anchor and positive are two independent uniform draws from class c
    (they may coincide), and the k negatives are i.i.d. from the finite marginal (sample j with
    probability rho_{y_j} / n_{y_j}), or from the other classes, optionally tilted by
    exp(beta z_a^T z_j). The expectation over everything is exact (the integral engine of
    :func:`contrastlab.losses.expected_log1p_sum_grouped`, or the exact maximum law for hinge).
    """
    check_tensor("Z", Z, ndim=2, shape_hint="(N, d)")
    n = Z.shape[0]
    from contrastlab._validation import check_labels

    y = check_labels("labels", labels, n).to(Z.device)
    classes = int(y.max()) + 1
    if int(y.min()) < 0 or bool((torch.bincount(y, minlength=classes) == 0).any()):
        raise ValueError("labels must be 0..C-1 with every class present")
    rho = check_prior(torch.full((classes,), 1.0 / classes) if prior is None else prior, classes)
    rho = rho.to(device=Z.device, dtype=torch.float64)
    t = _check_objective(k, loss, temperature, negatives)
    beta = check_nonnegative("beta", beta)
    z = Z.to(torch.float64)
    counts = torch.bincount(y, minlength=classes).to(torch.float64)
    s = z @ z.T
    base = torch.log(rho[y] / counts[y])[None, :].expand(n, n)
    if negatives == "other-class":
        base = base.masked_fill(y[:, None] == y[None, :], -math.inf)
    log_q = torch.log_softmax(base + beta * s, dim=1)
    pos_a, pos_p = torch.nonzero(y[:, None] == y[None, :], as_tuple=True)
    pair_weight = rho[y[pos_a]] / counts[y[pos_a]] ** 2  # P(anchor a, positive p)
    if loss == "hinge":
        h = s[pos_a] - s[pos_a, pos_p][:, None]
        values = _expected_hinge(h, log_q[pos_a], k)
    else:
        from contrastlab.losses.expectation import expected_log1p_sum_grouped

        scale = 1.0 if loss == "logistic" else t
        shift = -s[pos_a, pos_p] / scale - (math.log(k) if loss == "infonce-mean" else 0.0)
        values = expected_log1p_sum_grouped(s / scale, log_q, pos_a, shift, k)
    return (pair_weight * values).sum().to(Z.dtype)

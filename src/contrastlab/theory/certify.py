"""A duality-gap certificate of global optimality for the Gram-matrix program.

Awasthi et al. (2022) note that the population loss of class-collapsed representations depends
on V only through G = V V^T, and that for their loss family the program

    minimize L(G)  subject to  G PSD,  G_ii = 1 (sphere)  or  G_ii <= 1 (ball)          (P)

is convex. Which losses of
:func:`contrastlab.theory.population.population_loss` make L convex in G
(:func:`gram_convexity`):

- ``logistic``, ``infonce``, ``infonce-mean`` with an untilted law (beta = 0), ``marginal`` or
  ``other-class`` negatives: each outcome of the negatives' classes contributes
  log(1 + sum_i exp(a_i(G))) with a_i affine in G, a log-sum-exp of affine functions (convex);
  L is a non-negative combination of these. L is also smooth, so its gradient certifies.
- ``hinge``: max(0, 1 + max_i a_i(G)) is convex but not differentiable; a gradient certificate
  needs the right subgradient at the kinks, which is not computed here: no certificate.
- beta > 0 (HUCL / HSCL): the law of the negatives, q_c(j) ~ rho_j exp(beta G_cj), depends on G;
  L is not convex in G in general: no certificate.

The certificate (Lagrangian weak duality, no SDP solver). Let G be feasible and H = dL/dG at G
(symmetric, trace inner product <A, B> = tr(A B)). For multipliers y in R^C (sphere) or y >= 0
(ball) put S = H + Diag(y) and suppose S is PSD. For every feasible G':

    L(G') >= L(G) + <H, G' - G>                       (convexity of L)
           = L(G) + <S, G'> - <S, G> - sum_i y_i (G'_ii - G_ii)
           >= L(G) - <S, G> - sum_i y_i (G'_ii - G_ii)  (<S, G'> >= 0: S, G' PSD)

On the sphere G'_ii = G_ii = 1 and the last sum vanishes; in the ball y_i >= 0 and G'_ii <= 1
bound it by sum_i y_i (1 - G_ii). Hence

    L(G) - min (P) <= gap = <S, G> + [ball] sum_i y_i (1 - G_ii),

a certified bound on the suboptimality of G (gap >= 0 since S and G are PSD). At a KKT point
(S G = 0, S PSD, complementary slackness in the ball) gap = 0.

Choice of y: stationarity S G = 0 on the diagonal gives y_i = -(H G)_ii / G_ii (sphere: G_ii = 1;
ball: clipped at 0); then, if lambda_min(S) < 0, every y_i is raised by
delta = -lambda_min(S) (plus a rounding allowance of 8 C eps ||S||_2 for the eigenvalue
routine), which makes S PSD. The gap is then about C delta + (residual of S G = 0), small at a
converged optimum, and large at a non-optimal point.

Rank: (P) drops the rank constraint rank(G) <= d. Its minimum is a lower bound for every d, so
the gap bounds the suboptimality in R^d too; it can vanish only when the optimum of (P) has rank
<= d (for d >= C always; for d = C - 1 when the optimum has rank <= C - 1, e.g. the simplex ETF
for a balanced prior). A gap that stays large at d < C is the sign of a higher-rank optimum of
(P), not an error.

The bound assumes H exact; H from :func:`contrastlab.theory.gram.gram_loss` is accurate to
~1e-13 relative, far below the 1e-6 used to certify.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contrastlab._validation import check_choice

#: the reason why no certificate is computed, by kind of objective (see :func:`gram_convexity`)
NOT_SMOOTH = "hinge: convex in G but not differentiable; no gradient certificate"
TILTED = "beta > 0: the negatives' law depends on G, so the loss is not convex in G"
#: a gap at or below this certifies a global optimum (and stops the optimizer's restarts)
CERTIFY_TOL = 1e-6


@dataclass(frozen=True)
class GapCertificate:
    """Result of :func:`duality_gap`: ``gap`` bounds L(G) - min (P) from above."""

    gap: float
    multipliers: np.ndarray
    shift: float
    min_eigenvalue: float


def gram_convexity(loss: str, beta: float) -> str | None:
    """None when the population loss is convex and smooth in G (a certificate exists), else the
    reason why it is not certified (module docstring)."""
    if beta != 0.0:  # (a negative beta is no law at all: refused by the loss's checks)
        return TILTED
    if loss == "hinge":
        return NOT_SMOOTH
    return None


def duality_gap(G: np.ndarray, H: np.ndarray, constraint: str = "sphere") -> GapCertificate:
    """The certified bound on L(G) - min (P) from the gradient H = dL/dG at a feasible G.

    Args:
        G: (C, C) feasible Gram matrix (PSD; unit diagonal for ``sphere``, diagonal <= 1 for
            ``ball``).
        H: (C, C) symmetric gradient of a convex L at G.
        constraint: ``sphere`` or ``ball``.

    Returns:
        The gap, the multipliers y (S = H + Diag(y) is PSD), the shift added to make it so and
        lambda_min(S) before the shift. See the module docstring for the proof.
    """
    check_choice("constraint", constraint, ("sphere", "ball"))
    G = 0.5 * (G + G.T)
    H = 0.5 * (H + H.T)
    diag = np.diagonal(G)
    stationary = -np.einsum("ij,ji->i", H, G)  # -(H G)_ii
    if constraint == "sphere":
        y = stationary / diag
    else:
        y = np.where(diag > 0.0, np.maximum(stationary / np.where(diag > 0.0, diag, 1.0), 0.0), 0.0)
    S = H + np.diag(y)
    eigs = np.linalg.eigvalsh(S)
    allowance = 8.0 * S.shape[0] * np.finfo(np.float64).eps * float(np.abs(eigs).max())
    shift = max(0.0, -float(eigs[0])) + allowance
    y = y + shift
    S = S + shift * np.eye(S.shape[0])
    gap = float(np.sum(S * G))
    if constraint == "ball":
        gap += float(y @ (1.0 - diag))
    return GapCertificate(max(gap, 0.0), y, shift, float(eigs[0]))

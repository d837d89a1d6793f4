"""SCL, HSCL, UCL and HUCL: supervised / unsupervised contrastive losses with hard negatives.

Jiang, Nguyen, Aeron & Ishwar (2023), "Hard-Negative Sampling for Contrastive Learning: Optimal
Representation Geometry and Neural- vs Dimensional-Collapse", Sec. 2 (population losses) and the
authors' code ``rjiang03/HCL@7a55a2f:main/SCL/train_mean_classifier.py`` (``nce_supervised_hard``
/ ``_easy``; the UCL file differs only in the negative set).

Convention (the authors' code; single view, no augmentation)::

    S = Z Z^T / t                    Z: the B normalized features (``ball`` by default)
    P_i = {p : y_p = y_i}            the anchor counts among its own positives (p = i)
    N_i = {j : y_j != y_i}           SCL / HSCL  (supervised: other classes)
    N_i = {1..B}                     UCL / HUCL  (marginal: i and its class included)
    q_ij ∝ exp(beta z_i^T z_j) 1[j in N_i]     hardening eta(s) = e^{beta s}, detached;
                                               beta = 0 for SCL / UCL
    for each pair (i, p): j_1..j_k i.i.d. ~ q_i.
    g_ip = (1/k) sum_r exp(S_{i j_r})           ("mean" over negatives, the code's default;
                                               ``negatives_reduction="sum"`` gives the paper's
                                               sum, log(1 + sum_r ...))
    l_ip = -log( exp(S_ip) / (exp(S_ip) + g_ip) )
    loss = sum_i sum_{p in P_i} l_ip / sum_i |P_i|

Three estimators of the same objective, chosen by ``exact``:

- ``False``: the sampled form above (gradients flow through the sampled S_ij only);
- ``True`` or ``"loss"``: the exact expectation of l_ip over the sampling law given the batch —
  no sampling noise; the value the sampled form averages to. Computed exactly, for any k, by
  the one-dimensional integral of :mod:`contrastlab.losses.expectation` (cost O(B^2 Q), with
  Q ~ 8 (2/t + log k + 90) quadrature nodes per anchor); it is the batch analogue of the
  population loss;
- ``"mean"``: the plug-in that replaces g_ip by its expectation sum_j q_ij exp(S_ij) inside the
  log (what the earlier ``rjiang03/H-SCL`` code and Robinson et al.'s reweighting compute). By
  Jensen it upper-bounds the expected loss; it is *not* the mean of the sampled form.

The temperature t divides S (the authors' code has t = 1). The hardness weights use the raw
inner product z_i^T z_j, so beta has the same meaning whatever t is.

Tiling. The two exact forms (``exact`` True / ``"loss"`` and ``"mean"``) are computed by the
anchor-block kernels of :func:`contrastlab.losses.tiled_hard_contrastive`
(:mod:`contrastlab.losses.kernels.jiang`: no B x B tensor; the plug-in in O(B d + block_rows B)
memory, the quadrature one block of anchors at a time, checkpointed; the same values and
gradients to float tolerance), chosen by ``tiled`` (a common argument of
:mod:`contrastlab.losses`: by default from B >= ``TILED_MIN_ROWS`` rows). The sampled form
(``exact=False``) is always dense: ``tiled=True`` with it raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import torch

from contrastlab._validation import check_generator
from contrastlab.losses._common import call_on_gathered, loss_inputs, reduce
from contrastlab.losses.hard_pairs import (
    batch_pair_losses,
    check_hard_contrastive_args,
    check_tiled,
)
from contrastlab.losses.hard_pairs import pair_losses as pair_losses  # re-exported (its old home)
from contrastlab.losses.kernels.engine import TILED_MIN_ROWS, use_tiled
from contrastlab.losses.kernels.jiang import tiled_hard_contrastive
from contrastlab.losses.normalize import normalize as _normalize


@loss_inputs("z")
def hard_contrastive(
    z: torch.Tensor,
    labels: torch.Tensor,
    negatives: str,
    beta: float = 0.0,
    k: int = 256,
    temperature: float = 1.0,
    normalize: str = "ball",
    exact: bool | str = False,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    tiled: bool | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """The common engine of :func:`scl`, :func:`hscl`, :func:`ucl` and :func:`hucl`.

    Args:
        z: (B, d) features (one view per sample).
        labels: (B,) integer (latent) class labels; they define the positives.
        negatives: ``"other-class"`` (supervised) or ``"marginal"`` (unsupervised).
        beta: hardness >= 0 of eta(s) = exp(beta s).
        k: number of negatives per (anchor, positive) pair, >= 1, independent of B.
        temperature: t > 0 dividing the similarities (1.0 in the authors' code).
        normalize: ``ball`` (the authors' code), ``sphere`` or ``none``.
        exact: ``False`` (sampled), ``True``/``"loss"`` (exact expected loss), ``"mean"``
            (plug-in expected negative term).
        negatives_reduction: ``mean`` (the code: log(1 + mean_r ...)) or ``sum`` (the paper:
            log(1 + sum_r ...)).

    ``reduction`` (over the (anchor, positive) pairs), ``generator`` (for ``exact=False``),
    ``tiled``, ``check_finite``: the common arguments of :mod:`contrastlab.losses`. The kernel of
    the exact forms (``exact`` True, ``"loss"`` or ``"mean"``):
    :func:`contrastlab.losses.tiled_hard_contrastive` (no B x B tensor); the sampled form is
    always dense.
    """
    check_generator(generator)
    b, labels, beta, t, mode = check_hard_contrastive_args(
        z, labels, negatives, beta, k, temperature, exact, negatives_reduction
    )
    if mode == "sampled":
        check_tiled(tiled, mode)
    elif use_tiled(tiled, b, TILED_MIN_ROWS):
        return tiled_hard_contrastive(
            z, labels, negatives, beta, k, t, normalize, exact, negatives_reduction, reduction,
            check_finite=False,
        )

    zn = _normalize(z, normalize)
    per_pair = batch_pair_losses(zn @ zn.T, labels, labels, negatives == "other-class", beta, k,
                                 t, mode, negatives_reduction, generator)
    return reduce(per_pair, reduction)


@loss_inputs("z")
def family_loss(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float, k: int,
                temperature: float, normalize: str, exact: bool | str, negatives_reduction: str,
                reduction: str, generator: torch.Generator | None, tiled: bool | None,
                gather: bool, group: Any, check_finite: bool = True) -> torch.Tensor:
    """What :func:`scl`, :func:`hscl`, :func:`ucl`, :func:`hucl` and
    :class:`~contrastlab.losses.HardContrastiveLoss` compute: the batch's
    :func:`hard_contrastive`, or with ``gather`` / ``group`` that of the batch gathered over the
    processes (:func:`contrastlab.distributed.call_gathered`)."""
    check_generator(generator)
    args = (z, labels, negatives, beta, k, temperature, normalize, exact, negatives_reduction,
            reduction, generator, tiled)
    if gather or group is not None:
        from contrastlab.distributed import samples_negatives

        return call_on_gathered(hard_contrastive, "hard_contrastive", *args, group=group,
                                samples=samples_negatives)
    return hard_contrastive(*args, check_finite=False)


def scl(
    z: torch.Tensor,
    labels: torch.Tensor,
    k: int = 256,
    temperature: float = 1.0,
    normalize: str = "ball",
    exact: bool | str = False,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    tiled: bool | None = None,
    gather: bool = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Supervised contrastive loss SCL (Jiang et al. 2023): k negatives uniform over the other
    classes of the batch. Conventions and arguments: :func:`hard_contrastive` and the common
    arguments (``gather``, ``group``) of :mod:`contrastlab.losses`.
    """
    return family_loss(z, labels, "other-class", 0.0, k, temperature, normalize, exact,
                       negatives_reduction, reduction, generator, tiled, gather, group,
                       check_finite)


def hscl(
    z: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0,
    k: int = 256,
    temperature: float = 1.0,
    normalize: str = "ball",
    exact: bool | str = False,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    tiled: bool | None = None,
    gather: bool = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Hard supervised contrastive loss HSCL (Jiang et al. 2023): k negatives from the other
    classes with probability ∝ exp(beta z_i^T z_j). beta = 0 is SCL. HSCL >= SCL for every
    representation (Harris inequality, Jiang et al. Thm. 2). Conventions and arguments:
    :func:`hard_contrastive` and the common arguments of :mod:`contrastlab.losses`.
    """
    return family_loss(z, labels, "other-class", beta, k, temperature, normalize, exact,
                       negatives_reduction, reduction, generator, tiled, gather, group,
                       check_finite)


def ucl(
    z: torch.Tensor,
    labels: torch.Tensor,
    k: int = 256,
    temperature: float = 1.0,
    normalize: str = "ball",
    exact: bool | str = False,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    tiled: bool | None = None,
    gather: bool = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Unsupervised contrastive loss UCL (Jiang et al. 2023): k negatives uniform over the whole
    batch (the marginal; the anchor's own class, and the anchor itself, can be drawn:
    collisions). ``labels`` are the latent classes that define the positives. Conventions and
    arguments: :func:`hard_contrastive` and the common arguments of :mod:`contrastlab.losses`.
    """
    return family_loss(z, labels, "marginal", 0.0, k, temperature, normalize, exact,
                       negatives_reduction, reduction, generator, tiled, gather, group,
                       check_finite)


def hucl(
    z: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0,
    k: int = 256,
    temperature: float = 1.0,
    normalize: str = "ball",
    exact: bool | str = False,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    tiled: bool | None = None,
    gather: bool = False,
    group: Any = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Hard unsupervised contrastive loss HUCL (Jiang et al. 2023): k negatives from the whole
    batch with probability ∝ exp(beta z_i^T z_j). beta = 0 is UCL; HUCL >= UCL (Harris
    inequality). Conventions and arguments: :func:`hard_contrastive` and the common arguments
    of :mod:`contrastlab.losses`.
    """
    return family_loss(z, labels, "marginal", beta, k, temperature, normalize, exact,
                       negatives_reduction, reduction, generator, tiled, gather, group,
                       check_finite)

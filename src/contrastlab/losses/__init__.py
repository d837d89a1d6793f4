"""contrastlab.losses — the contrastive loss library.

k (the number of negatives), the negative sampler, the hardness beta and the feature
normalization are explicit arguments everywhere; none is tied to the batch size.

Common arguments. The loss functions, their tiled and fused kernels and the modules share the
arguments below; they are documented here once, and each function documents its own arguments
and refers here.

- ``reduction``: ``mean`` (default) | ``sum`` | ``none`` over the loss's terms; ``none`` returns
  them as a vector: (2B,) for the two-view losses (the rows of z1 first), (B,) over the anchors
  for NCE, one entry per (anchor, positive) pair in row-major order of (i, p) for the
  SCL / HSCL / UCL / HUCL family (whose ``mean`` is over all the pairs, as Jiang et al.'s code).
- ``tiled``: True: the loss's tiled kernel (*Tiled kernels* below: no N x N or B x k tensor in
  memory; the same values and gradients to float tolerance; differentiable once); False: the
  dense path (every score formed, plain autograd, double backward too); None (default): by
  size, the kernel from ``TILED_MIN_ROWS`` rows (2B for the two-view losses, B for the Jiang et
  al. family) or ``TILED_MIN_PAIRS`` anchor-negative pairs (B k, NCE over a pool). A form
  without a kernel (each function says which) always runs dense, and ``tiled=True`` with it
  raises ``ValueError``.
- ``block_rows`` (the kernels): rows (anchors) per block; None: :func:`default_block_rows`.
- ``check_finite``: True (default) rejects NaN / inf embeddings with a one-line ``ValueError``
  naming the tensor (one ``isfinite(x).all()`` per input, before any sampling); False skips the
  check.
- ``gather`` / ``group``: ``gather=True`` (or a process ``group``): the loss of the batch gathered
  over the processes, with the conventions of :func:`contrastlab.distributed.call_gathered`.
  ``gather="local"`` (:func:`info_nce`, :func:`supcon`, :func:`debiased_hard`): each process
  computes only its own anchors against the gathered batch (the same gradient after DDP's
  average, 1/W of the work: :mod:`contrastlab.losses.sharded`).
- ``generator``: a ``torch.Generator`` (reproducible sampling) or None.

Precision. float16 / bfloat16 inputs (or inputs under autocast) are computed in float32 (autocast
is off inside) and the loss is float32, on the dense, the tiled and the fused paths alike; float64
inputs give a float64 loss.

Loss family on score vectors v_i = f^T (f+ - f_i^-)  (Arora et al. 2019; Awasthi et al. 2022)
    score_loss(v, loss, temperature)    logistic | infonce | infonce-mean | hinge
    LOSS_PROPERTIES, check_loss_properties

Explicit-k NCE (Arora et al. 2019; Awasthi et al. 2022)
    nce_loss(anchor, positive, negatives (B,k,d) or (k,d), loss=..., temperature=...)
    nce_loss(anchor, positive, pool (M,d), negative_index=(B,k))   per-anchor negatives by index

In-batch losses over two views (2B rows)
    info_nce(z1, z2, temperature, normalize)          SimCLR NT-Xent, 2B-2 negatives, mean over 2B
    supcon(z1, z2, labels=None, temperature)          Khosla et al. 2020 L_out, no base temperature
    debiased_hard(z1, z2, temperature, tau_plus, beta)  Chuang et al. 2020 (beta=0) /
                                                      Robinson et al. 2021 (beta>0), with clamp

Tiled kernels (row blocks, no N x N matrix; what ``tiled`` picks, see *Common arguments*)
    tiled_info_nce, tiled_supcon, tiled_debiased_hard    of info_nce, supcon, debiased_hard
    tiled_nce_loss (shared (k, d) pool), tiled_nce_indexed ((M, d) pool + (B, k) index, no
    (B, k, d) gather)                   of nce_loss
    tiled_hard_contrastive              SCL/HSCL/UCL/HUCL, exact=True/"loss"/"mean" (anchor blocks)
    default_block_rows

Jiang et al. 2023 family (single view, anchor among its positives, mean over k negatives)
    scl(z, labels, k, ..., exact)       other-class negatives
    hscl(z, labels, beta, k, ..., exact)  other-class, tilted by exp(beta s)
    ucl(z, labels, k, ..., exact)       marginal negatives (collisions)
    hucl(z, labels, beta, k, ..., exact)  marginal, tilted
    exact=False: sampled; True/"loss": exact expected loss; "mean": plug-in negative term

Losses over a negative pool (k negatives per anchor drawn from P encoded candidates; the
trainer's explicit-k losses)
    pool_hard_contrastive(anchors, positives, anchor_labels, pool, pool_labels, negatives, beta, k)
    pool_nce(anchors, positives, anchor_labels, pool, pool_labels, sampler, beta, k, score)

The loss registry (what the trainer and the run config know of each loss; extensible)
    LossSpec, register_loss, get_loss, loss_names     (contrastlab.losses.registry)

Feature normalization
    normalize(z, kind)                  sphere | ball | none

Negative samplers (indices into a pool; separate from the losses)
    NegativeSampler, sample_uniform, sample_other_class, sample_tilted, tilted_log_probs,
    candidate_mask, gather_negatives, distinct_counts, expected_distinct_counts

Exact expectations
    expected_log1p_sum(log_y, log_p, k)  E log(1 + sum of k i.i.d. discrete variables)

Modules: InfoNCELoss, SupConLoss, DebiasedHardLoss, NCELoss, HardContrastiveLoss, SCLLoss,
HSCLLoss, UCLLoss, HUCLLoss.
"""

from contrastlab.losses.debiased import debiased_hard
from contrastlab.losses.expectation import expected_log1p_sum, expected_log1p_sum_grouped
from contrastlab.losses.family import (
    LOSS_PROPERTIES,
    LOSSES,
    LossProperties,
    check_loss_properties,
    score_loss,
)
from contrastlab.losses.infonce import info_nce
from contrastlab.losses.kernels import (
    TILED_MIN_PAIRS,
    TILED_MIN_ROWS,
    default_block_rows,
    tiled_debiased_hard,
    tiled_hard_contrastive,
    tiled_info_nce,
    tiled_nce_indexed,
    tiled_nce_loss,
    tiled_supcon,
)
from contrastlab.losses.modules import (
    DebiasedHardLoss,
    HardContrastiveLoss,
    HSCLLoss,
    HUCLLoss,
    InfoNCELoss,
    NCELoss,
    SCLLoss,
    SupConLoss,
    UCLLoss,
)
from contrastlab.losses.nce import nce_loss
from contrastlab.losses.normalize import NORMALIZATIONS, normalize
from contrastlab.losses.pool import pool_hard_contrastive, pool_nce
from contrastlab.losses.registry import LossSpec, get_loss, loss_names, register_loss
from contrastlab.losses.samplers import (
    SAMPLER_LAWS,
    SAMPLERS,
    NegativeSampler,
    candidate_mask,
    distinct_counts,
    expected_distinct_counts,
    gather_negatives,
    sample_from_log_probs,
    sample_other_class,
    sample_tilted,
    sample_uniform,
    tilted_log_probs,
)
from contrastlab.losses.scl import hard_contrastive, hscl, hucl, pair_losses, scl, ucl
from contrastlab.losses.supcon import supcon

__all__ = [
    "LOSSES",
    "LOSS_PROPERTIES",
    "NORMALIZATIONS",
    "SAMPLERS",
    "SAMPLER_LAWS",
    "TILED_MIN_PAIRS",
    "TILED_MIN_ROWS",
    "DebiasedHardLoss",
    "HSCLLoss",
    "HUCLLoss",
    "HardContrastiveLoss",
    "InfoNCELoss",
    "LossProperties",
    "LossSpec",
    "NCELoss",
    "NegativeSampler",
    "SCLLoss",
    "SupConLoss",
    "UCLLoss",
    "candidate_mask",
    "check_loss_properties",
    "debiased_hard",
    "default_block_rows",
    "distinct_counts",
    "expected_distinct_counts",
    "expected_log1p_sum",
    "expected_log1p_sum_grouped",
    "gather_negatives",
    "get_loss",
    "hard_contrastive",
    "hscl",
    "hucl",
    "info_nce",
    "loss_names",
    "nce_loss",
    "normalize",
    "pair_losses",
    "pool_hard_contrastive",
    "pool_nce",
    "register_loss",
    "sample_from_log_probs",
    "sample_other_class",
    "sample_tilted",
    "sample_uniform",
    "scl",
    "score_loss",
    "supcon",
    "tiled_debiased_hard",
    "tiled_hard_contrastive",
    "tiled_info_nce",
    "tiled_nce_indexed",
    "tiled_nce_loss",
    "tiled_supcon",
    "tilted_log_probs",
    "ucl",
]

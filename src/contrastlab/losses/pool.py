"""The explicit-k losses over a negative pool: k negatives per anchor drawn from P candidates
encoded once per step (the trainer's explicit-k losses, :mod:`contrastlab.losses.registry`).

Pool convention (:func:`pool_hard_contrastive`, :func:`pool_nce`). Each of the 2B views is an
anchor whose positive is its other view (both directions, as SimCLR). For anchor a with positive
p and pool members j (raw inner products ``S_aj = z_a^T z_j`` of the normalized features)::

    q(j | a) ∝ exp(beta S_aj) 1[j allowed]        NegativeSampler: uniform (ucl), tilted (hucl),
                                                  other-class (scl), tilted-other-class (hscl);
                                                  detached; beta = 0 untilted
    j_1..j_k ~ q(. | a)                           loss.replacement = false (default): k distinct
                                                  pool members, successive sampling without
                                                  replacement; true: i.i.d. with replacement
                                                  (Jiang et al.'s code)
    g_a = (1/k) sum_r exp(S_{a j_r} / t)          (``negatives_reduction="sum"``: the sum)
    l_a = -log( exp(S_ap / t) / (exp(S_ap / t) + g_a) )

the per-pair formula of :func:`contrastlab.losses.hard_contrastive` with the batch replaced by the
pool as the set of candidates and the positive given by the pair (the anchor is not among its
own positives here; the pool, drawn from the marginal independently of the batch, may contain
the anchor's class — and, for UCL/HUCL and the marginal ``nce`` samplers, the anchor's own
sample or its positive's: collisions, as in the population loss where x- ~ D is independent of
x; nothing is excluded. The other-class samplers never draw them). Without replacement
(:func:`contrastlab.losses.samplers.sample_from_log_probs`) an anchor whose law has fewer than k
allowed pool members (possible only for the other-class samplers, or a law that underflows to 0)
gets all of them and the rest i.i.d.; ``distinct_negatives`` shows it. ``loss.exact`` =
``True``/``"loss"`` replaces the sampled mean by its exact expectation over k i.i.d. draws from q
given the pool, ``"mean"`` by the plug-in negative term (see :mod:`contrastlab.losses.scl`); no
draw is made, so ``loss.replacement`` resolves to true there. ``nce`` draws its k negatives with
the configured sampler from the same pool and applies the score loss ``loss.score`` to
``v_r = S_ap - S_{a j_r}``. The in-batch losses (``infonce``, ``supcon``, ``debiased-hard``) use
the two views only (their k is 2B - 2) and no pool.

The laws are named as everywhere in the library: :func:`pool_hard_contrastive` by their support
(``negatives``) and beta, as :func:`contrastlab.losses.hard_contrastive` and the population losses;
:func:`pool_nce` by the sampler kind; :data:`contrastlab.losses.samplers.SAMPLER_LAWS` is the one
table between the two.
"""

from __future__ import annotations

import torch

from contrastlab._validation import check_choice, check_nonnegative, check_positive_int
from contrastlab.losses._common import reduce
from contrastlab.losses.family import score_loss
from contrastlab.losses.hard_pairs import NEGATIVE_REDUCTIONS, exact_mode, pair_losses
from contrastlab.losses.samplers import (
    NegativeSampler,
    distinct_counts,
    expected_distinct_counts,
    sample_from_log_probs,
    sampler_kind,
    sampler_support,
)

__all__ = ["pool_hard_contrastive", "pool_nce"]


def _pool_law(
    anchors: torch.Tensor, positives: torch.Tensor, anchor_labels: torch.Tensor | None,
    pool: torch.Tensor, pool_labels: torch.Tensor | None, law: NegativeSampler,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S, s_pos, log q): the raw inner products (R, P) of the anchors with the pool (the
    hardness weights use them: beta's scale), the positives' (R,), and the (R, P) law of the
    negatives (detached, float64; the labels are read by the other-class laws only)."""
    if anchors.ndim != 2 or pool.ndim != 2 or positives.shape != anchors.shape:
        raise ValueError(
            f"anchors and positives must be (R, d) and pool (P, d); got {tuple(anchors.shape)}, "
            f"{tuple(positives.shape)} and {tuple(pool.shape)}"
        )
    if pool.shape[1] != anchors.shape[1]:
        raise ValueError(f"pool must have feature dimension {anchors.shape[1]}; got "
                         f"{pool.shape[1]}")
    S = anchors @ pool.T
    s_pos = (anchors * positives).sum(dim=1)
    supervised = sampler_support(law.kind) == "other-class"
    log_q = law.log_probs(S, anchor_labels if supervised else None,
                          pool_labels if supervised else None)
    return S, s_pos, log_q


def _record_distinct(stats: dict[str, float] | None, idx: torch.Tensor | None,
                     log_q: torch.Tensor, k: int, pool_ids: torch.Tensor | None) -> None:
    """``stats["distinct_negatives"]``: the mean over the rows of the number of distinct pool
    members (by ``pool_ids``) among the drawn ``idx``, or its expectation under k i.i.d. draws
    from ``log_q`` when nothing was drawn (``idx`` None); nothing without ``stats``."""
    if stats is not None:
        counts = (distinct_counts(idx, pool_ids) if idx is not None
                  else expected_distinct_counts(log_q, k, pool_ids))
        stats["distinct_negatives"] = float(counts.double().mean())


def pool_hard_contrastive(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    anchor_labels: torch.Tensor | None,
    pool: torch.Tensor,
    pool_labels: torch.Tensor | None,
    negatives: str = "marginal",
    beta: float = 0.0,
    k: int = 256,
    temperature: float = 1.0,
    exact: bool | str = False,
    negatives_reduction: str = "mean",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    replace: bool = True,
    stats: dict[str, float] | None = None,
    pool_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """SCL / HSCL / UCL / HUCL with k negatives drawn from a pool (module docstring).

    Args:
        anchors, positives: (R, d) pairs, already normalized as the encoder outputs them.
        anchor_labels, pool_labels: (R,) and (P,) labels; needed for ``other-class``.
        pool: (P, d) candidate negatives (encoded once per step).
        negatives: ``marginal`` (UCL/HUCL) or ``other-class`` (SCL/HSCL).
        beta: hardness of q(j | a) ∝ exp(beta z_a^T z_j).
        k: negatives per pair, >= 1, independent of R and P.
        temperature: t > 0 dividing the similarities in the loss (not in the law).
        exact: ``False`` sampled; ``True``/``"loss"`` exact expectation over the draws; ``"mean"``
            the plug-in negative term.
        negatives_reduction: ``mean`` (Jiang et al.'s code) or ``sum`` (log(1 + sum_r ...)).
        reduction: ``mean`` | ``sum`` | ``none`` over the R pairs.
        generator: for the draws.
        replace: i.i.d. draws with replacement (Jiang et al.'s code) or k distinct pool members
            by successive sampling (:func:`contrastlab.losses.sample_from_log_probs`, ``fill``:
            a row with fewer than k allowed members gets all of them, then i.i.d. draws).
            Ignored by the exact forms.
        stats: if given, ``stats["distinct_negatives"]`` is set to the mean over the rows of the
            number of distinct negatives drawn (exact forms: its expectation under k i.i.d.
            draws), counting pool members with the same ``pool_ids`` (P,) once.
    """
    check_choice("negatives", negatives, ("marginal", "other-class"))
    k = check_positive_int("k", k)
    t = float(temperature)
    if not t > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    check_choice("negatives_reduction", negatives_reduction, NEGATIVE_REDUCTIONS)
    mode = exact_mode(exact, ("loss", "mean"))
    law = NegativeSampler(kind=sampler_kind(negatives), beta=beta)
    S, s_pos, log_q = _pool_law(anchors, positives, anchor_labels, pool, pool_labels, law)
    owner = torch.arange(S.shape[0], device=S.device)  # one law per row
    idx = None
    if mode == "sampled":
        idx = sample_from_log_probs(log_q, k, replace, generator, fill=True)
    _record_distinct(stats, idx, log_q, k, pool_ids)
    per_pair = pair_losses(S / t, log_q, owner, s_pos / t, k, mode, negatives_reduction,
                           generator, idx=idx)
    return reduce(per_pair, reduction)


def pool_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    anchor_labels: torch.Tensor | None,
    pool: torch.Tensor,
    pool_labels: torch.Tensor | None,
    sampler: str = "uniform",
    beta: float = 0.0,
    k: int = 256,
    score: str = "infonce",
    temperature: float = 1.0,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    replace: bool = True,
    stats: dict[str, float] | None = None,
    pool_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Explicit-k NCE (Arora et al. 2019 eq. (2)) with k negatives per anchor drawn from a pool
    by a :class:`~contrastlab.losses.NegativeSampler`: ``score_loss(v, score, t)`` with
    ``v_r = z_a^T z_p - z_a^T z_{j_r}`` (the same as :func:`contrastlab.losses.nce_loss` on the
    gathered negatives, without materializing the (R, k, d) tensor). ``replace``, ``stats`` and
    ``pool_ids`` as in :func:`pool_hard_contrastive`."""
    k = check_positive_int("k", k)
    check_nonnegative("beta", beta)
    law = NegativeSampler(kind=sampler, beta=beta, replace=replace)
    S, s_pos, log_q = _pool_law(anchors, positives, anchor_labels, pool, pool_labels, law)
    idx = sample_from_log_probs(log_q, k, replace, generator, fill=True)
    _record_distinct(stats, idx, log_q, k, pool_ids)
    return reduce(score_loss(s_pos[:, None] - S.gather(1, idx), score, temperature), reduction)

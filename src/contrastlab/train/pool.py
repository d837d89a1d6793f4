"""The loss of one step on encoded views: the explicit-k losses over a negative pool and the
dispatch of the configured loss (:func:`contrastive_loss`).

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

The pool losses are pure functions of the features; they belong with the loss library
(:mod:`contrastlab.losses`) and will move there.
"""

from __future__ import annotations

import torch

from contrastlab._validation import check_choice, check_nonnegative, check_positive_int
from contrastlab.losses import (
    NegativeSampler,
    debiased_hard,
    distinct_counts,
    expected_distinct_counts,
    info_nce,
    pair_losses,
    sample_from_log_probs,
    score_loss,
    supcon,
)
from contrastlab.train.config import EXPLICIT_K_LOSSES, LossConfig

__all__ = ["contrastive_loss", "pool_hard_contrastive", "pool_nce"]


def _pool_scores(
    anchors: torch.Tensor, pool: torch.Tensor, positives: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if anchors.ndim != 2 or pool.ndim != 2 or positives.shape != anchors.shape:
        raise ValueError(
            f"anchors and positives must be (R, d) and pool (P, d); got {tuple(anchors.shape)}, "
            f"{tuple(positives.shape)} and {tuple(pool.shape)}"
        )
    if pool.shape[1] != anchors.shape[1]:
        raise ValueError(f"pool must have feature dimension {anchors.shape[1]}; got "
                         f"{pool.shape[1]}")
    S = anchors @ pool.T  # raw inner products: the hardness weights use them (beta's scale)
    s_pos = (anchors * positives).sum(dim=1) / temperature
    return S, s_pos


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
    check_choice("negatives_reduction", negatives_reduction, ("mean", "sum"))
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    mode = ("loss" if exact else "sampled") if isinstance(exact, bool) else check_choice(
        "exact", exact, ("loss", "mean"))
    S, s_pos = _pool_scores(anchors, pool, positives, t)
    kind = "marginal" if negatives == "marginal" else "other-class"
    sampler = NegativeSampler(
        kind=("tilted" if kind == "marginal" else "tilted-other-class"), beta=beta
    )
    labels_needed = kind == "other-class"
    log_q = sampler.log_probs(
        S, anchor_labels if labels_needed else None, pool_labels if labels_needed else None
    )  # (R, P), detached, float64
    owner = torch.arange(S.shape[0], device=S.device)  # one law per row
    idx = None
    if mode == "sampled":
        idx = sample_from_log_probs(log_q, k, replace, generator, fill=True)
    if stats is not None:
        counts = (distinct_counts(idx, pool_ids) if idx is not None
                  else expected_distinct_counts(log_q, k, pool_ids))
        stats["distinct_negatives"] = float(counts.double().mean())
    per_pair = pair_losses(S / t, log_q, owner, s_pos, k, mode, negatives_reduction, generator,
                           idx=idx)
    if reduction == "mean":
        return per_pair.mean()
    return per_pair.sum() if reduction == "sum" else per_pair


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
    S, _ = _pool_scores(anchors, pool, positives, 1.0)
    s_pos = (anchors * positives).sum(dim=1)
    law = NegativeSampler(kind=sampler, beta=beta, replace=replace)
    supervised = sampler in ("other-class", "tilted-other-class")
    log_q = law.log_probs(S, anchor_labels if supervised else None,
                          pool_labels if supervised else None)
    idx = sample_from_log_probs(log_q, k, replace, generator, fill=True)
    if stats is not None:
        stats["distinct_negatives"] = float(distinct_counts(idx, pool_ids).double().mean())
    per_anchor = score_loss(s_pos[:, None] - S.gather(1, idx), score, temperature)
    if reduction == "mean":
        return per_anchor.mean()
    return per_anchor.sum() if reduction == "sum" else per_anchor


def contrastive_loss(
    loss: LossConfig,
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    pool: torch.Tensor | None = None,
    pool_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, float] | None = None,
    pool_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The configured loss on one step's encoded views (and pool, for the explicit-k losses).

    ``loss`` must be resolved (:func:`contrastlab.train.config.parse_config`); the features
    are already normalized by the encoder, so the library losses get ``normalize="none"``. The
    explicit-k losses draw with or without replacement as ``loss.replacement`` says. ``stats``:
    if given, receives ``distinct_negatives`` (see :func:`pool_hard_contrastive`; 2B - 2 for the
    in-batch losses); ``pool_ids``: the data-set index of every pool member, for that count.
    """
    name = loss.name
    t = float(loss.temperature if loss.temperature is not None else 1.0)
    if stats is not None and name not in EXPLICIT_K_LOSSES:
        stats["distinct_negatives"] = float(2 * z1.shape[0] - 2)
    if name == "infonce":
        return info_nce(z1, z2, temperature=t, normalize="none")
    if name == "supcon":
        return supcon(z1, z2, labels=labels, temperature=t, normalize="none")
    if name == "debiased-hard":
        return debiased_hard(z1, z2, temperature=t, tau_plus=float(loss.tau_plus or 0.0),
                             beta=float(loss.beta or 0.0), normalize="none")
    if pool is None or loss.k is None:
        raise ValueError(f"loss {name!r} needs a negative pool and loss.k")
    anchors = torch.cat([z1, z2])
    positives = torch.cat([z2, z1])
    anchor_labels = torch.cat([labels, labels])
    if name == "nce":
        return pool_nce(anchors, positives, anchor_labels, pool, pool_labels,
                        sampler=loss.sampler or "uniform", beta=float(loss.beta or 0.0),
                        k=loss.k, score=loss.score, temperature=t, generator=generator,
                        replace=loss.replacement, stats=stats, pool_ids=pool_ids)
    return pool_hard_contrastive(
        anchors, positives, anchor_labels, pool, pool_labels,
        negatives="other-class" if name in ("scl", "hscl") else "marginal",
        beta=float(loss.beta or 0.0), k=loss.k, temperature=t, exact=loss.exact,
        negatives_reduction=loss.negatives_reduction, generator=generator,
        replace=loss.replacement, stats=stats, pool_ids=pool_ids,
    )

"""The training loop: any loss of the library with an explicit k, seeded, resumable.

One step (``B = train.batch_size``, ``P = loss.pool_size``, default ``max(k, B)``):

1. ``B`` training indices from a seeded permutation; two views ``x1, x2`` from
   :func:`contrastlab.data.pairs.make_views` (``latent``: x2 is another sample of the class;
   ``augment``: two augmented views);
2. for the **explicit-k losses** (``nce``, ``scl``, ``hscl``, ``ucl``, ``hucl``) a pool of ``P``
   training samples drawn from the marginal (:func:`contrastlab.data.pairs.negative_pool`):
   ``P`` distinct samples (uniform without replacement) unless ``loss.replacement`` is true or
   ``P`` exceeds the data set (then i.i.d. with replacement, the pool law of earlier versions);
3. **one** forward pass of ``[x1; x2; pool]`` (so k = 4096 with B = 256 encodes 512 + 4096 rows,
   not B x k);
4. the loss (:func:`contrastive_loss`), a NaN check, backward, the optimizer and the scheduler.

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

Optimization: Adam or SGD; the learning rate rises linearly over ``optim.warmup_epochs`` and then
follows a cosine from ``lr`` to ``min_lr`` (or stays constant), stepped every iteration.

Reproducibility: the model is initialized from ``seed``; batches, views and the pool come from one
``torch.Generator``, the negative draws from a second; evaluation uses its own generators, seeded
from (seed, epoch), so it never perturbs training. ``train.deterministic`` turns on
``torch.use_deterministic_algorithms`` for the run. A checkpoint after every epoch holds the
model, optimizer, scheduler, both generators, the global RNG state, the epoch and the metric
history; :func:`train` resumes from it and reproduces the uninterrupted run's metrics exactly on
CPU (same thread count). Checkpoints are checksummed and the previous one is kept
(:mod:`contrastlab.checkpoint`): a damaged or inconsistent one is set aside, named on stderr,
and the run resumes from the previous one or from scratch.

Per-epoch metrics (every ``eval.every`` epochs and after the last): the training loss and
learning rate; ``distinct_negatives``, the mean over the anchors of the number of distinct
training samples among an anchor's k negatives, measured on the draws of the epoch's first step
(k exactly without replacement when the pool allows; about P (1 - (1 - 1/P)^k) for i.i.d.
uniform draws from P distinct members, ~0.63 k at k = P; for ``loss.exact`` its expectation over
the k i.i.d. draws; 2B - 2, the other views, for the in-batch losses); on held-out embeddings of
a fixed subset: the geometry report's scalars (``nc1``, ``etf_distance``, ``effective_rank``,
...), the mean classifier (``mc_acc``, ``mc_ce``), a linear probe (``probe_acc``, ``probe_ce``)
and the contrastive loss on the test set (``heldout_loss``, fixed draws). After the last epoch
the full :func:`contrastlab.geometry.geometry_report` and
:func:`contrastlab.evaluation.downstream_report` are returned. A non-finite loss or embedding
stops the run with status ``nan``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastlab import checkpoint
from contrastlab._validation import check_choice, check_nonnegative, check_positive_int
from contrastlab.convergence import convergence
from contrastlab.distributed import init_from_env
from contrastlab.experiments.config import (
    EXPLICIT_K_LOSSES,
    ExperimentConfig,
    LossConfig,
    parse_config,
    run_id,
)
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
from contrastlab.models import Encoder, build_encoder

__all__ = [
    "CHECKPOINT_NAME",
    "GEOMETRY_METRICS",
    "TrainResult",
    "build_model",
    "contrastive_loss",
    "embed",
    "evaluate",
    "load_data",
    "pool_hard_contrastive",
    "pool_nce",
    "train",
]

CHECKPOINT_NAME = checkpoint.LATEST
GEOMETRY_METRICS = (
    "nc1",
    "nc2_equinorm",
    "nc2_equiangularity",
    "etf_distance",
    "etf_distance_uncentered",
    "unit_norm_error",
    "zero_sum_norm",
    "equiangularity_mean",
    "within_class_rms",
    "effective_rank",
    "class_mean_effective_rank",
    "numerical_rank",
    "rankme",
    "collapsed_dims",
)


# --------------------------------------------------------------------------------------------
# the loss on one step (pure functions)
# --------------------------------------------------------------------------------------------


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

    ``loss`` must be resolved (:func:`contrastlab.experiments.config.parse_config`); the features
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


# --------------------------------------------------------------------------------------------
# data, model, optimizer
# --------------------------------------------------------------------------------------------


@dataclass
class _Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: str
    input_shape: tuple[int, ...]


def load_data(cfg: ExperimentConfig) -> Any:
    """Load the configured data set through the registry (seeded by ``data.seed``, default
    the run's ``seed``)."""
    from contrastlab.data.registry import load_dataset

    seed = cfg.seed if cfg.data.seed is None else cfg.data.seed
    return load_dataset(cfg.data.name, root=cfg.data.root, seed=seed, **cfg.data.options)


def _as_data(ds: Any) -> _Data:
    def t(a: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(a).to(dtype)

    return _Data(
        x_train=t(ds.x_train, torch.float32),
        y_train=t(ds.y_train, torch.int64),
        x_test=t(ds.x_test, torch.float32),
        y_test=t(ds.y_test, torch.int64),
        num_classes=int(ds.num_classes),
        kind=str(ds.kind),
        input_shape=tuple(int(s) for s in ds.input_shape),
    )


def shuffled_labels(data: _Data, seed: int) -> _Data:
    """The shuffled-label control: the training labels permuted by a seeded permutation (class
    frequencies kept), the test labels untouched."""
    g = torch.Generator().manual_seed(int(seed) + 2_147_483_647)
    perm = torch.randperm(data.y_train.shape[0], generator=g)
    return replace(data, y_train=data.y_train[perm])


def build_model(cfg: ExperimentConfig, input_shape: tuple[int, ...]) -> Encoder:
    """The configured encoder; its final module is ``loss.normalize``."""
    m = cfg.model
    return build_encoder(m.encoder, input_shape, m.out_dim, head=m.head,
                         normalize=cfg.loss.normalize, head_dim=m.head_dim,
                         head_hidden=m.head_hidden, **m.options)


def _optimizer(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                           weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based): linear warm-up
    ``(step + 1) / warmup`` over ``warmup`` iterations, then cosine from 1 to ``min_ratio`` over
    the remaining ones (or 1 for ``constant``)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def embed(model: Encoder, x: torch.Tensor, features: str = "output",
          batch_size: int = 1024) -> torch.Tensor:
    """Embeddings of ``x`` in eval mode, in batches (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        parts = [model.embed(x[i : i + batch_size], features)
                 for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(parts)


def _subset(y: torch.Tensor, limit: int | None, seed: int, num_classes: int) -> torch.Tensor:
    """A fixed random subset of at most ``limit`` indices holding every class present in y."""
    n = y.shape[0]
    if limit is None or limit >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:limit]
    present = set(torch.unique(y).tolist())
    missing = present - set(torch.unique(y[idx]).tolist())
    if missing:
        extra = [int(torch.nonzero(y == c)[0]) for c in sorted(missing)]
        idx = torch.cat([idx[: limit - len(extra)], torch.tensor(extra, dtype=torch.int64)])
    return torch.sort(idx).values


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _views(data_x: torch.Tensor, data_y: torch.Tensor, idx: torch.Tensor, mode: str,
           generator: torch.Generator, augment: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from contrastlab.data.pairs import make_views

    x1, x2 = make_views(data_x, data_y, idx, mode, generator, augment=augment)
    return torch.as_tensor(x1, dtype=torch.float32), torch.as_tensor(x2, dtype=torch.float32)


def _supervised_negatives(loss: LossConfig) -> bool:
    return loss.name in ("scl", "hscl") or (
        loss.name == "nce" and loss.sampler in ("other-class", "tilted-other-class"))


def _pool(y: torch.Tensor, size: int, generator: torch.Generator, anchor_labels: torch.Tensor,
          supervised: bool, replace: bool) -> torch.Tensor:
    from contrastlab.data.pairs import negative_pool

    # distinct samples unless asked otherwise or impossible (a pool larger than the data set)
    replace = replace or size > int(y.shape[0])
    pool = negative_pool(y, size, generator, anchor_labels=anchor_labels, supervised=supervised,
                         replace=replace)
    return torch.as_tensor(pool, dtype=torch.int64)


def _augment_pool(x: torch.Tensor, augment: Any, generator: torch.Generator) -> torch.Tensor:
    """Pool members get one augmented view each in ``augment`` mode (negatives are views too)."""
    if augment is None:
        return x
    from contrastlab.data.pairs import apply_augment

    return torch.as_tensor(apply_augment(augment, x, generator), dtype=torch.float32)


def _step_inputs(
    cfg: ExperimentConfig, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
    generator: torch.Generator, augment: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(inputs to encode: [x1; x2; pool], the batch labels, the pool labels or None, the pool's
    data-set indices or None)."""
    x1, x2 = _views(x, y, idx, cfg.data.pairs, generator, augment)
    parts = [x1, x2]
    pool_labels = pidx = None
    if cfg.loss.name in EXPLICIT_K_LOSSES:
        assert cfg.loss.pool_size is not None
        pidx = _pool(y, cfg.loss.pool_size, generator, y[idx], _supervised_negatives(cfg.loss),
                     cfg.loss.replacement)
        parts.append(_augment_pool(x[pidx], augment, generator))
        pool_labels = y[pidx]
    return torch.cat(parts), y[idx], pool_labels, pidx


_STEP_BATCH_ARGS = {"z1": "features", "z2": "features", "labels": "labels"}
_STEP_BATCH_ARGS_POOL = {**_STEP_BATCH_ARGS, "pool": "features", "pool_labels": "labels"}


def _step_loss(
    cfg: ExperimentConfig, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
    pool_labels: torch.Tensor | None, generator: torch.Generator, rank: int = 0, world: int = 1,
    stats: dict[str, float] | None = None, pool_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The step's loss. ``inputs`` is the *global* ``[x1; x2; pool]`` (every rank builds the same
    one from the same generator); with ``world > 1`` rank r encodes its contiguous slice of the
    B views (and of the pool when P is divisible by the world size; otherwise the whole pool,
    replicated) and the loss is computed on the gathered global batch
    (:func:`contrastlab.distributed.call_gathered`): the same value as the single-process step,
    and, after DDP's gradient average, the same gradient."""
    b = labels.shape[0]
    if world == 1:
        z = model(inputs)
        if not bool(torch.isfinite(z).all()):
            raise FloatingPointError("non-finite embeddings (NaN or inf) from the encoder")
        pool = z[2 * b :] if pool_labels is not None else None
        return contrastive_loss(cfg.loss, z[:b], z[b : 2 * b], labels, pool, pool_labels,
                                generator, stats=stats, pool_ids=pool_ids)
    from contrastlab.distributed import call_gathered

    bl = b // world
    lo, hi = rank * bl, (rank + 1) * bl
    parts = [inputs[lo:hi], inputs[b + lo : b + hi]]
    p = inputs.shape[0] - 2 * b
    shard_pool = pool_labels is not None and p % world == 0
    local_pool_labels = pool_labels
    if pool_labels is not None:
        if shard_pool:
            pl = p // world
            parts.append(inputs[2 * b + rank * pl : 2 * b + (rank + 1) * pl])
            local_pool_labels = pool_labels[rank * pl : (rank + 1) * pl]
        else:
            parts.append(inputs[2 * b :])
    z = model(torch.cat(parts))
    if not _all_ranks_ok(bool(torch.isfinite(z).all()), world):  # every rank stops together
        raise FloatingPointError("non-finite embeddings (NaN or inf) from the encoder")
    local_pool = z[2 * bl :] if pool_labels is not None else None
    spec = _STEP_BATCH_ARGS_POOL if shard_pool else _STEP_BATCH_ARGS
    return call_gathered(contrastive_loss, spec, cfg.loss, z[:bl], z[bl : 2 * bl],
                         labels[lo:hi], local_pool, local_pool_labels, generator,
                         stats=stats, pool_ids=pool_ids)


@torch.no_grad()
def heldout_loss(cfg: ExperimentConfig, model: Encoder, x: torch.Tensor, y: torch.Tensor,
                 seed: int, augment: Any = None) -> float:
    """The training loss on held-out data (eval mode; fixed draws from ``seed``): the mean over
    consecutive batches of ``train.batch_size`` test samples (a single batch if fewer)."""
    g = torch.Generator().manual_seed(seed)
    b = min(cfg.train.batch_size, x.shape[0])
    was = model.training
    model.eval()
    try:
        values = []
        for start in range(0, max(1, x.shape[0] - b + 1), b):
            idx = torch.arange(start, start + b)
            inputs, labels, pool_labels, _ = _step_inputs(cfg, x, y, idx, g, augment)
            values.append(float(_step_loss(cfg, model, inputs, labels, pool_labels, g)))
    finally:
        model.train(was)
    return sum(values) / len(values)


def evaluate(
    cfg: ExperimentConfig,
    model: Encoder,
    data: _Data,
    epoch: int,
    augment: Any = None,
    final: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-epoch metrics (and, when ``final``, the full reports) on fixed evaluation subsets.

    Returns (metrics, reports); raises FloatingPointError on non-finite embeddings.
    """
    from contrastlab.evaluation import downstream_report, linear_probe, mean_classifier
    from contrastlab.geometry import geometry_report
    from contrastlab.theory.downstream import downstream_temperature

    # R_mu-supv and L_sup at the loss's temperature (one convention: theory/downstream.py)
    t_down = downstream_temperature(cfg.loss.score, float(
        cfg.loss.temperature if cfg.loss.temperature is not None else 1.0))

    e = cfg.eval
    tr = _subset(data.y_train, e.max_train, cfg.seed + 7919, data.num_classes)
    te = _subset(data.y_test, e.max_test, cfg.seed + 104729, data.num_classes)
    Htr = embed(model, data.x_train[tr], e.features, e.batch_size)
    Hte = embed(model, data.x_test[te], e.features, e.batch_size)
    ytr, yte = data.y_train[tr], data.y_test[te]
    if not (bool(torch.isfinite(Htr).all()) and bool(torch.isfinite(Hte).all())):
        raise FloatingPointError(f"non-finite embeddings at epoch {epoch}")
    c = data.num_classes
    metrics: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    if e.geometry:
        try:
            geo = geometry_report(Htr, ytr, num_classes=c)
            for key in GEOMETRY_METRICS:
                metrics[key] = _finite_or_none(getattr(geo, key))
        except ValueError as exc:  # e.g. all class means coincide (complete collapse)
            metrics["geometry_error"] = str(exc).splitlines()[0]
    if e.mean_classifier:
        mc = mean_classifier(Htr, ytr, Hte, yte, num_classes=c, temperature=t_down)
        metrics["mc_acc"], metrics["mc_ce"] = mc.accuracy, _finite_or_none(mc.cross_entropy)
    if e.linear_probe:
        if e.probe_weight_decay is not None:
            lp = linear_probe(Htr, ytr, Hte, yte, num_classes=c, weight_decay=e.probe_weight_decay,
                              seed=cfg.seed)
        else:
            lp = linear_probe(Htr, ytr, Hte, yte, num_classes=c, seed=cfg.seed)
        metrics["probe_acc"], metrics["probe_ce"] = lp.accuracy, _finite_or_none(lp.cross_entropy)
    if e.heldout_loss:
        te_x, te_y = data.x_test[te], data.y_test[te]
        metrics["heldout_loss"] = _finite_or_none(
            heldout_loss(cfg, model, te_x, te_y, cfg.seed * 1_000_003 + 17, augment))
    if final:
        ds = downstream_report(
            Htr, ytr, Hte, yte, num_classes=c, probes=tuple(e.final_probes), seed=cfg.seed,
            lsup=e.final_lsup, knn=e.final_knn, temperature=t_down,
        )
        classifier = None
        if ds.linear_probe:
            lp0 = next(iter(ds.linear_probe.values()))
            classifier = (lp0.weight, lp0.bias_vector) if lp0.bias_vector is not None \
                else lp0.weight
        reports["downstream"] = ds.to_dict()
        try:
            reports["geometry"] = geometry_report(Htr, ytr, num_classes=c,
                                                  classifier=classifier).to_dict()
        except ValueError as exc:
            reports["geometry"] = {"error": str(exc).splitlines()[0]}
    return metrics, reports


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        status: ``done``, ``nan`` (a non-finite loss or embedding stopped the run) or
            ``stopped`` (``stop_after`` reached; resume by calling :func:`train` again).
        epochs: per-epoch metrics (dicts with ``epoch``, ``train_loss``, ``lr`` and the
            evaluation metrics of that epoch).
        reports: the final ``geometry`` and ``downstream`` reports (``to_dict()``), when done.
        seconds: wall time of this call; ``epoch_seconds``: per epoch trained in this call.
        resumed_from: the epoch the run resumed from (0: a fresh start).
        error: what stopped a ``nan`` run.
        model: the trained encoder.
        run_id: the config's run id.
    """

    status: str
    epochs: list[dict[str, Any]]
    reports: dict[str, Any]
    seconds: float
    resumed_from: int
    model: Encoder
    run_id: str
    error: str | None = None
    epoch_seconds: dict[int, float] = field(default_factory=dict)


def run_threads(cfg: ExperimentConfig) -> int:
    """The intra-op thread count a run computes with: ``train.threads``, 1 when unset."""
    return 1 if cfg.train.threads is None else int(cfg.train.threads)


@contextmanager
def _run_context(cfg: ExperimentConfig) -> Iterator[None]:
    """Fork the global RNG, set the thread count and determinism for the run, restore after.

    The run computes with ``train.threads`` intra-op threads, 1 when unset, whatever the process
    had: on the CPU a full reduction and a convolution's weight gradient are split across threads,
    so their round-off (and, through training, every metric) depends on the thread count. With
    one fixed count a run gives the same numbers under any worker count and executor."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        try:
            torch.set_num_threads(run_threads(cfg))
            if cfg.train.deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det, warn_only=det_warn)


def _progress(total: int, initial: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return None
    # disable=None: no bar when stderr is not a terminal (logs, CI, sweep workers)
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                file=sys.stderr, disable=None)


def _save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """``directory/checkpoint.pt``, checksummed and written atomically; the former one is kept
    as ``checkpoint.prev.pt`` (:func:`contrastlab.checkpoint.save`)."""
    checkpoint.save(directory, state)


def _load_checkpoint(directory: Path, expected: checkpoint.Expected) -> dict[str, Any] | None:
    """The newest verified checkpoint of ``directory`` that fits ``expected``, or None; any
    other is set aside and named on stderr (:func:`contrastlab.checkpoint.load`)."""
    found = checkpoint.load(directory, lambda s: checkpoint.check_training_state(s, expected))
    return None if found is None else found[1]


def _all_ranks_ok(ok: bool, world: int) -> bool:
    """Whether ``ok`` holds on every rank (a MIN all_reduce; ``ok`` itself when world = 1)."""
    if world == 1:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def train(
    cfg: ExperimentConfig,
    dataset: Any = None,
    checkpoint_dir: str | Path | None = None,
    *,
    on_epoch: Callable[[int, dict[str, Any], float], None] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    recorded: Mapping[int, Mapping[str, Any]] | None = None,
) -> TrainResult:
    """Train the configured encoder (module docstring); resume from ``checkpoint_dir`` if it
    holds a checkpoint of the same run.

    Args:
        cfg: the config (resolved again here; the sweep grid is ignored).
        dataset: a :class:`contrastlab.data.registry.Dataset` (default: loaded from ``cfg.data``).
        checkpoint_dir: where ``checkpoint.pt`` is written after every epoch, the previous
            one kept as ``checkpoint.prev.pt`` (None: none); the newest one that verifies is
            resumed from, any other is set aside and named on stderr
            (:mod:`contrastlab.checkpoint`).
        on_epoch: called as ``on_epoch(epoch, metrics, seconds)`` after every epoch, before
            that epoch's checkpoint is written.
        progress: show a progress bar (default ``cfg.train.progress``).
        stop_after: stop (status ``stopped``) once this many epochs are complete.
        recorded: the per-epoch metrics the results store holds for this run (epoch ->
            metrics; what ``on_epoch`` recorded), or None: a checkpoint with an epoch the store
            has not recorded, or other metrics for one it has, is refused (set aside).

    Data parallel (``torchrun --nproc_per_node=W``, or any initialized process group): the model
    is wrapped in ``DistributedDataParallel``; every rank draws the same global batch of
    ``train.batch_size`` (which must be divisible by W), encodes its contiguous 1/W slice of the
    views (and of the pool, when its size is divisible by W) and computes the loss on the
    gathered global batch, so the run follows the single-process one up to float rounding
    (BatchNorm layers use per-rank statistics, the one exception). Evaluation, ``on_epoch``,
    progress output and checkpoints are done by rank 0 only; the other ranks return the
    training loss and learning rate per epoch and no reports. Rank 0 reads the checkpoint in
    ``checkpoint_dir`` and sends it to the other ranks, so only rank 0 needs to see it.
    """
    t_start = time.perf_counter()
    cfg = parse_config(cfg)
    rank, world, created_group = init_from_env()
    try:
        return _train(cfg, dataset, checkpoint_dir, on_epoch, progress, stop_after, t_start,
                      rank, world, recorded)
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    cfg: ExperimentConfig,
    dataset: Any,
    checkpoint_dir: str | Path | None,
    on_epoch: Callable[[int, dict[str, Any], float], None] | None,
    progress: bool | None,
    stop_after: int | None,
    t_start: float,
    rank: int,
    world: int,
    recorded: Mapping[int, Mapping[str, Any]] | None = None,
) -> TrainResult:
    if cfg.train.batch_size % world != 0:
        raise ValueError(
            f"train.batch_size {cfg.train.batch_size} must be divisible by the world size "
            f"{world} (each rank takes an equal slice of the global batch)"
        )
    main = rank == 0
    rid = run_id(cfg)
    ds = load_data(cfg) if dataset is None else dataset
    data = _as_data(ds)
    if cfg.data.shuffle_labels:
        data = shuffled_labels(data, cfg.seed if cfg.data.seed is None else cfg.data.seed)
    n_train = int(data.y_train.shape[0])
    if cfg.loss.k is not None and not cfg.loss.replacement and cfg.loss.k > n_train:
        raise ValueError(
            f"loss.k ({cfg.loss.k}) exceeds the {n_train} training samples: that many distinct "
            "negatives per anchor do not exist; set loss.replacement=true or a smaller loss.k")
    ckpt_dir = None
    if checkpoint_dir is not None and cfg.train.checkpoint:
        if main:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_dir = Path(checkpoint_dir)
    augment = None
    if cfg.data.pairs == "augment":
        from contrastlab.data.pairs import augmenter

        augment = augmenter(data.kind, **cfg.data.augment)

    with _run_context(cfg):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data.input_shape)
        opt = _optimizer(cfg, model)
        n = data.x_train.shape[0]
        b = cfg.train.batch_size
        steps = cfg.train.steps_per_epoch or max(1, n // b)
        total = steps * cfg.train.epochs
        warmup = round(cfg.optim.warmup_epochs * steps)
        min_ratio = cfg.optim.min_lr / cfg.optim.lr
        schedule = cfg.optim.schedule
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, warmup, schedule, min_ratio))
        g_data = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1)
        g_neg = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2)
        history: list[dict[str, Any]] = []
        start = 0
        state = None
        if ckpt_dir is not None and main:
            state = _load_checkpoint(ckpt_dir, checkpoint.Expected(
                run_id=rid, epochs=cfg.train.epochs, steps_per_epoch=steps, model=model,
                optimizer=opt, recorded=recorded))
        if world > 1:  # rank 0's checkpoint (written by rank 0 only) resumes every rank
            import torch.distributed as dist

            box: list[Any] = [state]
            dist.broadcast_object_list(box, src=0)
            state = box[0]
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            g_data.set_state(state["g_data"])
            g_neg.set_state(state["g_neg"])
            torch.set_rng_state(state["rng"])
            history = list(state["history"])
            start = int(state["epoch"])
        model.train()
        forward: nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(model)
        use_bar = (cfg.train.progress if progress is None else progress) and main
        desc = f"{cfg.loss.name}" + (f" k={cfg.loss.k}" if cfg.loss.k else "")
        bar = _progress(total, start * steps, use_bar, desc)
        status, error = "done", None
        epoch_seconds: dict[int, float] = {}
        reports: dict[str, Any] = {}
        try:
            for epoch in range(start, cfg.train.epochs):
                if stop_after is not None and epoch >= stop_after:
                    status = "stopped"
                    break
                t0 = time.perf_counter()
                order = torch.cat([torch.randperm(n, generator=g_data)
                                   for _ in range(-(-steps * b // n))])
                loss_sum = 0.0
                draw_stats: dict[str, float] = {}
                for s in range(steps):
                    idx = order[s * b : (s + 1) * b]
                    inputs, labels, pool_labels, pool_ids = _step_inputs(
                        cfg, data.x_train, data.y_train, idx, g_data, augment)
                    try:
                        loss = _step_loss(cfg, forward, inputs, labels, pool_labels, g_neg,
                                          rank, world, stats=draw_stats if s == 0 else None,
                                          pool_ids=pool_ids)
                    except FloatingPointError as exc:
                        status = "nan"
                        error = f"{exc} at epoch {epoch + 1}, step {s + 1}"
                        break
                    if not bool(torch.isfinite(loss)):
                        status = "nan"
                        error = f"non-finite loss at epoch {epoch + 1}, step {s + 1}"
                        break
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.train.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                    opt.step()
                    sched.step()
                    loss_sum += float(loss.detach())
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.4f}")
                if status == "nan":
                    break
                metrics: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / steps,
                    "lr": opt.param_groups[0]["lr"],
                    "distinct_negatives": draw_stats.get("distinct_negatives"),
                }
                last = epoch + 1 == cfg.train.epochs
                every = cfg.eval.every
                if last or (every > 0 and (epoch + 1) % every == 0):
                    eval_error = None
                    if main:
                        try:
                            evm, reports = evaluate(cfg, model, data, epoch + 1, augment,
                                                    final=last)
                            metrics.update(evm)
                        except FloatingPointError as exc:
                            eval_error = str(exc)
                    if not _all_ranks_ok(eval_error is None, world):
                        status = "nan"
                        error = eval_error or "non-finite embeddings (evaluated on rank 0)"
                        break
                if last and main and cfg.eval.heldout_loss:
                    conv = convergence([*history, metrics], cfg.train.epochs)
                    metrics["converged"] = float(conv["converged"])
                    reports["convergence"] = conv
                history.append(metrics)
                epoch_seconds[epoch + 1] = time.perf_counter() - t0
                if on_epoch is not None and main:
                    on_epoch(epoch + 1, metrics, epoch_seconds[epoch + 1])
                if ckpt_dir is not None and main:  # after on_epoch: never ahead of the store
                    _save_checkpoint(ckpt_dir, {
                        "run_id": rid,
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "g_data": g_data.get_state(),
                        "g_neg": g_neg.get_state(),
                        "rng": torch.get_rng_state(),
                        "history": history,
                    })
                if use_bar and (bar is None or bar.disable):
                    print(f"[{desc}] epoch {epoch + 1}/{cfg.train.epochs} "
                          f"loss {metrics['train_loss']:.4f}", file=sys.stderr)
            else:
                if start == cfg.train.epochs and status == "done" and main:
                    # resumed after the last epoch: recompute the final reports
                    _, reports = evaluate(cfg, model, data, start, augment, final=True)
                    if cfg.eval.heldout_loss:
                        reports["convergence"] = convergence(history, cfg.train.epochs)
        finally:
            if bar is not None:
                bar.close()
    return TrainResult(
        status=status,
        epochs=history,
        reports=reports if status == "done" else {},
        seconds=time.perf_counter() - t_start,
        resumed_from=start,
        model=model,
        run_id=rid,
        error=error,
        epoch_seconds=epoch_seconds,
    )

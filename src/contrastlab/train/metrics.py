"""Evaluation during and after training, on held-out embeddings of fixed subsets.

Per-epoch metrics (:func:`evaluate`; the loop calls it every ``eval.every`` epochs and after the
last): on embeddings (:func:`embed`) of a fixed subset of the training and test sets, the
geometry report's scalars (:data:`GEOMETRY_METRICS`: ``nc1``, ``etf_distance``,
``effective_rank``, ...), the mean classifier (``mc_acc``, ``mc_ce``), a linear probe
(``probe_acc``, ``probe_ce``) and the contrastive loss on the test set (:func:`heldout_loss`,
fixed draws). After the last epoch the full :func:`contrastlab.geometry.geometry_report` and
:func:`contrastlab.evaluation.downstream_report` too. Evaluation uses its own generators, seeded
from the run's seed, so it never perturbs training; non-finite values become None, non-finite
embeddings raise ``FloatingPointError``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from contrastlab.data.base import Dataset
from contrastlab.models import Encoder
from contrastlab.train.config import ExperimentConfig
from contrastlab.train.step import step_inputs, step_loss

__all__ = ["GEOMETRY_METRICS", "embed", "evaluate", "heldout_loss"]

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


@torch.no_grad()
def embed(model: Encoder, x: torch.Tensor, features: str = "output",
          batch_size: int = 1024) -> torch.Tensor:
    """Embeddings of ``x`` in eval mode, in batches (the model's mode is restored), computed on
    the model's device and returned on the CPU."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:  # on the model's device, in float32; the embeddings come back to the CPU
        parts = [model.embed(x[i : i + batch_size].to(device), features).float().cpu()
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
            inputs, labels, pool_labels, _ = step_inputs(cfg, x, y, idx, g, augment,
                                                         heldout=True)
            values.append(float(step_loss(cfg, model, inputs, labels, pool_labels, g)))
    finally:
        model.train(was)
    return sum(values) / len(values)


class _Subsets(NamedTuple):
    """The evaluation subsets of one epoch: embeddings and labels (train, test), their indices."""

    Htr: torch.Tensor
    ytr: torch.Tensor
    Hte: torch.Tensor
    yte: torch.Tensor
    te: torch.Tensor
    tr: torch.Tensor


def _embed_subsets(cfg: ExperimentConfig, model: Encoder, data: Dataset,
                   epoch: int) -> _Subsets:
    e = cfg.eval
    tr = _subset(data.y_train, e.max_train, cfg.seed + 7919, data.num_classes)
    te = _subset(data.y_test, e.max_test, cfg.seed + 104729, data.num_classes)
    Htr = embed(model, data.x_train[tr], e.features, e.batch_size)
    Hte = embed(model, data.x_test[te], e.features, e.batch_size)
    if not (bool(torch.isfinite(Htr).all()) and bool(torch.isfinite(Hte).all())):
        raise FloatingPointError(f"non-finite embeddings at epoch {epoch}")
    return _Subsets(Htr, data.y_train[tr], Hte, data.y_test[te], te, tr)


def _epoch_metrics(cfg: ExperimentConfig, model: Encoder, data: Dataset, sub: _Subsets,
                   augment: Any, t_down: float) -> dict[str, Any]:
    """The per-epoch scalars: geometry, mean classifier, linear probe, held-out loss."""
    from contrastlab.evaluation import linear_probe, mean_classifier
    from contrastlab.geometry import geometry_report

    e, c = cfg.eval, data.num_classes
    Htr, ytr, Hte, yte = sub.Htr, sub.ytr, sub.Hte, sub.yte
    metrics: dict[str, Any] = {}
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
        te_x, te_y = data.x_test[sub.te], data.y_test[sub.te]
        metrics["heldout_loss"] = _finite_or_none(
            heldout_loss(cfg, model, te_x, te_y, cfg.seed * 1_000_003 + 17, augment))
    return metrics


#: Nozawa & Sato's bound: augmented views averaged per sample (their mean over augmentations),
#: and random partitions of the test subset into batches of K + 1 (their passes over the data)
NS_AUGMENTATIONS = 4
NS_ROUNDS = 10


@torch.no_grad()
def _nozawa_sato(cfg: ExperimentConfig, model: Encoder, data: Dataset, sub: _Subsets,
                augment: Any, temperature: float) -> dict[str, Any]:
    """Nozawa & Sato's bound on the test subset at K + 1 = ``train.batch_size`` (at most the
    subset's size), with the class means of the training subset, from ``NS_AUGMENTATIONS``
    augmented views of every sample (fixed draws from the run's seed) of the features the loss
    sees (``output``): :func:`contrastlab.evaluation.nozawa_sato.nozawa_sato_report`."""
    from contrastlab.data.pairs import apply_augment
    from contrastlab.evaluation.nozawa_sato import nozawa_sato_report

    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 31)
    bs = cfg.eval.batch_size

    def views(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.nn.functional.normalize(embed(model, apply_augment(augment, x, g),
                                                    "output", bs), dim=1)
                for _ in range(NS_AUGMENTATIONS)]

    c = data.num_classes
    vtr = views(data.x_train[sub.tr])
    mean_tr = torch.stack(vtr).mean(0).double()
    sums = torch.zeros(c, mean_tr.shape[1], dtype=torch.float64).index_add_(0, sub.ytr, mean_tr)
    counts = torch.bincount(sub.ytr, minlength=c).clamp(min=1).to(torch.float64)
    vte = views(data.x_test[sub.te])
    report = nozawa_sato_report(
        vte[0], vte[1], torch.stack(vte).mean(0), sub.yte, sums / counts[:, None],
        min(cfg.train.batch_size, int(sub.yte.shape[0])), temperature, g, NS_ROUNDS)
    return report.to_dict()


def _final_reports(cfg: ExperimentConfig, sub: _Subsets, num_classes: int,
                   t_down: float) -> dict[str, Any]:
    """The full downstream and geometry reports (``to_dict()``) of the final epoch."""
    from contrastlab.evaluation import downstream_report
    from contrastlab.geometry import geometry_report

    e, c = cfg.eval, num_classes
    ds = downstream_report(
        sub.Htr, sub.ytr, sub.Hte, sub.yte, num_classes=c, probes=tuple(e.final_probes),
        seed=cfg.seed, lsup=e.final_lsup, knn=e.final_knn, temperature=t_down,
    )
    classifier = None
    if ds.linear_probe:
        lp0 = next(iter(ds.linear_probe.values()))
        classifier = (lp0.weight, lp0.bias_vector) if lp0.bias_vector is not None \
            else lp0.weight
    reports: dict[str, Any] = {"downstream": ds.to_dict()}
    try:
        reports["geometry"] = geometry_report(sub.Htr, sub.ytr, num_classes=c,
                                              classifier=classifier).to_dict()
    except ValueError as exc:
        reports["geometry"] = {"error": str(exc).splitlines()[0]}
    return reports


def evaluate(
    cfg: ExperimentConfig,
    model: Encoder,
    data: Dataset,
    epoch: int,
    augment: Any = None,
    final: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-epoch metrics (and, when ``final``, the full reports) on fixed evaluation subsets.

    Returns (metrics, reports); raises FloatingPointError on non-finite embeddings.
    """
    from contrastlab.theory.downstream import downstream_temperature

    # R_mu-supv and L_sup at the loss's temperature (one convention: theory/downstream.py)
    t_down = downstream_temperature(cfg.loss.score, float(
        cfg.loss.temperature if cfg.loss.temperature is not None else 1.0))
    sub = _embed_subsets(cfg, model, data, epoch)
    metrics = _epoch_metrics(cfg, model, data, sub, augment, t_down)
    reports = _final_reports(cfg, sub, data.num_classes, t_down) if final else {}
    if final and cfg.eval.final_nozawa_sato:
        reports["nozawa_sato"] = _nozawa_sato(cfg, model, data, sub, augment, t_down)
    return metrics, reports

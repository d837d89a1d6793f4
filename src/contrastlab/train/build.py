"""The parts a run is built from, given its resolved config: the data (:func:`load_data`,
:func:`as_train_data`: a :class:`~contrastlab.data.base.Dataset`; the shuffled-label
control), the encoder (:func:`build_model`; :func:`sync_batchnorm`), the
optimizer and its learning-rate schedule (:func:`build_optimizer`, :func:`build_scheduler`,
:func:`lr_factor`).

Optimization: Adam or SGD; the learning rate rises linearly over ``optim.warmup_epochs`` and then
follows a cosine from ``lr`` to ``min_lr`` (or stays constant), stepped every iteration.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, cast

import torch
from torch import nn

from contrastlab.data.base import Dataset
from contrastlab.models import Encoder, build_encoder
from contrastlab.train.config import ExperimentConfig

__all__ = [
    "as_train_data",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "load_data",
    "lr_factor",
    "shuffled_labels",
    "sync_batchnorm",
]


def load_data(cfg: ExperimentConfig) -> Any:
    """Load the configured data set through the registry (seeded by ``data.seed``, default
    the run's ``seed``)."""
    from contrastlab.data.registry import load_dataset

    seed = cfg.seed if cfg.data.seed is None else cfg.data.seed
    return load_dataset(cfg.data.name, root=cfg.data.root, seed=seed, **cfg.data.options)


def as_train_data(ds: Any) -> Dataset:
    """The data set the trainer works on: a :class:`contrastlab.data.base.Dataset` as is, or
    anything with its fields (arrays or tensors) converted to one (float32 inputs, int64 labels;
    its checks apply)."""
    if isinstance(ds, Dataset):
        return ds

    def t(a: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(a).to(dtype)

    return Dataset(
        name=str(getattr(ds, "name", "data")),
        x_train=t(ds.x_train, torch.float32),
        y_train=t(ds.y_train, torch.int64),
        x_test=t(ds.x_test, torch.float32),
        y_test=t(ds.y_test, torch.int64),
        num_classes=int(ds.num_classes),
        kind=str(ds.kind),
    )


def shuffled_labels(data: Dataset, seed: int) -> Dataset:
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


def sync_batchnorm(cfg: ExperimentConfig, model: Encoder, world: int) -> Encoder:
    """``model`` for a data-parallel run of ``world`` processes: with ``train.sync_batchnorm``
    and ``world`` > 1 its BatchNorm layers become ``torch.nn.SyncBatchNorm`` (the same
    parameters and buffers, so checkpoints keep their keys; batch statistics over the global
    batch); otherwise ``model`` as it is."""
    if cfg.train.sync_batchnorm and world > 1:
        return cast(Encoder, nn.SyncBatchNorm.convert_sync_batchnorm(model))
    return model


def build_optimizer(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer (``optim``: Adam or SGD) over the model's parameters."""
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


def build_scheduler(cfg: ExperimentConfig, opt: torch.optim.Optimizer,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of the run (:func:`lr_factor`), stepped every iteration."""
    total = steps_per_epoch * cfg.train.epochs
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
    min_ratio = cfg.optim.min_lr / cfg.optim.lr
    schedule = cfg.optim.schedule
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, schedule, min_ratio))

"""Compatibility alias of :mod:`contrastlab.train` (the trainer became a package; issue 15): the
names that code and tests import from ``contrastlab.training``, re-exported from their owners.
Import from :mod:`contrastlab.train` in new code.

``_as_data`` (now :func:`contrastlab.train.build.as_train_data`) keeps its former name because
tests use it. To replace a function the loop calls (e.g. in a test), patch it in the module that
calls it (``contrastlab.train.loop.build_model``, ``contrastlab.train.step.contrastive_loss``).
"""

from __future__ import annotations

from contrastlab.losses.pool import pool_hard_contrastive, pool_nce
from contrastlab.train.build import (
    TrainData,
    as_train_data,
    build_model,
    load_data,
    lr_factor,
    shuffled_labels,
)
from contrastlab.train.loop import CHECKPOINT_NAME, TrainResult, run_threads, train
from contrastlab.train.metrics import GEOMETRY_METRICS, embed, evaluate, heldout_loss
from contrastlab.train.step import contrastive_loss

__all__ = [
    "CHECKPOINT_NAME",
    "GEOMETRY_METRICS",
    "TrainData",
    "TrainResult",
    "build_model",
    "contrastive_loss",
    "embed",
    "evaluate",
    "heldout_loss",
    "load_data",
    "lr_factor",
    "pool_hard_contrastive",
    "pool_nce",
    "run_threads",
    "shuffled_labels",
    "train",
]

_as_data = as_train_data  # the former name, which tests use

"""The trainer: one run of a contrastive loss, from its config to its metrics and reports.

Modules, low to high (each imports only those above it in this list, and the library below:
losses, data, models, geometry, evaluation, checkpoint, convergence):

- :mod:`~contrastlab.train.config`: the run configuration (pydantic models, YAML loading,
  ``--set`` overrides, resolution, sweep expansion and the run id);
- :mod:`~contrastlab.train.build`: the parts a run is built from: its data (:func:`load_data`, a
  :class:`contrastlab.data.base.Dataset`), encoder (:func:`build_model`), optimizer and
  learning-rate schedule (:func:`lr_factor`);
- :mod:`~contrastlab.train.queue`: the queue of negatives (MoCo v2) and its momentum key encoder;
- :mod:`~contrastlab.train.step`: one training step: its inputs (views and pool) and its loss
  (:func:`contrastive_loss`: the configured loss's registry spec,
  :mod:`contrastlab.losses.registry`; the trainer holds no loss math), single-process or data
  parallel;
- :mod:`~contrastlab.train.metrics`: evaluation on held-out embeddings (:func:`evaluate`,
  :func:`heldout_loss`, :func:`embed`);
- :mod:`~contrastlab.train.callbacks`: the callbacks of the loop (:class:`Callback`: hooks
  ``on_fit_start``, ``on_step``, ``on_epoch``, ``on_fit_end``; :class:`FitState`);
- :mod:`~contrastlab.train.loggers`: the loggers of ``train.loggers`` (``csv``, ``tensorboard``,
  ``wandb``, ``mlflow``), callbacks that log the per-epoch metrics and the resolved config;
- :mod:`~contrastlab.train.loop`: the loop (:func:`train`, :class:`TrainResult`): seeded,
  checkpointed after every epoch, resumable, data parallel under ``torchrun``.

The names below are loaded on first use, so that importing one module of the package does not
import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contrastlab.train.build import (
        build_model,
        load_data,
        lr_factor,
        shuffled_labels,
    )
    from contrastlab.train.callbacks import Callback, FitState
    from contrastlab.train.config import (
        ConfigError,
        ExperimentConfig,
        load_config,
        parse_config,
        run_id,
    )
    from contrastlab.train.loggers import (
        CSVLogger,
        MLflowLogger,
        TensorBoardLogger,
        WandbLogger,
        build_loggers,
    )
    from contrastlab.train.loop import (
        CHECKPOINT_NAME,
        TrainResult,
        join_group,
        run_threads,
        train,
    )
    from contrastlab.train.metrics import GEOMETRY_METRICS, embed, evaluate, heldout_loss
    from contrastlab.train.step import contrastive_loss

#: public name -> the module of this package that owns it
_OWNERS = {
    "build_model": "build",
    "load_data": "build",
    "lr_factor": "build",
    "shuffled_labels": "build",
    "Callback": "callbacks",
    "FitState": "callbacks",
    "ConfigError": "config",
    "ExperimentConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "run_id": "config",
    "CSVLogger": "loggers",
    "MLflowLogger": "loggers",
    "TensorBoardLogger": "loggers",
    "WandbLogger": "loggers",
    "build_loggers": "loggers",
    "CHECKPOINT_NAME": "loop",
    "TrainResult": "loop",
    "join_group": "loop",
    "run_threads": "loop",
    "train": "loop",
    "GEOMETRY_METRICS": "metrics",
    "embed": "metrics",
    "evaluate": "metrics",
    "heldout_loss": "metrics",
    "contrastive_loss": "step",
}

__all__ = [
    "CHECKPOINT_NAME",
    "GEOMETRY_METRICS",
    "CSVLogger",
    "Callback",
    "ConfigError",
    "ExperimentConfig",
    "FitState",
    "MLflowLogger",
    "TensorBoardLogger",
    "TrainResult",
    "WandbLogger",
    "build_loggers",
    "build_model",
    "contrastive_loss",
    "embed",
    "evaluate",
    "heldout_loss",
    "join_group",
    "load_config",
    "load_data",
    "lr_factor",
    "parse_config",
    "run_id",
    "run_threads",
    "shuffled_labels",
    "train",
]


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{owner}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_OWNERS})

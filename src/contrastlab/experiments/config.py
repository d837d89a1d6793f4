"""Compatibility alias of :mod:`contrastlab.train.config` (the run configuration moved there,
to the trainer that consumes it; issue 15). Import from :mod:`contrastlab.train.config` in new
code.

``_hashed`` (now :func:`contrastlab.train.config.hashed_config`) is kept under its former name
because tests import it from here.
"""

from __future__ import annotations

from contrastlab.train.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
    apply_overrides,
    expand_sweep,
    hashed_config,
    load_config,
    parse_config,
    parse_override,
    read_yaml,
    run_config_dict,
    run_id,
    step_memory_bytes,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "TrainConfig",
    "apply_overrides",
    "expand_sweep",
    "hashed_config",
    "load_config",
    "parse_config",
    "parse_override",
    "read_yaml",
    "run_config_dict",
    "run_id",
    "step_memory_bytes",
]

_hashed = hashed_config  # the former name, which tests import

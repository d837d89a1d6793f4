"""The run configuration: pydantic models loaded from YAML, with dotted ``--set`` overrides.

What the trainer consumes (:func:`contrastlab.train.train`), so it lives with it; the experiments
layer (runs, sweeps, the results store) builds on it.

A config has the sections ``data``, ``model``, ``loss``, ``optim``, ``train``, ``eval``,
``output``, a ``seed`` and an optional ``sweep`` grid (dotted keys -> lists of values)::

    seed: 0
    data:  {name: synthetic, options: {classes: 4, dim: 8}, pairs: latent}
    model: {encoder: mlp, out_dim: 3, head: none}
    loss:  {name: hucl, k: 64, beta: 2.0, temperature: 1.0, normalize: sphere}
    optim: {name: adam, lr: 0.001, schedule: cosine, warmup_epochs: 1}
    train: {epochs: 10, batch_size: 128}
    eval:  {every: 1}
    sweep: {loss.k: [1, 4, 16, 64], seed: [0, 1, 2]}

:func:`load_config` reads a YAML file, applies ``a.b=value`` overrides (values parsed with YAML
semantics, so ``loss.k=16`` is an int, ``loss.exact=true`` a bool and ``sweep.loss.k=[1,4]`` a
list), validates, and *resolves* the config:

- defaults that depend on the loss are filled in (the temperature: 0.5 for ``infonce`` and
  ``debiased-hard``, 0.1 for ``supcon``, 1.0 otherwise; beta 1.0 for ``hscl``/``hucl``/
  ``debiased-hard``; ``tau_plus`` 0.1 for ``debiased-hard``; the negative pool size
  ``max(k, train.batch_size)`` for the explicit-k losses; the implied sampler);
- ``loss.replacement`` (default false): an explicit-k loss gives each anchor k *distinct*
  negatives, drawn from the pool without replacement by successive sampling (each draw
  proportional to the sampler's weights among the pool members not yet drawn; for ``uniform`` a
  uniform random k-subset; :mod:`contrastlab.losses.samplers`), from a pool of distinct samples,
  so ``loss.pool_size`` must be >= ``loss.k``; ``true`` draws them i.i.d. with replacement (Jiang
  et al.'s law and the behaviour of earlier versions). Neither excludes the anchor's own sample
  or its positive's from the marginal samplers' pool (the population law draws x- ~ D
  independently of x); the other-class samplers never draw them;
- ``loss.negatives_from`` (explicit-k losses): ``dataset`` (the pool above, the default),
  ``queue`` (a FIFO of ``loss.queue_size`` keys of earlier steps, default ``max(k,
  train.batch_size)``; :mod:`contrastlab.train.queue`; ``model.momentum`` > 0 adds an EMA key
  encoder) or ``batch`` (the step's 2B views); the source must hold at least k entries without
  replacement;
- fields that do not apply to the chosen loss are set to their neutral value (``k``: null for the
  in-batch losses, whose negatives are the 2B - 2 other views; ``beta``: 0 for ``scl``/``ucl``/
  ``infonce``/``supcon`` and ``nce`` with an untilted sampler; ...), so that a grid such as
  ``loss.name: [ucl, hucl]`` x ``loss.beta: [1, 5]`` does not repeat the same UCL run;
  ``replacement``: false for the in-batch losses (their 2B - 2 negatives are distinct) and true
  with ``loss.exact`` (the exact expectation over k i.i.d. draws; nothing is drawn): the
  resolved config, stored with every run, says exactly what ran, and its hash is the run id
  (:func:`run_id`).

Invalid input fails before any work with a one-line :class:`ConfigError` (a ``ValueError``)
naming the field path and the allowed values, e.g. ``loss.name must be one of 'infonce', ...;
got 'foo'`` or ``loss.k must be an integer >= 1; got 0``.

Run ids: ``loss.replacement`` enters the hash only where it changed what runs compute, i.e. for
an explicit-k loss drawing without replacement (the new default); with replacement (and for the
in-batch losses and ``loss.exact``) it is left out, so those runs keep the ids of earlier
versions, whose draws were with replacement.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from contrastlab._yaml import YamlError, load_yaml_file, load_yaml_text
from contrastlab.data.options import TYPE_WORDS
from contrastlab.data.pairs import PAIR_MODES
from contrastlab.losses.family import LOSSES as NCE_SCORES
from contrastlab.losses.hard_pairs import EXACT_MODES, NEGATIVE_REDUCTIONS
from contrastlab.losses.normalize import NORMALIZATIONS
from contrastlab.losses.registry import LossSpec, get_loss, loss_names
from contrastlab.losses.samplers import SAMPLERS

__all__ = [
    "LOGGERS",
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
    "for_gpu_workers",
    "gpu_workers",
    "hashed_config",
    "load_config",
    "parse_config",
    "parse_override",
    "run_config_dict",
    "run_id",
    "step_memory_bytes",
]

#: the ``loss`` vocabularies are the loss library's (one owner each): the names are those of the
#: loss registry (:func:`contrastlab.losses.registry.loss_names`, extensible), the samplers
#: :data:`~contrastlab.losses.samplers.SAMPLERS`, the scores
#: :data:`~contrastlab.losses.family.LOSSES`, the exact modes and reductions of
#: :mod:`contrastlab.losses.scl`, the normalizations of :mod:`contrastlab.losses.normalize`;
#: the pair modes are the data library's (:data:`contrastlab.data.pairs.PAIR_MODES`)
PRECISIONS = ("fp32", "bf16", "fp16")
#: where an explicit-k loss's negatives come from (``loss.negatives_from``)
NEGATIVE_SOURCES = ("dataset", "queue", "batch")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?|mps)$")
HEADS = ("none", "linear", "mlp")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
FEATURES = ("output", "backbone")
PROBES = ("bias-free", "bias")
#: the loggers of ``train.loggers`` (:mod:`contrastlab.train.loggers`) -> (the package each
#: needs, or None, and the pip extra of contrastlab that installs it)
LOGGERS: dict[str, tuple[str | None, str | None]] = {
    "csv": (None, None),
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
# parts of the config that do not change what a run computes: left out of the run id
_NOT_HASHED: dict[str, tuple[str, ...]] = {
    "": ("sweep", "output"),
    "data": ("workers", "pin_memory"),
    "train": ("progress", "max_memory_gb", "loggers"),
}


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming the field path."""


def _choices(allowed: Iterable[Any]) -> str:
    return ", ".join(repr(a) for a in allowed)


def _choice(value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed or isinstance(value, bool) != any(
        isinstance(a, bool) and a == value for a in allowed
    ):
        raise ValueError(f"must be one of {_choices(allowed)}; got {value!r}")
    return value


def _one_of(field: str, allowed: Sequence[Any] | Callable[[], Sequence[Any]],
            before: bool = False, optional: bool = False) -> Any:
    """A pydantic validator of ``field``: one of ``allowed`` (a callable is asked at validation
    time, e.g. the loss registry's names); ``optional``: None passes; ``before``: checked before
    pydantic's own type check (so ``exact: 1`` is refused, not read as True)."""

    def check(cls: Any, v: Any) -> Any:
        if optional and v is None:
            return None
        return _choice(v, allowed() if callable(allowed) else allowed)

    return field_validator(field, mode="before" if before else "after")(classmethod(check))


def _positive_int(value: Any, minimum: int = 1) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"must be an integer >= {minimum}; got {value!r}")
    return value


def _finite(value: Any, lower: float, strict: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"must be a finite number {'>' if strict else '>='} {lower:g}; "
                         f"got {value!r}")
    if (value <= lower) if strict else (value < lower):
        raise ValueError(f"must be {'>' if strict else '>='} {lower:g}; got {value!r}")
    return float(value)


class _Section(BaseModel):
    # strict: no coercion, so `loss.k: true` or `train.epochs: "10"` are errors, not 1 and 10;
    # frozen: a config is parsed and resolved once (:func:`parse_config`) and passed down as is
    # (``cfg.loss.k = 8`` raises; derive a new one with ``model_copy(update=...)`` and resolve it)
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, frozen=True)


class DataConfig(_Section):
    """The data set and how positive pairs are made.

    ``name`` is a name of :func:`contrastlab.data.registry.list_datasets`; ``options`` are passed
    to :func:`~contrastlab.data.registry.load_dataset` (e.g. ``classes``/``dim`` for
    ``synthetic``, ``num_samples`` for ``mnist1d``); ``root`` is the directory of the files for
    ``cifar10``/``cifar100``/``fashion-mnist``; ``seed`` the data set's seed (default: the run's
    ``seed``; fix it to vary only the training randomness across seeds). ``pairs``: ``latent``
    (x+ another sample of the class) or ``augment`` (x+ an augmented view; ``augment`` holds the
    augmenter's options, e.g. ``strength``). ``shuffle_labels``: the shuffled-label control
    (a seeded permutation of the *training* labels, so latent-class positives and the
    classifiers' training labels carry no information; test labels are kept): a correct
    pipeline must then score near chance.

    Where the batches are built (:mod:`contrastlab.train.feed`): on the training device (the
    training set moved there once) for ``latent`` pairs and the batched engine; on the host for
    ``augment`` pairs with the per-sample engine (``data.augment.engine: loop``, the default),
    there in ``workers`` DataLoader worker processes when ``workers`` > 0 (default 0: in the
    training process; no effect where the batches are built on the device). Every random
    choice of a step is drawn in the training process, in step order, from the run's seed, so
    the numbers are the same for any ``workers``. ``pin_memory`` (null: true when
    ``train.device`` is CUDA): the workers' batches in pinned memory, for asynchronous copies
    to the GPU (refused off CUDA). Neither is part of the run id.
    """

    name: str = "synthetic"
    root: str | None = None
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    pairs: str = "latent"
    augment: dict[str, Any] = Field(default_factory=dict)
    shuffle_labels: bool = False
    workers: int = 0
    pin_memory: bool | None = None

    _seed = field_validator("seed")(classmethod(lambda cls, v: _positive_int(v, 0)))
    _workers = field_validator("workers")(classmethod(lambda cls, v: _positive_int(v, 0)))

    _pairs = _one_of("pairs", PAIR_MODES)


class ModelConfig(_Section):
    """The encoder (:func:`contrastlab.models.build_encoder`); the normalization is
    ``loss.normalize``."""

    encoder: str = "mlp"
    out_dim: int = 32
    head: str = "none"
    head_dim: int | None = None
    head_hidden: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    momentum: float = 0.0

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, v: float) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
            raise ValueError(f"must lie in [0, 1); got {v!r}")
        return float(v)

    _ints = field_validator("out_dim", "head_dim", "head_hidden")(
        classmethod(lambda cls, v: _positive_int(v))
    )

    _head = _one_of("head", HEADS)


class LossConfig(_Section):
    """The contrastive loss, its k, sampler, hardness and normalization (module docstring)."""

    name: str = "infonce"
    k: int | None = None
    beta: float | None = None
    tau_plus: float | None = None
    temperature: float | None = None
    normalize: str = "sphere"
    sampler: str | None = None
    exact: bool | str = False
    pool_size: int | None = None
    replacement: bool = False
    negatives_from: str = "dataset"
    queue_size: int | None = None
    negatives_reduction: str = "mean"
    score: str = "infonce"

    _name = _one_of("name", loss_names)

    _ints = field_validator("k", "pool_size", "queue_size")(
        classmethod(lambda cls, v: _positive_int(v)))
    _source = _one_of("negatives_from", NEGATIVE_SOURCES)
    _nonneg = field_validator("beta")(classmethod(lambda cls, v: _finite(v, 0.0)))
    _pos = field_validator("temperature")(classmethod(lambda cls, v: _finite(v, 0.0, True)))

    @field_validator("tau_plus")
    @classmethod
    def _tau(cls, v: float | None) -> float | None:
        if v is not None and (isinstance(v, bool) or not 0.0 <= v < 1.0):
            raise ValueError(f"must lie in [0, 1); got {v!r}")
        return v

    _norm = _one_of("normalize", NORMALIZATIONS)

    _sampler = _one_of("sampler", SAMPLERS, optional=True)

    _exact = _one_of("exact", EXACT_MODES, before=True)

    _replacement = _one_of("replacement", (False, True), before=True)

    _red = _one_of("negatives_reduction", NEGATIVE_REDUCTIONS)

    _score = _one_of("score", NCE_SCORES)


class OptimConfig(_Section):
    """Adam or SGD with a cosine (or constant) schedule after a linear warm-up (in epochs)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0

    _name = _one_of("name", OPTIMIZERS)

    _schedule = _one_of("schedule", SCHEDULES)

    _pos = field_validator("lr")(classmethod(lambda cls, v: _finite(v, 0.0, True)))
    _nonneg = field_validator("weight_decay", "momentum", "warmup_epochs", "min_lr")(
        classmethod(lambda cls, v: _finite(v, 0.0))
    )


class TrainConfig(_Section):
    """The loop: epochs, batch size (at most the N training samples: a batch holds distinct
    samples), steps per epoch (default: floor(N / batch_size), at least 1), optional gradient
    clipping, progress bar, CPU determinism, torch threads, checkpoints, and
    ``max_memory_gb`` (default 8): the limit that the loss's estimated working memory per step
    (:func:`step_memory_bytes`) is checked against before any work (not part of the run id).

    ``device``: ``auto`` (resolved when the config is parsed: ``cuda`` when a CUDA device is
    present, else ``cpu``), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a device this machine lacks
    is refused before any work. ``precision``: ``fp32``, ``bf16`` (the encoder's forward under
    autocast in bfloat16) or ``fp16`` (float16 autocast with a gradient scaler); the loss is
    always computed in float32 on the float32 cast of the embeddings. ``compile``: the training
    forward through ``torch.compile`` (evaluation runs the plain module; the first steps pay the
    compilation). ``channels_last``: the 2-D CNN encoders' weights and input batches (and so
    their convolutions) in the channels-last memory format, the fast layout of tensor cores
    (refused for an encoder that is not an image CNN; ``auto``: true on CUDA for an image CNN,
    resolved when the config is parsed). All four enter the run id (they change the numbers, if
    only in round-off) except at ``cpu`` / ``fp32`` / false / false, so earlier runs keep their
    ids.

    ``sync_batchnorm`` (data-parallel runs under torchrun): the encoder's BatchNorm layers
    become ``torch.nn.SyncBatchNorm`` (batch statistics over the global batch, as in one
    process, instead of per rank); it needs a CUDA ``train.device`` (torch's SyncBatchNorm
    synchronizes GPU tensors only) and is refused off CUDA when the config is parsed. No effect
    in a single process. In the run id when true.

    ``local_loss`` (data-parallel runs under torchrun): each rank computes the loss of its own
    anchors against the gathered batch (:mod:`contrastlab.losses.sharded`, open_clip's
    ``local_loss``): 1/W of the loss's work per rank instead of the whole global loss, the
    same gradient after DDP's average up to round-off, and the logged loss is the mean over
    the ranks. For the in-batch losses with a sharded form (``infonce``, ``supcon``,
    ``debiased-hard``); refused for the others (a pool loss draws its negatives for the
    global batch). No effect in a single process. In the run id when true.

    ``loggers``: where every per-epoch metric and the resolved config are logged, a list of
    ``csv`` (the default: ``metrics.csv`` in the run directory, one row per epoch),
    ``tensorboard`` (``<run dir>/tensorboard``), ``wandb`` and ``mlflow``
    (:mod:`contrastlab.train.loggers`); ``[]`` logs nothing. A logger whose package is not
    installed is refused when the config is parsed. Loggers never change the numbers, so they
    are not part of the run id."""

    epochs: int = 10
    batch_size: int = 256
    steps_per_epoch: int | None = None
    grad_clip: float | None = None
    progress: bool = True
    deterministic: bool = True
    threads: int | None = None
    checkpoint: bool = True
    max_memory_gb: float = 8.0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool | str = False
    local_loss: bool = False
    sync_batchnorm: bool = False
    loggers: list[str] = Field(default_factory=lambda: ["csv"])

    _ints = field_validator("epochs", "batch_size", "steps_per_epoch", "threads")(
        classmethod(lambda cls, v: _positive_int(v))
    )
    _pos = field_validator("grad_clip", "max_memory_gb")(
        classmethod(lambda cls, v: _finite(v, 0.0, True)))
    _precision = _one_of("precision", PRECISIONS)
    _channels_last = _one_of("channels_last", (False, True, "auto"), before=True)

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, v: list[str]) -> list[str]:
        for name in v:
            _choice(name, tuple(LOGGERS))
        if len(set(v)) != len(v):
            raise ValueError(f"must not name a logger twice; got {v!r}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {v!r}")
        return v


class EvalConfig(_Section):
    """Per-epoch metrics (every ``every`` epochs and after the last; 0: only after the last) and
    the final reports. Embeddings of at most ``max_train`` / ``max_test`` samples (a fixed,
    seeded, stratified-by-chance subset) are used; ``features``: ``output`` (normalized, what the
    loss sees) or ``backbone`` (the representation before the head). ``final_nozawa_sato``: the
    final reports add Nozawa & Sato's lower bound on the self-supervised InfoNCE loss at K + 1 =
    ``train.batch_size`` (:mod:`contrastlab.evaluation.nozawa_sato`; ``data.pairs: augment``
    only)."""

    every: int = 1
    geometry: bool = True
    mean_classifier: bool = True
    linear_probe: bool = True
    heldout_loss: bool = True
    features: str = "output"
    max_train: int | None = 2000
    max_test: int | None = 2000
    batch_size: int = 1024
    probe_weight_decay: float | None = 1e-4
    final_probes: list[str] = Field(default_factory=lambda: ["bias-free"])
    final_knn: bool = True
    final_lsup: bool = True
    final_nozawa_sato: bool = False

    _every = field_validator("every")(classmethod(lambda cls, v: _positive_int(v, 0)))
    _ints = field_validator("max_train", "max_test", "batch_size")(
        classmethod(lambda cls, v: _positive_int(v))
    )
    _nonneg = field_validator("probe_weight_decay")(classmethod(lambda cls, v: _finite(v, 0.0)))

    _features = _one_of("features", FEATURES)

    @field_validator("final_probes")
    @classmethod
    def _probes(cls, v: list[str]) -> list[str]:
        for p in v:
            _choice(p, PROBES)
        return v


class OutputConfig(_Section):
    """Where results go (``contrastlab run --out`` overrides ``dir``)."""

    dir: str = "runs"
    keep_checkpoints: bool = True


class ExperimentConfig(_Section):
    """One experiment: every section, the seed and the sweep grid (see the module docstring)."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # the mapping this config was parsed from, before resolution (sweep points start from it)
    _raw: dict[str, Any] | None = PrivateAttr(default=None)
    # id() of the object when parse_config resolved it: a resolved config is passed down as is
    # (a copy, e.g. by model_copy, has another id and is resolved again)
    _resolved_id: int | None = PrivateAttr(default=None)

    _seed = field_validator("seed")(classmethod(lambda cls, v: _positive_int(v, 0)))

    def __copy__(self) -> ExperimentConfig:  # model_copy: a copy is not the resolved object
        out = super().__copy__()
        out._resolved_id = None
        return out

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> ExperimentConfig:
        out = super().__deepcopy__(memo)
        out._resolved_id = None
        return out

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key!r} must list at least one value")
            if key.split(".")[0] in ("sweep", "output"):
                raise ValueError(f"{key!r}: sweep and output cannot be swept")
        return v


# --------------------------------------------------------------------------------------------
# error formatting
# --------------------------------------------------------------------------------------------


def _section_fields(loc: Sequence[Any]) -> list[str] | None:
    model: Any = ExperimentConfig
    for part in loc:
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return None
        model = info.annotation
    fields = getattr(model, "model_fields", None)
    return list(fields) if fields is not None else None




def _format_error(exc: ValidationError, where: str = "") -> str:
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    kind = err["type"]
    # drop union-member tags (e.g. 'int', 'str') pydantic appends to the location
    while kind != "extra_forbidden" and loc:
        parent = _section_fields(loc[:-1])
        if parent is None or loc[-1] in parent:
            break
        loc.pop()
    path = ".".join(loc) or "config"
    if kind == "extra_forbidden":
        parent = loc[:-1]
        fields = _section_fields(parent) or []
        section = ".".join(parent) or "the config"
        msg = f"{path} is not a field of {section}; allowed: {', '.join(fields)}"
    elif kind == "value_error":
        msg = f"{path} {err['ctx']['error']}"
    elif kind == "missing":
        msg = f"{path} is required"
    elif kind in ("model_type", "dict_type"):
        msg = f"{path} must be a mapping of fields; got {err.get('input')!r}"
    elif kind in TYPE_WORDS:
        msg = f"{path} must be {TYPE_WORDS[kind]}; got {err.get('input')!r}"
    else:
        msg = f"{path}: {err['msg']}; got {err.get('input')!r}"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return msg + where


# --------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as YAML). ``sweep.loss.k=[1,4]`` gives
    (["sweep", "loss.k"], [1, 4]): after ``sweep.`` the rest is one grid key."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. loss.k=16); got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects a dotted key such as loss.k; got {key!r}")
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except YamlError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
    parts = key.split(".")
    if parts[0] == "sweep" and len(parts) > 1:
        parts = ["sweep", ".".join(parts[1:])]
    return parts, value


def _set_path(raw: dict[str, Any], parts: Sequence[str], value: Any, shown: str) -> None:
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{shown}: {where} is not a section (it is {nxt!r})")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(raw: Mapping[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """A deep copy of ``raw`` with every ``a.b=value`` of ``sets`` applied in order."""
    out = copy.deepcopy(dict(raw))
    for text in sets:
        parts, value = parse_override(text)
        _set_path(out, parts, value, f"--set {text.split('=', 1)[0]}")
    return out


# --------------------------------------------------------------------------------------------
# semantic checks and resolution
# --------------------------------------------------------------------------------------------


def _check_data(data: DataConfig) -> Any:
    """The data set's name, root and options (its declared model), without loading it; the
    augmenter's options. Returns the parsed options (None: the data set declares none)."""
    from contrastlab.data.pairs import check_augment_options
    from contrastlab.data.registry import validate_dataset

    parsed = validate_dataset(data.name, data.root, data.options)
    check_augment_options(data.augment)
    return parsed


def _check_model(model: ModelConfig) -> None:
    from contrastlab.models import check_encoder_options, list_encoders

    names = list_encoders()
    if model.encoder not in names:
        raise ConfigError(f"model.encoder must be one of {_choices(names)}; got {model.encoder!r}")
    check_encoder_options(model.encoder, model.options)
    if model.head == "none" and model.head_dim is not None:
        raise ConfigError(f"model.head_dim needs a projection head (model.head is 'none'); "
                          f"got {model.head_dim}")


def _resolve_channels_last(cfg: ExperimentConfig, device: str) -> bool:
    """``train.channels_last``: ``auto`` -> true on CUDA for a 2-D image CNN (an encoder for
    images only); true needs such an encoder."""
    from contrastlab.models import ENCODERS

    cnn = ENCODERS[cfg.model.encoder].kinds == ("image",)
    if cfg.train.channels_last == "auto":
        return cnn and device.startswith("cuda")
    if cfg.train.channels_last and not cnn:
        cnns = sorted(n for n, s in ENCODERS.items() if s.kinds == ("image",))
        raise ConfigError(f"train.channels_last applies to the 2-D image encoders "
                          f"({', '.join(cnns)}); got model.encoder {cfg.model.encoder!r}")
    return bool(cfg.train.channels_last)


def _resolve_cuda_options(cfg: ExperimentConfig, device: str) -> bool:
    """``train.sync_batchnorm`` needs CUDA; ``data.pin_memory``: None -> whether the device is
    CUDA, true refused off CUDA. Returns the resolved ``data.pin_memory``."""
    on_cuda = device.startswith("cuda")
    if cfg.train.sync_batchnorm and not on_cuda:
        raise ConfigError(f"train.sync_batchnorm: true needs train.device 'cuda' or 'cuda:N' "
                          f"(torch's SyncBatchNorm synchronizes GPU tensors only); got "
                          f"train.device {device!r}; set train.sync_batchnorm=false")
    if cfg.data.pin_memory is None:
        return on_cuda
    if cfg.data.pin_memory and not on_cuda:
        raise ConfigError(f"data.pin_memory: true needs a CUDA train.device (pinned memory is "
                          f"for copies to a GPU); got train.device {device!r}; set "
                          "data.pin_memory=false or null (auto)")
    return cfg.data.pin_memory


def _check_nozawa_sato(cfg: ExperimentConfig) -> None:
    """``eval.final_nozawa_sato`` measures a bound on augmented views: ``data.pairs: augment``."""
    if cfg.eval.final_nozawa_sato and cfg.data.pairs != "augment":
        raise ConfigError("eval.final_nozawa_sato: true needs data.pairs 'augment' (the bound "
                          f"is on augmented views); got data.pairs {cfg.data.pairs!r}")


def _check_local_loss(cfg: ExperimentConfig) -> None:
    """``train.local_loss`` needs a loss with a sharded form (the in-batch losses)."""
    if cfg.train.local_loss and get_loss(cfg.loss.name).sharded is None:
        able = sorted(n for n in loss_names() if get_loss(n).sharded is not None)
        raise ConfigError(f"train.local_loss applies to the losses with a sharded form "
                          f"({', '.join(able)}); got loss.name {cfg.loss.name!r}")


def _check_sizes(cfg: ExperimentConfig, n_train: int | None) -> None:
    """What the data set's size allows: a batch of distinct samples (batch_size <= N), k
    distinct negatives from a pool of distinct samples (k <= pool_size <= N without
    replacement)."""
    if n_train is None:
        return
    what = f"the {n_train} training samples of data set {cfg.data.name!r}"
    if cfg.train.batch_size > n_train:
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) exceeds {what}: a batch "
                          f"would repeat samples; set train.batch_size <= {n_train}")
    loss = cfg.loss
    if loss.k is not None and not loss.replacement:
        if loss.k > n_train:
            raise ConfigError(f"loss.k ({loss.k}) exceeds {what}: that many distinct negatives "
                              "per anchor do not exist; set loss.replacement=true or a smaller "
                              "loss.k")
        if loss.pool_size is not None and loss.pool_size > n_train:
            raise ConfigError(f"loss.pool_size ({loss.pool_size}) exceeds {what} (a pool of "
                              f"distinct samples); set loss.pool_size <= {n_train} or "
                              "loss.replacement=true")


def step_memory_bytes(cfg: ExperimentConfig) -> int:
    """An estimate (from below) of the loss's working memory in one training step, in bytes:
    the explicit-k losses score every anchor against the pool (2B x P similarities, a float64
    law and its draws, gradients: ~24 bytes each; twice that for the exact forms), the in-batch
    losses the 2B x 2B similarities (dense below 1024 rows, tiled in strips of 256 rows above),
    plus the (2B + P) x d features with their gradients. The encoder's activations come on
    top."""
    b2 = 2 * cfg.train.batch_size
    d = cfg.model.head_dim or cfg.model.out_dim
    loss = cfg.loss
    if get_loss(loss.name).explicit_k:
        pool = loss.pool_size or loss.queue_size or (b2 if loss.negatives_from == "batch" else 0)
        per = 48 if loss.exact is not False else 24
        return b2 * pool * per + (b2 + pool) * d * 12
    cols = b2 if b2 < 1024 else 256
    return b2 * cols * 24 + b2 * d * 12


def _check_memory(cfg: ExperimentConfig) -> None:
    need = step_memory_bytes(cfg)
    limit = cfg.train.max_memory_gb * 2**30
    if need > limit:
        raise ConfigError(
            f"train.batch_size ({cfg.train.batch_size}) with loss.pool_size "
            f"({cfg.loss.pool_size}) and d = {cfg.model.head_dim or cfg.model.out_dim} needs "
            f"about {need / 2**30:.3g} GiB for the loss alone, above train.max_memory_gb "
            f"({cfg.train.max_memory_gb:g}); lower them or raise train.max_memory_gb")


def _resolve_k(loss: LossConfig, batch_size: int) -> dict[str, Any]:
    """k, the pool size and the draw law of an explicit-k loss (see the module docstring)."""
    if loss.k is None:
        raise ConfigError(f"loss.k is required for {loss.name!r} (the number of negatives per "
                          "anchor, independent of the batch size); e.g. loss.k=64")
    # the exact forms make no draw: their expectation is over k i.i.d. draws
    replacement = loss.replacement or loss.exact is not False
    size = {"dataset": loss.pool_size, "queue": loss.queue_size, "batch": 2 * batch_size}
    default = max(loss.k, batch_size)
    upd: dict[str, Any] = {
        "replacement": replacement,
        "pool_size": (loss.pool_size or default) if loss.negatives_from == "dataset" else None,
        "queue_size": (loss.queue_size or default) if loss.negatives_from == "queue" else None,
    }
    have = size[loss.negatives_from] or default
    if not replacement and have < loss.k:
        field = {"dataset": "loss.pool_size", "queue": "loss.queue_size",
                 "batch": "the 2 x train.batch_size views (loss.negatives_from=batch)"}
        raise ConfigError(
            f"{field[loss.negatives_from]} must be >= loss.k ({loss.k}) when loss.replacement "
            f"is false (k distinct negatives per anchor); got {have}; raise it, lower loss.k "
            "or set loss.replacement=true")
    return upd


def _resolve_sampler(spec: LossSpec, loss: LossConfig) -> str | None:
    if spec.sampler is not None and loss.sampler not in (None, spec.sampler):
        raise ConfigError(f"loss.sampler must be {spec.sampler!r} for {spec.name!r} (its "
                          f"negative law); got {loss.sampler!r}; use loss.name=nce for other "
                          "samplers")
    return spec.law(loss.sampler)  # None for an in-batch loss (its negatives are the views)


def _resolve_loss(loss: LossConfig, batch_size: int) -> LossConfig:
    """Fill the loss's defaults and set the fields it does not read to their neutral values
    (all from its registry spec, :mod:`contrastlab.losses.registry`)."""
    spec = get_loss(loss.name)
    upd: dict[str, Any] = (_resolve_k(loss, batch_size) if spec.explicit_k
                           else {"k": None, "pool_size": None, "replacement": False,
                                 "negatives_from": "dataset", "queue_size": None})
    upd["sampler"] = _resolve_sampler(spec, loss)
    tilted = spec.tilted(upd["sampler"])
    upd["beta"] = (spec.default("beta") if loss.beta is None else loss.beta) if tilted else 0.0
    upd["tau_plus"] = ((spec.default("tau_plus") if loss.tau_plus is None else loss.tau_plus)
                       if spec.takes("tau_plus") else None)
    upd["temperature"] = (loss.temperature if loss.temperature is not None
                          else spec.default("temperature"))
    if not spec.takes("exact") and loss.exact is not False:
        takes = [n for n in loss_names() if get_loss(n).takes("exact")]
        raise ConfigError(f"loss.exact applies to {', '.join(takes)} only; got {loss.exact!r} "
                          f"for {loss.name!r}")
    if not spec.takes("negatives_reduction"):
        upd["negatives_reduction"] = "mean"
    if not spec.takes("score"):
        upd["score"] = "infonce"
    return loss.model_copy(update=upd)


#: set inside :func:`gpu_workers`: the configs being resolved run on GPU workers elsewhere
_GPU_WORKERS: contextvars.ContextVar[bool] = contextvars.ContextVar("gpu_workers", default=False)


@contextlib.contextmanager
def gpu_workers() -> Iterator[None]:
    """Resolve the configs parsed inside for runs that execute on GPU workers elsewhere (a Ray
    task that reserves ``--gpus-per-run`` GPUs): ``train.device: auto`` becomes ``cuda`` and a
    CUDA device is not looked for on this machine (the worker checks its own when it parses the
    run's config: Ray's ``CUDA_VISIBLE_DEVICES`` holds the GPUs it assigned). ``cpu`` stays
    ``cpu``."""
    token = _GPU_WORKERS.set(True)
    try:
        yield
    finally:
        _GPU_WORKERS.reset(token)


def for_gpu_workers(cfg: Mapping[str, Any] | ExperimentConfig) -> ExperimentConfig:
    """``cfg`` parsed again from the mapping it came from, inside :func:`gpu_workers` (a config
    parsed on a machine without a GPU resolved ``auto`` to ``cpu``)."""
    if isinstance(cfg, ExperimentConfig):
        cfg = copy.deepcopy(cfg._raw) if cfg._raw is not None else cfg.model_dump(mode="json")
    with gpu_workers():
        return parse_config(cfg)


def _resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; a device this machine does not have is a ConfigError
    (inside :func:`gpu_workers`: ``auto`` -> ``cuda``, CUDA devices not looked for here)."""
    import torch

    if _GPU_WORKERS.get() and (device == "auto" or device.startswith("cuda")):
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = os.environ.get("CUDA_VISIBLE_DEVICES")  # e.g. the GPUs Ray assigned
            view = "" if seen is None else f"; CUDA_VISIBLE_DEVICES={seen!r}"
            raise ConfigError(f"train.device {device!r} is not available on this machine ({count} "
                              f"CUDA device(s){view}); use 'cpu' or 'auto'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device 'mps' is not available on this machine; use 'cpu' or "
                          "'auto'")
    return device


def _check_loggers(loggers: Sequence[str]) -> None:
    """Every logger's package is installed (found without importing it)."""
    for name in loggers:
        package, extra = LOGGERS[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(f"train.loggers: {name!r} needs the package {package!r}, which is "
                              f"not installed; pip install 'contrastlab[{extra}]' (or "
                              f"{package}), or remove {name!r} from train.loggers")


def _resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    from contrastlab.data.registry import train_size

    options = _check_data(cfg.data)
    _check_model(cfg.model)
    _check_loggers(cfg.train.loggers)
    _check_local_loss(cfg)
    _check_nozawa_sato(cfg)
    loss = _resolve_loss(cfg.loss, cfg.train.batch_size)
    device = _resolve_device(cfg.train.device)
    train = cfg.train.model_copy(update={
        "device": device, "channels_last": _resolve_channels_last(cfg, device)})
    data = cfg.data.model_copy(update={"pin_memory": _resolve_cuda_options(cfg, device)})
    model = cfg.model
    if cfg.model.momentum and loss.negatives_from != "queue":
        raise ConfigError(f"model.momentum ({cfg.model.momentum:g}) is the key encoder of a "
                          "queue of negatives: set loss.negatives_from=queue (and an explicit-k "
                          "loss) or model.momentum=0")
    out = cfg.model_copy(update={"loss": loss, "train": train, "model": model, "data": data})
    _check_sizes(out, train_size(cfg.data.name, options))
    _check_memory(out)
    return out


def parse_config(raw: Mapping[str, Any] | ExperimentConfig, where: str = "") -> ExperimentConfig:
    """Validate and resolve a config given as a mapping, once: an ExperimentConfig that this
    function returned is returned as is (configs are frozen), any other one is resolved again.

    Raises :class:`ConfigError` with one line naming the field path; ``where`` is appended to
    the message (e.g. the sweep point).
    """
    keep_raw = None
    if isinstance(raw, ExperimentConfig) and raw._resolved_id == id(raw):
        return raw  # parsed and resolved once; frozen since
    if isinstance(raw, ExperimentConfig):
        # re-resolve what it holds (resolution is idempotent); keep the mapping it came from
        keep_raw = copy.deepcopy(raw._raw) if raw._raw is not None else None
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the config must be a mapping of sections; got {type(raw).__name__}")
    try:
        cfg = ExperimentConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, where)) from None
    try:
        resolved = _resolve(cfg)
        resolved._raw = keep_raw if keep_raw is not None else copy.deepcopy(dict(raw))
        resolved._resolved_id = id(resolved)
        return resolved
    except ConfigError as exc:
        raise ConfigError(f"{exc}{where}") from None
    except ValueError as exc:  # e.g. from the registries
        raise ConfigError(f"{str(exc).splitlines()[0]}{where}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; one-line ConfigError for a missing file or bad YAML."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {str(p)!r}")
    try:
        raw = load_yaml_file(p)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the config must be a mapping of sections; got "
                          f"{type(raw).__name__}")
    return raw


def load_config(
    path: str | Path | None = None,
    sets: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Load a YAML config (or start from ``base`` / the defaults), apply ``sets``, validate,
    resolve, and check every sweep point, so that no work starts on an invalid grid."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        raw = read_yaml(path)
    raw = apply_overrides(raw, sets)
    cfg = parse_config(raw)
    expand_sweep(cfg)  # validates every grid point
    return cfg


# --------------------------------------------------------------------------------------------
# sweeps and run identity
# --------------------------------------------------------------------------------------------


def expand_sweep(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """The resolved configs of the grid (cartesian product of the ``sweep`` lists, in order,
    the last key varying fastest), without ``sweep``; points that resolve to the same run
    (same :func:`run_id`) appear once. No grid: the config itself."""
    base = copy.deepcopy(cfg._raw) if cfg._raw is not None else cfg.model_dump(mode="json")
    base["sweep"] = {}
    keys = list(cfg.sweep)
    out: list[ExperimentConfig] = []
    seen: set[str] = set()
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        raw = copy.deepcopy(base)
        for key, value in zip(keys, values, strict=True):
            _set_path(raw, key.split("."), value, f"sweep {key}")
        shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values, strict=True))
        point = parse_config(raw, where=f" (sweep point {shown})" if keys else "")
        rid = run_id(point)
        if rid not in seen:
            seen.add(rid)
            out.append(point)
    return out


def run_config_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config of one run as a JSON-ready dict (no sweep)."""
    d = cfg.model_dump(mode="json")
    d["sweep"] = {}
    return d


def hashed_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of the resolved config that :func:`run_id` hashes, as a JSON-ready dict."""
    d = cfg.model_dump(mode="json")
    if not d["data"].get("shuffle_labels"):  # added later: keep the ids of earlier runs
        d["data"].pop("shuffle_labels", None)
    # added later, with a new default: hashed only where it changed the computation (distinct
    # draws of an explicit-k loss); earlier runs, drawn with replacement, keep their ids
    if d["loss"].get("replacement") is not False or d["loss"].get("k") is None:
        d["loss"].pop("replacement", None)
    for section, keys in _NOT_HASHED.items():
        node = d if not section else d[section]
        for key in keys:
            node.pop(key, None)
    if d["train"].get("threads") in (None, 1):  # the default, one thread: the ids of earlier runs
        d["train"].pop("threads", None)
    for section, key, default in (("train", "device", "cpu"), ("train", "precision", "fp32"),
                                  ("train", "compile", False), ("train", "channels_last", False),
                                  ("train", "local_loss", False),
                                  ("train", "sync_batchnorm", False),
                                  ("eval", "final_nozawa_sato", False),
                                  ("loss", "negatives_from", "dataset"),
                                  ("loss", "queue_size", None), ("model", "momentum", 0.0)):
        if d[section].get(key) == default:  # added later, likewise
            d[section].pop(key, None)
    return d


def run_id(cfg: ExperimentConfig) -> str:
    """The run id: the first 16 hex digits of the SHA-256 of the canonical JSON of the resolved
    config, without the parts that do not change results (sweep, output, progress,
    train.loggers). The thread count changes round-off (a run computes with ``train.threads``,
    1 when unset), so a run with ``train.threads`` > 1 has its own id."""
    text = json.dumps(hashed_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

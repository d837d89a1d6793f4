"""One training step: its inputs and its loss.

One step (``B = train.batch_size``, ``P = loss.pool_size``, default ``max(k, B)``):

1. ``B`` training indices (the loop's seeded permutation); two views ``x1, x2`` from
   :func:`contrastlab.data.pairs.make_views` (``latent``: x2 is another sample of the class;
   ``augment``: two augmented views);
2. for the **explicit-k losses** (``nce``, ``scl``, ``hscl``, ``ucl``, ``hucl``) a pool of ``P``
   training samples drawn from the marginal (:func:`contrastlab.data.pairs.negative_pool`):
   ``P`` distinct samples (uniform without replacement) unless ``loss.replacement`` is true or
   ``P`` exceeds the data set (then i.i.d. with replacement, the pool law of earlier versions);
   in ``augment`` mode every pool member is one augmented view (:func:`step_inputs`);
3. **one** forward pass of ``[x1; x2; pool]`` (so k = 4096 with B = 256 encodes 512 + 4096 rows,
   not B x k), sharded across the ranks in data-parallel runs, and the loss
   (:func:`contrastive_loss`: the configured loss's registry spec called on the views and pool,
   :mod:`contrastlab.losses.registry`) with a check of the embeddings (:func:`step_loss`).

A step is *planned*, then *built* (:func:`plan_step`, :func:`build_inputs`; :func:`step_inputs`
does both): the plan holds every random choice (rows, pool, augmentation parameters), drawn from
the run's data generator in one fixed order from the labels and the inputs' shape alone; building
reads the inputs and draws nothing, so it may run in a DataLoader worker or on the GPU with the
same result (:mod:`contrastlab.train.feed`).

Which losses take a pool, and whether its negatives are drawn from the other classes, is the
spec's to say (:attr:`~contrastlab.losses.registry.LossSpec.explicit_k`,
:meth:`~contrastlab.losses.registry.LossSpec.supervised`): the trainer holds no loss math and
no per-name dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from contrastlab.losses.registry import get_loss
from contrastlab.train.config import ExperimentConfig, LossConfig
from contrastlab.train.queue import NegativeQueue

if TYPE_CHECKING:
    from contrastlab.data.pairs import Augmentation

__all__ = [
    "AUTOCAST",
    "StepPlan",
    "all_ranks_ok",
    "build_inputs",
    "contrastive_loss",
    "encode",
    "fill_queue",
    "plan_step",
    "step_inputs",
    "step_loss",
]


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


@dataclass(frozen=True)
class StepPlan:
    """One step's inputs before any input is read: the parts of ``[x1; x2; pool]`` (rows of the
    training set and the augmentation parameters drawn for them,
    :data:`contrastlab.data.pairs.ViewPart`), the batch labels, the pool's labels and data-set
    indices (None without a pool) and the batch's data-set indices. Plain tensors: it pickles
    (a DataLoader worker builds the inputs, :mod:`contrastlab.train.feed`)."""

    parts: tuple[Any, ...]
    labels: torch.Tensor
    pool_labels: torch.Tensor | None
    pool_ids: torch.Tensor | None
    batch_ids: torch.Tensor


def plan_step(
    cfg: ExperimentConfig, x_shape: Any, y: torch.Tensor, idx: torch.Tensor,
    generator: torch.Generator, augment: Augmentation | None, heldout: bool = False,
) -> StepPlan:
    """Every random choice of a step (views, pool, augmentations), drawn from ``generator`` in
    one fixed order, from the shape ``x_shape`` of the training inputs and the labels ``y``
    alone: :func:`build_inputs` then builds the inputs anywhere, drawing nothing. A pool of the
    data set is drawn for ``loss.negatives_from: dataset``, and for ``queue`` on held-out data
    (``heldout``: the held-out loss is measured against a fresh pool of ``loss.queue_size``
    samples, the queue holding training keys); in ``augment`` mode each pool member is one
    augmented view (negatives are views too)."""
    from contrastlab.data.pairs import plan_views

    shape = tuple(int(s) for s in x_shape)
    parts: list[Any] = list(plan_views(shape, y, idx, cfg.data.pairs, generator, augment))
    pool_labels = pidx = None
    spec = get_loss(cfg.loss.name)
    source = cfg.loss.negatives_from
    if spec.explicit_k and (source == "dataset" or (source == "queue" and heldout)):
        size = cfg.loss.pool_size or cfg.loss.queue_size
        assert size is not None
        pidx = _pool(y, size, generator, y[idx], spec.supervised(cfg.loss.sampler),
                     cfg.loss.replacement)
        drawn = (None if augment is None
                 else augment.draw((int(pidx.shape[0]), *shape[1:]), generator))
        parts.append((pidx, drawn))
        pool_labels = y[pidx]
    return StepPlan(tuple(parts), y[idx], pool_labels, pidx, idx)


def build_inputs(plan: StepPlan, x: torch.Tensor, augment: Augmentation | None) -> torch.Tensor:
    """The inputs ``[x1; x2; pool]`` of a planned step (:func:`plan_step`), float32, on ``x``'s
    device: the planned rows of ``x`` with their augmentations applied (no draw)."""
    from contrastlab.data.pairs import take

    return torch.cat([torch.as_tensor(take(x, part, augment), dtype=torch.float32)
                      for part in plan.parts])


def step_inputs(
    cfg: ExperimentConfig, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
    generator: torch.Generator, augment: Augmentation | None, heldout: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(inputs to encode: [x1; x2; pool], the batch labels, the pool labels or None, the pool's
    data-set indices or None): :func:`build_inputs` of :func:`plan_step`, in one go."""
    plan = plan_step(cfg, x.shape, y, idx, generator, augment, heldout)
    return build_inputs(plan, x, augment), plan.labels, plan.pool_labels, plan.pool_ids


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
    """The configured loss on one step's encoded views (and pool, for an explicit-k loss).

    ``loss`` must be resolved (:func:`contrastlab.train.config.parse_config`); the features are
    already normalized by the encoder. ``stats``, if given, receives ``distinct_negatives``
    (2B - 2 for an in-batch loss); ``pool_ids``: the data-set index of every pool member, for
    that count (:meth:`contrastlab.losses.registry.LossSpec.__call__`).
    """
    return get_loss(loss.name)(z1, z2, labels, loss.model_dump(), pool, pool_labels,
                               generator=generator, stats=stats, pool_ids=pool_ids)


def _other_negatives(
    cfg: ExperimentConfig, views: torch.Tensor, labels: torch.Tensor,
    queue: NegativeQueue | None, batch_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(pool, its labels, its data-set ids) for ``loss.negatives_from``: ``batch`` (the step's
    2B views themselves, with their gradients) or ``queue`` (a copy of the queue's keys: the
    queue changes after the loss, before the backward)."""
    if cfg.loss.negatives_from == "batch":
        ids = None if batch_ids is None else torch.cat([batch_ids, batch_ids]).to(views.device)
        return views, torch.cat([labels, labels]), ids
    if queue is None:
        raise ValueError("loss.negatives_from=queue needs the run's queue of negatives")
    return (queue.keys.clone(), queue.labels.to(views.device).clone(),
            queue.ids.to(views.device).clone())


#: ``train.precision`` -> the autocast dtype of the encoder's forward (None: float32, no autocast)
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def encode(model: nn.Module, x: torch.Tensor, precision: str = "fp32",
           channels_last: bool = False) -> torch.Tensor:
    """The encoder's output for ``x`` (moved to the model's device; a copy from the host does
    not block, pinned or not): in float32, or for ``bf16`` / ``fp16`` the forward under
    autocast, its output cast to float32 (the loss is computed in float32 on it).
    ``channels_last``: a batch of images enters in the channels-last layout
    (``train.channels_last``; the same values)."""
    device = next(model.parameters()).device
    x = x.to(device, non_blocking=x.device.type == "cpu" and device.type == "cuda")
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = AUTOCAST[precision]
    if dtype is None:
        return model(x)
    with torch.autocast(device.type, dtype=dtype):
        z = model(x)
    return z.float()


def _to(device: torch.device, *tensors: torch.Tensor | None) -> tuple[Any, ...]:
    return tuple(None if t is None else t.to(device) for t in tensors)


def all_ranks_ok(ok: bool, world: int) -> bool:
    """Whether ``ok`` holds on every rank (a MIN all_reduce; ``ok`` itself when world = 1)."""
    if world == 1:
        return ok
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces CUDA tensors
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


_STEP_BATCH_ARGS = {"z1": "features", "z2": "features", "labels": "labels"}
_STEP_BATCH_ARGS_POOL = {**_STEP_BATCH_ARGS, "pool": "features", "pool_labels": "labels"}


def step_loss(
    cfg: ExperimentConfig, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
    pool_labels: torch.Tensor | None, generator: torch.Generator, rank: int = 0, world: int = 1,
    stats: dict[str, float] | None = None, pool_ids: torch.Tensor | None = None,
    queue: NegativeQueue | None = None, key_model: nn.Module | None = None,
    batch_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The step's loss. ``inputs`` is the *global* ``[x1; x2; pool]`` (every rank builds the same
    one from the same generator); with ``world > 1`` rank r encodes its contiguous slice of the
    B views (and of the pool when P is divisible by the world size; otherwise the whole pool,
    replicated) and the loss is computed on the gathered global batch
    (:func:`contrastlab.distributed.call_gathered`): the same value as the single-process step,
    and, after DDP's gradient average, the same gradient."""
    b = labels.shape[0]
    if world == 1:
        z = encode(model, inputs, cfg.train.precision, cfg.train.channels_last is True)
        if not bool(torch.isfinite(z).all()):
            raise FloatingPointError("non-finite embeddings (NaN or inf) from the encoder")
        labels, pool_labels, pool_ids = _to(z.device, labels, pool_labels, pool_ids)
        pool = z[2 * b :] if pool_labels is not None else None
        if pool is None and get_loss(cfg.loss.name).explicit_k:
            pool, pool_labels, pool_ids = _other_negatives(cfg, z[: 2 * b], labels, queue,
                                                           batch_ids)
        loss = contrastive_loss(cfg.loss, z[:b], z[b : 2 * b], labels, pool, pool_labels,
                                generator, stats=stats, pool_ids=pool_ids)
        if queue is not None:  # after the loss: this step's keys replace the oldest
            keys = z[b : 2 * b]
            if key_model is not None:
                with torch.no_grad():
                    keys = encode(key_model, inputs[b : 2 * b], cfg.train.precision,
                                  cfg.train.channels_last is True)
            queue.push(keys, labels, batch_ids if batch_ids is not None
                       else torch.full_like(labels, -1))
        return loss
    if cfg.loss.negatives_from != "dataset":
        raise ValueError(f"loss.negatives_from={cfg.loss.negatives_from} is not supported under "
                         "torchrun yet (world size > 1); use dataset")
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
    z = encode(model, torch.cat(parts), cfg.train.precision, cfg.train.channels_last is True)
    if not all_ranks_ok(bool(torch.isfinite(z).all()), world):  # every rank stops together
        raise FloatingPointError("non-finite embeddings (NaN or inf) from the encoder")
    labels, local_pool_labels, pool_ids = _to(z.device, labels, local_pool_labels, pool_ids)
    if cfg.train.local_loss:
        return _local_loss(cfg, z[:bl], z[bl : 2 * bl], labels[lo:hi], world, stats)
    local_pool = z[2 * bl :] if pool_labels is not None else None
    spec = _STEP_BATCH_ARGS_POOL if shard_pool else _STEP_BATCH_ARGS
    return call_gathered(contrastive_loss, spec, cfg.loss, z[:bl], z[bl : 2 * bl],
                         labels[lo:hi], local_pool, local_pool_labels, generator,
                         stats=stats, pool_ids=pool_ids)


def _local_loss(cfg: ExperimentConfig, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                world: int, stats: dict[str, float] | None) -> torch.Tensor:
    """``train.local_loss``: this rank's anchors only (:meth:`LossSpec.local`). The returned
    tensor has the value of the global loss (the mean of the ranks' local means, the same on
    every rank, as the logged loss of a global step) and the gradient of the local one."""
    import torch.distributed as dist

    local = get_loss(cfg.loss.name).local(z1, z2, labels, cfg.loss.model_dump())
    total = local.detach().clone()
    dist.all_reduce(total)
    if stats is not None:
        stats["distinct_negatives"] = float(2 * z1.shape[0] * world - 2)
    return local + (total / world - local.detach())


def fill_queue(cfg: ExperimentConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               augment: Any, generator: torch.Generator) -> NegativeQueue:
    """The initial queue of ``loss.queue_size`` keys: training samples drawn as the data-set
    pool draws them (distinct unless the queue exceeds the data set; one augmented view each in
    ``augment`` mode), encoded by ``model`` (the key encoder) in eval mode, without gradients."""
    size = cfg.loss.queue_size
    assert size is not None
    ids = _pool(y, size, generator, y[:1], False, cfg.loss.replacement)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            keys = torch.cat([encode(model, _augment_pool(x[ids[i : i + 1024].to(x.device)],
                                                          augment, generator),
                                     cfg.train.precision, cfg.train.channels_last is True)
                              for i in range(0, size, 1024)])
    finally:
        model.train(was)
    return NegativeQueue(keys.float(), y[ids].to(keys.device).clone(),
                         ids.to(keys.device).clone())

"""Where a run's training batches are built and how they reach the model.

Every step is first *planned* in the training process (:func:`contrastlab.train.step.plan_step`:
its rows of the training set, its pool and the parameters of its augmentations, drawn from the
run's data generator in step order), then *built* (:func:`~contrastlab.train.step.build_inputs`:
the rows taken, the augmentations applied), which draws nothing. Where, and in how many
processes, a batch is built therefore changes no number: a run stays a function of its config.

- **On the training device** (:func:`builds_on_device`: ``latent`` pairs, or the batched
  augmentation engine): when ``train.device`` is not the CPU, the training inputs are moved to it
  once, at the start of the run (:meth:`BatchFeed.__init__`; refused in one line when they would
  take more than half of the device's free memory, :func:`check_fits_on_device`), and every
  batch is indexed (and augmented) there; the labels, which the seeded draws read, stay on the
  host. On the CPU this is the path of earlier versions, bitwise.
- **On the host**: ``augment`` pairs with the per-sample engine (``data.augment.engine: loop``,
  the default; signals and vectors too): in the training process, or with ``data.workers`` > 0
  in that many ``torch.utils.data.DataLoader`` worker processes, started at the first epoch and
  kept until the run ends (:meth:`BatchFeed.close`). The DataLoader's "indices" are the step
  plans, drawn lazily as it asks for them (a few steps ahead); each worker builds the inputs of
  the plans it receives with the run's thread count, and the batches come back in step order, in
  pinned memory when ``data.pin_memory`` (default: on CUDA), to be copied to the GPU without
  blocking.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

import torch

from contrastlab.data.base import Dataset
from contrastlab.train.config import ExperimentConfig
from contrastlab.train.step import StepPlan, build_inputs, plan_step

__all__ = ["DEVICE_DATA_FRACTION", "BatchFeed", "StepBatch", "builds_on_device",
           "check_fits_on_device"]

#: the largest share of the device's free memory that the training inputs may take when they
#: are moved there once (the rest is for the model, its activations and the loss)
DEVICE_DATA_FRACTION = 0.5


class StepBatch(NamedTuple):
    """One step's inputs ``[x1; x2; pool]`` and labels, as :func:`contrastlab.train.step.
    step_loss` takes them (``batch_ids``: the batch's data-set indices)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    pool_labels: torch.Tensor | None
    pool_ids: torch.Tensor | None
    batch_ids: torch.Tensor


def builds_on_device(cfg: ExperimentConfig) -> bool:
    """Whether the run's batches are built on its training device (module docstring): latent
    pairs, or the batched engine; otherwise (the per-sample engine) on the host."""
    return cfg.data.pairs != "augment" or cfg.data.augment.get("engine", "loop") == "batched"


def check_fits_on_device(nbytes: int, free: int, device: str) -> None:
    """Refuse, in one line, training inputs of ``nbytes`` that would take more than
    :data:`DEVICE_DATA_FRACTION` of the ``free`` bytes of ``device``: the run would fail later,
    out of memory, or leave the model no room."""
    if nbytes > DEVICE_DATA_FRACTION * free:
        gib = 2.0 ** 30
        raise ValueError(
            f"train.device {device!r}: the training inputs ({nbytes / gib:.2f} GiB) exceed "
            f"{DEVICE_DATA_FRACTION:.0%} of its free memory ({free / gib:.2f} GiB), and latent "
            "pairs and the batched augmentation engine keep them there; use "
            "data.augment.engine: loop (batches built on the host and copied) or a smaller "
            "data set (e.g. data.options)")


def _to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    """``x`` moved to ``device``, after :func:`check_fits_on_device` on a CUDA device."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        check_fits_on_device(x.numel() * x.element_size(), free, device)
    return x.to(device)


def _built(plan: StepPlan, x: torch.Tensor, augment: Any) -> StepBatch:
    return StepBatch(build_inputs(plan, x, augment), plan.labels, plan.pool_labels,
                     plan.pool_ids, plan.batch_ids)


class _Builder(torch.utils.data.Dataset[StepBatch]):
    """What a DataLoader worker holds: the training inputs and the augmenter; ``builder[plan]``
    builds a planned step."""

    def __init__(self, x: torch.Tensor, augment: Any) -> None:
        self.x, self.augment = x, augment

    def __getitem__(self, plan: StepPlan) -> StepBatch:
        return _built(plan, self.x, self.augment)


def _as_is(batch: Any) -> Any:
    return batch


class _Plans:
    """The DataLoader's sampler: the plans of the current epoch (set before each epoch), drawn
    in the training process as the DataLoader asks for them."""

    def __init__(self) -> None:
        self.plans: Iterator[StepPlan] = iter(())

    def __iter__(self) -> Iterator[StepPlan]:
        return self.plans


def _worker_init(threads: int, deterministic: bool, worker_id: int) -> None:
    """A worker computes as the training process does: with the run's thread count (the
    DataLoader sets 1) and its determinism setting."""
    del worker_id
    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


class BatchFeed:
    """The training batches of one run (module docstring): ``feed.epoch(order, steps,
    generator)`` yields the :class:`StepBatch` of every step of an epoch, planned from
    ``generator`` in step order.

    Attributes:
        x: the training inputs the batches are built from (on the training device when
            :func:`builds_on_device`, moved there once; else on the host).
        workers: the DataLoader worker processes that build them (0: this process).
    """

    def __init__(self, cfg: ExperimentConfig, data: Dataset, augment: Any,
                 threads: int = 1) -> None:
        self.cfg, self.y, self.augment, self.threads = cfg, data.y_train, augment, threads
        on_device = builds_on_device(cfg)
        self.x = _to_device(data.x_train, cfg.train.device) if on_device else data.x_train
        self.workers = 0 if on_device else cfg.data.workers
        self._sampler = _Plans()
        self._loader: torch.utils.data.DataLoader[StepBatch] | None = None

    def _workers_loader(self) -> torch.utils.data.DataLoader[StepBatch]:
        """The DataLoader of the run, made at its first epoch; its workers persist across
        epochs (:meth:`close` ends them)."""
        if self._loader is None:
            cfg = self.cfg
            self._loader = torch.utils.data.DataLoader(
                _Builder(self.x, self.augment), batch_size=None, sampler=self._sampler,
                num_workers=self.workers, collate_fn=_as_is,
                pin_memory=bool(cfg.data.pin_memory), persistent_workers=True,
                worker_init_fn=functools.partial(_worker_init, self.threads,
                                                 cfg.train.deterministic),
                generator=torch.Generator().manual_seed(0))  # not torch's global generator
        return self._loader

    def close(self) -> None:
        """End the worker processes, if any (a later epoch starts new ones)."""
        self._loader = None  # its iterator, and so its workers, go with it

    @property
    def n(self) -> int:
        """The number of training samples."""
        return int(self.y.shape[0])

    def _plans(self, order: torch.Tensor, steps: int,
               generator: torch.Generator) -> Iterator[StepPlan]:
        b = self.cfg.train.batch_size
        for s in range(steps):
            yield plan_step(self.cfg, self.x.shape, self.y, order[s * b : (s + 1) * b],
                            generator, self.augment)

    def epoch(self, order: torch.Tensor, steps: int,
              generator: torch.Generator) -> Generator[StepBatch, None, None]:
        """The batches of ``steps`` steps, step s on ``order[s B : (s + 1) B]``, in order."""
        plans = self._plans(order, steps, generator)
        if self.workers == 0:
            for plan in plans:
                yield _built(plan, self.x, self.augment)
            return
        loader = self._workers_loader()
        self._sampler.plans = plans
        yield from loader

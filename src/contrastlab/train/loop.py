"""The training loop: any loss of the library with an explicit k, seeded, resumable.

:func:`train` runs in phases: :func:`_prepare` (the data, the augmenter, the checkpoint
directory), :func:`_build` (the model, optimizer, schedule and generators of the run, seeded),
:func:`_resume` (the newest verified checkpoint, if any), then per epoch :func:`_train_epoch`
(the steps of :mod:`contrastlab.train.step`), :func:`_evaluate_epoch`
(:func:`contrastlab.train.metrics.evaluate` and, after the last epoch, the convergence test)
and :func:`_record_epoch` (history, ``on_epoch``, checkpoint).

Callbacks (:mod:`contrastlab.train.callbacks`): the ``on_epoch`` function, the loggers of
``train.loggers`` (:mod:`contrastlab.train.loggers`, writing into ``log_dir``) and the
``callbacks`` given, called in that order on rank 0: ``on_fit_start`` after the resume,
``on_step`` after every optimizer step, ``on_epoch`` before each checkpoint, ``on_fit_end`` when
the call ends (even by an exception).

Reproducibility: the model is initialized from ``seed``; batches, views and the pool come from one
``torch.Generator`` (planned in the training process, in step order, wherever the batches are
then built: :mod:`contrastlab.train.feed`), the negative draws from a second; evaluation uses
its own generators, seeded from (seed, epoch), so it never perturbs training.
``train.deterministic`` turns on ``torch.use_deterministic_algorithms`` for the run. A
checkpoint after every epoch holds the model, optimizer, scheduler, both generators, the global
RNG state, the epoch and the metric history; :func:`train` resumes from it and reproduces the
uninterrupted run's metrics exactly on CPU (same thread count). Checkpoints are checksummed and
the previous one is kept (:mod:`contrastlab.checkpoint`): a damaged or inconsistent one is set
aside, named on stderr, and the run resumes from the previous one or from scratch.

Per-epoch metrics (every ``eval.every`` epochs and after the last): the training loss and
learning rate; ``distinct_negatives``, the mean over the anchors of the number of distinct
training samples among an anchor's k negatives, measured on the draws of the epoch's first step
(k exactly without replacement when the pool allows; about P (1 - (1 - 1/P)^k) for i.i.d.
uniform draws from P distinct members, ~0.63 k at k = P; for ``loss.exact`` its expectation over
the k i.i.d. draws; 2B - 2, the other views, for the in-batch losses); and the evaluation metrics
of :mod:`contrastlab.train.metrics`. After the last epoch the full geometry and downstream
reports are returned, with the convergence test (:mod:`contrastlab.convergence`) when the
held-out loss is measured. A non-finite loss or embedding stops the run with status ``nan``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from contrastlab import checkpoint
from contrastlab.convergence import convergence
from contrastlab.data.base import Dataset
from contrastlab.distributed import init_from_env
from contrastlab.models import Encoder
from contrastlab.train.build import (
    as_train_data,
    build_model,
    build_optimizer,
    build_scheduler,
    load_data,
    shuffled_labels,
    sync_batchnorm,
)
from contrastlab.train.callbacks import Callback, CallbackList, EpochFunction, FitState
from contrastlab.train.config import ExperimentConfig, parse_config, run_id
from contrastlab.train.feed import BatchFeed, StepBatch
from contrastlab.train.loggers import build_loggers
from contrastlab.train.metrics import evaluate
from contrastlab.train.queue import NegativeQueue, key_encoder, update_key_encoder
from contrastlab.train.step import all_ranks_ok, fill_queue, step_loss

__all__ = ["CHECKPOINT_NAME", "TrainResult", "run_threads", "train"]

CHECKPOINT_NAME = checkpoint.LATEST

EpochCallback = Callable[[int, dict[str, Any], float], None]


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
    from contrastlab._progress import progress_bar

    # progress None: no bar when stderr is not a terminal (logs, CI, sweep workers)
    return progress_bar(total, desc, None, initial=initial, leave=False, dynamic_ncols=True)


def _save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """``directory/checkpoint.pt``, checksummed and written atomically; the former one is kept
    as ``checkpoint.prev.pt`` (:func:`contrastlab.checkpoint.save`)."""
    checkpoint.save(directory, state)


def _load_checkpoint(directory: Path, expected: checkpoint.Expected) -> dict[str, Any] | None:
    """The newest verified checkpoint of ``directory`` that fits ``expected``, or None; any
    other is set aside and named on stderr (:func:`contrastlab.checkpoint.load`)."""
    found = checkpoint.load(directory, lambda s: checkpoint.check_training_state(s, expected))
    return None if found is None else found[1]


def train(
    cfg: ExperimentConfig,
    dataset: Any = None,
    checkpoint_dir: str | Path | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    callbacks: Iterable[Callback] = (),
    log_dir: str | Path | None = None,
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
        callbacks: :class:`contrastlab.train.Callback` objects (module docstring), called after
            ``on_epoch`` and the loggers.
        log_dir: the run directory of the loggers of ``train.loggers`` (``metrics.csv``,
            ``tensorboard/``, ...; :mod:`contrastlab.train.loggers`); None: no logger (a
            one-line note on stderr when ``train.loggers`` names another than ``csv``).
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
    (BatchNorm layers use per-rank statistics, the one exception, unless
    ``train.sync_batchnorm``: CUDA only). Evaluation, ``on_epoch``,
    the callbacks and loggers, progress output and checkpoints are done by rank 0 only; the
    other ranks return the training loss and learning rate per epoch and no reports. Rank 0
    reads the checkpoint in ``checkpoint_dir`` and sends it to the other ranks, so only rank 0
    needs to see it.
    """
    t_start = time.perf_counter()
    cfg = parse_config(cfg)
    callbacks = list(callbacks)
    rank, world, created_group = join_group(cfg.train.device)
    try:
        hooks = _callbacks(cfg, on_epoch, callbacks, log_dir) if rank == 0 else CallbackList()
        return _train(cfg, dataset, checkpoint_dir, hooks, progress, stop_after, t_start,
                      rank, world, recorded)
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def join_group(device: str) -> tuple[int, int, bool]:
    """(rank, world, created) of the data-parallel run: torchrun's group with ``nccl`` when the
    device is CUDA (each rank on the GPU ``LOCAL_RANK`` unless ``train.device`` names one),
    ``gloo`` otherwise (:func:`contrastlab.distributed.init_from_env`)."""
    on_cuda = torch.device(device).type == "cuda"
    rank, world, created = init_from_env("nccl" if on_cuda else "gloo")
    if world > 1 and on_cuda and torch.device(device).index is None:
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local % torch.cuda.device_count())  # "cuda" is this GPU now
    return rank, world, created


def _callbacks(cfg: ExperimentConfig, on_epoch: EpochCallback | None,
               callbacks: list[Callback], log_dir: str | Path | None) -> CallbackList:
    """The callbacks of a call, in order: ``on_epoch``, the loggers, ``callbacks``."""
    loggers: list[Callback] = []
    if log_dir is not None:
        loggers = build_loggers(cfg, log_dir)
    elif set(cfg.train.loggers) - {"csv"}:  # named on purpose (csv is the default)
        print(f"train.loggers {cfg.train.loggers}: no log_dir given, nothing is logged",
              file=sys.stderr)
    first = [EpochFunction(on_epoch)] if on_epoch is not None else []
    return CallbackList([*first, *loggers, *callbacks])


# --------------------------------------------------------------------------------------------
# the phases of one call of train
# --------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """What a run needs before its model exists: the data, the augmenter, the checkpoints."""

    data: Dataset
    augment: Any
    rid: str
    ckpt_dir: Path | None


@dataclass
class _Run:
    """The state of one call of :func:`train`, shared by its phases."""

    cfg: ExperimentConfig
    prep: _Prepared
    rank: int
    world: int
    model: Encoder
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    g_data: torch.Generator
    g_neg: torch.Generator
    steps: int
    scaler: torch.amp.GradScaler
    feed: BatchFeed
    hooks: CallbackList = field(default_factory=CallbackList)
    queue: NegativeQueue | None = None  # loss.negatives_from: queue
    key_model: nn.Module | None = None  # its momentum (EMA) key encoder, model.momentum > 0
    forward: nn.Module | None = None  # the model, or its DistributedDataParallel wrapper
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0
    status: str = "done"
    error: str | None = None
    reports: dict[str, Any] = field(default_factory=dict)
    epoch_seconds: dict[int, float] = field(default_factory=dict)
    bar: Any = None
    log: bool = False  # progress output (a bar, or a line per epoch without a terminal)
    desc: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def stop(self, error: str) -> None:
        """End the run with status ``nan``."""
        self.status, self.error = "nan", error


def _train(
    cfg: ExperimentConfig,
    dataset: Any,
    checkpoint_dir: str | Path | None,
    hooks: CallbackList,
    progress: bool | None,
    stop_after: int | None,
    t_start: float,
    rank: int,
    world: int,
    recorded: Mapping[int, Mapping[str, Any]] | None = None,
) -> TrainResult:
    prep = _prepare(cfg, dataset, checkpoint_dir, rank, world)
    with _run_context(cfg):
        run = _build(cfg, prep, rank, world)
        run.hooks = hooks
        _resume(run, recorded)
        _start(run, progress)
        fit = FitState(cfg, prep.rid, run.start, run.steps, run.model, run.history)
        try:
            hooks.on_fit_start(fit)
            _run_epochs(run, stop_after)
        except BaseException as exc:
            fit.status, fit.error = "failed", f"{type(exc).__name__}: {exc}"
            _end(run, fit)
            raise
        fit.status, fit.error = run.status, run.error
        fit.reports = run.reports if run.status == "done" else {}
        _end(run, fit)
    return TrainResult(
        status=run.status,
        epochs=run.history,
        reports=run.reports if run.status == "done" else {},
        seconds=time.perf_counter() - t_start,
        resumed_from=run.start,
        model=run.model,
        run_id=prep.rid,
        error=run.error,
        epoch_seconds=run.epoch_seconds,
    )


def _end(run: _Run, fit: FitState) -> None:
    """End the batch feed's workers, close the progress bar, then every callback's
    ``on_fit_end``. After a failure (status ``failed``) an error of the callbacks is named on
    stderr and the failure propagates."""
    run.feed.close()  # its DataLoader workers, if any
    if run.bar is not None:
        run.bar.close()
    if fit.status != "failed":
        run.hooks.on_fit_end(fit)
        return
    try:
        run.hooks.on_fit_end(fit)
    except Exception as exc:
        print(f"callbacks: on_fit_end failed after the run failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)


def _prepare(cfg: ExperimentConfig, dataset: Any, checkpoint_dir: str | Path | None,
             rank: int, world: int) -> _Prepared:
    """Check the sizes against the world and the data, load the data, create the checkpoint
    directory (rank 0) and the augmenter."""
    if cfg.train.batch_size % world != 0:
        raise ValueError(
            f"train.batch_size {cfg.train.batch_size} must be divisible by the world size "
            f"{world} (each rank takes an equal slice of the global batch)"
        )
    if world > 1 and cfg.loss.negatives_from != "dataset":
        raise ValueError(f"loss.negatives_from={cfg.loss.negatives_from} is not supported under "
                         "torchrun yet (world size > 1); use dataset")
    rid = run_id(cfg)
    data = as_train_data(load_data(cfg) if dataset is None else dataset)
    if cfg.data.shuffle_labels:
        data = shuffled_labels(data, cfg.seed if cfg.data.seed is None else cfg.data.seed)
    n_train = int(data.y_train.shape[0])
    if cfg.loss.k is not None and not cfg.loss.replacement and cfg.loss.k > n_train:
        raise ValueError(
            f"loss.k ({cfg.loss.k}) exceeds the {n_train} training samples: that many distinct "
            "negatives per anchor do not exist; set loss.replacement=true or a smaller loss.k")
    ckpt_dir = None
    if checkpoint_dir is not None and cfg.train.checkpoint:
        if rank == 0:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_dir = Path(checkpoint_dir)
    augment = None
    if cfg.data.pairs == "augment":
        from contrastlab.data.pairs import augmenter

        augment = augmenter(data.kind, **cfg.data.augment)
    return _Prepared(data, augment, rid, ckpt_dir)


def _build(cfg: ExperimentConfig, prep: _Prepared, rank: int, world: int) -> _Run:
    """The model (initialized from ``seed``), optimizer, schedule and generators of the run."""
    torch.manual_seed(cfg.seed)
    model = sync_batchnorm(cfg, build_model(cfg, prep.data.input_shape), world)
    model = model.to(cfg.train.device)
    if cfg.train.channels_last:  # the convolutions then run in the channels-last layout
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, model)
    n = prep.data.x_train.shape[0]
    steps = cfg.train.steps_per_epoch or max(1, n // cfg.train.batch_size)
    sched = build_scheduler(cfg, opt, steps)
    g_data = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1)
    g_neg = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2)
    # fp16: the loss scaled against gradient underflow (a no-op scaler otherwise)
    scaler = torch.amp.GradScaler(torch.device(cfg.train.device).type,
                                  enabled=cfg.train.precision == "fp16")
    # the training inputs on the device once, where the batches are built there (train.feed)
    feed = BatchFeed(cfg, prep.data, prep.augment, run_threads(cfg))
    run = _Run(cfg, prep, rank, world, model, opt, sched, g_data, g_neg, steps, scaler, feed)
    if cfg.loss.negatives_from == "queue":
        run.key_model = key_encoder(model) if cfg.model.momentum > 0 else None
        g_queue = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 3)
        run.queue = fill_queue(cfg, run.key_model or model, feed.x, prep.data.y_train,
                               prep.augment, g_queue)
    return run


def _resume(run: _Run, recorded: Mapping[int, Mapping[str, Any]] | None) -> None:
    """Restore the newest verified checkpoint of the run (read by rank 0, sent to the others)."""
    cfg, state = run.cfg, None
    if run.prep.ckpt_dir is not None and run.main:
        state = _load_checkpoint(run.prep.ckpt_dir, checkpoint.Expected(
            run_id=run.prep.rid, epochs=cfg.train.epochs, steps_per_epoch=run.steps,
            model=run.model, optimizer=run.opt, recorded=recorded))
    if run.world > 1:  # rank 0's checkpoint (written by rank 0 only) resumes every rank
        import torch.distributed as dist

        box: list[Any] = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    if state is not None:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        run.g_data.set_state(state["g_data"])
        run.g_neg.set_state(state["g_neg"])
        torch.set_rng_state(state["rng"])
        run.history = list(state["history"])
        run.start = int(state["epoch"])
        if "scaler" in state and run.scaler.is_enabled():
            run.scaler.load_state_dict(state["scaler"])
        if run.queue is not None:
            run.queue.load_state_dict(state["queue"])
        if run.key_model is not None:
            run.key_model.load_state_dict(state["key_model"])


def _checkpoint_state(run: _Run, epoch: int) -> dict[str, Any]:
    """What :func:`_resume` restores, after ``epoch`` epochs."""
    return {
        "run_id": run.prep.rid,
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "g_data": run.g_data.get_state(),
        "g_neg": run.g_neg.get_state(),
        "rng": torch.get_rng_state(),
        "history": run.history,
        **({"scaler": run.scaler.state_dict()} if run.scaler.is_enabled() else {}),
        **({"queue": run.queue.state_dict()} if run.queue is not None else {}),
        **({"key_model": run.key_model.state_dict()} if run.key_model is not None else {}),
    }


def _start(run: _Run, progress: bool | None) -> None:
    """Training mode, the DistributedDataParallel wrapper (world > 1), ``torch.compile``
    (``train.compile``), the progress bar."""
    cfg = run.cfg
    run.model.train()
    run.forward = run.model
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.forward = DistributedDataParallel(run.model)
    if cfg.train.compile:  # the training forward only; evaluation runs the plain module
        run.forward = cast(nn.Module, torch.compile(run.forward))
    run.log = bool(cfg.train.progress if progress is None else progress) and run.main
    run.desc = f"{cfg.loss.name}" + (f" k={cfg.loss.k}" if cfg.loss.k else "")
    run.bar = _progress(run.steps * cfg.train.epochs, run.start * run.steps, run.log, run.desc)


def _run_epochs(run: _Run, stop_after: int | None) -> None:
    """The remaining epochs; after a resume past the last one, the final reports again."""
    cfg = run.cfg
    for epoch in range(run.start, cfg.train.epochs):
        if stop_after is not None and epoch >= stop_after:
            run.status = "stopped"
            return
        t0 = time.perf_counter()
        metrics = _train_epoch(run, epoch)
        if metrics is None or not _evaluate_epoch(run, epoch, metrics):
            return  # status nan
        _record_epoch(run, epoch, metrics, time.perf_counter() - t0)
    if run.start == cfg.train.epochs and run.main:
        # resumed after the last epoch: recompute the final reports
        data, augment = run.prep.data, run.prep.augment
        _, run.reports = evaluate(cfg, run.model, data, run.start, augment, final=True)
        if cfg.eval.heldout_loss:
            run.reports["convergence"] = convergence(run.history, cfg.train.epochs)


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any] | None:
    """The steps of epoch ``epoch`` (0-based): its training metrics, or None when a non-finite
    loss or embedding stopped the run."""
    cfg, steps = run.cfg, run.steps
    assert run.forward is not None
    n, b = run.feed.n, cfg.train.batch_size
    order = torch.cat([torch.randperm(n, generator=run.g_data)
                       for _ in range(-(-steps * b // n))])
    loss_sum = 0.0
    draw_stats: dict[str, float] = {}
    with closing(run.feed.epoch(order, steps, run.g_data)) as batches:
        for s, batch in enumerate(batches):
            value = _train_step(run, epoch, s, batch, draw_stats)
            if value is None:
                return None
            loss_sum += value
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / steps,
        "lr": run.opt.param_groups[0]["lr"],
        "distinct_negatives": draw_stats.get("distinct_negatives"),
    }


def _train_step(run: _Run, epoch: int, s: int, batch: StepBatch,
                draw_stats: dict[str, float]) -> float | None:
    """Step ``s`` of epoch ``epoch`` (0-based): the loss, the optimizer step, progress and
    ``on_step``. Returns the step's loss, or None when a non-finite loss or embedding stopped
    the run."""
    cfg = run.cfg
    assert run.forward is not None
    try:
        loss = step_loss(cfg, run.forward, batch.inputs, batch.labels, batch.pool_labels,
                         run.g_neg, run.rank, run.world, stats=draw_stats if s == 0 else None,
                         pool_ids=batch.pool_ids, queue=run.queue, key_model=run.key_model,
                         batch_ids=batch.batch_ids)
    except FloatingPointError as exc:
        run.stop(f"{exc} at epoch {epoch + 1}, step {s + 1}")
        return None
    if not bool(torch.isfinite(loss)):
        run.stop(f"non-finite loss at epoch {epoch + 1}, step {s + 1}")
        return None
    _optimize(run, loss)
    value = float(loss.detach())
    if run.bar is not None:
        run.bar.update(1)
        run.bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
    if run.hooks:  # the loss as a float only for a callback that asks for it
        run.hooks.on_step(epoch * run.steps + s + 1,
                          value if run.hooks.wants_step_loss else None)
    return value


def _optimize(run: _Run, loss: torch.Tensor) -> None:
    """Backward, optional gradient clipping, the optimizer step and the schedule's step (with
    ``train.precision: fp16`` through the gradient scaler)."""
    run.opt.zero_grad(set_to_none=True)
    if not run.scaler.is_enabled():
        loss.backward()
        if run.cfg.train.grad_clip is not None:
            nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
        run.opt.step()
    else:  # fp16: scaled backward; clip the unscaled gradients; skip a step with inf / NaN
        run.scaler.scale(loss).backward()
        if run.cfg.train.grad_clip is not None:
            run.scaler.unscale_(run.opt)
            nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
        run.scaler.step(run.opt)
        run.scaler.update()
    run.sched.step()
    if run.key_model is not None:  # MoCo: theta_k <- m theta_k + (1 - m) theta_q
        update_key_encoder(run.key_model, run.model, run.cfg.model.momentum)


def _evaluate_epoch(run: _Run, epoch: int, metrics: dict[str, Any]) -> bool:
    """Add the evaluation metrics of a scheduled epoch (computed on rank 0) and, after the last
    epoch, the convergence test; False when non-finite embeddings stopped the run."""
    cfg = run.cfg
    last = epoch + 1 == cfg.train.epochs
    every = cfg.eval.every
    if last or (every > 0 and (epoch + 1) % every == 0):
        eval_error = None
        if run.main:
            try:
                evm, run.reports = evaluate(cfg, run.model, run.prep.data, epoch + 1,
                                            run.prep.augment, final=last)
                metrics.update(evm)
            except FloatingPointError as exc:
                eval_error = str(exc)
        if not all_ranks_ok(eval_error is None, run.world):
            run.stop(eval_error or "non-finite embeddings (evaluated on rank 0)")
            return False
    if last and run.main and cfg.eval.heldout_loss:
        conv = convergence([*run.history, metrics], cfg.train.epochs)
        metrics["converged"] = float(conv["converged"])
        run.reports["convergence"] = conv
    return True


def _record_epoch(run: _Run, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
    """Append the epoch's metrics, report them (``on_epoch``, the loggers, the callbacks), then
    write the checkpoint."""
    run.history.append(metrics)
    run.epoch_seconds[epoch + 1] = seconds
    if run.main:
        run.hooks.on_epoch(epoch + 1, metrics, seconds)
    if run.prep.ckpt_dir is not None and run.main:  # after on_epoch: never ahead of the store
        _save_checkpoint(run.prep.ckpt_dir, _checkpoint_state(run, epoch + 1))
    if run.log and (run.bar is None or run.bar.disable):
        print(f"[{run.desc}] epoch {epoch + 1}/{run.cfg.train.epochs} "
              f"loss {metrics['train_loss']:.4f}", file=sys.stderr)

"""Run one configuration into an output directory (the directory's layout:
:mod:`contrastlab.experiments.plan`).

:func:`execute_run` is the unit of work of runs and sweeps: it takes the run's lock (so two
processes never train the same run at once; a process killed by SIGKILL releases it), skips the
run if the database says ``done``, marks it ``running``, trains it — resuming from its checkpoint
if a previous attempt was killed — writing every epoch's metrics as it goes, and finally records
the outcome (``done``, ``nan`` or ``failed``) with the reports in one transaction that refuses to
overwrite a ``done`` run: every finished run is stored exactly once.

It is made of two parts that the Ray executor (:mod:`contrastlab.experiments.ray_sweep`) uses
apart: :func:`compute_run` trains and returns a :class:`RunOutcome` without touching the database
(in a Ray worker), and :func:`commit_run` records that outcome (in the sweep's driver, the only
writer of the database).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastlab.experiments.files import file_lock
from contrastlab.experiments.plan import run_dir, write_run_config
from contrastlab.experiments.store import ResultStore
from contrastlab.train.config import (
    ConfigError,
    ExperimentConfig,
    parse_config,
    run_config_dict,
    run_id,
)

__all__ = [
    "RunOutcome",
    "commit_run",
    "compute_run",
    "execute_run",
    "one_line_error",
    "prepare_run",
    "run_config",
    "run_dir",  # re-exported from its owner, contrastlab.experiments.plan
]

_DATA_CACHE: OrderedDict[str, Any] = OrderedDict()
_DATA_CACHE_SIZE = 2


def _dataset(cfg: ExperimentConfig) -> Any:
    """Load the run's data set, reusing the last ones loaded by this process."""
    from contrastlab.train import load_data

    seed = cfg.seed if cfg.data.seed is None else cfg.data.seed
    key = json.dumps([cfg.data.name, cfg.data.root, seed, cfg.data.options], sort_keys=True,
                     default=str)
    if key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(key)
        return _DATA_CACHE[key]
    ds = load_data(cfg)
    _DATA_CACHE[key] = ds
    while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
        _DATA_CACHE.popitem(last=False)
    return ds


def one_line_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (or ``Type``): the one-line error a failed run
    records."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _recorded(store: ResultStore, rid: str) -> dict[int, dict[str, Any]]:
    """The run's per-epoch metrics in the database, by epoch (what its checkpoint must match)."""
    return {int(m["epoch"]): m for m in store.epochs(rid) if "epoch" in m}


def _check_parent(parent_pid: int | None) -> None:
    """Exit at once if the sweep process that started this worker is gone (orphaned)."""
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(3)


@dataclass
class RunOutcome:
    """What training one run produced, before it is committed to the results database: what a
    Ray worker sends back to the sweep's driver (:func:`compute_run`, :func:`commit_run`).

    Attributes:
        run_id: the run id.
        status: ``done``, ``nan`` or ``failed``.
        epochs: per-epoch metrics (every epoch of the run, resumed ones included).
        reports: the final reports (``done`` only).
        seconds: wall time of the training call (None for ``failed``).
        error: what stopped a ``nan`` or ``failed`` run.
        epoch_seconds: wall time of each epoch trained by this call.
        host, pid: where it was computed (None: not computed, e.g. a lost attempt).
    """

    run_id: str
    status: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    epoch_seconds: dict[int, float] = field(default_factory=dict)
    host: str | None = None
    pid: int | None = None


def prepare_run(config: Mapping[str, Any] | ExperimentConfig) -> ExperimentConfig:
    """The run's resolved config, its sweep cleared. The executor never changes it: a run
    computes with ``train.threads`` (1 when unset) under any worker count or executor, so its
    numbers are a function of its config alone."""
    raw = config.model_dump(mode="json") if isinstance(config, ExperimentConfig) else dict(config)
    raw["sweep"] = {}
    return parse_config(raw)


def compute_run(
    cfg: ExperimentConfig,
    checkpoint_dir: str | Path | None,
    progress: bool | None = None,
    on_epoch: Callable[[int, dict[str, Any], float], None] | None = None,
    recorded: Mapping[int, Mapping[str, Any]] | None = None,
) -> RunOutcome:
    """Train one run (resuming from ``checkpoint_dir``) and return its outcome; touches no
    database. ``recorded``: the run's per-epoch metrics in the database, which a checkpoint
    must agree with (:func:`contrastlab.train.train`). The loggers of ``train.loggers``
    (``metrics.csv``, ...) write into ``checkpoint_dir``, the run's directory. An exception of
    the training becomes a ``failed`` outcome with its one-line message (the traceback on
    stderr when ``CONTRASTLAB_DEBUG`` is set); KeyboardInterrupt and other BaseExceptions
    propagate."""
    from contrastlab.train import train

    rid = run_id(cfg)
    try:
        result = train(cfg, _dataset(cfg), checkpoint_dir=checkpoint_dir, on_epoch=on_epoch,
                       log_dir=checkpoint_dir, progress=progress, recorded=recorded)
    except Exception as exc:
        if os.environ.get("CONTRASTLAB_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        return RunOutcome(rid, "failed", error=one_line_error(exc), host=socket.gethostname(),
                          pid=os.getpid())
    return RunOutcome(rid, result.status, result.epochs, result.reports, result.seconds,
                      result.error, result.epoch_seconds, socket.gethostname(), os.getpid())


def commit_run(store: ResultStore, outcome: RunOutcome, rdir: Path | None,
               keep_checkpoints: bool) -> bool:
    """Record ``outcome`` in ``store`` (one transaction; refused if the run is already
    ``done``), then, for a ``done`` run without ``keep_checkpoints``, delete its checkpoints in
    ``rdir`` (not those set aside as damaged). Returns whether the outcome was written."""
    from contrastlab import checkpoint

    o = outcome
    written = store.finish(o.run_id, o.status, o.epochs or None, o.reports or None, o.seconds,
                           o.error, o.epoch_seconds or None, o.host, o.pid)
    if o.status == "done" and not keep_checkpoints and rdir is not None:
        checkpoint.remove(rdir)
    return written


def execute_run(
    config: Mapping[str, Any] | ExperimentConfig,
    out_dir: str | Path,
    progress: bool | None = None,
    parent_pid: int | None = None,
) -> tuple[str, str]:
    """Train one run into ``out_dir`` unless it is already done (module docstring).

    Args:
        config: the run's config (a mapping or an ExperimentConfig; its sweep is ignored).
        out_dir: the output directory.
        progress: show the per-run progress bar (default ``train.progress``).
        parent_pid: in a sweep worker, the sweep's pid: the worker exits if it disappears.

    Returns:
        ``(run_id, status)`` with status ``done``, ``nan`` or ``failed``.
    """
    cfg = prepare_run(config)
    rid = run_id(cfg)
    record = run_config_dict(cfg)
    rdir = write_run_config(out_dir, rid, record)
    with file_lock(rdir / "lock"):
        store = ResultStore(out_dir)
        try:
            store.add_runs([(rid, record)])
            if not store.mark_running(rid):
                return rid, "done"

            def on_epoch(epoch: int, metrics: dict[str, Any], seconds: float) -> None:
                _check_parent(parent_pid)
                store.record_epoch(rid, epoch, metrics, seconds)

            try:
                outcome = compute_run(cfg, rdir, progress=progress, on_epoch=on_epoch,
                                      recorded=_recorded(store, rid))
            except KeyboardInterrupt:
                store.finish(rid, "failed", error="interrupted (KeyboardInterrupt)")
                raise
            commit_run(store, outcome, rdir, cfg.output.keep_checkpoints)
            return rid, outcome.status
        finally:
            store.close()


def run_config(
    cfg: Mapping[str, Any] | ExperimentConfig,
    out_dir: str | Path,
    progress: bool | None = None,
) -> str:
    """Train one configuration into ``out_dir`` (skipped if already done there); returns the
    run id. The config must not hold a sweep grid (use :func:`~contrastlab.experiments.sweep.
    run_sweep`). Raises ConfigError / StoreError (ValueErrors) before any work on bad input."""
    cfg = parse_config(cfg)
    if cfg.sweep:
        keys = ", ".join(cfg.sweep)
        raise ConfigError(f"sweep: the config has a sweep grid ({keys}); run it with the sweep "
                          "command, or clear it with --set sweep={}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _run_config_distributed(cfg, out_dir, progress)
    with ResultStore(out_dir) as store:  # refuses a foreign or corrupted database up front
        store.add_runs([(run_id(cfg), run_config_dict(cfg))])
    rid, _ = execute_run(cfg, out_dir, progress=progress)
    return rid


def _run_config_distributed(cfg: ExperimentConfig, out_dir: str | Path,
                            progress: bool | None) -> str:
    """``run_config`` under torchrun (``WORLD_SIZE`` > 1): rank 0 does what :func:`execute_run`
    does (lock, database, config.yaml, checkpoints, the outcome); it tells the other ranks
    whether the run is to be trained, and every rank then calls
    :func:`contrastlab.train.train` (data parallel) with the same checkpoint directory.
    All ranks return after rank 0 has recorded the outcome."""
    import torch.distributed as dist

    from contrastlab.train import join_group

    rank, _, created = join_group(cfg.train.device)
    try:
        cfg = prepare_run(cfg)
        rid = run_id(cfg)
        rdir = run_dir(out_dir, rid)
        if rank != 0:
            msg: list[Any] = [None]
            dist.broadcast_object_list(msg, src=0)
            if msg[0] == "train":
                compute_run(cfg, rdir, progress=False)
            elif msg[0] != "skip":
                raise ValueError(f"rank 0 failed before training: {msg[0]}")
            dist.barrier()
            return rid
        go: str = "skip"
        sent = False
        try:
            record = run_config_dict(cfg)
            write_run_config(out_dir, rid, record)
            with file_lock(rdir / "lock"):
                with ResultStore(out_dir) as store:
                    store.add_runs([(rid, record)])
                    if store.mark_running(rid):
                        go = "train"
                    sent = True
                    dist.broadcast_object_list([go], src=0)
                    if go == "train":
                        def on_epoch(epoch: int, metrics: dict[str, Any], seconds: float) -> None:
                            store.record_epoch(rid, epoch, metrics, seconds)

                        outcome = compute_run(cfg, rdir, progress=progress, on_epoch=on_epoch,
                                              recorded=_recorded(store, rid))
                        commit_run(store, outcome, rdir, cfg.output.keep_checkpoints)
        except Exception as exc:
            if not sent:  # failed before the broadcast: release the other ranks
                dist.broadcast_object_list([one_line_error(exc)], src=0)
            raise
        dist.barrier()
        return rid
    finally:
        if created:
            dist.destroy_process_group()

"""Sweeps: expand a ``sweep:`` grid and run its points on a local process pool, resumably.

:func:`run_sweep`:

1. expands the grid (:func:`contrastlab.train.config.expand_sweep`: the cartesian product
   of the ``sweep`` lists; every point validated before any work starts);
2. inserts every point into the results database as ``pending`` (insert-or-ignore on the unique
   run id: points already there keep their status); steps 1 and 2 are
   :func:`contrastlab.experiments.plan.register_plan`, which the Ray executor shares;
3. runs the points that are not finished (status ``pending``, ``running`` or ``failed``: the
   leftovers of a killed sweep; ``done`` and ``nan`` are final and skipped), each through
   :func:`contrastlab.experiments.runner.execute_run`: in this process for ``workers=1``, else
   on a ``spawn`` process pool of ``workers`` processes; or, with ``executor="ray"``, as Ray
   tasks on a local Ray instance or a cluster
   (:mod:`contrastlab.experiments.ray_sweep`: same plan, statuses and guarantees, the sweep
   process being the only writer of the database). Every run computes with ``train.threads``
   torch threads (1 when unset) under every executor, so its numbers do not depend on the
   worker count: run parallelism comes from workers, not threads.

Killing a sweep at any moment (SIGKILL included) and starting it again runs only what is missing:
a run killed mid-training is ``running`` in the database and resumes from its last epoch's
checkpoint; a run whose outcome was committed is never run or stored again. Pool workers die with
the sweep process (Linux ``PR_SET_PDEATHSIG``; elsewhere they notice at the next epoch), and a
per-run file lock keeps a late orphan and a restarted sweep from training the same run at once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from contrastlab._progress import ProgressBar, progress_bar
from contrastlab._validation import check_choice, check_positive_int
from contrastlab.experiments.plan import SweepLog, SweepPlan, plan_sweep, register_plan, run_label
from contrastlab.experiments.runner import execute_run
from contrastlab.losses.registry import LossSpec, register_loss, registered_at_run_time
from contrastlab.train.config import ExperimentConfig, run_config_dict

# plan_sweep: re-exported from its owner, contrastlab.experiments.plan
__all__ = ["EXECUTORS", "plan_sweep", "run_sweep"]

EXECUTORS = ("local", "ray")


def _init_worker(parent_pid: int, losses: tuple[LossSpec, ...] = ()) -> None:
    """Pool initializer: one torch thread outside runs (each run sets its own, ``train.threads``),
    die with the sweep process (Linux), and register the losses the sweep process registered at
    run time (:func:`contrastlab.losses.registry.registered_at_run_time`)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(3)
    import torch

    torch.set_num_threads(1)
    for spec in losses:
        register_loss(spec, replace=True)


def _log_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _above_bars(log: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """``log`` writing above the progress bars on the terminal (cleared, then redrawn) instead
    of through them."""
    if log is None:
        return None

    def say(message: str) -> None:
        with ProgressBar.external_write_mode(file=sys.stderr):
            log(message)

    return say


def run_sweep(
    cfg: Mapping[str, Any] | ExperimentConfig,
    out_dir: str | Path,
    workers: int = 1,
    progress: bool | None = None,
    log: Callable[[str], None] | None = _log_default,
    executor: str = "local",
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    retries: int | None = None,
    runs_bar: bool | None = False,
) -> list[str]:
    """Run every point of the config's sweep grid into ``out_dir`` (module docstring).

    Args:
        cfg: the config with its ``sweep`` grid (a config without one is a 1-point sweep).
        out_dir: the output directory (its results database is created if missing).
        workers: processes; 1 runs in this process (local executor only).
        progress: per-run progress bars (default ``train.progress``, only with 1 worker).
        log: receives one line per event (None: silent).
        executor: ``local`` (this machine's process pool) or ``ray`` (one Ray task per run,
            :func:`contrastlab.experiments.ray_sweep.run_sweep_ray`).
        address, cpus_per_run, gpus_per_run, retries: the Ray executor's options (see
            :func:`~contrastlab.experiments.ray_sweep.run_sweep_ray`); refused with ``local``.
        runs_bar: a progress bar over the sweep's runs with the time left (tqdm, on stderr,
            the ``log`` lines written above it; None: only when stderr is a terminal). Local
            executor only (Ray logs one line per run).

    Returns:
        The run ids of the grid points, in grid order.
    """
    workers = check_positive_int("workers", workers)
    executor = check_choice("executor", executor, EXECUTORS)
    ray_opts = {"address": address, "cpus_per_run": cpus_per_run,
                "gpus_per_run": gpus_per_run, "retries": retries}
    if executor == "ray":
        if workers != 1:
            raise ValueError("workers applies to the local executor; on Ray each run is a task "
                             "and the cluster's CPUs set how many run at once (cpus_per_run)")
        from contrastlab.experiments.ray_sweep import run_sweep_ray

        return run_sweep_ray(cfg, out_dir, address=address, cpus_per_run=cpus_per_run,
                             gpus_per_run=gpus_per_run, retries=retries, log=log)
    given = [k for k, v in ray_opts.items() if v is not None]
    if given:
        raise ValueError(f"{given[0]} applies to the ray executor only (executor='ray')")
    plan = register_plan(cfg, out_dir)
    log_lines = SweepLog(plan, log if runs_bar is False else _above_bars(log))
    log_lines.start(f"{min(workers, max(1, len(plan.todo)))} worker(s)", out_dir)
    with progress_bar(len(plan.points), "runs", runs_bar,
                      initial=len(plan.points) - len(plan.todo), unit="run",
                      dynamic_ncols=True) as bar:
        _run_local(plan, out_dir, workers, progress, log_lines, bar)
    return plan.run_ids


def _run_local(plan: SweepPlan, out_dir: str | Path, workers: int, progress: bool | None,
               log: SweepLog, bar: Any) -> None:
    """Run the plan's unfinished points: in this process for 1 worker (or at most 1 point), else
    on a ``spawn`` pool of ``workers`` processes (at most one per point); ``bar`` (a tqdm bar)
    advances by one per finished run."""
    todo = plan.todo
    log.start_clock()
    if workers == 1 or len(todo) <= 1:
        for rid, p in todo:
            bar.set_postfix_str(run_label(p, plan.keys))
            _, st = execute_run(p, out_dir, progress=progress)
            log.finished(rid, st, p)
            bar.update(1)
        return
    n = min(workers, len(todo))
    parent = os.getpid()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                             initargs=(parent, registered_at_run_time())) as pool:
        futures = {
            pool.submit(execute_run, run_config_dict(p), str(out_dir), False, parent): (rid, p)
            for rid, p in todo
        }
        for fut in as_completed(futures):
            rid, p = futures[fut]
            _, st = fut.result()
            log.finished(rid, st, p)
            bar.update(1)

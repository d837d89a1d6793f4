"""Sweeps on Ray: every grid point is one Ray task; the driver alone writes the database.

:func:`run_sweep_ray` is the ``ray`` executor of :func:`contrastlab.experiments.sweep.run_sweep`
(``contrastlab sweep CONFIG --executor ray [--address ADDR]``):

1. like the local executor it expands the grid, inserts every point as ``pending``
   (insert-or-ignore) and selects the unfinished points (``pending``, ``running``, ``failed``;
   ``done`` and ``nan`` are final and skipped);
2. it connects to Ray — a new local instance by default (:func:`init_local_ray`: it listens on
   the loopback interface only, so nothing outside this machine can reach it), an existing
   cluster, left as it is, when an address is given (``auto``, ``HOST:6379`` or
   ``ray://HOST:10001``) — marks each unfinished point
   ``running`` and submits it as a Ray task that reserves ``cpus_per_run`` CPUs and
   ``gpus_per_run`` GPUs; Ray schedules the tasks on the cluster;
3. the task (:func:`_train_on_worker`) trains the run in a Ray worker with
   :func:`~contrastlab.experiments.runner.compute_run`: checkpoints go to the run's directory
   when the worker sees the driver's file system (local Ray, or a shared file system; else a
   temporary directory of the worker's node), under the run's lock, and the outcome (status,
   per-epoch metrics, reports, timings, error) is returned to the driver; the task never opens
   the database;
4. the driver commits each outcome as it arrives with
   :func:`~contrastlab.experiments.runner.commit_run` — one transaction that refuses to
   overwrite a ``done`` run — so the database has a single writer, even across machines;
   each run's status (``done``, ``nan``, ``failed``) and one-line error are in the database
   and in the run's log line.

A lost attempt (the worker process killed or crashed, its node lost, Ray's memory monitor, or an
error raised outside the training) is submitted again, up to ``retries`` times (each a new
attempt in the database), and then recorded as ``failed`` with the last error: no grid point is
ever lost. An exception raised by the training itself is a ``failed`` outcome at once, as with the
local executor (it would fail again). Killing the driver leaves its runs ``running``: the next
sweep runs them again (from their checkpoints when the worker sees the run directory), and skips
the ``done`` ones, exactly as after a killed local sweep.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from contrastlab.experiments.config import (
    ExperimentConfig,
    parse_config,
    run_config_dict,
    run_id,
)
from contrastlab.experiments.runner import (
    RunOutcome,
    _lock,
    _one_line,
    _write_atomic,
    commit_run,
    compute_run,
    prepare_run,
    run_dir,
)
from contrastlab.experiments.store import ResultStore
from contrastlab.experiments.sweep import _label, register_plan

__all__ = ["DEFAULT_RETRIES", "check_ray_options", "init_local_ray", "run_sweep_ray"]

DEFAULT_RETRIES = 2
_TASK_NAME = "contrastlab-run"


def check_ray_options(
    cpus_per_run: float | None,
    gpus_per_run: float | None,
    retries: int | None,
    address: str | None = None,
    cli: bool = False,
) -> tuple[float, float, int, str | None]:
    """Validate the Ray executor's options; returns them with their defaults filled in
    (1 CPU, 0 GPUs, :data:`DEFAULT_RETRIES`). Raises a one-line ValueError naming the option
    (``--cpus-per-run`` style when ``cli``)."""

    def name(arg: str) -> str:
        return "--" + arg.replace("_", "-") if cli else arg

    cpus = 1.0 if cpus_per_run is None else cpus_per_run
    gpus = 0.0 if gpus_per_run is None else gpus_per_run
    tries = DEFAULT_RETRIES if retries is None else retries
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not (
            math.isfinite(cpus) and cpus > 0):
        raise ValueError(f"{name('cpus_per_run')} must be a number > 0 (fractions allowed); "
                         f"got {cpus_per_run!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not (
            math.isfinite(gpus) and gpus >= 0):
        raise ValueError(f"{name('gpus_per_run')} must be a number >= 0 (fractions allowed); "
                         f"got {gpus_per_run!r}")
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 0:
        raise ValueError(f"{name('retries')} must be an integer >= 0; got {retries!r}")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ValueError(f"{name('address')} must be 'auto', HOST:PORT or ray://HOST:PORT; "
                         f"got {address!r}")
    return float(cpus), float(gpus), tries, (address.strip() if address is not None else None)


@contextlib.contextmanager
def _single_machine_ray() -> Iterator[None]:
    """While a local Ray instance starts: Ray's single-machine mode (its default on Windows and
    macOS), in which the node's address is the loopback address, so every Ray process of the
    instance listens on it (and its children inherit the mode through the environment).

    ``ray.init(_node_ip_address="127.0.0.1")`` does not do this: Ray replaces a loopback node
    address with the machine's network address, and its servers listen on every interface."""
    import ray._private.ray_constants as ray_constants

    var = getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR",
                  "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_env, saved = os.environ.get(var), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[var] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved_env
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def init_local_ray(**options: Any) -> None:
    """Start a local Ray instance in this process (``ray.init``) that only this machine can
    reach: the GCS, the raylet, the object manager, the workers and the agents listen on the
    loopback interface (127.0.0.1), and the dashboard is off. Ray runs whatever code is sent
    to it, so an instance that listens on the network is open to anyone who can reach it.

    Args:
        options: keyword arguments of ``ray.init`` (``num_cpus``, ``object_store_memory``,
            ...); ``include_dashboard`` defaults to False. With ``_node_ip_address`` the
            caller chooses the address and the loopback mode is not applied.

    Raises:
        RuntimeError: Ray started on a non-loopback address anyway (a Ray version that ignores
            the single-machine mode); the instance is stopped first.
    """
    import ray

    opts: dict[str, Any] = {"include_dashboard": False, **options}
    if "_node_ip_address" in opts:  # the caller's choice
        ray.init(**opts)
        return
    with _single_machine_ray():
        ray.init(**opts)
    node_ip = str(ray.util.get_node_ip_address())
    if not _is_loopback(node_ip):
        ray.shutdown()
        raise RuntimeError(f"this Ray version started the local instance on {node_ip}, not on "
                           "the loopback interface; start Ray yourself (see the README, "
                           "'Running on a Ray cluster safely') and pass its address")


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ImportError("the ray executor needs Ray, which is not installed: "
                          "pip install 'contrastlab[ray]'")


def _train_on_worker(record: dict[str, Any], rdir: str,
                     driver_node: str | None) -> RunOutcome:
    """The Ray task: train one run in this worker and return its outcome (module docstring).

    Args:
        record: the run's resolved config (``run_config_dict``).
        rdir: the run's directory on the driver's file system (absolute).
        driver_node: the driver's Ray node id (None: unknown, e.g. a Ray client driver).
    """
    import ray

    from contrastlab.checkpoint import remove as remove_checkpoints

    cfg = prepare_run(record)
    rid = run_id(cfg)
    ckdir = Path(rdir)
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
    except OSError:  # the driver's file system is not here: checkpoints on this node
        ckdir = Path(tempfile.gettempdir()) / "contrastlab-ray" / rid
        ckdir.mkdir(parents=True, exist_ok=True)
    with _lock(ckdir / "lock"):
        outcome = compute_run(cfg, ckdir, progress=False)
    same_node = driver_node is not None and ray.get_runtime_context().get_node_id() == driver_node
    if outcome.status == "done" and not same_node and not cfg.output.keep_checkpoints:
        remove_checkpoints(ckdir)  # the driver cannot see this copy
    return outcome


def _error_line(exc: BaseException) -> str:
    """One line for a lost attempt: the task's own exception when there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return _one_line(cause)
    return _one_line(exc)


def run_sweep_ray(
    cfg: Mapping[str, Any] | ExperimentConfig,
    out_dir: str | Path,
    *,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    retries: int | None = None,
    log: Callable[[str], None] | None = None,
    init_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Run every point of the config's sweep grid into ``out_dir`` on Ray (module docstring).

    Args:
        cfg: the config with its ``sweep`` grid (a config without one is a 1-point sweep).
        out_dir: the output directory on the driver (its results database is created if
            missing).
        address: the Ray cluster to use (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None
            starts a local Ray instance for the sweep and stops it at the end. When Ray is
            already initialized in this process, that connection is used as it is.
        cpus_per_run: CPUs each run reserves (default 1). The run computes with
            ``train.threads`` (1 when unset) whatever it reserves, so its numbers do not
            depend on the executor; reserve as many CPUs as ``train.threads``.
        gpus_per_run: GPUs each run reserves (default 0).
        retries: how many times a lost attempt is submitted again (default 2).
        log: receives one line per event (None: silent): the start, each lost attempt, and
            each finished run (``[i/n] RUN_ID LABEL: STATUS[: ERROR] (SECONDS s)``).
        init_options: extra keyword arguments of ``ray.init`` (for a local instance, of
            :func:`init_local_ray`).

    Returns:
        The run ids of the grid points, in grid order. When it returns, every one of them has
        a final status in ``out_dir``'s database: ``done``, ``nan`` or ``failed`` (with its
        one-line ``error``; also in the run's log line): ``nan`` or ``failed`` means the sweep
        did not fully succeed. When it raises instead (bad options, Ray unreachable,
        interrupted), the unfinished runs stay ``pending`` or ``running`` for the next sweep.
    """
    cpus, gpus, retries_, address = check_ray_options(cpus_per_run, gpus_per_run, retries,
                                                      address)
    _require_ray()
    cfg = parse_config(cfg)
    plan, todo = register_plan(cfg, out_dir)
    keys = list(cfg.sweep)
    say = log or (lambda _m: None)
    head = f"sweep: {len(plan)} runs, {len(plan) - len(todo)} finished, {len(todo)} to run"
    if not todo:
        say(f"{head} on Ray -> {out_dir}")
        return [rid for rid, _ in plan]

    import ray

    started = False
    if not ray.is_initialized():
        try:
            if address is None:
                init_local_ray(**(init_options or {}))
            else:  # the user's cluster, as it is
                ray.init(address=address, **(init_options or {}))
        except Exception as exc:  # no cluster there, refused, timed out: one line
            where = ("start a local Ray instance" if address is None
                     else f"connect to the Ray cluster at {address!r}")
            raise ValueError(f"could not {where}: {_one_line(exc)}") from None
        started = True
    store: ResultStore | None = None
    pending: dict[Any, tuple[str, ExperimentConfig, int]] = {}
    try:
        total = ray.cluster_resources()
        have_cpu, have_gpu = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        if address is None and (cpus > have_cpu or gpus > have_gpu):
            what, want, have = (("CPUs", cpus, have_cpu) if cpus > have_cpu
                                else ("GPUs", gpus, have_gpu))
            raise ValueError(f"{what.lower()}_per_run={want:g} exceeds the {have:g} {what} of "
                             "the local Ray instance: no run could ever be scheduled")
        client = ray.util.client.ray.is_connected()
        where = "Ray client" if client else ("local Ray" if address is None else "Ray cluster")
        if address is not None:
            where += f" {address}"
        say(f"{head} on {where} ({have_cpu:g} CPUs, {have_gpu:g} GPUs; {cpus:g} CPU, "
            f"{gpus:g} GPU per run; retries {retries_}) -> {out_dir}")
        driver_node = None if client else ray.get_runtime_context().get_node_id()
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                          retry_exceptions=False)(_train_on_worker)
        store = ResultStore(out_dir)
        t0 = time.perf_counter()
        done = 0

        def report(rid: str, st: str, p: ExperimentConfig, error: str | None = None) -> None:
            nonlocal done
            done += 1
            why = f": {error}" if st != "done" and error else ""
            say(f"[{done}/{len(todo)}] {rid} {_label(p, keys)}: {st}{why} "
                f"({time.perf_counter() - t0:.1f} s)")

        def submit(rid: str, p: ExperimentConfig, attempt: int) -> None:
            assert store is not None
            if not store.mark_running(rid):  # finished meanwhile by another sweep
                report(rid, "done", p)
                return
            rdir = run_dir(out_dir, rid).resolve()
            ref = task.options(name=f"{_TASK_NAME}-{rid}").remote(
                run_config_dict(p), str(rdir), driver_node)
            pending[ref] = (rid, p, attempt)

        for rid, p in todo:
            rdir = run_dir(out_dir, rid)
            rdir.mkdir(parents=True, exist_ok=True)
            _write_atomic(rdir / "config.yaml",
                          yaml.safe_dump(run_config_dict(p), sort_keys=False))
            submit(rid, p, 1)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                rid, p, attempt = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    why = _error_line(exc)
                    if attempt <= retries_:
                        say(f"{rid}: attempt {attempt} lost ({why}); retry {attempt}/{retries_}")
                        submit(rid, p, attempt + 1)
                        continue
                    outcome = RunOutcome(rid, "failed",
                                         error=f"{why} (attempt {attempt} of {retries_ + 1})")
                if outcome.run_id != rid:  # pragma: no cover - a different contrastlab on a node
                    outcome = RunOutcome(rid, "failed", error=(
                        f"the worker computed run {outcome.run_id}, not {rid}: is the same "
                        "contrastlab version installed on every node?"))
                if outcome.status != "done":  # the database holds one line per error
                    outcome.error = " ".join((outcome.error or "no error message").split())
                commit_run(store, outcome, run_dir(out_dir, rid), p.output.keep_checkpoints)
                report(rid, outcome.status, p, outcome.error)
    finally:
        if pending:  # interrupted: stop the runs in flight; they stay `running` (resumable)
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if store is not None:
            store.close()
        if started:
            ray.shutdown()
    return [rid for rid, _ in plan]


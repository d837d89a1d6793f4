"""Sweeps on Ray: every grid point is one Ray task; the driver alone writes the database.

:func:`run_sweep_ray` is the ``ray`` executor of :func:`contrastlab.experiments.sweep.run_sweep`
(``contrastlab sweep CONFIG --executor ray [--address ADDR]``):

1. like the local executor (:func:`contrastlab.experiments.plan.register_plan`) it expands the
   grid, inserts every point as ``pending`` (insert-or-ignore) and selects the unfinished points
   (``pending``, ``running``, ``failed``; ``done`` and ``nan`` are final and skipped);
2. it connects to Ray — a new local instance by default (:func:`init_local_ray`: it listens on
   the loopback interface only, so nothing outside this machine can reach it), an existing
   cluster, left as it is, when an address is given (``auto``, ``HOST:6379`` or
   ``ray://HOST:10001``) — marks each unfinished point
   ``running`` and submits it as a Ray task that reserves ``cpus_per_run`` CPUs and
   ``gpus_per_run`` GPUs; Ray schedules the tasks on the cluster. With GPUs the runs are
   planned for GPU workers (:func:`~contrastlab.train.config.for_gpu_workers`: ``train.device:
   auto`` is ``cuda`` in the run id and the stored config, whatever the driver's own devices)
   and each task resolves its device in its own view (:func:`_train_on_worker`);
3. the task (:func:`_train_on_worker`) trains the run in a Ray worker with
   :func:`~contrastlab.experiments.runner.compute_run`: checkpoints go to the run's directory
   when the worker sees the driver's file system (local Ray, or a shared file system; else a
   temporary directory of the worker's node), under the run's lock, and the outcome (status,
   per-epoch metrics, reports, timings, error) is returned to the driver; the task never opens
   the database;
4. the driver (:class:`_Driver`) commits each outcome as it arrives with
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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from contrastlab.experiments.files import file_lock
from contrastlab.experiments.plan import (
    SweepLog,
    register_plan,
    run_dir,
    write_run_config,
)
from contrastlab.experiments.runner import (
    RunOutcome,
    commit_run,
    compute_run,
    one_line_error,
    prepare_run,
)
from contrastlab.experiments.store import ResultStore
from contrastlab.losses.registry import LossSpec, register_loss, registered_at_run_time
from contrastlab.train.config import (
    ConfigError,
    ExperimentConfig,
    expand_sweep,
    for_gpu_workers,
    gpu_workers,
    run_config_dict,
    run_id,
)

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


def _train_on_worker(record: dict[str, Any], rdir: str, driver_node: str | None,
                     losses: tuple[LossSpec, ...] = ()) -> RunOutcome:
    """The Ray task: train one run in this worker and return its outcome (module docstring).

    The run's device is resolved and checked here, in the task's view of the GPUs (the record
    of a GPU run says ``cuda``, planned so by the driver): Ray sets ``CUDA_VISIBLE_DEVICES`` to
    the GPUs it assigned the task, so ``cuda`` is the first of them (``cuda:0`` of the view);
    a task without a usable one fails in one line naming the device and that variable.

    Args:
        record: the run's resolved config (``run_config_dict``).
        rdir: the run's directory on the driver's file system (absolute).
        driver_node: the driver's Ray node id (None: unknown, e.g. a Ray client driver).
        losses: the losses the driver registered at run time (registered here too).
    """
    import ray

    for spec in losses:
        register_loss(spec, replace=True)
    from contrastlab.checkpoint import remove as remove_checkpoints

    cfg = prepare_run(record)
    rid = run_id(cfg)
    ckdir = Path(rdir)
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
    except OSError:  # the driver's file system is not here: checkpoints on this node
        ckdir = Path(tempfile.gettempdir()) / "contrastlab-ray" / rid
        ckdir.mkdir(parents=True, exist_ok=True)
    with file_lock(ckdir / "lock"):
        outcome = compute_run(cfg, ckdir, progress=False)
    same_node = driver_node is not None and ray.get_runtime_context().get_node_id() == driver_node
    if outcome.status == "done" and not same_node and not cfg.output.keep_checkpoints:
        remove_checkpoints(ckdir)  # the driver cannot see this copy
    return outcome


def _error_line(exc: BaseException) -> str:
    """One line for a lost attempt: the task's own exception when there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return one_line_error(cause)
    return one_line_error(exc)


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
    if gpus > 0:  # the runs train on the GPUs Ray assigns, not on this machine's devices
        with gpu_workers():
            gpu_cfg = for_gpu_workers(cfg)
            _check_gpu_devices(gpu_cfg, gpus)
            plan = register_plan(gpu_cfg, out_dir)
    else:
        plan = register_plan(cfg, out_dir)
    events = SweepLog(plan, log)
    if not plan.todo:
        events.start("Ray", out_dir)
        return plan.run_ids

    import ray

    started = _connect(address, init_options)
    driver: _Driver | None = None
    try:
        where, client = _describe_cluster(address, cpus, gpus, retries_)
        events.start(where, out_dir)
        driver_node = None if client else ray.get_runtime_context().get_node_id()
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                          retry_exceptions=False)(_train_on_worker)
        driver = _Driver(out_dir, task, driver_node, retries_, events)
        driver.run(plan.todo)
    finally:
        if driver is not None:
            driver.close()
        if started:
            ray.shutdown()
    return plan.run_ids


def _check_gpu_devices(cfg: ExperimentConfig, gpus: float) -> None:
    """Every grid point's ``train.device`` names a GPU of the task's view: Ray shows a task the
    ``ceil(gpus)`` GPUs it assigns as ``cuda:0`` ... (``CUDA_VISIBLE_DEVICES``); a ConfigError
    in one line before any work otherwise."""
    view = max(1, math.ceil(gpus))
    for point in expand_sweep(cfg):
        device = point.train.device
        if device.startswith("cuda:") and int(device.partition(":")[2]) >= view:
            raise ConfigError(f"train.device {device!r} is not among the {view} GPU(s) Ray "
                              f"assigns each run (--gpus-per-run {gpus:g}; a task sees them as "
                              f"cuda:0..cuda:{view - 1}); use 'cuda' or 'auto'")


def _connect(address: str | None, init_options: Mapping[str, Any] | None) -> bool:
    """Connect this process to Ray unless it already is: a new local instance
    (:func:`init_local_ray`) when ``address`` is None, else the user's cluster, as it is.
    Returns whether it connected (the sweep then disconnects at the end); a one-line
    ValueError when it cannot."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address is None:
            init_local_ray(**(init_options or {}))
        else:  # the user's cluster, as it is
            ray.init(address=address, **(init_options or {}))
    except Exception as exc:  # no cluster there, refused, timed out: one line
        where = ("start a local Ray instance" if address is None
                 else f"connect to the Ray cluster at {address!r}")
        raise ValueError(f"could not {where}: {one_line_error(exc)}") from None
    return True


def _describe_cluster(address: str | None, cpus: float, gpus: float,
                      retries: int) -> tuple[str, bool]:
    """Where the sweep runs, for its first log line (the cluster's resources and the options),
    and whether this is a Ray client driver. A local instance too small for one run is refused
    (one-line ValueError)."""
    import ray

    total = ray.cluster_resources()
    have_cpu, have_gpu = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    if address is None and (cpus > have_cpu or gpus > have_gpu):
        what, want, have = (("CPUs", cpus, have_cpu) if cpus > have_cpu
                            else ("GPUs", gpus, have_gpu))
        raise ValueError(f"{what.lower()}_per_run={want:g} exceeds the {have:g} {what} of "
                         "the local Ray instance: no run could ever be scheduled")
    client = bool(ray.util.client.ray.is_connected())
    where = "Ray client" if client else ("local Ray" if address is None else "Ray cluster")
    if address is not None:
        where += f" {address}"
    return (f"{where} ({have_cpu:g} CPUs, {have_gpu:g} GPUs; {cpus:g} CPU, {gpus:g} GPU per "
            f"run; retries {retries})"), client


class _Driver:
    """The sweep's driver on Ray: submits one task per run (marked ``running`` first), submits
    a lost attempt again up to ``retries`` times, commits each outcome as it arrives (the only
    writer of the database) and, when interrupted, cancels the runs in flight."""

    def __init__(self, out_dir: str | Path, task: Any, driver_node: str | None, retries: int,
                 log: SweepLog) -> None:
        self.out_dir, self.task, self.driver_node = out_dir, task, driver_node
        self.retries, self.log = retries, log
        self.pending: dict[Any, tuple[str, ExperimentConfig, int]] = {}
        self.store = ResultStore(out_dir)

    def run(self, todo: list[tuple[str, ExperimentConfig]]) -> None:
        """Submit every run of ``todo`` and commit their outcomes until none is in flight."""
        import ray

        self.log.start_clock()
        for rid, p in todo:
            write_run_config(self.out_dir, rid, run_config_dict(p))
            self._submit(rid, p, 1)
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            for ref in ready:
                self._collect(ref)

    def _submit(self, rid: str, p: ExperimentConfig, attempt: int) -> None:
        if not self.store.mark_running(rid):  # finished meanwhile by another sweep
            self.log.finished(rid, "done", p)
            return
        rdir = run_dir(self.out_dir, rid).resolve()
        ref = self.task.options(name=f"{_TASK_NAME}-{rid}").remote(
            run_config_dict(p), str(rdir), self.driver_node, registered_at_run_time())
        self.pending[ref] = (rid, p, attempt)

    def _collect(self, ref: Any) -> None:
        """The outcome of a finished task: committed, or its lost attempt submitted again."""
        import ray

        rid, p, attempt = self.pending.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            why = _error_line(exc)
            if attempt <= self.retries:
                self.log.say(f"{rid}: attempt {attempt} lost ({why}); "
                             f"retry {attempt}/{self.retries}")
                self._submit(rid, p, attempt + 1)
                return
            outcome = RunOutcome(rid, "failed",
                                 error=f"{why} (attempt {attempt} of {self.retries + 1})")
        if outcome.run_id != rid:  # pragma: no cover - a different contrastlab on a node
            outcome = RunOutcome(rid, "failed", error=(
                f"the worker computed run {outcome.run_id}, not {rid}: is the same "
                "contrastlab version installed on every node?"))
        if outcome.status != "done":  # the database holds one line per error
            outcome.error = " ".join((outcome.error or "no error message").split())
        commit_run(self.store, outcome, run_dir(self.out_dir, rid), p.output.keep_checkpoints)
        self.log.finished(rid, outcome.status, p, outcome.error)

    def close(self) -> None:
        """Cancel the runs in flight (interrupted: they stay ``running``, resumable) and close
        the database."""
        import ray

        for ref in self.pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        self.store.close()

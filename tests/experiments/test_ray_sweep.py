"""Sweeps on Ray: the same results as the local executor, the driver as the only writer of the
database, resume, a killed worker retried, retries exhausted recorded as ``failed``, and bad
options refused in one line.

One local Ray instance (2 CPUs, one declared GPU, which this machine may not have: Ray assigns
it to a task that reserves it; no dashboard, listening on the loopback interface only) is shared
by the module. Ray is in the ``ray``
extra, which ``make test`` installs; without it these tests skip.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.experiments import cli_sweep
from contrastlab.experiments.plan import plan_sweep, run_dir
from contrastlab.experiments.ray_sweep import init_local_ray
from contrastlab.experiments.results import results_table
from contrastlab.experiments.store import DB_NAME, ResultStore
from contrastlab.experiments.sweep import run_sweep
from contrastlab.train.config import load_config, run_config_dict
from tests.experiments.helpers import snapshot

ray = pytest.importorskip("ray", reason="the ray executor needs Ray: pip install contrastlab[ray]")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc and SIGKILL of Linux")

EPOCHS = 3
CONFIG: dict[str, Any] = {
    "data": {"name": "synthetic", "seed": 0,
             "options": {"classes": 3, "dim": 6, "n_train": 300, "n_test": 150}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 16}},
    "loss": {"name": "ucl", "k": 4},
    "optim": {"lr": 0.005},
    "train": {"epochs": EPOCHS, "batch_size": 50, "threads": 1, "progress": False},
    "eval": {"final_lsup": False, "max_train": 300},
    "sweep": {"loss.name": ["ucl", "hucl"], "seed": [0, 1]},
}


def _long(epochs: int) -> dict[str, Any]:
    """A one-run config that trains for a while (a worker to kill mid-run)."""
    cfg = copy.deepcopy(CONFIG)
    cfg["train"]["epochs"] = epochs
    cfg["eval"]["every"] = 0
    cfg["sweep"] = {}
    return cfg


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance started as the ray executor starts one (on the loopback only)."""
    init_local_ray(num_cpus=2, num_gpus=1, log_to_driver=False, object_store_memory=80 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid swept by the local executor, in this process."""
    out = tmp_path_factory.mktemp("reference")
    run_sweep(CONFIG, out, workers=1, log=None)
    return out




def _rows(out: Path) -> dict[str, dict[str, Any]]:
    with ResultStore(out, create=False) as store:
        return {r["run_id"]: r for r in store.runs()}


def _lock_holder(lock: Path) -> int | None:
    """The pid holding the flock on ``lock`` (from /proc/locks), if any."""
    try:
        inode = os.stat(lock).st_ino
    except FileNotFoundError:
        return None
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "FLOCK" in parts and len(parts) >= 6 and parts[5].rsplit(":", 1)[-1] == str(inode):
            return int(parts[4])
    return None


class _Killer(threading.Thread):
    """SIGKILLs the Ray worker that trains run ``rid`` (the holder of its lock), ``times``
    times, each a new attempt; with ``after_checkpoint`` only once its checkpoint exists."""

    def __init__(self, out: Path, rid: str, times: int, after_checkpoint: bool) -> None:
        super().__init__(daemon=True)
        self.rdir = run_dir(out, rid)
        self.times, self.after_checkpoint = times, after_checkpoint
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.times and not self.stop.is_set():
            pid = _lock_holder(self.rdir / "lock")
            ready = not self.after_checkpoint or (self.rdir / "checkpoint.pt").exists()
            if pid is not None and pid not in self.killed and pid != os.getpid() and ready:
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            time.sleep(0.005)


def test_ray_sweep_matches_the_local_executor(tmp_path: Path, local_ray: None,
                                              reference: Path) -> None:
    out = tmp_path / "ray"
    messages: list[str] = []
    ids = run_sweep(CONFIG, out, executor="ray", log=messages.append)
    grid = [rid for rid, _ in plan_sweep(CONFIG)]
    assert ids == grid and len(grid) == 4
    assert messages[0].startswith("sweep: 4 runs, 0 finished, 4 to run on local Ray (2 CPUs")
    assert sorted(m.split()[1] for m in messages[1:]) == sorted(grid)
    assert all(m.endswith(")") and ": done (" in m for m in messages[1:])

    got, want = snapshot(out), snapshot(reference)
    assert set(got) == set(want) == set(grid)
    for rid in grid:
        assert got[rid][0] == "done"
        assert got[rid] == want[rid], f"run {rid} differs from the local executor's"
    assert results_table(out) == results_table(reference)
    # one attempt each, computed in Ray workers (their pids), in the run directories
    rows = _rows(out)
    assert {r["attempts"] for r in rows.values()} == {1}
    assert os.getpid() not in {r["pid"] for r in rows.values()}
    for rid in grid:
        assert (run_dir(out, rid) / "checkpoint.pt").is_file()  # keep_checkpoints (default)
        assert yaml.safe_load((run_dir(out, rid) / "config.yaml").read_text())["seed"] in (0, 1)
    db = sqlite3.connect(out / DB_NAME)
    assert db.execute("SELECT count(*) FROM epochs").fetchone() == (4 * EPOCHS,)
    db.close()

    messages.clear()  # nothing left: Ray is not even asked
    run_sweep(CONFIG, out, executor="ray", log=messages.append)
    assert messages == [f"sweep: 4 runs, 4 finished, 0 to run on Ray -> {out}"]


def _loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host)
    return bool((getattr(ip, "ipv4_mapped", None) or ip).is_loopback)


def test_the_local_instance_listens_on_the_loopback_only(local_ray: None) -> None:
    """Every TCP socket that a process of the local Ray instance (this driver, the GCS, the
    raylet, the workers, the agents: this process and its descendants) listens on is bound to
    127.0.0.1 (or ::1, or 127.0.0.1 mapped to IPv6): nothing outside the machine reaches it."""
    psutil = pytest.importorskip("psutil")  # Ray's own copy (ray/thirdparty_files)
    ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker has run a task
    me = psutil.Process()
    procs = {p.pid: p for p in me.children(recursive=True)} | {me.pid: me}
    listening: list[tuple[str, str, int]] = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in procs:
            with contextlib.suppress(psutil.Error):
                listening.append((procs[c.pid].name(), c.laddr.ip, c.laddr.port))
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet", me.name()} <= names, listening  # Ray's servers were seen
    assert any(name.startswith("ray::") for name in names), listening  # workers, agents
    exposed = [sock for sock in listening if not _loopback(sock[1])]
    assert not exposed, f"listening beyond the loopback interface: {exposed}"


def test_the_executor_starts_ray_on_the_loopback_and_leaves_a_cluster_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ray.init`` as the executor calls it: a local instance in Ray's single-machine mode
    (loopback addresses), an existing cluster with the user's address and nothing else."""
    import ray._private.ray_constants as ray_constants

    var = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    monkeypatch.delenv(var, raising=False)
    calls: list[tuple[dict[str, Any], str | None, bool]] = []

    def fake_init(**kwargs: Any) -> None:
        calls.append((kwargs, os.environ.get(var), ray_constants.ENABLE_RAY_CLUSTER))
        raise ConnectionError("stop here")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    cfg = _long(1)
    with pytest.raises(ValueError, match=r"^could not start a local Ray instance: "
                                         r"ConnectionError: stop here$"):
        run_sweep(cfg, tmp_path / "a", executor="ray", log=None)
    with pytest.raises(ValueError, match=r"^could not connect to the Ray cluster at "
                                         r"'10\.1\.2\.3:6379': ConnectionError: stop here$"):
        run_sweep(cfg, tmp_path / "b", executor="ray", address="10.1.2.3:6379", log=None)
    assert calls == [({"include_dashboard": False}, "0", False),
                     ({"address": "10.1.2.3:6379"}, None, True)]
    assert var not in os.environ and ray_constants.ENABLE_RAY_CLUSTER  # restored


def test_failed_runs_have_their_status_and_one_line_error(tmp_path: Path,
                                                         local_ray: None) -> None:
    cfg = _long(2)
    cfg["sweep"] = {"optim.lr": [0.005, 1e38]}  # 1e38: an overflow in the first step
    out = tmp_path / "mixed"
    messages: list[str] = []
    ids = run_sweep(cfg, out, executor="ray", log=messages.append)
    rows = _rows(out)
    assert [rows[rid]["status"] for rid in ids] == ["done", "failed"]
    error = rows[ids[1]]["error"]
    assert error.startswith("RuntimeError: ") and "\n" not in error
    assert rows[ids[0]]["error"] is None
    lines = {m.split()[1]: m for m in messages[1:]}
    assert f": failed: {error} (" in lines[ids[1]] and ": done (" in lines[ids[0]]
    # the command exits 1 (the failed run is tried again, and fails again), its error last
    cfg_path = tmp_path / "mixed.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    res = _cli(str(cfg_path), "--out", str(out), "--executor", "ray")
    assert res.exit_code == 1, res.output
    assert f"{ids[1]} failed: {error}\n" in res.output


def test_the_task_never_opens_the_database(tmp_path: Path, local_ray: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from contrastlab.experiments import ray_sweep, runner, store

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the Ray task opened the results database")

    for module in (store, runner, ray_sweep):
        monkeypatch.setattr(module.ResultStore, "__init__", refuse)
    (rid, p), = plan_sweep(_long(2))
    outcome = ray_sweep._train_on_worker(run_config_dict(p), str(tmp_path / rid), None)
    assert (outcome.run_id, outcome.status, len(outcome.epochs)) == (rid, "done", 2)
    assert outcome.reports and outcome.error is None and outcome.pid == os.getpid()
    assert (tmp_path / rid / "checkpoint.pt").is_file() and not (tmp_path / DB_NAME).exists()


def test_resume_runs_only_what_is_not_done(tmp_path: Path, local_ray: None,
                                           reference: Path) -> None:
    from contrastlab.train import train

    out = tmp_path / "resume"
    half = copy.deepcopy(CONFIG)
    half["sweep"] = {"loss.name": ["ucl", "hucl"], "seed": [0]}
    run_sweep(half, out, workers=1, log=None)  # 2 of the 4 runs done by the local executor
    plan = plan_sweep(CONFIG)
    done = {rid for rid, p in plan if p.seed == 0}
    # a third run was killed mid-training by a driver: `running`, epoch 1 stored and checkpointed
    killed_rid, killed_cfg = next((rid, p) for rid, p in plan if p.seed == 1)
    train(killed_cfg, checkpoint_dir=run_dir(out, killed_rid), stop_after=1)
    with ResultStore(out) as store:
        store.add_runs([(rid, run_config_dict(p)) for rid, p in plan])
        store.mark_running(killed_rid)
        store.record_epoch(killed_rid, 1, snapshot(reference)[killed_rid][1][0], 123.0)
    before = _rows(out)

    messages: list[str] = []
    run_sweep(CONFIG, out, executor="ray", log=messages.append)
    assert messages[0].startswith("sweep: 4 runs, 2 finished, 2 to run on local Ray")
    assert sorted(m.split()[1] for m in messages[1:]) == sorted(set(before) - done)
    after = _rows(out)
    for rid in done:  # not run again
        assert after[rid]["attempts"] == before[rid]["attempts"] == 1
        assert after[rid]["finished_at"] == before[rid]["finished_at"]
    assert after[killed_rid]["attempts"] == 2
    db = sqlite3.connect(out / DB_NAME)
    # the killed run resumed from its checkpoint: epoch 1 was not trained again
    assert db.execute("SELECT seconds FROM epochs WHERE run_id = ? AND epoch = 1",
                      (killed_rid,)).fetchone() == (123.0,)
    assert db.execute("SELECT count(*), count(DISTINCT run_id) FROM runs").fetchone() == (4, 4)
    db.close()
    assert snapshot(out) == snapshot(reference)


def test_a_killed_worker_is_retried_and_completes(tmp_path: Path, local_ray: None) -> None:
    cfg = _long(150)
    (rid, _), = plan_sweep(cfg)
    ref = tmp_path / "ref"
    run_sweep(cfg, ref, log=None)

    out = tmp_path / "killed"
    killer = _Killer(out, rid, times=1, after_checkpoint=True)
    killer.start()
    messages: list[str] = []
    try:
        run_sweep(cfg, out, executor="ray", retries=2, log=messages.append)
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 1, "the worker finished before it could be killed"
    lost = [m for m in messages if "lost" in m]
    assert len(lost) == 1 and lost[0].startswith(f"{rid}: attempt 1 lost (")
    assert lost[0].endswith("; retry 1/2")
    row = _rows(out)[rid]
    assert (row["status"], row["attempts"], row["error"]) == ("done", 2, None)
    assert snapshot(out) == snapshot(ref)  # resumed from the checkpoint, exactly


def test_retries_exhausted_give_a_failed_row(tmp_path: Path, local_ray: None) -> None:
    cfg = _long(2000)
    (rid, _), = plan_sweep(cfg)
    cfg_path = tmp_path / "one.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "failed"
    killer = _Killer(out, rid, times=2, after_checkpoint=False)
    killer.start()
    try:
        text, code = cli_sweep(cfg_path, out=out, executor="ray", retries=1)
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 2
    row = _rows(out)[rid]
    assert row["status"] == "failed" and row["attempts"] == 2
    assert row["error"].endswith("(attempt 2 of 2)") and "\n" not in row["error"]
    assert code == 1 and text.splitlines()[-1].endswith(f"{rid} failed: {row['error']}")
    # the next sweep tries it again
    with ResultStore(out) as store:
        assert store.statuses() == {rid: "failed"}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["sweep", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "foo"], "Error: --executor must be one of local, ray; got 'foo'"),
        (["--address", "auto"], "Error: --address needs --executor ray"),
        (["--retries", "1"], "Error: --retries needs --executor ray"),
        (["--executor", "ray", "--retries", "-1"],
         "Error: --retries must be an integer >= 0; got -1"),
        (["--executor", "ray", "--cpus-per-run", "0"],
         "Error: --cpus-per-run must be a number > 0 (fractions allowed); got 0.0"),
        (["--executor", "ray", "--gpus-per-run", "-1"],
         "Error: --gpus-per-run must be a number >= 0 (fractions allowed); got -1.0"),
        (["--executor", "ray", "--address", " "],
         "Error: --address must be 'auto', HOST:PORT or ray://HOST:PORT; got ' '"),
        (["--executor", "ray", "--workers", "2"], "Error: --workers applies to --executor local"),
    ],
)
def test_bad_options_give_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    res = _cli(str(cfg_path), "--out", str(out), *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.output
    assert not out.exists()  # refused before any work


def test_bad_library_arguments(tmp_path: Path, local_ray: None) -> None:
    with pytest.raises(ValueError, match=r"^retries must be an integer >= 0; got -1$"):
        run_sweep(CONFIG, tmp_path / "a", executor="ray", retries=-1)
    with pytest.raises(ValueError, match=r"^executor must be one of 'local', 'ray'; got 'dask'"):
        run_sweep(CONFIG, tmp_path / "b", executor="dask")
    with pytest.raises(ValueError, match=r"^address applies to the ray executor only"):
        run_sweep(CONFIG, tmp_path / "c", address="auto")
    with pytest.raises(ValueError, match=r"^gpus_per_run=2 exceeds the 1 GPUs of the local Ray"):
        run_sweep(CONFIG, tmp_path / "d", executor="ray", gpus_per_run=2, log=None)


def test_a_gpu_run_resolves_its_device_in_its_ray_task(tmp_path: Path, local_ray: None) -> None:
    """``--gpus-per-run`` (issue 16, item 5) through Ray: the driver plans the run for a GPU
    worker, whatever its own devices (the id and the stored config say ``cuda``); the task, to
    which Ray assigns the instance's GPU, resolves the device in its own view. Without a usable
    GPU in the task (this machine's case) the run fails in one line naming the device and Ray's
    ``CUDA_VISIBLE_DEVICES``; with one it trains on it (the next test)."""
    import torch

    out = tmp_path / "gpu"
    (rid,) = run_sweep(_long(1), out, executor="ray", gpus_per_run=1, retries=0, log=None)
    (cpu_rid, _), = plan_sweep({**_long(1), "train": {**_long(1)["train"], "device": "cpu"}})
    row = _rows(out)[rid]
    assert row["config"]["train"]["device"] == "cuda" and rid != cpu_rid
    assert yaml.safe_load((run_dir(out, rid) / "config.yaml").read_text())["train"][
        "device"] == "cuda"
    if not torch.cuda.is_available():
        assert row["status"] == "failed"
        assert ("ConfigError: train.device 'cuda' is not available on this machine (0 CUDA "
                "device(s); CUDA_VISIBLE_DEVICES='0')") in row["error"]
    else:  # pragma: no cover - a GPU machine: Ray's GPU 0 is this machine's
        assert row["status"] == "done"


def test_a_gpu_task_trains_on_the_first_gpu_of_its_view(tmp_path: Path, local_ray: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The task's side, with a GPU faked in this process: the run planned on a CPU driver
    trains on ``cuda``, the first GPU Ray assigned (cuda:0 of CUDA_VISIBLE_DEVICES), with the
    driver's run id; ``cuda:N`` beyond the GPUs a task gets is refused before any work."""
    import torch

    from contrastlab.experiments import ray_sweep
    from contrastlab.experiments.runner import RunOutcome
    from contrastlab.train.config import ConfigError, for_gpu_workers, gpu_workers, run_id

    with gpu_workers():
        (rid, p), = plan_sweep(for_gpu_workers(_long(1)))
    seen: dict[str, Any] = {}

    def compute(cfg: Any, ckdir: Path, progress: bool | None = None) -> RunOutcome:
        seen["device"], seen["visible"] = cfg.train.device, os.environ["CUDA_VISIBLE_DEVICES"]
        return RunOutcome(run_id(cfg), "done")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # as Ray sets it: the task's GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(ray_sweep, "compute_run", compute)
    outcome = ray_sweep._train_on_worker(run_config_dict(p), str(tmp_path / rid), None)
    assert outcome.run_id == rid and seen == {"device": "cuda", "visible": "3"}
    assert torch.device(seen["device"]).index is None  # the current device: 0 of the view
    far = _long(1)
    far["train"]["device"] = "cuda:1"
    with pytest.raises(ConfigError, match=r"^train\.device 'cuda:1' is not among the 1 GPU\(s\) "
                                          r"Ray assigns each run \(--gpus-per-run 1;"):
        run_sweep(far, tmp_path / "far", executor="ray", gpus_per_run=1, log=None)
    assert not (tmp_path / "far").exists()
    with gpu_workers():
        ray_sweep._check_gpu_devices(for_gpu_workers(far), 2)  # two GPUs: cuda:1 is one


DRIVER = """
import sys
from contrastlab.train.config import load_config
from contrastlab.experiments.sweep import run_sweep
run_sweep(load_config(sys.argv[1]), sys.argv[2], executor="ray", log=None)
"""


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


@pytest.mark.slow
def test_driver_killed_with_sigkill_then_restarted(tmp_path: Path, local_ray: None) -> None:
    """The sweep process (with its own local Ray) is SIGKILLed once a run is done; its workers
    go with it, and a second sweep runs only the rest, ending with the local executor's results.
    """
    cfg = copy.deepcopy(CONFIG)
    cfg["train"]["epochs"] = 40
    cfg["eval"]["every"] = 0
    reference = tmp_path / "reference"
    run_sweep(cfg, reference, log=None)
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    db = out / DB_NAME
    # its own session: the Ray processes it starts can be cleaned up by process group
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(cfg_path), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, "the sweep ended before the kill"
            done = _query(db, "SELECT count(*) FROM runs WHERE status = 'done'")
            if done and done[0][0] >= 1:
                break
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only
        proc.wait()
        # its workers die with it (Ray kills the workers of a dead owner): no lock stays held
        locks = [run_dir(out, rid) / "lock" for rid, _ in plan_sweep(cfg)]
        t0 = time.monotonic()
        while any(_lock_holder(lock) for lock in locks) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        assert not any(_lock_holder(lock) for lock in locks)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        # Ray's agents of the dead instance linger up to ~90 s before they notice: end them
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    before = {r[0]: r for r in _query(db, "SELECT run_id, status, attempts FROM runs")}
    n_done = sum(r[1] == "done" for r in before.values())
    assert 1 <= n_done < 4

    messages: list[str] = []
    run_sweep(load_config(cfg_path), out, executor="ray", log=messages.append)
    assert messages[0].startswith(f"sweep: 4 runs, {n_done} finished, {4 - n_done} to run")
    after = {r[0]: r for r in _query(db, "SELECT run_id, status, attempts FROM runs")}
    for rid, row in before.items():
        if row[1] == "done":
            assert after[rid] == row
    assert snapshot(out) == snapshot(reference)


def test_without_ray_the_error_says_how_to_install_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from contrastlab.experiments import ray_sweep

    monkeypatch.setattr(ray_sweep.importlib.util, "find_spec", lambda _name: None)
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    res = _cli(str(cfg_path), "--out", str(tmp_path / "out"), "--executor", "ray")
    assert res.exit_code == 2
    assert res.output.strip() == ("Error: the ray executor needs Ray, which is not installed: "
                                  "pip install 'contrastlab[ray]'")
    assert not (tmp_path / "out").exists()

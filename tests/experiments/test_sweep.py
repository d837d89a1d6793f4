"""Sweeps: a sweep killed with SIGKILL mid-way and restarted runs only what is missing, stores
every grid point exactly once, and ends with the results of an uninterrupted sweep."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from contrastlab.experiments.plan import plan_sweep
from contrastlab.experiments.results import results_table
from contrastlab.experiments.store import DB_NAME
from contrastlab.experiments.sweep import run_sweep
from contrastlab.train.config import load_config
from tests.experiments.helpers import snapshot

EPOCHS = 5
CONFIG: dict[str, Any] = {
    "data": {"name": "synthetic", "seed": 0,
             "options": {"classes": 3, "dim": 6, "n_train": 300, "n_test": 150}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 16}},
    "loss": {"name": "ucl", "k": 4},
    "optim": {"lr": 0.005},
    "train": {"epochs": EPOCHS, "batch_size": 50, "threads": 1, "progress": False},
    "eval": {"final_lsup": False, "max_train": 300},
    "sweep": {"loss.name": ["ucl", "hucl"], "seed": [0, 1, 2]},
}

SCRIPT = """
import sys
from contrastlab.train.config import load_config
from contrastlab.experiments.sweep import run_sweep
run_sweep(load_config(sys.argv[1]), sys.argv[2], workers=2, log=None)
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


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL / prctl semantics of Linux")
def test_sweep_killed_with_sigkill_then_restarted(tmp_path: Path) -> None:
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    cfg = load_config(cfg_path)
    grid = [rid for rid, _ in plan_sweep(cfg)]
    assert len(grid) == 6

    killed = tmp_path / "killed"
    db = killed / DB_NAME
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cfg_path), str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, f"the sweep ended before the kill: {proc.stderr}"
            done = _query(db, "SELECT count(*) FROM runs WHERE status = 'done'")
            partial = _query(db, "SELECT count(*) FROM runs r WHERE r.status = 'running' AND "
                                 "EXISTS (SELECT 1 FROM epochs e WHERE e.run_id = r.run_id)")
            if done and partial and done[0][0] >= 1 and partial[0][0] >= 1:
                break
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the sweep process only: its workers must follow
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()

    rows = _query(db, "SELECT run_id, status, attempts, finished_at, pid FROM runs")
    before = {r[0]: r for r in rows}
    assert set(before) == set(grid)
    statuses = [r[1] for r in rows]
    assert "done" in statuses and "running" in statuses and statuses.count("done") < 6
    # the pool workers died with the sweep process (no orphan keeps training)
    worker_pids = {r[4] for r in rows if r[1] == "running"}
    t0 = time.monotonic()
    while not all(_gone(pid) for pid in worker_pids) and time.monotonic() - t0 < 15:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in worker_pids)

    messages: list[str] = []
    ids = run_sweep(cfg, killed, workers=1, log=messages.append)
    assert ids == grid
    missing = statuses.count("done")
    assert messages[0].startswith(f"sweep: 6 runs, {missing} finished, {6 - missing} to run")

    after = {r[0]: r for r in _query(db, "SELECT run_id, status, attempts, finished_at, pid "
                                         "FROM runs")}
    for rid, row in before.items():
        if row[1] == "done":  # finished runs were not run again
            assert after[rid][2:4] == row[2:4]
        if row[1] == "running":  # a killed run was resumed (second attempt)
            assert after[rid][2] == row[2] + 1
    # every grid point exactly once, with all its epochs and its three reports
    assert _query(db, "SELECT count(*), count(DISTINCT run_id) FROM runs") == [(6, 6)]
    assert _query(db, "SELECT count(*) FROM epochs") == [(6 * EPOCHS,)]
    assert _query(db, "SELECT count(*) FROM reports") == [(18,)]

    reference = tmp_path / "reference"
    run_sweep(cfg, reference, workers=1, log=None)
    got, want = snapshot(killed), snapshot(reference)
    assert set(got) == set(want) == set(grid)
    for rid in grid:
        assert got[rid][0] == "done"
        assert got[rid] == want[rid], f"run {rid} differs from the uninterrupted sweep"
    assert results_table(killed) == results_table(reference)

    # a third start finds nothing to do
    messages.clear()
    run_sweep(cfg, killed, workers=2, log=messages.append)
    assert messages[0].startswith("sweep: 6 runs, 6 finished, 0 to run")

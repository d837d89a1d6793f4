"""The results database: WAL, exactly-once outcomes, and refusal of foreign/corrupted files."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from contrastlab.experiments import cli_results, cli_run
from contrastlab.experiments.store import APPLICATION_ID, DB_NAME, ResultStore, StoreError


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_schema_wal_and_exactly_once(tmp_path: Path) -> None:
    with ResultStore(tmp_path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert store.add_runs([("a", {"seed": 0}), ("b", {"seed": 1})]) == 2
        assert store.add_runs([("a", {"seed": 0}), ("c", {})]) == 1  # insert-or-ignore
        assert store.mark_running("a")
        store.record_epoch("a", 1, {"epoch": 1, "train_loss": 1.0}, 0.1)
        assert store.finish("a", "done", [{"epoch": 1, "train_loss": 0.5}], {"geometry": {"x": 1}},
                            seconds=2.0)
        # a second outcome for a done run is refused, inside the same transaction
        assert not store.finish("a", "failed", error="late")
        assert not store.mark_running("a")
        assert store.status("a") == "done"
        assert store.epochs("a") == [{"epoch": 1, "train_loss": 0.5}]
        assert store.reports("a") == {"geometry": {"x": 1}}
        with pytest.raises(ValueError, match="status must be one of"):
            store.finish("b", "weird")
        with pytest.raises(sqlite3.IntegrityError):
            with store.transaction() as c:
                c.execute("INSERT INTO runs (run_id, config, status, created_at) "
                          "VALUES ('a', '{}', 'pending', 0)")
        assert store.statuses() == {"a": "done", "b": "pending", "c": "pending"}
    with ResultStore(tmp_path) as again:  # reopening keeps everything
        assert again.statuses() == {"a": "done", "b": "pending", "c": "pending"}


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()


def _corrupted(path: Path) -> None:
    with ResultStore(path.parent) as store:
        store.add_runs([(f"run{i}", {"pad": "x" * 500}) for i in range(40)])
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    for i in range(4096 + 50, len(data), 97):  # keep the header, ruin the pages
        data[i] = 0xA5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("name,value\nnot,a database\n" * 20), "not an SQLite file"),
        (_foreign, "is an SQLite database of another application"),
        (_corrupted, "corrupted"),
    ],
)
def test_foreign_or_corrupted_databases_are_reported_and_never_overwritten(
    tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / DB_NAME
    make(path)  # type: ignore[operator]
    before = _digest(path)
    with pytest.raises(StoreError, match=message) as info:
        ResultStore(tmp_path)
    assert "\n" not in str(info.value) and "refusing to use or overwrite" in str(info.value)
    with pytest.raises(ValueError, match=message):
        cli_results(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {name: synthetic}\nloss: {name: ucl, k: 2}\ntrain: {epochs: 1}\n")
    with pytest.raises(ValueError, match=message):
        cli_run(cfg, [], tmp_path)
    assert _digest(path) == before
    assert not (tmp_path / "runs").exists()  # no work started


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with ResultStore(tmp_path) as store:
        store.conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = _digest(tmp_path / DB_NAME)
    with pytest.raises(StoreError, match=r"has schema version 99, newer than this contrastlab"):
        ResultStore(tmp_path)
    assert _digest(tmp_path / DB_NAME) == before


def test_a_locked_database_is_reported_as_locked_not_corrupted(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    holder = sqlite3.connect(path, isolation_level=None)  # a fresh file, exclusively locked
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")  # written, not committed
    with pytest.raises(StoreError, match=r"is locked by another process \(database is locked; "
                                         r"still locked after 0\.3 s\); try again") as info:
        ResultStore(tmp_path, timeout=0.3)
    assert "corrupt" not in str(info.value) and "\n" not in str(info.value)
    holder.execute("ROLLBACK")  # released: the same open now creates the database
    with ResultStore(tmp_path, timeout=0.3) as store:
        assert store.statuses() == {}
    holder.close()
    # another process opening the directory (its flock) also only makes an open wait
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(StoreError, match=r"is locked by another process \(another process is "
                                         r"opening it; still locked after 0\.2 s\)"):
        ResultStore(tmp_path, timeout=0.2)
    os.close(fd)
    ResultStore(tmp_path, create=False, timeout=0.2).close()


def test_missing_database_for_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no results database"):
        cli_results(tmp_path / "empty")


RACE_PROCS, RACE_DIRS, RACE_ROUNDS = 6, 60, 3


def _race_worker(rounds: list[list[str]], seed: int, barrier: Any, out: str) -> None:
    """Round after round (all processes start each together), open (create) every database of
    the round in its shuffled order, adding one run to each; write the failures (one line each)
    to ``out`` as JSON."""
    failures = []
    for r, dirs in enumerate(rounds):
        order = list(dirs)
        random.Random(r).shuffle(order)  # the same order in every process: the most clashes
        barrier.wait()
        for d in order:
            try:
                with ResultStore(d) as store:
                    store.add_runs([(f"proc{seed}", {"seed": seed})])
            except Exception as exc:  # every failure counts, whatever it is
                failures.append(f"{d}: {type(exc).__name__}: {exc}")
    Path(out).write_text(json.dumps(failures))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_creators_all_succeed(tmp_path: Path) -> None:
    """Six processes create the same 60 fresh databases at once (in a shuffled order, each
    adding a run), three rounds: every open succeeds and every database is complete and valid.
    (Before the creation was one exclusive transaction, a few opens in 360 failed: "database is
    locked" reported as corrupted, or a half-created schema seen as another application's.)"""
    rounds = [[str(tmp_path / f"r{r}" / f"d{i:02d}") for i in range(RACE_DIRS)]
              for r in range(RACE_ROUNDS)]
    ctx = mp.get_context("fork")  # fast: the children only use sqlite3
    barrier = ctx.Barrier(RACE_PROCS)
    outs = [str(tmp_path / f"failures{i}.json") for i in range(RACE_PROCS)]
    procs = [ctx.Process(target=_race_worker, args=(rounds, i, barrier, outs[i]))
             for i in range(RACE_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    failures = [line for out in outs for line in json.loads(Path(out).read_text())]
    tried = RACE_PROCS * RACE_DIRS * RACE_ROUNDS
    assert failures == [], f"{len(failures)} of {tried} opens failed: " + "; ".join(failures[:3])
    want = {f"proc{i}": "pending" for i in range(RACE_PROCS)}
    for d in (d for dirs in rounds for d in dirs):
        with ResultStore(d, create=False) as store:
            assert store.statuses() == want
            c = store.conn
            assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert dict(c.execute("SELECT key, value FROM meta")).keys() == {
                "application", "schema_version", "created_at"}


@pytest.mark.parametrize(("table", "column", "named"), [
    ("runs", "config", "table runs, column config of run a"),
    ("epochs", "metrics", "table epochs, column metrics of run a, epoch 1"),
    ("reports", "report", "table reports, column report of run a, kind geometry"),
])
def test_a_damaged_json_cell_names_file_table_and_run(tmp_path: Path, table: str, column: str,
                                                      named: str) -> None:
    with ResultStore(tmp_path) as store:
        store.add_runs([("a", {"seed": 0})])
        store.mark_running("a")
        store.finish("a", "done", [{"epoch": 1, "x": 1.0}], {"geometry": {"x": 1}}, seconds=1.0)
        with store.transaction() as c:
            c.execute(f"UPDATE {table} SET {column} = '{{\"x\": 1.0, trunc' "
                      "WHERE run_id = 'a'")
        with pytest.raises(StoreError) as info:
            store.runs(), store.epochs("a"), store.epoch_rows(), store.reports("a")
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / DB_NAME) in msg and named in msg, msg
    with pytest.raises(ValueError, match="the row is damaged"):  # the command: one line, exit 2
        cli_results(tmp_path)

"""The results database: WAL, exactly-once outcomes, and refusal of foreign/corrupted files."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

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


def test_missing_database_for_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no results database"):
        cli_results(tmp_path / "empty")

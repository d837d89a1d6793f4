"""The results database: one SQLite file (WAL mode) in the output directory.

``<out>/results.sqlite`` holds

- ``runs``: one row per run, keyed by ``run_id`` (the hash of the resolved config; PRIMARY KEY,
  so a run exists once), its config (JSON), ``status`` in {pending, running, done, failed, nan},
  timings (created, started, finished, seconds), attempts, the error and the worker's pid;
- ``epochs``: per-epoch metrics (JSON), keyed by (run_id, epoch);
- ``reports``: the final geometry and downstream reports (JSON), keyed by (run_id, kind);
- ``meta``: the application name and schema version.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a process killed at any
moment leaves the database as it was before or after that write, never in between.
:meth:`ResultStore.finish` records a run's outcome only if it is not already ``done``, inside the
same transaction: a finished run is stored exactly once even if two processes finish it.

Opening an existing file never changes it before it is recognized: the SQLite header, the
``PRAGMA application_id`` (:data:`APPLICATION_ID`) and the ``meta`` table must say it is a
contrastlab results database, and ``PRAGMA quick_check`` must pass; otherwise
:class:`StoreError` (a ``ValueError``) says what is wrong and the file is left untouched.

Any number of processes may open (and create) the same database at once: the processes of one
machine open it one at a time (an ``flock`` on the output directory, held only while opening),
the checks read one snapshot, and a new database gets its schema, application id and ``meta``
rows in one ``BEGIN EXCLUSIVE`` transaction, so no process ever sees it half-created. Another
process's lock ("database is locked") makes an open wait and try again, up to ``timeout``
seconds; then the error says the database is locked by another process — never corrupted.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

__all__ = [
    "APPLICATION_ID",
    "DB_NAME",
    "OPEN_TIMEOUT",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "ResultStore",
    "StoreError",
]

DB_NAME = "results.sqlite"
APPLICATION_ID = 0x434C6162  # b"CLab"
SCHEMA_VERSION = 1
OPEN_TIMEOUT = 120.0  # seconds an open waits for other processes' locks
RUN_STATUSES = ("pending", "running", "done", "failed", "nan")
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY NOT NULL,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in RUN_STATUSES)})),
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    seconds     REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    host        TEXT,
    pid         INTEGER
);
CREATE TABLE epochs (
    run_id  TEXT NOT NULL REFERENCES runs (run_id),
    epoch   INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    seconds REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE reports (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    kind   TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
);
"""


class StoreError(ValueError):
    """The results database cannot be used (foreign, corrupted, newer, or locked by another
    process for longer than the open's timeout); one line."""


class _Busy(Exception):
    """Another process holds an SQLite lock on the database: wait and open again."""


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED ("database is locked"): not a damaged file."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (5, 6)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class ResultStore:
    """The results database of one output directory (see the module docstring).

    Args:
        out_dir: the output directory; the database is ``out_dir/results.sqlite``.
        create: create the directory and the database if missing (else StoreError).
        timeout: seconds to wait while other processes hold the database's locks during the
            open (then StoreError: locked by another process; never reported as corrupted).
    """

    def __init__(self, out_dir: str | Path, create: bool = True,
                 timeout: float = OPEN_TIMEOUT) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._timeout = float(timeout)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise StoreError(f"output directory {str(self.out_dir)!r} is a file, not a directory")
        if not self._has_file():
            if not create:
                raise self._missing()
            self.out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                with self._open_lock(deadline):
                    self._open(create, deadline)
                return
            except _Busy as busy:  # another process holds an SQLite lock: wait, open again
                self.close()
                if time.monotonic() >= deadline:
                    raise self._locked(str(busy)) from None
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(2 * pause, 0.25)
            except BaseException:
                self.close()
                raise

    # -- opening ---------------------------------------------------------------------------

    def _has_file(self) -> bool:
        return self.path.exists() and (not self.path.is_file() or self.path.stat().st_size > 0)

    def _missing(self) -> StoreError:
        return StoreError(f"no results database in {str(self.out_dir)!r} (expected {DB_NAME}); "
                          "run a config or sweep there first")

    def _refuse(self, why: str) -> StoreError:
        return StoreError(
            f"{self.path} {why}; refusing to use or overwrite it (move it away or choose another "
            "output directory)"
        )

    def _locked(self, detail: str) -> StoreError:
        return StoreError(f"{self.path} is locked by another process ({detail}; still locked "
                          f"after {self._timeout:g} s); try again when that process is done")

    @contextmanager
    def _open_lock(self, deadline: float) -> Iterator[None]:
        """An exclusive ``flock`` on the output directory while this process opens (and maybe
        creates) the database, so processes of this machine open it one at a time. Where the
        file system has no flock the SQLite locks alone keep it race-free (:meth:`_open`)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        try:
            fd = os.open(self.out_dir, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise self._locked("another process is opening it") from None
                    time.sleep(0.002)
                except OSError:  # no flock here (e.g. some network file systems)
                    break
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open(self, create: bool, deadline: float) -> None:
        """Check an existing file, then connect (creating the schema if needed); raises _Busy
        when another process's SQLite lock is in the way, StoreError when the file is not
        usable."""
        wait = max(0.05, min(5.0, deadline - time.monotonic()))
        if self._has_file():
            self._check_existing(wait)
        elif not create:
            raise self._missing()
        self._init(wait)

    def _check_existing(self, wait: float) -> None:
        if not self.path.is_file():
            raise self._refuse("is not a regular file")
        with open(self.path, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
        if header != _SQLITE_HEADER:
            raise self._refuse("is not a contrastlab results database (not an SQLite file)")
        try:
            conn = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
            try:
                conn.execute("BEGIN")  # one snapshot: never a schema half seen
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if app_id != APPLICATION_ID:
                    if app_id == 0 and not tables:
                        return  # an empty SQLite database: nothing to lose, initialized below
                    shown = ", ".join(sorted(tables)) or "none"
                    raise self._refuse(
                        f"is an SQLite database of another application (application_id "
                        f"{app_id:#x}, tables: {shown})"
                    )
                if "meta" not in tables:
                    raise self._refuse("has the contrastlab application id but no meta table "
                                       "(damaged)")
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("application") != "contrastlab":
                    raise self._refuse("is not a contrastlab results database (meta table)")
                version = int(meta.get("schema_version", "0"))
                if version > SCHEMA_VERSION:
                    raise self._refuse(f"has schema version {version}, newer than this "
                                       f"contrastlab's {SCHEMA_VERSION}")
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise self._refuse(f"is corrupted (quick_check: {check})")
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise _Busy(str(exc)) from None
            raise self._refuse(f"is corrupted or not a database ({exc})") from None

    def _connect(self, timeout: float = 120.0) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _init(self, wait: float) -> None:
        """Connect; create the schema, the application id and the meta rows in one exclusive
        transaction when the database is empty; then WAL mode and the long busy timeout."""
        try:
            conn = self._connect(wait)
            self._conn = conn
            conn.execute("BEGIN")
            ours = self._state(conn)
            conn.execute("COMMIT")
            if not ours:
                conn.execute("BEGIN EXCLUSIVE")  # all or nothing, one creator at a time
                try:
                    if not self._state(conn):  # still empty (else created meanwhile)
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                conn.execute(stmt)
                        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                            ("application", "contrastlab"),
                            ("schema_version", str(SCHEMA_VERSION)),
                            ("created_at", repr(time.time())),
                        ])
                except BaseException:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not enable WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 120000")
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise _Busy(str(exc)) from None
            raise self._refuse(f"is corrupted or not a database ({exc})") from None

    def _state(self, conn: sqlite3.Connection) -> bool:
        """True when the database holds the schema, False when it is empty; StoreError when it
        holds something else (it changed after it was checked)."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id == APPLICATION_ID and "runs" in tables:
            return True
        if app_id not in (0, APPLICATION_ID) or tables:
            raise self._refuse("changed while being opened")
        return False

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------

    def add_runs(self, runs: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Insert ``(run_id, config)`` rows as ``pending`` unless the run id exists (insert or
        ignore); returns how many were new."""
        now = time.time()
        rows = [(rid, _dumps(cfg), "pending", now) for rid, cfg in runs]
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO runs (run_id, config, status, created_at) "
                "VALUES (?, ?, ?, ?)", rows)
            return c.total_changes - before

    def _status(self, c: sqlite3.Connection, run_id: str) -> str:
        """The status of ``run_id`` inside a transaction; StoreError if the run is unknown."""
        row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"run {run_id} is not in {self.path}")
        return str(row[0])

    def mark_running(self, run_id: str) -> bool:
        """Set ``running`` (attempts + 1) unless the run is ``done``; False if it is done."""
        with self.transaction() as c:
            if self._status(c, run_id) == "done":
                return False
            c.execute(
                "UPDATE runs SET status = 'running', started_at = ?, finished_at = NULL, "
                "error = NULL, attempts = attempts + 1, host = ?, pid = ? WHERE run_id = ?",
                (time.time(), socket.gethostname(), os.getpid(), run_id))
            return True

    def record_epoch(self, run_id: str, epoch: int, metrics: dict[str, Any],
                     seconds: float | None = None) -> None:
        """Store (or replace) one epoch's metrics."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO epochs (run_id, epoch, metrics, seconds) "
                      "VALUES (?, ?, ?, ?)", (run_id, int(epoch), _dumps(metrics), seconds))

    def finish(
        self,
        run_id: str,
        status: str,
        epochs: list[dict[str, Any]] | None = None,
        reports: dict[str, Any] | None = None,
        seconds: float | None = None,
        error: str | None = None,
        epoch_seconds: dict[int, float] | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> bool:
        """Record a run's outcome (``done``, ``nan`` or ``failed``) with its epochs and reports,
        in one transaction, unless it is already ``done``; returns whether it was written.
        ``host`` and ``pid`` (where it was computed, e.g. a Ray worker) replace those that
        :meth:`mark_running` recorded, when given."""
        if status not in ("done", "nan", "failed"):
            raise ValueError(f"status must be one of 'done', 'nan', 'failed'; got {status!r}")
        with self.transaction() as c:
            if self._status(c, run_id) == "done":
                return False
            es = epoch_seconds or {}
            for m in epochs or []:
                e = int(m["epoch"])
                prev = c.execute("SELECT seconds FROM epochs WHERE run_id = ? AND epoch = ?",
                                 (run_id, e)).fetchone()
                secs = es.get(e, prev[0] if prev else None)
                c.execute("INSERT OR REPLACE INTO epochs (run_id, epoch, metrics, seconds) "
                          "VALUES (?, ?, ?, ?)", (run_id, e, _dumps(m), secs))
            if status == "done":
                c.execute("DELETE FROM reports WHERE run_id = ?", (run_id,))
                for kind, rep in (reports or {}).items():
                    c.execute("INSERT INTO reports (run_id, kind, report) VALUES (?, ?, ?)",
                              (run_id, kind, _dumps(rep)))
            c.execute("UPDATE runs SET status = ?, finished_at = ?, seconds = ?, error = ?, "
                      "host = coalesce(?, host), pid = coalesce(?, pid) WHERE run_id = ?",
                      (status, time.time(), seconds, error, host, pid, run_id))
            return True

    # -- reading ---------------------------------------------------------------------------

    def status(self, run_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def statuses(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT run_id, status FROM runs")}

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every run (or those with ``status``) as dicts, config parsed, in creation order."""
        cols = ("run_id", "config", "status", "created_at", "started_at", "finished_at",
                "seconds", "attempts", "error", "host", "pid")
        q = f"SELECT {', '.join(cols)} FROM runs"
        args: tuple[Any, ...] = ()
        if status is not None:
            q += " WHERE status = ?"
            args = (status,)
        out = []
        for row in self.conn.execute(q + " ORDER BY created_at, rowid", args):
            d = dict(zip(cols, row, strict=True))
            d["config"] = self._json(d["config"], "runs", "config", d["run_id"])
            out.append(d)
        return out

    def _json(self, text: Any, table: str, column: str, run_id: str, where: str = "") -> Any:
        """A JSON cell, decoded; a damaged one is a one-line StoreError naming the database
        file, the table, the column and the run."""
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self.path}: table {table}, column {column} of run {run_id}"
                             f"{where} is not valid JSON ({exc}); the row is damaged") from None

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        """The per-epoch metrics of a run, by epoch."""
        return [self._json(r[0], "epochs", "metrics", run_id, f", epoch {r[1]}")
                for r in self.conn.execute(
                    "SELECT metrics, epoch FROM epochs WHERE run_id = ? ORDER BY epoch",
                    (run_id,))]

    def epoch_rows(self) -> list[tuple[str, int, dict[str, Any], float | None]]:
        """Every epoch row: (run_id, epoch, metrics, seconds)."""
        return [(r[0], int(r[1]), self._json(r[2], "epochs", "metrics", r[0], f", epoch {r[1]}"),
                 r[3]) for r in self.conn.execute(
            "SELECT run_id, epoch, metrics, seconds FROM epochs ORDER BY run_id, epoch")]

    def reports(self, run_id: str) -> dict[str, Any]:
        """The final reports of a run: kind -> dict."""
        return {r[0]: self._json(r[1], "reports", "report", run_id, f", kind {r[0]}")
                for r in self.conn.execute(
                    "SELECT kind, report FROM reports WHERE run_id = ?", (run_id,))}

"""Independent work on several CPU cores, in forked child processes (Linux).

A forked child starts with a copy of its parent (every module already imported, every object in
memory), so the work needs no pickling and no start-up; its result comes back pickled through a
pipe. Only the distribution changes with the number of processes, never a result: a task runs
the same code on the same inputs wherever it runs, and :func:`fork_map` returns the results in
the order of the tasks. Where fork is not safe to use (:func:`fork_available`) everything runs
in the calling process, one task after the other.

Used to spread the independent solves of a recipe over the cores
(:func:`contrastlab.recipes.awasthi.awasthi_balanced_etf`) and to write the PNG and SVG of a figure
at once (:func:`contrastlab.report.figures.save`).
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Forked", "fork_available", "fork_call", "fork_map", "usable_cores"]

T = TypeVar("T")
R = TypeVar("R")


def fork_available() -> bool:
    """Whether work may run in forked children: on Linux (macOS forbids forking a process that
    may have started system frameworks, Windows has no fork), from a process running one Python
    thread (a lock that another thread held at the fork would stay held in the child)."""
    return (sys.platform.startswith("linux") and hasattr(os, "fork")
            and threading.active_count() == 1)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under ``taskset``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (not Linux)
        return max(1, os.cpu_count() or 1)


class Forked(Generic[R]):
    """The pending result of :func:`fork_call`: :meth:`result` waits for it."""

    def __init__(self, pid: int | None, fd: int | None, value: Any = None) -> None:
        self._pid, self._fd, self._value = pid, fd, value

    def result(self) -> R:
        """The value returned by the call, or its exception raised again here (with the child's
        traceback as a note). Waits for the child; call it exactly once."""
        if self._pid is None or self._fd is None:
            return self._value
        chunks = []
        try:
            with os.fdopen(self._fd, "rb") as pipe:
                while chunk := pipe.read(1 << 16):
                    chunks.append(chunk)
        finally:
            _, status = os.waitpid(self._pid, 0)
            self._pid = self._fd = None
        if not chunks:
            raise RuntimeError(f"a forked worker died without a result (wait status {status})")
        ok, value = pickle.loads(b"".join(chunks))
        if ok:
            self._value = value
            return value
        exc, where = value
        note = getattr(exc, "add_note", None)  # Python >= 3.11
        if note is not None:
            note(f"raised in a forked worker:\n{where}")
        raise exc


def fork_call(fn: Callable[..., R], *args: Any) -> Forked[R]:
    """Start ``fn(*args)`` in a forked child and return at once; ``.result()`` waits for it.
    Where fork is not available the call runs here, now."""
    if not fork_available():
        return Forked(None, None, fn(*args))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        os.close(read_fd)
        code = 0
        torch = sys.modules.get("torch")
        if torch is not None:
            # the parent's OpenMP pool is not carried over a fork: a child that entered a
            # parallel region with it could hang; one core per child is the plan anyway
            torch.set_num_threads(1)
        try:
            payload = _payload(True, fn(*args))
        except BaseException as exc:  # everything goes back to the parent
            code = 1
            payload = _error_payload(exc)
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(code)
    os.close(write_fd)
    return Forked(pid, read_fd)


def _payload(ok: bool, value: Any) -> bytes:
    return pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)


def _error_payload(exc: BaseException) -> bytes:
    where = "".join(traceback.format_exception(exc))
    try:
        return _payload(False, (exc, where))
    except Exception:  # an exception that does not pickle
        return _payload(False, (RuntimeError(f"{type(exc).__name__}: {exc}"), where))


def _map_share(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(x) for x in items]


def fork_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, computed by up to ``workers`` processes: this one and
    ``workers - 1`` forked children, process i taking the tasks i, i + workers, ... (interleaved,
    so that tasks ordered by size share out evenly). The results are those of the serial loop, in
    the same order, for any ``workers``; ``fn``'s results must pickle."""
    items = list(items)
    n = max(1, min(int(workers), len(items)))
    if n == 1 or not fork_available():
        return _map_share(fn, items)
    pending = [fork_call(_map_share, fn, items[i::n]) for i in range(1, n)]
    shares: list[Any] = [None] * n
    errors: list[BaseException] = []
    try:
        shares[0] = _map_share(fn, items[0::n])
    except BaseException as exc:  # raised below, once every child is reaped
        errors.append(exc)
    for i, p in enumerate(pending, start=1):
        try:
            shares[i] = p.result()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    out: list[Any] = [None] * len(items)
    for i, share in enumerate(shares):
        out[i::n] = share
    return out

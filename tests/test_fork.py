"""contrastlab._fork: work spread over forked processes gives the results of the serial loop."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from contrastlab import _fork
from contrastlab._fork import fork_call, fork_map, usable_cores

_REAL_FORK_AVAILABLE = _fork.fork_available


@pytest.fixture(autouse=True)
def _fork_even_with_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork on Linux even where an earlier test left a thread running (a progress bar's
    monitor): the children here run only the test's own function, which takes no lock another
    thread could hold, so the tests fork wherever the suite runs (they used to skip)."""
    if sys.platform.startswith("linux"):
        monkeypatch.setattr(_fork, "fork_available", lambda: True)


def _needs_fork() -> None:
    if not _fork.fork_available():
        pytest.skip("fork is not available on this platform")


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"task {x} failed")
    return x


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_fork_map_returns_the_serial_results_in_order(workers: int) -> None:
    items = list(range(11))
    assert fork_map(_square, items, workers) == [x * x for x in items]
    assert fork_map(_square, [], workers) == []


def test_fork_map_runs_in_several_processes() -> None:
    _needs_fork()
    pids = fork_map(lambda _x: os.getpid(), range(6), 3)  # a closure: nothing is pickled
    assert len(set(pids)) == 3 and pids[0] == os.getpid()
    assert pids[0::3] == [os.getpid()] * 2  # process i takes the tasks i, i + 3, ...


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_an_error_in_any_process_is_raised_with_its_message(workers: int) -> None:
    with pytest.raises(ValueError, match="task 3 failed"):
        fork_map(_fail_on_three, range(6), workers)


def _exit_in_child(parent: int) -> None:
    if os.getpid() != parent:  # never end the test process itself
        os._exit(3)


def test_fork_call() -> None:
    _needs_fork()
    assert fork_call(sum, [1, 2, 3]).result() == 6
    with pytest.raises(ValueError, match="task 3 failed"):
        fork_call(_fail_on_three, 3).result()
    with pytest.raises(RuntimeError, match="died without a result"):
        fork_call(_exit_in_child, os.getpid()).result()
    unpicklable = fork_call(lambda: (lambda: 0))  # the result cannot come back
    with pytest.raises(Exception, match="pickle"):
        unpicklable.result()


def test_usable_cores() -> None:
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_a_process_with_threads_does_not_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fork, "fork_available", _REAL_FORK_AVAILABLE)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not _fork.fork_available()
        assert fork_map(lambda _x: os.getpid(), range(4), 4) == [os.getpid()] * 4
    finally:
        stop.set()
        thread.join()

"""Parallelism over blocks for the CPU kernels: the strips of a tiled loss shared out between a
few threads, each running torch single-threaded on its own strips with its own buffers and
accumulators, merged in a fixed order at the end.

Why: the kernel must survive a busy machine. A strip is a handful of medium-sized
ops (a product, an exponential, a few reductions). With torch's intra-op threads every one of
them is a parallel region that ends at a barrier; when another process holds a core, the thread
descheduled there holds up every barrier, and the block loop (thousands of regions) slowed up to
33x on a busy 2-core machine while plain torch (a few large ops) slowed 2x. Splitting the
*strips* between threads instead leaves a single barrier per pass (the join): a descheduled
thread delays only its own strips.

Memory: each thread needs its own block buffers, so the blocks are made W times smaller when W
threads share them (at least :data:`MIN_SHARED_BLOCK_ROWS` rows): the threads' buffers together
take what one loop's take. What is added is a private gradient accumulator per extra thread
(O(N d)).

Determinism: the strips are dealt out by a fixed rule (:func:`deal`: a snake order that balances
the strips' unequal widths), each thread accumulates its strips in order and the partial results
are merged in thread order, so a given thread count always gives the same bits. One thread runs
the loop exactly as before (the same ops in the same order). The result with W threads differs
from the one-thread result only in round-off (the grouping of the merges), as any multi-threaded
reduction does; a run's thread count is part of its run id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["MIN_SHARED_BLOCK_ROWS", "MIN_STRIPS_PER_THREAD", "deal", "one_loop", "run_shared",
           "strip_threads"]

T = TypeVar("T")

#: a thread takes part only with at least this many strips to do (the threads' buffers, start
#: and merge are not worth it for fewer)
MIN_STRIPS_PER_THREAD = 2

#: the smallest block (rows) when the threads divide a block's rows between them, so that
#: together they use one block's memory (:func:`contrastlab.losses.kernels.engine`)
MIN_SHARED_BLOCK_ROWS = 32

_LOCK = threading.Lock()  # one shared-out pass at a time changes torch's thread count


def strip_threads(x: torch.Tensor, strips: int) -> int:
    """How many threads share ``strips`` strips of a kernel on ``x``: torch's intra-op thread
    count on CPU (at most ``strips // MIN_STRIPS_PER_THREAD``), 1 on other devices and inside a
    pass already shared out."""
    if x.device.type != "cpu" or _LOCK.locked():
        return 1
    return max(1, min(torch.get_num_threads(), strips // MIN_STRIPS_PER_THREAD))


@contextmanager
def one_loop() -> Iterator[None]:
    """Inside: the kernels keep their blocks in one loop, torch's intra-op threads inside each
    op (the kernel without this module; for comparisons in benchmarks and tests)."""
    global MIN_STRIPS_PER_THREAD
    saved = MIN_STRIPS_PER_THREAD
    MIN_STRIPS_PER_THREAD = 1 << 30
    try:
        yield
    finally:
        MIN_STRIPS_PER_THREAD = saved


def deal(items: Sequence[int], threads: int) -> list[list[int]]:
    """``items`` (strip starts, widest first) dealt to ``threads`` in snake order (0, 1, .., W-1,
    W-1, .., 0, 0, ..): the widest and the narrowest strips pair up, so the threads' shares of
    the work are nearly equal. Each share keeps the items' order."""
    shares: list[list[int]] = [[] for _ in range(threads)]
    for i, item in enumerate(items):
        lap, pos = divmod(i, threads)
        shares[pos if lap % 2 == 0 else threads - 1 - pos].append(item)
    return shares


def run_shared(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``tasks`` concurrently, the first on this thread, torch single-threaded inside each;
    their results in task order, computed with the caller's gradient mode. One task runs
    directly, with torch's thread count untouched.
    An exception in any task is raised here after every task has ended."""
    if len(tasks) == 1:
        return [tasks[0]()]
    results: list[T | None] = [None] * len(tasks)
    errors: list[BaseException | None] = [None] * len(tasks)
    grad = torch.is_grad_enabled()  # thread-local: the workers take the caller's (autograd's
    # backward runs without gradients)

    def call(i: int) -> None:
        torch.set_num_threads(1)
        try:
            with torch.set_grad_enabled(grad):
                results[i] = tasks[i]()
        except BaseException as exc:
            errors[i] = exc

    with _LOCK:
        before = torch.get_num_threads()
        try:
            workers = [threading.Thread(target=call, args=(i,), daemon=True)
                       for i in range(1, len(tasks))]
            for w in workers:
                w.start()
            call(0)
            for w in workers:
                w.join()
        finally:
            torch.set_num_threads(before)
    for exc in errors:
        if exc is not None:
            raise exc
    return [r for r in results]  # type: ignore[misc]

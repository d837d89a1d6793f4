"""The two file primitives of an output directory: an atomic write and a per-run lock.

- :func:`write_atomic`: a file replaced in one step (a temporary file renamed over it), so a
  reader sees the old text or the new one, never a part;
- :func:`file_lock`: an exclusive advisory lock (``flock``) that the kernel releases when the
  process dies, SIGKILL included; the lock a run's trainer holds
  (:mod:`contrastlab.experiments.runner`, :mod:`contrastlab.experiments.ray_sweep`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_lock", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file of this process renamed over it."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (released when the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

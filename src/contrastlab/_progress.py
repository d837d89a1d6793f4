"""contrastlab's progress bars: one constructor for every bar it draws.

A bar goes to stderr with the time left; ``progress`` True draws it, False never, None only when
stderr is a terminal (never in pipes, files, ``--json`` output or a test's capture). Notebooks
get tqdm's widget (``tqdm.auto``).

tqdm starts a monitor thread with its first bar and keeps it for the life of the process, even
for a disabled bar. A process with another thread does not fork (:func:`contrastlab._fork.
fork_available`), so one bar would turn the forked solves and figure writing off for good.
contrastlab's bars therefore run without the monitor (a class attribute of their own class:
the user's bars keep theirs); it only adjusts the refresh of a bar that stalls.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar(tqdm):
    """tqdm without its monitor thread (module docstring)."""

    monitor_interval = 0


def progress_bar(total: int, desc: str, progress: bool | None = None,
                 **options: Any) -> ProgressBar:
    """A bar over ``total`` steps named ``desc`` on stderr (``progress``: module docstring);
    ``options`` go to tqdm (``unit``, ``initial``, ``bar_format``, ``delay``, ...)."""
    return ProgressBar(total=total, desc=desc, file=sys.stderr,
                       disable=None if progress is None else not progress, **options)

"""Planning a sweep, shared by its executors (the local pool of
:mod:`contrastlab.experiments.sweep` and :mod:`contrastlab.experiments.ray_sweep`): what the runs
are, where they live, which are left, and the sweep's log lines.

- :func:`plan_sweep`: the grid's points (:func:`contrastlab.train.config.expand_sweep`)
  with their run ids;
- :func:`register_plan`: every point inserted into the results database as ``pending``
  (insert-or-ignore: points already there keep their status) and the :class:`SweepPlan`, with
  the points still to run (:data:`UNFINISHED`);
- :func:`run_dir` and :func:`write_run_config`: a run's directory and its ``config.yaml``;
- :func:`run_label` and :class:`SweepLog`: the sweep's log lines.

Layout of an output directory::

    <out>/results.sqlite          the results database (:mod:`contrastlab.experiments.store`)
    <out>/runs/<run_id>/config.yaml   the resolved config of the run
    <out>/runs/<run_id>/checkpoint.pt the last epoch's checkpoint (resume point; checksummed,
                                      :mod:`contrastlab.checkpoint`)
    <out>/runs/<run_id>/checkpoint.prev.pt    the one before (the fallback)
    <out>/runs/<run_id>/*.pt.damaged-<time>   checkpoints refused as damaged or inconsistent with
                                      the database (kept for inspection, never read again)
    <out>/runs/<run_id>/lock          held (flock) while a process trains the run
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contrastlab.experiments.files import write_atomic
from contrastlab.experiments.store import ResultStore
from contrastlab.train.config import (
    ExperimentConfig,
    expand_sweep,
    parse_config,
    run_config_dict,
    run_id,
)

__all__ = [
    "UNFINISHED",
    "SweepLog",
    "SweepPlan",
    "plan_sweep",
    "register_plan",
    "run_dir",
    "run_label",
    "write_run_config",
]

#: the statuses of a run still to run (the leftovers of a killed sweep included); ``done`` and
#: ``nan`` are final
UNFINISHED = ("pending", "running", "failed")


def run_dir(out_dir: str | Path, rid: str) -> Path:
    """The directory of run ``rid`` inside ``out_dir``."""
    return Path(out_dir) / "runs" / rid


def write_run_config(out_dir: str | Path, rid: str, record: Mapping[str, Any]) -> Path:
    """Create the directory of run ``rid`` (if missing) and write its resolved config
    ``record`` (``run_config_dict``) to its ``config.yaml`` atomically; returns the directory."""
    rdir = run_dir(out_dir, rid)
    rdir.mkdir(parents=True, exist_ok=True)
    write_atomic(rdir / "config.yaml", yaml.safe_dump(record, sort_keys=False))
    return rdir


def plan_sweep(cfg: Mapping[str, Any] | ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """The grid's points as (run_id, resolved config), in grid order, without duplicates."""
    points = expand_sweep(parse_config(cfg))
    return [(run_id(p), p) for p in points]


def run_label(cfg: ExperimentConfig, keys: list[str]) -> str:
    """``key=value`` of each of ``keys`` (dotted config keys, e.g. the swept ones) in ``cfg``,
    space-separated (``None`` for a key it does not have)."""
    d = cfg.model_dump(mode="json")
    parts = []
    for key in keys:
        node: Any = d
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        parts.append(f"{key}={node}")
    return " ".join(parts)


@dataclass(frozen=True)
class SweepPlan:
    """A sweep registered in its output directory (:func:`register_plan`).

    Attributes:
        points: every grid point as (run_id, resolved config), in grid order.
        todo: the points still to run (status in :data:`UNFINISHED`), in grid order.
        keys: the swept config keys (the sweep's log labels its runs with them).
    """

    points: list[tuple[str, ExperimentConfig]]
    todo: list[tuple[str, ExperimentConfig]]
    keys: list[str]

    @property
    def run_ids(self) -> list[str]:
        """The run ids of the grid points, in grid order (what a sweep returns)."""
        return [rid for rid, _ in self.points]


def register_plan(cfg: Mapping[str, Any] | ExperimentConfig, out_dir: str | Path) -> SweepPlan:
    """Insert every grid point into the results database of ``out_dir`` (created if missing;
    insert-or-ignore: points already there keep their status) and return the plan, with the
    points still to run: ``pending``, ``running`` or ``failed``."""
    cfg = parse_config(cfg)
    points = plan_sweep(cfg)
    with ResultStore(out_dir) as store:
        store.add_runs([(rid, run_config_dict(p)) for rid, p in points])
        status = store.statuses()
    todo = [(rid, p) for rid, p in points if status.get(rid) in UNFINISHED]
    return SweepPlan(points, todo, list(cfg.sweep))


class SweepLog:
    """The log lines of a sweep, to ``log`` (None: silent): :meth:`start` (how many runs, where)
    and :meth:`finished`, one line per run, ``[i/n] RUN_ID LABEL: STATUS[: ERROR] (SECONDS s)``
    (the error of a run that is not ``done``; seconds since :meth:`start_clock`)."""

    def __init__(self, plan: SweepPlan, log: Callable[[str], None] | None) -> None:
        self._plan = plan
        self.say: Callable[[str], None] = log or (lambda _m: None)
        self._done = 0
        self._t0 = time.perf_counter()

    def start(self, where: str, out_dir: str | Path) -> None:
        """``sweep: N runs, F finished, T to run on WHERE -> OUT_DIR``."""
        plan = self._plan
        self.say(f"sweep: {len(plan.points)} runs, {len(plan.points) - len(plan.todo)} "
                 f"finished, {len(plan.todo)} to run on {where} -> {out_dir}")

    def start_clock(self) -> None:
        """From now on, the seconds of :meth:`finished`."""
        self._t0 = time.perf_counter()

    def finished(self, rid: str, status: str, cfg: ExperimentConfig,
                 error: str | None = None) -> None:
        """The line of run ``rid`` (config ``cfg``) that ended ``status``."""
        self._done += 1
        why = f": {error}" if status != "done" and error else ""
        self.say(f"[{self._done}/{len(self._plan.todo)}] {rid} "
                 f"{run_label(cfg, self._plan.keys)}: {status}{why} "
                 f"({time.perf_counter() - self._t0:.1f} s)")

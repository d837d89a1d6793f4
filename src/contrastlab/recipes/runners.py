"""The registry of recipe runners and what they share.

The runner modules (:mod:`.awasthi`, :mod:`.bao`, :mod:`.jiang`, :mod:`.lemma1`,
:mod:`.lower_bounds`, :mod:`.nc_optimal`, :mod:`.nozawa`, :mod:`.robinson`) register
themselves here with :func:`register_runner`; this module imports none of them.
:mod:`.catalog` imports them all and hands out the full registry.

A runner is a function ``runner(params, ctx) -> Outcome``: it measures a claim (solving the
theory engine's programs, or training through the experiment engine) and returns the metrics the
recipe's checks read, tidy tables and figures. It never decides PASS or FAIL itself: that is the
recipe's checks (:mod:`contrastlab.recipes.checks`), so the expected outcome lives in the YAML.

``ctx.corrupt`` asks for the recipe's deliberately wrong result (its ``corruption`` field: e.g.
``shuffled-labels`` trains on permuted labels, ``unconverged`` stops the optimizer after one
step). A correct recipe must FAIL on it; the tests check that it does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RUNNERS", "Outcome", "RunContext", "Runner", "register_runner", "sweep_records",
           "unconverged_note"]


@dataclass
class RunContext:
    """Where a runner writes (``out_dir``), how many sweep workers it may use, whether it must
    produce the corrupted result, where it logs, and whether its long loops show progress bars
    with the time left on stderr (``progress``; None: only when stderr is a terminal)."""

    out_dir: Path
    corrupt: bool = False
    workers: int = 1
    log: Callable[[str], None] = lambda _m: None
    progress: bool | None = False


@dataclass
class Outcome:
    """What a runner measured: ``metrics`` (read by the checks), ``tables`` (tidy rows, saved as
    JSON), ``figures`` (saved as PNG and SVG and embedded in the recipe report) and ``notes``
    (observations reported but not checked)."""

    metrics: dict[str, float]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Runner = Callable[[dict[str, Any], RunContext], Outcome]
RUNNERS: dict[str, Runner] = {}


def register_runner(name: str) -> Callable[[Runner], Runner]:
    def deco(fn: Runner) -> Runner:
        RUNNERS[name] = fn
        return fn

    return deco


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    node = d
    *head, last = dotted.split(".")
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value


def sweep_records(
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    out_dir: Path,
    ctx: RunContext,
    overrides: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run ``base`` over ``grid`` through the experiment engine into ``out_dir`` (resumable: a
    recipe run again trains only what is missing) and return the finished runs' records with
    their epochs and reports. ``overrides`` are dotted ``key: value`` settings (the profile's);
    the corruption sets ``data.shuffle_labels``. With ``ctx.progress``, a progress bar over the
    runs (not one per run)."""
    from contrastlab.experiments.results import load_records
    from contrastlab.experiments.sweep import run_sweep

    cfg = copy.deepcopy(dict(base))
    for key, value in (overrides or {}).items():
        _set(cfg, key, value)
    if ctx.corrupt:
        _set(cfg, "data.shuffle_labels", True)
    cfg.setdefault("train", {})["progress"] = False
    cfg["sweep"] = {k: list(v) for k, v in grid.items()}
    if ctx.workers > 1:
        # load the data once here, so that derived files (e.g. sentence embeddings) are cached
        # before the workers start, instead of being computed by every worker at once
        from contrastlab.train import load_data
        from contrastlab.train.config import parse_config

        load_data(parse_config(cfg))
    ids = set(run_sweep(cfg, out_dir, workers=ctx.workers, progress=False, log=ctx.log,
                        runs_bar=ctx.progress))
    return [r for r in load_records(out_dir, with_details=True)
            if r["status"] == "done" and r["run_id"] in ids]


def unconverged_note(labels: Sequence[str]) -> list[str]:
    """The note naming the runs (``labels``) that failed the convergence test
    (:mod:`contrastlab.convergence`), as a list of one note; no note when every run converged."""
    if not labels:
        return []
    return ["not converged (held-out loss still falling over the last 20 % of epochs): "
            + ", ".join(labels)]

"""The published numbers of a ``gpu`` profile against the measured ones: one table, one gap.

A ``gpu`` profile runs a paper's own experiment and compares the mean over seeds of what it
measured with the paper's reported values (Jiang et al.'s accuracies per beta, Nozawa & Sato's
per K + 1, Robinson et al.'s per beta). :func:`published_rows` builds the comparison table and
its largest gap; :func:`attach_published` adds a comparison to a runner's metrics, tables and
notes. The effect each paper reports (a gain between two settings) is the runner's to compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["attach_published", "published_rows"]


def published_rows(paper: Mapping[Any, float], measured: Mapping[Any, tuple[float, float]],
                   key: str, order: Callable[[Any], Any] | None = None
                   ) -> tuple[list[dict[str, Any]], float]:
    """The rows ``{key, published, measured, measured_sd, gap}`` (gap = measured - published),
    one per published setting (sorted by ``order``, default the setting itself), from
    ``measured`` (setting -> (mean over seeds, standard deviation)), and the largest
    |gap|: a published setting that was not measured counts as an infinite gap, so a check on it
    cannot pass."""
    rows = []
    for k, a in sorted(paper.items(), key=lambda kv: (order or (lambda x: x))(kv[0])):
        mean, sd = measured.get(k, (math.nan, math.nan))
        rows.append({key: k, "published": a, "measured": mean, "measured_sd": sd,
                     "gap": mean - a})
    gaps = [abs(r["gap"]) if math.isfinite(r["gap"]) else math.inf for r in rows]
    return rows, max(gaps)


def attach_published(compared: Mapping[str, float], table: list[dict[str, Any]], key: str,
                     label: Callable[[Any], str], metrics: dict[str, float],
                     tables: dict[str, Any], notes: list[str]) -> None:
    """Add a comparison (its metrics ``compared`` and its :func:`published_rows` ``table``) to a
    runner's ``metrics``, its table ``published`` and a note naming each setting by ``label``."""
    metrics.update(compared)
    tables["published"] = table
    notes.append("against the published numbers: " + "; ".join(
        f"{label(r[key])} measured {r['measured']:.4f} published {r['published']:.4f}"
        for r in table))

"""Confidence bounds for the trends a recipe checks: paired differences over seeds.

A claim such as "accuracy does not fall as k grows" is judged on the difference between two
settings run with the same seeds (same initialization, same data order): the paired
differences ``d_s = y_s - x_s`` over ``n`` seeds, their mean and its one-sided Student-t
confidence bounds ``mean -/+ t_{level, n-1} sd / sqrt(n)``. A single seed has no interval: its
bounds are ``-inf`` and ``+inf``, so a check on them fails rather than pass on one draw. A
verdict read from a bound is as stable as the bound: seed-to-seed variation (which already
contains any floating-point divergence between machines, amplified by training) is inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy_trend_metrics", "paired_bounds", "paired_trend"]


def paired_bounds(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of the paired differences ``y - x`` and its one-sided ``level`` confidence bounds.

    Returns ``{"mean", "lower", "upper", "sd", "n"}``; ``lower``/``upper`` are -inf/+inf for
    fewer than 2 pairs."""
    if len(x) != len(y) or not x:
        raise ValueError(f"paired samples must be non-empty and of equal length; got {len(x)} "
                         f"and {len(y)}")
    if not 0.5 < level < 1.0:
        raise ValueError(f"level must be in (0.5, 1); got {level!r}")
    d = np.asarray(y, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "lower": -math.inf, "upper": math.inf, "sd": math.nan, "n": 1.0}
    from scipy.stats import t

    sd = float(d.std(ddof=1))
    half = float(t.ppf(level, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lower": mean - half, "upper": mean + half, "sd": sd, "n": float(n)}


def paired_trend(records: Sequence[Mapping[str, Any]], metric: str, level: float = 0.95,
                 key: str = "loss.k") -> list[dict[str, Any]]:
    """For runs differing in ``key`` (and ``seed``): the paired change of ``metric`` from the
    smallest value of ``key`` to each larger one (``"from": "first"``) and between consecutive
    values (``"from": "previous"``; the first step appears under both), over the seeds both
    have. One row per comparison, with
    :func:`paired_bounds`'s fields."""
    by: dict[Any, dict[int, float]] = {}
    for r in records:
        by.setdefault(r[key], {})[int(r["seed"])] = float(r[metric])
    values = sorted(by)
    rows = []
    for i, v in enumerate(values[1:], start=1):
        for ref, frm in ((values[0], "first"), (values[i - 1], "previous")):
            seeds = sorted(set(by[ref]) & set(by[v]))
            if not seeds:
                continue
            b = paired_bounds([by[ref][s] for s in seeds], [by[v][s] for s in seeds], level)
            rows.append({"from": frm, key + "_a": ref, key + "_b": v, **b})
    return rows


def accuracy_trend_metrics(trends: Sequence[Mapping[str, Any]], key: str = "loss.k"
                           ) -> dict[str, float]:
    """The accuracy trend along ``key`` (k, or the batch size K + 1), from :func:`paired_trend`
    rows of an accuracy, optionally tagged with the ``data`` set they belong to (untagged rows
    are one set): ``min_accuracy_gain`` (the smallest, over data sets, mean gain from the
    smallest value of ``key`` to the largest), ``min_accuracy_gain_lower`` (its smallest
    one-sided 95 % lower bound: > 0 means accuracy improved) and ``min_accuracy_step_upper`` (the
    smallest one-sided 95 % upper bound of the change between consecutive values: < 0 means a
    significant fall somewhere)."""
    last: dict[Any, Mapping[str, Any]] = {}
    for t in trends:
        if t["from"] == "first":
            d = t.get("data")
            if d not in last or t[key + "_b"] > last[d][key + "_b"]:
                last[d] = t
    steps = [t for t in trends if t["from"] == "previous"]
    return {
        "min_accuracy_gain": min(t["mean"] for t in last.values()),
        "min_accuracy_gain_lower": min(t["lower"] for t in last.values()),
        "min_accuracy_step_upper": min(t["upper"] for t in steps),
    }

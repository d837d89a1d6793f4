"""How the report merges runs: the swept keys, the groups of runs, their labels and intervals.

A sweep varies some config keys (``loss.k``, ``loss.beta``, ``loss.normalize``, ``seed``, ...).
The report uses the notion of :mod:`contrastlab.experiments.results` (``contrastlab results``):
the *swept keys* are the config keys whose value differs between the runs, without the seeds
and without the keys determined by the others (e.g. ``loss.sampler`` when ``loss.name`` varies).
A figure groups its runs by every swept key except the seeds and except its own x axis
(``loss.k`` for accuracy vs k); the runs of a group differ only by their seed and are merged
(mean and a 95 % interval over the seeds).

Intervals are Student-t intervals of a mean: ``mean ± t_{0.975, n-1} s / sqrt(n)`` (s with
ddof = 1); a difference of two means uses Welch's standard error and degrees of freedom. With
one seed there is no interval (None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "K_KEY",
    "SEED_KEYS",
    "Group",
    "Interval",
    "difference_interval",
    "finite",
    "group_records",
    "mean_interval",
    "run_label",
    "series_keys",
    "sort_key",
    "swept_keys",
]

K_KEY = "loss.k"
SEED_KEYS = ("seed", "data.seed")
# keys whose value reads on its own in a label ("hucl", "sphere"); the others read "beta=5"
_VALUE_ONLY = ("loss.name", "loss.normalize", "data.name", "model.encoder", "optim.name")
_FIRST, _LAST = "loss.name", "loss.normalize"


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def swept_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The config keys that differ between ``records`` (flat records of
    :func:`contrastlab.experiments.results.load_records`), without the seeds and the keys the
    others determine: exactly the columns ``contrastlab results`` groups by."""
    # the one definition lives in experiments.results (the ``contrastlab results`` grouping)
    from contrastlab.experiments.results import swept_keys as results_swept_keys

    return results_swept_keys([dict(r) for r in records])


def series_keys(keys: Iterable[str], exclude: Iterable[str] = (K_KEY,)) -> list[str]:
    """``keys`` without the seeds and ``exclude`` (the x axis of a figure)."""
    drop = set(SEED_KEYS) | set(exclude)
    return [k for k in keys if k not in drop]


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_fmt_value(v) for v in value)
    return str(value)


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Key -> its last dotted part, or the whole key where two keys share that part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def run_label(record: Mapping[str, Any], keys: Sequence[str]) -> str:
    """A label from the loss name, the values of ``keys`` and the normalization, e.g.
    ``"hucl beta=5 sphere"`` for ``keys = ["loss.beta"]``; ``loss.name`` and
    ``loss.normalize`` are always shown (when the record has them)."""
    shown = [k for k in keys if k not in (_FIRST, _LAST)]
    short = _short_names(shown)
    parts = []
    if record.get(_FIRST) is not None:
        parts.append(_fmt_value(record[_FIRST]))
    for k in shown:
        v = _fmt_value(record.get(k))
        parts.append(v if k in _VALUE_ONLY else f"{short[k]}={v}")
    if record.get(_LAST) is not None:
        parts.append(_fmt_value(record[_LAST]))
    return " ".join(parts) or "all runs"


def _sort_value(value: Any) -> tuple[int, float, str]:
    v = finite(value)
    if v is not None:
        return (0, v, "")
    return (1, 0.0, _fmt_value(value))


def sort_key(values: Iterable[Any]) -> list[tuple[int, float, str]]:
    """Orders tuples of config values: numbers numerically, before the other values."""
    return [_sort_value(v) for v in values]


@dataclass(frozen=True)
class Group:
    """Runs that agree on ``keys`` (``values``), labelled ``label`` (unique among the groups)."""

    label: str
    values: tuple[Any, ...]
    records: tuple[Mapping[str, Any], ...]

    def value(self, keys: Sequence[str], key: str) -> Any:
        return self.values[list(keys).index(key)]


def group_records(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[Group]:
    """The records grouped by the values of ``keys``, in the order of those values (numbers
    numerically), each labelled by :func:`run_label` (made unique if two labels print alike)."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    vals: dict[str, tuple[Any, ...]] = {}
    for r in records:
        v = tuple(r.get(k) for k in keys)
        gk = repr([(*_sort_value(x), type(x).__name__ if finite(x) is None else "")
                   for x in v])
        by.setdefault(gk, []).append(r)
        vals.setdefault(gk, v)
    order = sorted(by, key=lambda g: ([_sort_value(x) for x in vals[g]],
                                      run_label(by[g][0], keys)))
    out: list[Group] = []
    seen: dict[str, int] = {}
    for g in order:
        label = run_label(by[g][0], keys)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} #{seen[label]}"
        out.append(Group(label, vals[g], tuple(by[g])))
    return out


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its 95 % interval [``low``, ``high``] (None for n = 1)."""

    mean: float
    n: int
    low: float | None
    high: float | None

    def contains(self, x: float) -> bool | None:
        """Whether ``x`` lies in the interval; None without one."""
        if self.low is None or self.high is None:
            return None
        return self.low - 1e-12 <= x <= self.high + 1e-12


def _t975(dof: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and 95 % Student-t interval of ``values`` (at least one)."""
    xs = [float(x) for x in values]
    if not xs:
        raise ValueError("values must hold at least one number")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, n, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = _t975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, n, mean - half, mean + half)


def difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) - mean(b) with Welch's 95 % interval (None if either has one value); ``n`` is
    the smaller sample size."""
    ia, ib = mean_interval(a), mean_interval(b)
    d = ia.mean - ib.mean
    n = min(ia.n, ib.n)
    if ia.n < 2 or ib.n < 2:
        return Interval(d, n, None, None)
    va = sum((x - ia.mean) ** 2 for x in a) / (ia.n - 1) / ia.n
    vb = sum((x - ib.mean) ** 2 for x in b) / (ib.n - 1) / ib.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(d, n, d, d)
    dof = (va + vb) ** 2 / (va**2 / (ia.n - 1) + vb**2 / (ib.n - 1))
    half = _t975(dof) * se
    return Interval(d, n, d - half, d + half)

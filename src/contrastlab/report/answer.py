"""The report's first line: what the runs say about downstream accuracy vs k.

:func:`answer_lines` computes, for every group of runs (every swept key except the seeds and
``loss.k``; :mod:`contrastlab.report.grouping`), the mean accuracy per k over the seeds, the best
k, the largest drop of the mean accuracy from a smaller to a larger k with its 95 % interval
(Welch), and whether the accuracy at the largest k is within the 95 % interval of the mean at
the best k. With one seed at a k there is no interval, and the line says so rather than
deciding.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from contrastlab.report.grouping import (
    K_KEY,
    Interval,
    difference_interval,
    finite,
    group_records,
    mean_interval,
    series_keys,
    swept_keys,
)

__all__ = ["ACCURACY_METRICS", "answer_lines"]

# the accuracies the runs store (contrastlab.experiments.results): mean classifier first
ACCURACY_METRICS = {"mc_acc": "mean classifier", "probe_acc": "linear probe",
                    "knn_acc": "kNN"}


def _iv(iv: Interval) -> str:
    if iv.low is None or iv.high is None:
        return "one seed: no interval"
    return f"95 % interval [{iv.low:.3f}, {iv.high:.3f}] over {iv.n} seeds"


def _group_line(label: str, by_k: dict[int, list[float]]) -> tuple[str, bool | None]:
    """One group's sentence and whether acc(largest k) is within the best k's interval."""
    ks = sorted(by_k)
    stats = {k: mean_interval(by_k[k]) for k in ks}
    best = max(ks, key=lambda k: (stats[k].mean, -k))
    kmax = ks[-1]
    seeds = sorted({len(v) for v in by_k.values()})
    seeds_txt = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    parts = [f"{label} ({len(ks)} k, {seeds_txt} seed{'s' if seeds[-1] > 1 else ''} per k): "
             f"best k={best} ({stats[best].mean:.3f}, {_iv(stats[best])})"]
    drops = [(stats[a].mean - stats[b].mean, a, b) for a, b in itertools.combinations(ks, 2)]
    drop, a, b = max(drops, key=lambda t: (t[0], -t[1], t[2]))
    if drop <= 0.0:
        parts.append("no drop: the mean accuracy never falls as k grows")
    else:
        d = difference_interval(by_k[a], by_k[b])
        iv = ("one seed: no interval" if d.low is None or d.high is None
              else f"95 % interval [{d.low:.3f}, {d.high:.3f}], "
              f"{stats[a].n} and {stats[b].n} seeds")
        parts.append(f"largest drop from k={a} to k={b} is {drop:.3f} ({iv})")
    within: bool | None
    if best == kmax:
        within = True
        parts.append(f"the largest k={kmax} is the best k")
    else:
        within = stats[best].contains(stats[kmax].mean)
        at = f"accuracy at the largest k={kmax} ({stats[kmax].mean:.3f})"
        if within is None:
            parts.append(f"{at}: one seed at the best k, so no interval to compare with")
        else:
            parts.append(f"{at} is {'within' if within else 'outside'} the 95 % interval of "
                         f"the best k")
    return "; ".join(parts) + ".", within


def answer_lines(records: Sequence[Mapping[str, Any]], metric: str | None = None,
                 keys: Sequence[str] | None = None) -> list[str]:
    """The answer to "how does downstream accuracy depend on k?" from the finished runs in
    ``records`` (flat records; other statuses are ignored): a headline, then one line per group.

    ``metric`` defaults to the first of :data:`ACCURACY_METRICS` the runs stored; ``keys`` to
    :func:`~contrastlab.report.grouping.swept_keys` of the finished runs."""
    done = [r for r in records if r.get("status", "done") == "done"]
    if metric is None:
        metric = next((m for m in ACCURACY_METRICS
                       if any(finite(r.get(m)) is not None for r in done)), None)
    if metric is None:
        return ["Accuracy vs k: no finished run stored an accuracy ("
                + ", ".join(ACCURACY_METRICS) + "), so the report cannot answer."]
    name = f"{ACCURACY_METRICS.get(metric, metric)} accuracy [{metric}]"
    usable = [r for r in done if finite(r.get(metric)) is not None
              and isinstance(r.get(K_KEY), int) and not isinstance(r.get(K_KEY), bool)]
    if not usable:
        return [f"{name} vs k: no finished run has both {metric} and an explicit k "
                f"({K_KEY}), so the report cannot answer."]
    all_keys = list(keys) if keys is not None else swept_keys(usable)
    groups = group_records(usable, series_keys(all_keys))
    lines: list[str] = []
    verdicts: list[bool | None] = []
    single = []
    for g in groups:
        by_k: dict[int, list[float]] = {}
        for r in g.records:
            v = finite(r.get(metric))
            assert v is not None
            by_k.setdefault(int(r[K_KEY]), []).append(v)
        if len(by_k) < 2:
            k = next(iter(by_k))
            iv = mean_interval(by_k[k])
            single.append(g.label)
            lines.append(f"{g.label}: only k={k} ({iv.mean:.3f}, {_iv(iv)}); no k dependence "
                         "to measure.")
            continue
        line, within = _group_line(g.label, by_k)
        lines.append(line)
        verdicts.append(within)
    n = len(verdicts)
    if n == 0:
        head = (f"{name} vs k: every group of finished runs has a single k, so the report "
                "cannot say how accuracy depends on k.")
    else:
        inside = sum(v is True for v in verdicts)
        outside = sum(v is False for v in verdicts)
        undecided = n - inside - outside
        head = (f"{name} vs k: the accuracy at the largest k is within the 95 % interval "
                f"(over seeds) of the best k in {inside} of {n} group{'s' if n > 1 else ''}"
                + (f", outside it in {outside}" if outside else "")
                + (f", undecided in {undecided} (one seed: no interval)" if undecided else "")
                + ".")
        if single:
            head += f" {len(single)} group(s) have a single k."
    return [head, *lines]

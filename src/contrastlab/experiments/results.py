"""Query and export the results database of an output directory.

The runs are read as flat records (:func:`~contrastlab.experiments.records.load_records`:
``run_id``, ``status``, the config flattened to dotted keys, the final metrics).
:func:`results_table` groups the finished (``done``) runs by config keys and prints the mean and
standard deviation (over the runs of a group: the seeds) of the chosen metrics, and, with
``samples=True`` (``contrastlab results``), the sample set each metric was computed on
(:mod:`contrastlab.experiments.samples`). :func:`export_results` writes CSV or parquet from the
one tabular view of the runs (:func:`contrastlab.experiments.frames.load_results`; parquet needs
pyarrow: ``pip install 'contrastlab[parquet]'``), or JSON: the records with their per-epoch
metrics and full reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contrastlab._tables import cell, fit_table, markdown_table
from contrastlab._validation import check_choice
from contrastlab._yaml import YamlError, load_yaml_text
from contrastlab.experiments.records import load_records
from contrastlab.experiments.samples import samples_lines

__all__ = [
    "DEFAULT_METRICS",
    "TABLE_STYLES",
    "cell",
    "export_results",
    "load_records",
    "results_table",
    "swept_keys",
]

DEFAULT_METRICS = (
    "mc_acc",
    "probe_acc",
    "knn_acc",
    "heldout_loss",
    "etf_distance",
    "nc1",
    "effective_rank",
    "distinct_negatives",
    "converged",
)
_IGNORED_GROUP_KEYS = ("seed", "data.seed")


def _parse_filters(filters: Iterable[str] | Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    if filters is None:
        return []
    if isinstance(filters, Mapping):
        return list(filters.items())
    out = []
    for text in filters:
        if "=" not in text:
            raise ValueError(f"filter must be KEY=VALUE (e.g. loss.name=hucl); got {text!r}")
        key, raw = text.split("=", 1)
        try:
            value = load_yaml_text(raw) if raw.strip() else None
        except YamlError:
            value = raw
        out.append((key.strip(), value))
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b or str(a) == str(b)


def _split_keys(keys: Iterable[str] | str | None) -> list[str] | None:
    if keys is None:
        return None
    if isinstance(keys, str):
        keys = [keys]
    out = [k.strip() for key in keys for k in key.split(",") if k.strip()]
    return out


_CONFIG_SECTIONS = ("data", "model", "loss", "optim", "train", "eval")


def _config_keys(records: list[dict[str, Any]]) -> set[str]:
    """The flattened config keys among the records' fields."""
    return {k for r in records for k in r
            if k == "seed" or any(k.startswith(s + ".") for s in _CONFIG_SECTIONS)}


# keys the config resolution derives from others: dropped first when redundant
_DERIVED_KEYS = ("loss.sampler", "loss.pool_size", "loss.beta", "loss.tau_plus",
                 "loss.temperature", "loss.k", "loss.score", "loss.negatives_reduction",
                 "loss.replacement")


def _n_groups(records: list[dict[str, Any]], keys: list[str]) -> int:
    return len({json.dumps([r.get(k) for k in keys], default=str) for r in records})


def swept_keys(records: list[dict[str, Any]]) -> list[str]:
    """The config keys that differ between ``records`` (flat records of :func:`load_records`),
    without the seeds and the keys the others determine: the columns ``contrastlab results``
    groups by, and the report's curves (:mod:`contrastlab.report.grouping`)."""
    return _varying(records, _config_keys(records)) if records else []


def _varying(records: list[dict[str, Any]], config_keys: set[str]) -> list[str]:
    """The config keys that differ between runs (not the seeds), without those determined by
    the others (e.g. ``loss.sampler`` when ``loss.name`` varies)."""
    out = []
    for key in sorted(config_keys):
        values = {json.dumps(r.get(key), sort_keys=True, default=str) for r in records}
        if len(values) > 1 and key not in _IGNORED_GROUP_KEYS:
            out.append(key)
    target = _n_groups(records, out)
    order = [k for k in _DERIVED_KEYS if k in out] + [k for k in out if k not in _DERIVED_KEYS]
    for key in order:
        rest = [k for k in out if k != key]
        if rest and _n_groups(records, rest) == target:
            out = rest
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (2, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


#: how :func:`results_table` renders: ``fit`` (wrapped to the terminal, at most 100 columns),
#: ``wide`` (one line per row), ``markdown`` (a GitHub-flavoured Markdown table)
TABLE_STYLES = ("fit", "wide", "markdown")


def _render(header: list[str], rows: list[list[str]], style: str, keys: int) -> str:
    """The table in ``style``; too wide a ``fit`` table is split into blocks of columns, each
    repeating the ``keys`` first columns (the group's keys and ``n``)."""
    if style == "markdown":
        return markdown_table(header, rows)
    return fit_table(header, rows, wide=style == "wide", keep=keys)


def results_table(
    out_dir: str | Path,
    filters: Iterable[str] | Mapping[str, Any] | None = None,
    group_by: Iterable[str] | str | None = None,
    metrics: Iterable[str] | str | None = None,
    run_ids: Iterable[str] | None = None,
    samples: bool = False,
    style: str = "fit",
) -> str:
    """A plain-text table of the results in ``out_dir``.

    Args:
        out_dir: an output directory of ``run`` / ``sweep``.
        filters: ``KEY=VALUE`` strings (or a mapping) on the record's fields, e.g.
            ``loss.name=hucl``, ``status=done`` (values parsed as YAML); all must match.
        group_by: config keys to group by (a list, or comma-separated); default: the config keys
            that differ between the runs, except the seeds.
        metrics: metric names (default :data:`DEFAULT_METRICS`, those present).
        run_ids: only these runs (e.g. the points of one sweep).
        samples: add, before the last line, the sample set of each metric shown and its size
            (:func:`~contrastlab.experiments.samples.samples_lines`).
        style: ``fit`` (default: long cells wrapped so that the table fits the terminal, at most
            100 columns), ``wide`` (one line per row) or ``markdown`` (:data:`TABLE_STYLES`).

    Each row is one group: its keys, ``n`` (finished runs; ``+x nan`` / ``+x failed`` /
    ``+x unfinished`` when some did not finish) and ``mean ± std`` over its finished runs
    (std over seeds, ddof = 1; omitted for a single run).
    """
    check_choice("style", style, TABLE_STYLES)
    records = load_records(out_dir, with_details=samples)
    reports: dict[str, Any] = {}  # the final reports (samples), out of the table's fields
    for r in records:
        reports[r["run_id"]] = r.pop("reports", None)
        r.pop("epochs", None)
    if run_ids is not None:
        keep = set(run_ids)
        records = [r for r in records if r["run_id"] in keep]
    known = set().union(*(r.keys() for r in records)) if records else set()
    flt = _parse_filters(filters)
    records = _filtered(records, flt, known)
    if not records:
        return "no runs" + (" match the filters" if flt else f" in {out_dir}")
    config_keys = _config_keys(records)
    keys = _group_keys(records, group_by, known, config_keys)
    wanted = _metric_names(records, metrics, known, config_keys)
    rows = [[*(cell(v) for v in values), _count_cell(members),
             *(_stat_cell(members, m) for m in wanted)]
            for values, members in _groups(records, keys)]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    footer = f"{len(records)} runs: " + ", ".join(f"{c} {s}" for s, c in sorted(counts.items()))
    notes = samples_lines([{**r, "reports": reports[r["run_id"]]} for r in records],
                          wanted) if samples else []
    return "\n".join([_render([*keys, "n", *wanted], rows, style, len(keys) + 1), *notes, footer])


def _filtered(records: list[dict[str, Any]], flt: list[tuple[str, Any]],
              known: set[str]) -> list[dict[str, Any]]:
    """The records that match every filter; a filter on an unknown field is refused (one-line
    ValueError naming some known ones)."""
    for key, _ in flt:
        if records and key not in known:
            shown = ", ".join(sorted(k for k in known if "." in k or k in ("status", "seed"))[:12])
            raise ValueError(f"filter key {key!r} is not a field of the results; e.g. {shown}")
    return [r for r in records if all(_equal(r.get(k), v) for k, v in flt)]


def _group_keys(records: list[dict[str, Any]], group_by: Iterable[str] | str | None,
                known: set[str], config_keys: set[str]) -> list[str]:
    """The keys to group by: ``group_by`` (each checked), else the varying config keys."""
    keys = _split_keys(group_by)
    if keys is None:
        keys = _varying(records, config_keys)
    for key in keys:
        if key not in known:
            raise ValueError(f"group_by key {key!r} is not a config field of the results; "
                             f"e.g. {', '.join(sorted(config_keys)[:12])}")
    return keys


def _metric_names(records: list[dict[str, Any]], metrics: Iterable[str] | str | None,
                  known: set[str], config_keys: set[str]) -> list[str]:
    """The metric columns: ``metrics`` (each checked), else those of :data:`DEFAULT_METRICS`
    that some record has."""
    wanted = _split_keys(metrics)
    if wanted is None:
        return [m for m in DEFAULT_METRICS if any(r.get(m) is not None for r in records)]
    for m in wanted:
        if m not in known:
            raise ValueError(f"metric {m!r} is not in the results; known metrics include "
                             f"{', '.join(sorted(k for k in known if k not in config_keys))}")
    return wanted


def _groups(records: list[dict[str, Any]],
            keys: list[str]) -> list[tuple[list[Any], list[dict[str, Any]]]]:
    """The records grouped by their values of ``keys``: (values, members) sorted by the
    values (numbers first, numerically)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    values_of: dict[str, list[Any]] = {}
    for r in records:
        vals = [r.get(k) for k in keys]
        gk = json.dumps(vals, default=str)
        groups.setdefault(gk, []).append(r)
        values_of[gk] = vals
    order = sorted(groups, key=lambda g: [_sort_key(v) for v in values_of[g]])
    return [(values_of[g], groups[g]) for g in order]


def _count_cell(members: list[dict[str, Any]]) -> str:
    """The ``n`` cell: the finished (``done``) runs, then ``+x nan`` / ``+x failed`` /
    ``+x unfinished``."""
    other: dict[str, int] = {}
    for r in members:
        if r["status"] != "done":
            st = r["status"] if r["status"] in ("nan", "failed") else "unfinished"
            other[st] = other.get(st, 0) + 1
    done = sum(1 for r in members if r["status"] == "done")
    return str(done) + "".join(f" +{c} {s}" for s, c in sorted(other.items()))


def _stat_cell(members: list[dict[str, Any]], metric: str) -> str:
    """``mean ± std`` (ddof = 1) of ``metric`` over the finished runs that have a finite value;
    the value alone for one run, ``-`` for none."""
    xs = [float(r[metric]) for r in members if r["status"] == "done"
          and isinstance(r.get(metric), int | float) and not isinstance(r.get(metric), bool)
          and math.isfinite(float(r[metric]))]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return f"{mean:.4f} ± {std:.4f}"


def export_results(out_dir: str | Path, path: str | Path) -> Path:
    """Write every run to ``path``: ``.csv`` or ``.parquet`` (the frame of
    :func:`~contrastlab.experiments.frames.load_results`: one row per run, flat columns, the
    sample set and size of each metric; parquet needs pyarrow) or ``.json`` (the records with
    their ``epochs`` and full ``reports``). The suffix and the packages it needs are checked
    before anything is read. Returns the path."""
    from contrastlab.experiments.frames import check_tabular_export, load_results, write_frame

    p = Path(path)
    if p.suffix.lower() == ".json":
        records = load_records(out_dir, with_details=True)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(records, indent=1, sort_keys=False, default=str) + "\n")
        return p
    check_tabular_export(p)
    return write_frame(load_results(out_dir), p)

"""Query and export the results database of an output directory.

Each run becomes one flat record: ``run_id``, ``status``, ``seconds``, ``attempts``, ``error``,
the resolved config flattened to dotted keys (``loss.k``, ``loss.name``, ``seed``, ...) and its
metrics:

- the last epoch's metrics (``train_loss``, ``heldout_loss``, ``mc_acc``, ``probe_acc``, ``nc1``,
  ``etf_distance``, ``effective_rank``, ``distinct_negatives`` (the distinct negatives an anchor
  actually got), ...; see :mod:`contrastlab.train`);
- overridden / extended by the final reports: ``mc_acc`` / ``mc_ce`` (mean classifier, raw
  features), ``mc_acc_normalized``, ``mc_acc_cosine``, ``probe_acc`` / ``probe_ce`` (bias-free
  probe with the weight decay chosen on a validation split), ``probe_bias_acc``, ``knn_acc``,
  ``lsup`` (unit-norm L_sup), ``nc3``, ``nc4`` and the geometry scalars.

:func:`results_table` groups the finished (``done``) runs by config keys and prints the mean and
standard deviation (over the runs of a group: the seeds) of the chosen metrics;
:func:`export_results` writes every record to CSV, JSON (with the per-epoch metrics and the full
reports) or parquet (needs pyarrow).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contrastlab._yaml import YamlError, load_yaml_text
from contrastlab.experiments.store import DB_NAME, ResultStore, StoreError

__all__ = [
    "DEFAULT_METRICS",
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
_GEOMETRY_FINAL = ("nc1", "nc2_equinorm", "nc2_equiangularity", "nc3", "nc4", "etf_distance",
                   "etf_distance_uncentered", "effective_rank", "numerical_rank", "rankme",
                   "collapsed_dims", "within_class_rms", "unit_norm_error", "zero_sum_norm",
                   "equiangularity_mean")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _final_metrics(reports: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ds = reports.get("downstream") or {}
    mcs = ds.get("mean_classifier") or {}
    for conv, key in (("raw", "mc"), ("normalized", "mc_normalized"), ("cosine", "mc_cosine")):
        if conv in mcs:
            out[f"{key}_acc"] = mcs[conv].get("accuracy")
            out[f"{key}_ce"] = mcs[conv].get("cross_entropy")
    probes = ds.get("linear_probe") or {}
    for name, key in (("bias-free", "probe"), ("bias", "probe_bias")):
        if name in probes:
            out[f"{key}_acc"] = probes[name].get("accuracy")
            out[f"{key}_ce"] = probes[name].get("cross_entropy")
            out[f"{key}_weight_decay"] = probes[name].get("weight_decay")
    if ds.get("knn"):
        out["knn_acc"] = ds["knn"].get("accuracy")
    if ds.get("lsup"):
        out["lsup"] = ds["lsup"].get("value")
    geo = reports.get("geometry") or {}
    for key in _GEOMETRY_FINAL:
        if key in geo:
            out[key] = geo[key]
    return out


def load_records(out_dir: str | Path, with_details: bool = False) -> list[dict[str, Any]]:
    """One flat record per run (module docstring); ``with_details`` adds ``epochs`` (list) and
    ``reports`` (dict) entries."""
    path = Path(out_dir)
    if not (path / DB_NAME).is_file():
        raise StoreError(f"no results database in {str(path)!r} (expected {DB_NAME}); "
                         "run a config or sweep with this output directory first")
    records = []
    with ResultStore(path, create=False) as store:
        for run in store.runs():
            rid = run["run_id"]
            cfg = dict(run["config"])
            cfg.pop("sweep", None)
            cfg.pop("output", None)
            rec: dict[str, Any] = {
                "run_id": rid,
                "status": run["status"],
                "seconds": run["seconds"],
                "attempts": run["attempts"],
                "error": run["error"],
            }
            rec.update(_flatten(cfg))
            epochs = store.epochs(rid)
            reports = store.reports(rid)
            if epochs:
                rec.update({k: v for k, v in epochs[-1].items() if not isinstance(v, dict)})
            rec.update(_final_metrics(reports))
            if with_details:
                rec["epochs"] = epochs
                rec["reports"] = reports
            records.append(rec)
    return records


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


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (2, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def results_table(
    out_dir: str | Path,
    filters: Iterable[str] | Mapping[str, Any] | None = None,
    group_by: Iterable[str] | str | None = None,
    metrics: Iterable[str] | str | None = None,
    run_ids: Iterable[str] | None = None,
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

    Each row is one group: its keys, ``n`` (finished runs; ``+x nan`` / ``+x failed`` /
    ``+x unfinished`` when some did not finish) and ``mean ± std`` over its finished runs
    (std over seeds, ddof = 1; omitted for a single run).
    """
    records = load_records(out_dir)
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
    rows = [[*(_fmt(v) for v in values), _count_cell(members),
             *(_stat_cell(members, m) for m in wanted)]
            for values, members in _groups(records, keys)]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    footer = f"{len(records)} runs: " + ", ".join(f"{c} {s}" for s, c in sorted(counts.items()))
    return _render([*keys, "n", *wanted], rows) + "\n" + footer


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


def _scalar(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def export_results(out_dir: str | Path, path: str | Path) -> Path:
    """Write every run's record to ``path``: ``.csv`` (flat scalar columns; lists as JSON),
    ``.json`` (records with their ``epochs`` and full ``reports``) or ``.parquet`` (flat; needs
    pyarrow). Returns the path."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".json", ".parquet", ".pq"):
        raise ValueError(f"export path must end in .csv, .json or .parquet; got {str(p)!r}")
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("parquet export needs pyarrow (pip install pyarrow); "
                             "use a .csv or .json path instead") from None
    records = load_records(out_dir, with_details=suffix == ".json")
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        p.write_text(json.dumps(records, indent=1, sort_keys=False, default=str) + "\n")
        return p
    columns: list[str] = []
    for r in records:
        for k in r:
            if k not in columns:
                columns.append(k)
    flat = [{k: _scalar(r.get(k)) for k in columns} for r in records]
    if suffix == ".csv":
        with open(p, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
        return p
    # parquet: one column per field; mixed types become strings
    table_cols: dict[str, list[Any]] = {}
    for k in columns:
        vals = [r[k] for r in flat]
        kinds = {type(v) for v in vals if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            vals = [None if v is None else str(v) for v in vals]
        table_cols[k] = vals
    pq.write_table(pa.table(table_cols), p)
    return p

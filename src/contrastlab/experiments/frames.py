"""The results database as pandas frames, and the tabular exports written from them.

- :func:`load_results`: one row per run. Columns: ``run_id``, ``status``, ``seconds``,
  ``attempts``, ``error``; every config field flattened to a dotted name (``loss.k``,
  ``data.options.classes``, ``seed``, ...; lists and empty mappings as JSON text); the final
  metrics (the last epoch's, overridden by the final reports:
  :mod:`contrastlab.experiments.records`); then, for every metric measured on samples, its
  sample set and size: ``<metric>_split`` (``train``, ``test`` or ``train batches``,
  :mod:`contrastlab.experiments.samples`) and ``<metric>_n`` (the number of samples; missing for
  the training batches and for runs without final reports). Integer columns with missing values
  are ``Int64``, booleans ``boolean``.
- :func:`load_epochs`: the per-epoch metrics in *tidy* (long) form, one row per (run, epoch,
  metric): ``run_id``, ``epoch``, ``metric``, ``value`` (float; NaN where the run stored a
  non-finite value as null), ``split`` and ``n`` as above. Only numeric values are kept (not the
  text of a ``geometry_error``). Pivot it for one column per metric:
  ``frame.pivot_table(index=["run_id", "epoch"], columns="metric", values="value")``.
- :func:`write_frame`: a frame to ``.csv`` or ``.parquet``; :func:`check_tabular_export` checks the
  path's suffix and the packages it needs (pandas; pyarrow for parquet: ``pip install
  'contrastlab[parquet]'``) before any work.

The stored numbers are read as they are: nothing here changes the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contrastlab.experiments.records import load_records
from contrastlab.experiments.samples import metric_samples

__all__ = ["TABULAR_SUFFIXES", "MissingPackageError", "check_tabular_export", "load_epochs",
           "load_results", "write_frame"]

#: the suffixes of the tabular exports
TABULAR_SUFFIXES = (".csv", ".parquet", ".pq")


class MissingPackageError(ImportError, ValueError):
    """A package that a frame or an export needs is not installed; one line saying how to
    install it (an ImportError, and a ValueError: bad input for the command line, exit 2)."""


def _pandas() -> Any:
    """The pandas module, or a one-line MissingPackageError saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise MissingPackageError("the results frames need pandas: pip install pandas") from None
    return pandas


def check_tabular_export(path: str | Path) -> Path:
    """``path`` as a Path when it can be exported to: a suffix of :data:`TABULAR_SUFFIXES` and
    its packages importable; otherwise a one-line ValueError, or a MissingPackageError naming
    what to install. Checks only (nothing is read or written)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TABULAR_SUFFIXES:
        raise ValueError(f"export path must end in .csv, .json or .parquet; got {str(p)!r}")
    _pandas()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise MissingPackageError("parquet export needs pyarrow: pip install "
                                      "'contrastlab[parquet]' (or export to a .csv or .json "
                                      "path)") from None
    return p


def _cell(value: Any) -> Any:
    """A frame cell: lists and mappings as JSON text, everything else as it is."""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def _typed(frame: Any, rows: list[dict[str, Any]]) -> Any:
    """``frame`` (built from ``rows``) with nullable dtypes where pandas would lose the type of
    a column with missing values: integers as ``Int64`` (not float), booleans as ``boolean``
    (not object)."""
    for col in frame.columns:
        raw = [row.get(col) for row in rows]
        values = [v for v in raw if v is not None]
        if not values or len(values) == len(raw):
            continue
        if all(isinstance(v, bool) for v in values):
            frame[col] = frame[col].astype("boolean")
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            frame[col] = frame[col].astype("Int64")
    return frame


def _sample_columns(row: Mapping[str, Any], reports: Mapping[str, Any]) -> dict[str, Any]:
    """``<metric>_split`` and ``<metric>_n`` for each metric of ``row`` measured on samples."""
    out: dict[str, Any] = {}
    for key in row:
        split, n = metric_samples(key, reports)
        if split is not None:
            out[f"{key}_split"] = split
            out[f"{key}_n"] = n
    return out


def load_results(out_dir: str | Path) -> Any:
    """One row per run of the output directory ``out_dir`` (module docstring), in the order the
    runs were created; a pandas DataFrame. StoreError (one line) when there is no results
    database."""
    pd = _pandas()
    rows, extra = [], []
    for rec in load_records(out_dir, with_details=True):
        reports = rec.pop("reports")
        rec.pop("epochs")
        rows.append({k: _cell(v) for k, v in rec.items()})
        extra.append(_sample_columns(rec, reports))
    columns: dict[str, None] = dict.fromkeys(["run_id", "status", "seconds", "attempts", "error"])
    for part in (rows, extra):
        for row in part:
            columns.update(dict.fromkeys(row))
    full = [{**row, **more} for row, more in zip(rows, extra, strict=True)]
    frame = _typed(pd.DataFrame(full, columns=list(columns)), full)
    for col in {k for more in extra for k in more if k.endswith("_n")}:
        frame[col] = frame[col].astype("Int64")  # sample counts, missing where unknown
    return frame


def load_epochs(out_dir: str | Path) -> Any:
    """The per-epoch metrics of every run in ``out_dir`` as a tidy pandas DataFrame (module
    docstring): ``run_id``, ``epoch``, ``metric``, ``value``, ``split``, ``n``; by run (in
    creation order), epoch and metric name."""
    pd = _pandas()
    rows = []
    for rec in load_records(out_dir, with_details=True):
        for metrics in rec["epochs"]:
            epoch = metrics.get("epoch")
            for name in sorted(metrics):
                value = metrics[name]
                if name == "epoch" or not (value is None or isinstance(value, int | float)):
                    continue
                split, n = metric_samples(name, rec["reports"])
                rows.append((rec["run_id"], epoch, name,
                             float("nan") if value is None else float(value), split, n))
    frame = pd.DataFrame(rows, columns=["run_id", "epoch", "metric", "value", "split", "n"])
    frame["epoch"] = frame["epoch"].astype("Int64")
    frame["value"] = frame["value"].astype("float64")
    frame["n"] = frame["n"].astype("Int64")
    return frame


def _parquet_ready(frame: Any) -> Any:
    """A copy of ``frame`` that parquet can store: an object column mixing kinds of values
    (e.g. text and numbers) as text, missing values kept."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        kinds = {type(v) for v in out[col].tolist() if v is not None and v == v}
        if len(kinds) > 1 and not kinds <= {int, float}:
            out[col] = [None if v is None or v != v else str(v) for v in out[col].tolist()]
    return out


def write_frame(frame: Any, path: str | Path) -> Path:
    """Write ``frame`` to ``path``: ``.csv`` (missing values empty) or ``.parquet`` / ``.pq``
    (:func:`check_tabular_export` first); the directory is created if needed. Returns the path."""
    p = check_tabular_export(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".csv":
        frame.to_csv(p, index=False)
    else:
        _parquet_ready(frame).to_parquet(p, index=False)
    return p

"""The flat record of a run: the one reading of the results database that every tabular view
(``contrastlab results``, the exports, :func:`contrastlab.experiments.frames.load_results`, the
report) starts from.

Each run becomes one flat record: ``run_id``, ``status``, ``seconds``, ``attempts``, ``error``,
the resolved config flattened to dotted keys (``loss.k``, ``loss.name``, ``seed``, ...; without
its ``sweep`` and ``output`` sections) and its metrics:

- the last epoch's metrics (``train_loss``, ``heldout_loss``, ``mc_acc``, ``probe_acc``, ``nc1``,
  ``etf_distance``, ``effective_rank``, ``distinct_negatives`` (the distinct negatives an anchor
  actually got), ...; see :mod:`contrastlab.train`);
- overridden / extended by the final reports: ``mc_acc`` / ``mc_ce`` (mean classifier, raw
  features), ``mc_normalized_acc``, ``mc_cosine_acc``, ``probe_acc`` / ``probe_ce`` (bias-free
  probe with the weight decay chosen on a validation split), ``probe_bias_acc``, ``knn_acc``,
  ``lsup`` (unit-norm L_sup), ``nc3``, ``nc4`` and the geometry scalars.

Which samples each metric was computed on: :mod:`contrastlab.experiments.samples`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contrastlab.experiments.store import DB_NAME, ResultStore, StoreError

__all__ = ["flatten", "load_records"]

_GEOMETRY_FINAL = ("nc1", "nc2_equinorm", "nc2_equiangularity", "nc3", "nc4", "etf_distance",
                   "etf_distance_uncentered", "effective_rank", "numerical_rank", "rankme",
                   "collapsed_dims", "within_class_rms", "unit_norm_error", "zero_sum_norm",
                   "equiangularity_mean")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``d`` with its nested mappings flattened to dotted keys (``{"loss": {"k": 4}}`` ->
    ``{"loss.k": 4}``); an empty mapping stays a value."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _final_metrics(reports: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar metrics of a run's final reports (module docstring)."""
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
            rec.update(flatten(cfg))
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

"""Helpers shared by the experiment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contrastlab.experiments.store import ResultStore

#: a tiny run (3 classes, 240 training samples, 2 epochs): the experiment tests' common config
TINY_RUN: dict[str, Any] = {
    "data": {"name": "synthetic", "seed": 0,
             "options": {"classes": 3, "dim": 6, "n_train": 240, "n_test": 120}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 16}},
    "loss": {"name": "ucl", "k": 4},
    "train": {"epochs": 2, "batch_size": 60, "threads": 1, "progress": False},
}


def strip_seconds(obj: Any) -> Any:
    """``obj`` without its wall-time fields (they differ between otherwise equal runs)."""
    if isinstance(obj, dict):
        return {k: strip_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [strip_seconds(v) for v in obj]
    return obj


def snapshot(out: Path) -> dict[str, Any]:
    """run id -> (status, epochs, reports without wall times) of a results directory."""
    with ResultStore(out, create=False) as store:
        return {r["run_id"]: (r["status"], store.epochs(r["run_id"]),
                              strip_seconds(store.reports(r["run_id"]))) for r in store.runs()}

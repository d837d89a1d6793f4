"""Helpers shared by the experiment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contrastlab.experiments.store import ResultStore


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

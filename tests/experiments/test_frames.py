"""The results as pandas frames (load_results, load_epochs) and the exports built on them."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from contrastlab.experiments import cli_results, load_epochs, load_results
from contrastlab.experiments.frames import MissingPackageError, check_tabular_export
from contrastlab.experiments.records import load_records
from contrastlab.experiments.results import export_results
from contrastlab.experiments.samples import METRIC_SPLITS
from contrastlab.experiments.store import StoreError
from contrastlab.experiments.sweep import run_sweep
from contrastlab.train.config import parse_config
from tests.experiments.helpers import TINY_RUN

pd = pytest.importorskip("pandas")

CONFIG: dict[str, Any] = {
    **TINY_RUN,
    "eval": {"final_lsup": False, "max_train": 200},
    "sweep": {"loss.k": [1, 4]},
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("frames")
    run_sweep(parse_config(CONFIG), path, workers=1, log=None)
    return path


def test_load_results_is_one_row_per_run_with_config_metrics_and_samples(out: Path) -> None:
    frame = load_results(out)
    records = load_records(out)
    assert list(frame["run_id"]) == [r["run_id"] for r in records]
    assert list(frame.columns[:5]) == ["run_id", "status", "seconds", "attempts", "error"]
    assert set(frame["status"]) == {"done"}
    assert sorted(frame["loss.k"]) == [1, 4] and frame["loss.k"].dtype == "int64"
    assert "data.options.n_train" in frame and "sweep" not in frame and "output.dir" not in frame
    for rec, (_, row) in zip(records, frame.iterrows(), strict=True):
        for metric in ("mc_acc", "probe_acc", "nc1", "etf_distance", "heldout_loss"):
            assert row[metric] == rec[metric]  # the stored numbers, unchanged
    # every metric says which samples it is on: the train subset (capped at 200 of 240), the
    # test split (120 < eval.max_test) and the training batches
    assert set(frame["nc1_split"]) == {"train"} and set(frame["nc1_n"]) == {200}
    assert set(frame["mc_acc_split"]) == {"test"} and set(frame["mc_acc_n"]) == {120}
    assert set(frame["heldout_loss_n"]) == {120}
    assert set(frame["train_loss_split"]) == {"train batches"}
    assert frame["train_loss_n"].isna().all() and frame["train_loss_n"].dtype == "Int64"
    assert "lr_split" not in frame and "seed_n" not in frame


def test_load_epochs_is_tidy(out: Path) -> None:
    frame = load_epochs(out)
    assert list(frame.columns) == ["run_id", "epoch", "metric", "value", "split", "n"]
    assert frame["value"].dtype == "float64"
    assert set(frame["epoch"]) == {1, 2}
    assert "epoch" not in set(frame["metric"])
    records = {r["run_id"]: r for r in load_records(out, with_details=True)}
    for _, row in frame.iterrows():
        stored = records[row["run_id"]]["epochs"][int(row["epoch"]) - 1][row["metric"]]
        assert (math.isnan(row["value"]) if stored is None else row["value"] == float(stored))
    nc1 = frame[frame["metric"] == "nc1"]
    assert set(nc1["split"]) == {"train"} and set(nc1["n"]) == {200}
    wide = frame.pivot_table(index=["run_id", "epoch"], columns="metric", values="value")
    assert wide.shape[0] == 4 and "mc_acc" in wide


def test_every_geometry_metric_has_a_sample_set() -> None:
    from contrastlab.train import GEOMETRY_METRICS

    assert set(GEOMETRY_METRICS) <= set(METRIC_SPLITS)
    assert {METRIC_SPLITS[m] for m in GEOMETRY_METRICS} == {"train"}


def test_exports_are_the_frame(out: Path, tmp_path: Path) -> None:
    frame = load_results(out)
    back = pd.read_csv(export_results(out, tmp_path / "r.csv"))
    assert list(back.columns) == list(frame.columns)
    assert list(back["mc_acc"]) == list(frame["mc_acc"])
    assert list(back["nc1_n"]) == [200, 200]
    pytest.importorskip("pyarrow")
    pq = pd.read_parquet(export_results(out, tmp_path / "r.parquet"))
    assert list(pq.columns) == list(frame.columns)
    assert list(pq["nc1"]) == list(frame["nc1"]) and list(pq["run_id"]) == list(frame["run_id"])
    text = cli_results(out, export=tmp_path / "again.parquet")
    assert text.endswith(f"exported to {tmp_path / 'again.parquet'}")


def test_parquet_without_pyarrow_fails_first_naming_the_extra(
        out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingPackageError, match=r"pip install 'contrastlab\[parquet\]'"):
        check_tabular_export(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="parquet export needs pyarrow"):
        export_results(out, tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="parquet export needs pyarrow") as info:
        cli_results(out, export=tmp_path / "x.parquet")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.parquet").exists()
    check_tabular_export(tmp_path / "x.csv")  # csv needs pandas only


def test_missing_database_is_one_line(tmp_path: Path) -> None:
    for load in (load_results, load_epochs):
        with pytest.raises(StoreError, match="no results database"):
            load(tmp_path / "nothing")


def test_the_results_command_states_the_samples_and_refuses_parquet_first(
        out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from contrastlab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["results", str(out)])
    assert info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 runs: 2 done"
    assert "  train split, n=200 (eval.max_train=200): etf_distance, nc1, effective_rank" in lines
    assert any(line.startswith("  test split, n=120 (eval.max_test=2000; classifiers fit on the "
                               "train subset): mc_acc, probe_acc, knn_acc, heldout_loss")
               for line in lines)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SystemExit) as info:
        main(["results", str(out), "--export", str(tmp_path / "x.parquet")])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    assert captured.err.strip() == ("Error: parquet export needs pyarrow: pip install "
                                    "'contrastlab[parquet]' (or export to a .csv or .json path)")

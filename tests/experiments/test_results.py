"""Results: the table (grouping, mean and std over seeds, filters) and the exports."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from contrastlab.experiments import cli_results, cli_run
from contrastlab.experiments.results import export_results, load_records, results_table
from contrastlab.experiments.sweep import run_sweep
from contrastlab.train.config import parse_config
from tests.experiments.helpers import TINY_RUN

CONFIG: dict[str, Any] = {
    **TINY_RUN,
    "eval": {"final_lsup": False},
    "sweep": {"loss.k": [1, 4], "seed": [0, 1]},
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("results")
    run_sweep(parse_config(CONFIG), path, workers=1, log=None)
    return path


def test_table_groups_by_the_swept_keys_with_mean_and_std(out: Path) -> None:
    text = results_table(out)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["loss.k", "n", "mc_acc"]
    assert [line.split()[:2] for line in lines[2:4]] == [["1", "2"], ["4", "2"]]
    assert "±" in lines[2]
    assert lines[-1] == "4 runs: 4 done"
    records = load_records(out)
    ks = [r["mc_acc"] for r in records if r["loss.k"] == 1]
    mean = sum(ks) / 2
    assert f"{mean:.4f} ±" in lines[2]


def test_filters_metrics_and_bad_keys(out: Path) -> None:
    text = results_table(out, filters=["loss.k=4"], group_by="seed", metrics="probe_acc,nc1")
    lines = text.splitlines()
    assert lines[0].split() == ["seed", "n", "probe_acc", "nc1"]
    assert len(lines) == 2 + 2 + 1
    assert results_table(out, filters=["loss.k=5"]) == "no runs match the filters"
    with pytest.raises(ValueError, match=r"filter key 'loss\.kk'"):
        results_table(out, filters=["loss.kk=4"])
    with pytest.raises(ValueError, match=r"metric 'accuracy'"):
        results_table(out, metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"group_by key 'loss\.nam'"):
        results_table(out, group_by=["loss.nam"])


def test_distinct_negatives_in_records_and_table(out: Path) -> None:
    # k distinct negatives per anchor (loss.replacement defaults to false), stored every epoch
    records = load_records(out, with_details=True)
    assert all(r["loss.replacement"] is False for r in records)
    assert all(r["distinct_negatives"] == float(r["loss.k"]) for r in records)
    assert all(e["distinct_negatives"] == float(r["loss.k"]) for r in records
               for e in r["epochs"])
    header = results_table(out, style="wide").splitlines()[0].split()
    assert header[-2:] == ["distinct_negatives", "converged"]
    text = results_table(out, filters=["loss.k=4"], group_by="seed",
                         metrics="distinct_negatives")
    assert [line.split()[2] for line in text.splitlines()[2:4]] == ["4.0000", "4.0000"]


def test_exports(out: Path, tmp_path: Path) -> None:
    path = export_results(out, tmp_path / "r.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert {"run_id", "loss.k", "seed", "mc_acc", "probe_acc", "etf_distance",
            "converged"} <= set(rows[0])
    data = json.loads(export_results(out, tmp_path / "r.json").read_text())
    assert len(data) == 4 and len(data[0]["epochs"]) == 2
    assert set(data[0]["reports"]) == {"geometry", "downstream", "convergence"}
    with pytest.raises(ValueError, match=r"must end in .csv, .json or .parquet"):
        export_results(out, tmp_path / "r.xlsx")
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(ValueError, match="parquet export needs pyarrow"):
            export_results(out, tmp_path / "r.parquet")
    else:  # pragma: no cover - depends on the environment
        assert export_results(out, tmp_path / "r.parquet").stat().st_size > 0
    text = cli_results(out, ["loss.k=1"], ["seed"], tmp_path / "again.csv")
    assert text.endswith(f"exported to {tmp_path / 'again.csv'}")


def test_cli_run_skips_a_done_run(out: Path, tmp_path: Path) -> None:
    import yaml

    cfg = dict(CONFIG)
    cfg.pop("sweep")
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(cfg))
    text, code = cli_run(path, ["loss.k=4", "seed=1"], out)  # already done by the sweep
    assert code == 0
    assert text.splitlines()[0].endswith(": done")
    assert results_table(out).splitlines()[-1] == "4 runs: 4 done"
    with pytest.raises(ValueError, match="has a sweep grid"):
        cli_run(path, ["sweep.seed=[0, 1]"], tmp_path / "x")


def test_the_table_states_the_sample_set_of_each_metric(out: Path) -> None:
    plain = results_table(out, metrics="mc_acc,nc1,train_loss,lr")
    text = results_table(out, metrics="mc_acc,nc1,train_loss,lr", samples=True)
    lines = text.splitlines()
    assert lines[:4] == plain.splitlines()[:4] and lines[-1] == "4 runs: 4 done"
    assert lines[4].startswith("samples of the metrics (each run's fixed evaluation subsets")
    assert lines[5:8] == [
        "  train split, n=240 (eval.max_train=2000): nc1",
        "  test split, n=120 (eval.max_test=2000; classifiers fit on the train subset): mc_acc",
        "  training batches of each epoch: train_loss",
    ]  # lr is no measurement on samples
    assert len(lines) == len(plain.splitlines()) + 4
    assert cli_results(out) == results_table(out, samples=True)


def test_table_fits_100_columns_or_goes_wide_or_markdown(out: Path) -> None:
    fit = results_table(out)
    assert max(len(line) for line in fit.splitlines()) <= 100
    wide = results_table(out, style="wide")
    assert len(wide.splitlines()[0]) > 100  # the default metrics do not fit in 100 columns
    assert set(wide.splitlines()[0].split()) <= set(fit.split())  # no column lost
    md = results_table(out, style="markdown").splitlines()
    assert md[0].startswith("| loss.k | n |") and md[1].startswith("|---|")
    assert md[-1] == "4 runs: 4 done"
    with pytest.raises(ValueError, match="style"):
        results_table(out, style="html")

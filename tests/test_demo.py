"""The demo job runs end to end (short) and writes a report with real numbers."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.demo import DemoRun, etf_loss_table, train_one


def test_etf_table_matches_closed_forms() -> None:
    for row in etf_loss_table(10, [1, 16, 256]):
        assert abs(row["scl"] - row["scl_closed_form"]) < 1e-9
        assert abs(row["ucl"] - row["ucl_closed_form"]) < 1e-9
        assert row["hucl_beta1"] > row["ucl"]


def test_training_reaches_a_good_mean_classifier() -> None:
    r = train_one(DemoRun("HSCL", "other-class", 5.0, 32), num_classes=4, steps=150, batch=96)
    assert r["mean_classifier_accuracy"] > 0.95
    assert r["equiangular_error"] < 0.15


def test_cli_demo_writes_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["training"]) == 8
    assert "report written to" in result.output
    assert (tmp_path / "report.md").read_text().startswith("# contrastlab demo report")


def test_cli_rejects_bad_steps(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps", "0"])
    assert result.exit_code != 0
    assert "steps" in result.output

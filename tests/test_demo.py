"""The demo (the quick tour) runs end to end (short) with the library's trainer and writes a
report with real numbers."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.demo import DemoRun, demo_config, etf_loss_table, train_one
from contrastlab.train import run_id


def test_etf_table_matches_closed_forms() -> None:
    for row in etf_loss_table(10, [1, 16, 256]):
        assert abs(row["scl"] - row["scl_closed_form"]) < 1e-9
        assert abs(row["ucl"] - row["ucl_closed_form"]) < 1e-9
        assert row["hucl_beta1"] > row["ucl"]


def test_training_reaches_a_good_mean_classifier() -> None:
    run = DemoRun("HSCL", "other-class", 5.0, 32)
    r = train_one(run, num_classes=4, steps=150, batch=96)
    assert r["mean_classifier_accuracy"] > 0.95
    assert r["equiangular_error"] < 0.15
    # trained by the library's trainer: the run id is that of the demo's trainer config
    assert r["run_id"] == run_id(demo_config(run, num_classes=4, steps=150, batch=96))


def test_runs_map_to_the_trainer_losses() -> None:
    assert [DemoRun("x", neg, beta, 4).loss for neg, beta in (
        ("other-class", 0.0), ("other-class", 5.0), ("marginal", 0.0), ("marginal", 5.0))
    ] == ["scl", "hscl", "ucl", "hucl"]
    cfg = demo_config(DemoRun("HUCL", "marginal", 5.0, 16), steps=7, batch=64, seed=3)
    assert (cfg.loss.name, cfg.loss.k, cfg.loss.beta, cfg.loss.normalize) == ("hucl", 16, 5.0,
                                                                                "ball")
    assert (cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size) == (1, 7, 64)
    assert cfg.seed == 3 and cfg.data.seed == 3


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

"""The theory commands: `contrastlab optimum` and `contrastlab conjecture`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.theory.etf import etf_loss


def test_optimum_table_and_json() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["optimum", "--classes", "4", "--k", "1,8", "--restarts", "1"])
    assert out.exit_code == 0, out.output
    assert "etf_cosine_error" in out.output and "prior balanced" in out.output
    res = runner.invoke(
        app, ["optimum", "--classes", "4", "--k", "1,8", "--restarts", "1", "--json"]
    )
    data = json.loads(res.output)
    assert [r["k"] for r in data["rows"]] == [1, 8]
    for row in data["rows"]:
        assert abs(row["loss"] - etf_loss(4, row["k"])) < 1e-9  # balanced: the ETF
        assert row["etf_cosine_error"] < 1e-5


def test_conjecture_json_reports_rows_and_violations() -> None:
    res = CliRunner().invoke(
        app,
        [
            "conjecture",
            "--classes",
            "3",
            "--k",
            "1,4",
            "--prior",
            "balanced",
            "--prior",
            "zipf:2",
            "--restarts",
            "1",
            "--recheck-restarts",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {(r["prior"], r["k"]) for r in data["rows"]} == {
        ("balanced", 1),
        ("balanced", 4),
        ("zipf:2", 1),
        ("zipf:2", 4),
    }
    assert isinstance(data["violations"], list)


def test_bad_options_give_one_line_errors() -> None:
    runner = CliRunner()
    for args, name in [
        (["optimum", "--classes", "4", "--k", "0"], "--k"),
        (["optimum", "--classes", "4", "--prior", "zipf:x"], "prior"),
        (["optimum", "--classes", "4", "--loss", "squared"], "loss"),
        (["conjecture", "--classes", "3", "--k", "a,b"], "--k"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert name in res.output and res.output.count("\n") <= 2


def test_optimum_json_reports_the_duality_gap_on_every_row() -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["optimum", "--classes", "5", "--prior", "zipf:1", "--k", "1,16", "--json"]
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    for row in rows:
        assert 0.0 <= row["duality_gap"] <= 1e-6  # a certified global optimum
        assert row["duality_gap_reason"] is None
        assert row["starts_run"] == 1
        assert "supervised_loss_gap" in row  # L_sup's own certificate, kept as is
    res = runner.invoke(
        app, ["optimum", "--classes", "3", "--k", "2", "--loss", "hinge", "--restarts", "1",
              "--json"]
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)["rows"]
    assert row["duality_gap"] is None and "hinge" in row["duality_gap_reason"]

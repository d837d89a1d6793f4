"""The progress bar over a sweep's runs (issue 18, item 3): on stderr with the time left and the
run being trained, when forced (``runs_bar=True``) or at a terminal (``None``); the log lines are
the same, the results too, and a training recipe asks for it through its run context."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from contrastlab.experiments.sweep import run_sweep
from tests.experiments.helpers import TINY_RUN, snapshot


def _config() -> dict[str, Any]:
    cfg = copy.deepcopy(TINY_RUN)
    cfg["train"]["epochs"] = 1
    cfg["eval"] = {"final_lsup": False, "final_knn": False}
    cfg["sweep"] = {"seed": [0, 1]}
    return cfg


def test_runs_bar_when_forced_same_log_and_results(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    quiet: list[str] = []
    run_sweep(_config(), tmp_path / "quiet", log=quiet.append, runs_bar=False)
    assert capsys.readouterr().err == ""
    shown: list[str] = []
    ids = run_sweep(_config(), tmp_path / "bar", log=shown.append, runs_bar=True)
    err = capsys.readouterr().err
    assert "runs" in err and "2/2" in err and "seed=1" in err and "<" in err
    assert len(ids) == 2
    strip = [line.split(" (")[0].replace(str(tmp_path / "bar"), "OUT") for line in shown]
    assert strip == [line.split(" (")[0].replace(str(tmp_path / "quiet"), "OUT")
                     for line in quiet]
    assert snapshot(tmp_path / "bar") == snapshot(tmp_path / "quiet")
    # resumed with nothing left: the bar starts (and ends) at the finished runs
    run_sweep(_config(), tmp_path / "bar", log=None, runs_bar=True)
    assert "2/2" in capsys.readouterr().err


def test_runs_bar_absent_when_stderr_is_not_a_terminal(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_sweep(_config(), tmp_path, log=None, runs_bar=None)
    assert capsys.readouterr().err == ""


def test_a_training_recipe_asks_for_one_bar_over_its_runs(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_recipe(progress=...)`` reaches the runner's context, and ``sweep_records`` passes
    it to the sweep as its bar over the runs (per-run bars stay off)."""
    import contrastlab.experiments.results as results_mod
    import contrastlab.experiments.sweep as sweep_mod
    from contrastlab.recipes import repro
    from contrastlab.recipes.runners import Outcome, RunContext, sweep_records

    seen: dict[str, Any] = {}

    def fake_sweep(cfg: Any, out_dir: Any, **kw: Any) -> list[str]:
        seen.update(kw)
        return []

    monkeypatch.setattr(sweep_mod, "run_sweep", fake_sweep)
    monkeypatch.setattr(results_mod, "load_records", lambda *_a, **_k: [])
    sweep_records(_config(), {"seed": [0]}, tmp_path / "runs", RunContext(tmp_path, progress=None))
    assert seen["runs_bar"] is None and seen["progress"] is False

    got: list[bool | None] = []

    def runner(params: dict[str, Any], ctx: RunContext) -> Outcome:
        got.append(ctx.progress)
        return Outcome(metrics={})

    monkeypatch.setattr(repro, "all_runners", lambda: {"awasthi_lemma1": runner})
    for progress in (None, True, False):
        repro.run_recipe("awasthi-lemma1", out=tmp_path / "out", progress=progress)
    assert got == [None, True, False]
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        repro.run_recipe("awasthi-lemma1", out=tmp_path / "out", progress=1)  # type: ignore[arg-type]

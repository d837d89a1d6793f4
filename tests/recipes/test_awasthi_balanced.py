"""awasthi-balanced-etf solves its programs over several processes: the same results, bit for
bit, for any number of them (results are a function of the config only)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from contrastlab import _fork
from contrastlab.recipes.awasthi import awasthi_balanced_etf
from contrastlab.recipes.runners import RunContext

PARAMS = {"classes": [3, 5], "ks": [1, 2, 8, 64], "restarts": 2}


@pytest.fixture(autouse=True)
def _fork_even_with_threads(monkeypatch):
    """Fork on Linux even where an earlier test left a thread running (a progress bar's
    monitor), so that several processes really solve here: the children run only the solves."""
    if sys.platform.startswith("linux"):
        monkeypatch.setattr(_fork, "fork_available", lambda: True)


def _run(tmp_path, monkeypatch, cores: int):
    monkeypatch.setattr(_fork, "usable_cores", lambda: cores)
    said: list[str] = []
    out = awasthi_balanced_etf(dict(PARAMS), RunContext(tmp_path, log=said.append))
    # one process where fork is off (e.g. a thread left by an earlier test)
    assert f"on {cores if _fork.fork_available() else 1} process(es)" in said[-1]
    return out


def test_the_same_results_for_any_number_of_processes(tmp_path, monkeypatch):
    from contrastlab.theory.optimize import optimize_population

    one = _run(tmp_path, monkeypatch, 1)
    for cores in (2, 3):
        many = _run(tmp_path, monkeypatch, cores)
        assert many.tables == one.tables and many.metrics == one.metrics
        heat_one = one.figures["optimum_cosines"].axes[0].images[0].get_array()
        heat_many = many.figures["optimum_cosines"].axes[0].images[0].get_array()
        assert np.array_equal(heat_one, heat_many)
    rows = one.tables["optima"]
    assert [(r["C"], r["k"]) for r in rows] == [(c, k) for c in (3, 5) for k in (1, 2, 8, 64)]
    direct = optimize_population(num_classes=5, k=8, restarts=2, seed=8)  # as in a serial loop
    assert rows[6]["contrastive_loss"] == direct.loss
    assert rows[6]["etf_cosine_error"] == direct.etf_cosine_error
    assert one.metrics["max_etf_cosine_error"] < 1e-4 and one.metrics["solves"] == 8.0


def test_its_figures_save_with_nothing_clipped(tmp_path, monkeypatch):
    from contrastlab.report.figures import save
    from tests.figure_layout import layout_problems

    out = _run(tmp_path, monkeypatch, 2)
    assert set(out.figures) == {"losses_vs_k", "optimum_cosines"}
    for name, fig in out.figures.items():
        png, svg = save(fig, tmp_path / "figures" / name)
        assert png.stat().st_size > 1000 and svg.stat().st_size > 1000
        assert layout_problems(fig) == [], name


def test_an_error_in_a_solve_is_raised_in_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(_fork, "usable_cores", lambda: 2)
    with pytest.raises(ValueError, match="loss must be one of"):
        awasthi_balanced_etf({"classes": [3], "ks": [1, 2], "losses": ["nope"]},
                             RunContext(tmp_path))

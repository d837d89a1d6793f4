"""The recipe page: self-contained, PASS/FAIL visible, and its figures load in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrastlab.recipes import run_recipe
from tests.report.browser import broken_figures, dump_dom, figure_states, find_chromium

RECIPE = """
name: tiny-etf
title: tiny
claim: the optimum is the ETF
source: seeds/000
runner: awasthi_balanced_etf
corruption: unconverged
profiles:
  quick: {about: tiny, params: {classes: [3, 4], ks: [1, 2, 8], restarts: 1}}
  full: {about: tiny, params: {classes: [3], ks: [1, 2]}}
checks:
  - {name: etf, kind: claim, metric: max_etf_cosine_error, op: "<=", value: 1.0e-4, why: the ETF}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("recipe")
    (d / "tiny-etf.yaml").write_text(RECIPE)
    good = run_recipe(d / "tiny-etf.yaml", "quick", d / "out")
    bad = run_recipe(d / "tiny-etf.yaml", "quick", d / "out", corrupt=True)
    assert good.passed and not bad.passed
    return good.out_dir / "report.html", bad.out_dir / "report.html"


def test_page_states_the_verdict_and_is_self_contained(results: tuple[Path, Path]) -> None:
    good, bad = (p.read_text() for p in results)
    assert "class='verdict PASS'" in good and "class='verdict FAIL'" in bad
    assert "deliberately corrupted: unconverged" in bad
    for text in (good, bad):
        assert "the optimum is the ETF" in text and "max_etf_cosine_error" in text
        assert "http://" not in text and "https://" not in text and " src='data:" in text


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary on PATH")
def test_figures_load_in_chromium(results: tuple[Path, Path]) -> None:
    for path in results:
        dom = dump_dom(path)
        states, total = figure_states(dom)
        assert len(states) == 2 and total == "2/2", (states, total)
        assert broken_figures(dom) == []

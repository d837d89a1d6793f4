"""The HTML report: self-contained, with the figures and the table; renders with failed runs."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest

from contrastlab.experiments.store import ResultStore
from contrastlab.report import write_report
from tests.report import png_stats, synthetic_sweep, tiny_sweep


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("sweep"))


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)",
                                                     text)]


def test_report_is_self_contained(out: Path, tmp_path: Path) -> None:
    path = write_report(out, tmp_path / "r" / "report.html")
    text = path.read_text()
    assert not re.search(r"(?i)https?:", text)
    refs = re.findall(r"(?:src|href)\s*=\s*['\"]([^'\"]{0,30})", text)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "@import" not in text and "url(" not in text
    assert "<table class='summary'>" in text and text.count("<tr>") >= 5
    imgs = _images(text)
    assert len(imgs) == 6
    for png in imgs:
        assert png.startswith(b"\x89PNG")
        colours, frac = png_stats(png)
        assert colours > 20 and frac > 0.02
    assert "Nothing missing" in text
    assert "torch" in text and "Wall time" in text and "Resolved configs" in text
    assert write_report(out) == out / "report.html"


def test_report_with_failed_and_missing_runs(out: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    with ResultStore(d, create=False) as store:
        runs = store.runs()
        store.add_runs([("feedbeeffeedbeef", dict(runs[0]["config"], seed=99))])
        failed = runs[1]["run_id"]
        # a done run is never overwritten by finish(); rerecord it as a new failed run
        store.add_runs([("deadbeefdeadbeef", dict(runs[1]["config"], seed=98))])
        store.mark_running("deadbeefdeadbeef")
        store.finish("deadbeefdeadbeef", "failed", error="RuntimeError: boom")
    text = write_report(d).read_text()
    assert failed in text
    assert "deadbeefdeadbeef</code> is <b>failed</b>: RuntimeError: boom" in text
    assert "feedbeeffeedbeef</code> is <b>pending</b>" in text
    assert len(_images(text)) == 6


def test_report_with_only_failed_runs(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "empty") as store:
        store.add_runs([("0123456789abcdef", {"seed": 0, "loss": {"name": "ucl", "k": 2}})])
        store.mark_running("0123456789abcdef")
        store.finish("0123456789abcdef", "failed", error="ValueError: bad")
    text = write_report(tmp_path / "empty").read_text()
    assert "is <b>failed</b>: ValueError: bad" in text
    assert "figure <code>downstream_vs_k</code> missing" in text
    assert "No figures" in text


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out_dir"):
        write_report(tmp_path / "missing")
    (tmp_path / "results.sqlite").write_text("not a database")
    with pytest.raises(ValueError, match="out_dir"):
        write_report(tmp_path)


def test_cli_report_rejects_a_non_results_directory(tmp_path) -> None:
    from typer.testing import CliRunner

    from contrastlab.cli import app

    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a results directory" in result.output


def _header(text: str, table: str) -> list[str]:
    start = text.index(f"<table class='{table}'>")
    head = text[start:text.index("</thead>", start)]
    return re.findall(r"<th>([^<]*)</th>", head)


def test_report_answers_first_and_shows_the_swept_columns(tmp_path: Path) -> None:
    d = synthetic_sweep(tmp_path / "beta_k")
    text = write_report(d).read_text()
    # the first thing after the title is the answer, computed from the runs
    body = text[text.index("<h1>contrastlab report</h1>") + len("<h1>contrastlab report</h1>"):]
    first = body.lstrip().splitlines()[0]
    assert first.startswith("<div class='answer'><p><b>Answer:</b> mean classifier accuracy")
    assert "within the 95 % interval (over seeds) of the best k in 1 of 2 groups" in first
    answer = body[:body.index("</div>")]
    assert "hucl beta=0 sphere (4 k, 3 seeds per k)" in answer
    assert "largest drop from k=1 to k=64 is 0.150 (95 % interval [" in answer
    assert "is outside the 95 % interval of the best k" in answer
    # the per-run table has the swept columns, then the usual ones, sorted by them
    cols = _header(text, "summary")
    assert cols[:4] == ["run_id", "status", "loss.beta", "loss.k"]
    assert cols.count("loss.k") == 1 and "seed" in cols and "knn_acc" in cols
    start = text.index("<table class='summary'>")
    rows = re.findall(r"<tr>\s*<td>[0-9a-z]{16}</td>\s*<td class='s-done'>done</td>\s*"
                      r"<td>([^<]*)</td>\s*<td>([^<]*)</td>", text[start:])
    assert len(rows) == 24
    assert rows[:4] == [("0", "1")] * 3 + [("0", "4")]
    assert rows[-1] == ("5", "64")
    # the summary over seeds: one row per (beta, k), mean and 95 % interval
    assert _header(text, "groups")[:3] == ["loss.beta", "loss.k", "n"]
    groups = text[text.index("<table class='groups'>"):]
    groups = groups[:groups.index("</table>")]
    assert groups.count("<tr>") == 9
    assert "<tr><td>0</td><td>64</td><td>3</td>" in groups.replace("\n", "")
    assert "0.75 [0.7252, 0.7748]" in groups


def test_report_with_one_seed_says_there_is_no_interval(tmp_path: Path) -> None:
    d = synthetic_sweep(tmp_path / "one", betas=(0.0,), ks=(1, 16), seeds=(0,))
    text = write_report(d).read_text()
    answer = text[text.index("<div class='answer'>"):text.index("</div>")]
    assert "undecided in 1 (one seed: no interval)" in answer
    assert "one seed: no interval" in answer
    assert "0.89</td>" in text  # no interval printed in the summary over seeds


def test_page_cells_are_those_of_the_results_table() -> None:
    # one cell formatter (contrastlab._tables.cell) for the results table and the pages, and a
    # page is written without importing the experiment engine or torch
    import subprocess
    import sys

    from contrastlab._tables import cell
    from contrastlab.experiments import results
    from contrastlab.report import style

    assert style.cell is cell and results.cell is cell
    assert [cell(v) for v in (None, 0.5, 123456.789, 3, "hucl")] == [
        "-", "0.5", "1.235e+05", "3", "hucl"]
    code = ("import sys, contrastlab.report.style; "
            "sys.exit(int('torch' in sys.modules or 'contrastlab.experiments' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

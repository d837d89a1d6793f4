"""The HTML report in a real browser (headless Chromium): every figure decodes and is drawn.

Skipped only when no Chromium binary is on PATH (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from contrastlab.experiments.store import ResultStore
from contrastlab.report import write_report
from tests.report import png_stats, tiny_sweep
from tests.report.browser import (
    broken_figures,
    dump_dom,
    figure_boxes,
    figure_states,
    find_chromium,
    screenshot,
)

pytestmark = [
    pytest.mark.skipif(find_chromium() is None,
                       reason="no Chromium binary on PATH (chromium, chromium-browser, "
                              "google-chrome); install Debian's `chromium` to run these"),
    pytest.mark.timeout(300),
]

WIDTH = 1400
N_FIGURES = 6
BLUE, ORANGE = (0x00, 0x72, 0xB2), (0xE6, 0x9F, 0x00)  # Okabe-Ito, the first two lines
_IMG = re.compile(r"<img alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def report(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = write_report(out, tmp_path_factory.mktemp("report") / "report.html")
    return path


def _figures(html_text: str) -> dict[str, bytes]:
    """Figure name (alt) -> the embedded PNG bytes, from the report's source."""
    return {name: base64.b64decode(b64) for name, b64 in _IMG.findall(html_text)}


def _rgb(png: bytes | Path) -> np.ndarray:
    from PIL import Image

    src = io.BytesIO(png) if isinstance(png, bytes) else png
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def _near(img: np.ndarray, colour: tuple[int, int, int], tol: int = 8) -> int:
    """Number of pixels within ``tol`` (per channel) of ``colour``."""
    return int((np.abs(img - np.array(colour, dtype=np.int16)).max(axis=2) <= tol).sum())


def _mismatch(shot: np.ndarray, ref: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of the figure's pixels that the screenshot draws differently (> 16 levels) from
    the decoded PNG; 1.0 if the figure is not where the browser laid it out or has another
    size."""
    x, y, w, h = box
    crop = shot[y:y + h, x:x + w]
    if crop.shape != ref.shape:
        return 1.0
    return float((np.abs(crop - ref).max(axis=2) > 16).mean())


def _corrupt(html_text: str, name: str, how: str) -> str:
    """The report with figure ``name``'s base64 damaged: ``header`` breaks the PNG signature
    (undecodable), ``body`` overwrites 200 characters in the middle of its image data."""
    m = next(m for m in _IMG.finditer(html_text) if m.group(1) == name)
    a, e = m.span(2)
    if how == "header":
        return html_text[:a] + "AAAA" + html_text[a + 4:]
    mid = (a + e) // 2
    return html_text[:mid] + "A" * 200 + html_text[mid + 200:]


def _assert_not_blank(png_path: Path) -> None:
    colours, frac = png_stats(png_path.read_bytes())
    assert colours > 500, f"screenshot {png_path} has only {colours} distinct colours"
    assert frac > 0.03, f"screenshot {png_path} is {1 - frac:.1%} white"


def test_every_figure_loads_in_the_browser(report: Path) -> None:
    figs = _figures(report.read_text(encoding="utf-8"))
    assert len(figs) == N_FIGURES
    dom = dump_dom(report, WIDTH)
    states, count = figure_states(dom)
    assert states == dict.fromkeys(figs, "1"), states
    assert count == f"{N_FIGURES}/{N_FIGURES}"
    assert broken_figures(dom) == []
    assert 'class="img-failed"' not in dom


def test_every_figure_is_drawn_in_the_screenshot(report: Path, tmp_path: Path) -> None:
    figs = _figures(report.read_text(encoding="utf-8"))
    boxes, page_height = figure_boxes(report, WIDTH)
    assert set(boxes) == set(figs)
    png = screenshot(report, tmp_path / "report.png", width=WIDTH, height=page_height)
    _assert_not_blank(png)
    shot = _rgb(png)
    assert shot.shape == (page_height, WIDTH, 3)
    for name, data in figs.items():
        ref = _rgb(data)
        n_colours = len(np.unique(ref.reshape(-1, 3), axis=0))
        assert n_colours > 20 and ref.std() > 5, f"embedded figure {name} is near-uniform"
        x, y, w, h = boxes[name]
        assert (w, h) == ref.shape[1::-1], f"{name} drawn at {w}x{h}, not its natural size"
        assert y + h <= shot.shape[0], f"{name} lies below the screenshot"
        assert _mismatch(shot, ref, boxes[name]) < 0.005, f"{name} is not drawn as embedded"
        crop = shot[y:y + h, x:x + w]
        for colour in (BLUE, ORANGE):  # the plot's own colours are on screen where it is
            if _near(ref, colour) >= 50:
                assert _near(crop, colour) >= 0.9 * _near(ref, colour), (name, colour)
    # the first group's colour is on screen (the tiny sweep is one group: ucl over k; each
    # figure's own colours were checked in its box above)
    assert _near(shot, BLUE) > 500


def test_corrupted_figure_is_reported_broken(report: Path, tmp_path: Path) -> None:
    text = report.read_text(encoding="utf-8")
    victim = list(_figures(text))[1]
    bad = tmp_path / "bad.html"
    bad.write_text(_corrupt(text, victim, "header"), encoding="utf-8")
    dom = dump_dom(bad, WIDTH)
    states, count = figure_states(dom)
    assert states[victim] == "0"
    assert all(v == "1" for k, v in states.items() if k != victim)
    assert count == f"{N_FIGURES - 1}/{N_FIGURES}"
    assert broken_figures(dom) == [victim, "<body data-figures>"]
    assert f'<span class="img-failed">figure failed to load: {victim}</span>' in dom
    # and the note is visible: red text (#c00) in the screenshot
    shot = _rgb(screenshot(bad, tmp_path / "bad.png", width=WIDTH, height=3000))
    assert _near(shot, (0xCC, 0x00, 0x00), tol=40) > 100


def test_damaged_image_data_fails_the_pixel_check(report: Path, tmp_path: Path) -> None:
    # Damage inside the PNG data (header intact): Chromium decodes what it can, so the image
    # counts as loaded; the screenshot comparison is what catches it.
    text = report.read_text(encoding="utf-8")
    figs = _figures(text)
    victim = list(figs)[1]
    bad = tmp_path / "bad.html"
    bad.write_text(_corrupt(text, victim, "body"), encoding="utf-8")
    boxes, page_height = figure_boxes(bad, WIDTH)
    shot = _rgb(screenshot(bad, tmp_path / "bad.png", width=WIDTH, height=page_height))
    assert _mismatch(shot, _rgb(figs[victim]), boxes[victim]) > 0.005
    others = [n for n in figs if n != victim]
    assert all(_mismatch(shot, _rgb(figs[n]), boxes[n]) < 0.005 for n in others)


def test_report_with_failed_and_pending_runs_renders(out: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    with ResultStore(d, create=False) as store:
        runs = store.runs()
        store.add_runs([("feedbeeffeedbeef", dict(runs[0]["config"], seed=99))])
        store.add_runs([("deadbeefdeadbeef", dict(runs[1]["config"], seed=98))])
        store.mark_running("deadbeefdeadbeef")
        store.finish("deadbeefdeadbeef", "failed", error="RuntimeError: boom")
    path = write_report(d)
    dom = dump_dom(path, WIDTH)
    assert broken_figures(dom) == []
    assert figure_states(dom)[1] == f"{N_FIGURES}/{N_FIGURES}"
    assert "deadbeefdeadbeef</code> is <b>failed</b>: RuntimeError: boom" in dom
    assert "feedbeeffeedbeef</code> is <b>pending</b>" in dom
    png = screenshot(path, tmp_path / "failed.png", width=WIDTH, height=6000)
    _assert_not_blank(png)
    shot = _rgb(png)
    assert _near(shot, (0xF6, 0xD5, 0xC8), tol=2) > 100  # the failed run's highlighted cell
    assert _near(shot, (0xFF, 0xF3, 0xC4), tol=2) > 100  # the pending run's
    assert _near(shot, BLUE) > 500


def test_report_with_only_failed_runs_renders(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "empty") as store:
        store.add_runs([("0123456789abcdef", {"seed": 0, "loss": {"name": "ucl", "k": 2}})])
        store.mark_running("0123456789abcdef")
        store.finish("0123456789abcdef", "failed", error="ValueError: bad")
    dom = dump_dom(write_report(tmp_path / "empty"), WIDTH)
    assert figure_states(dom) == ({}, "0/0")
    assert broken_figures(dom) == []
    assert "is <b>failed</b>: ValueError: bad" in dom and "No figures" in dom

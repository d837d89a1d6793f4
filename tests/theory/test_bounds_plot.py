"""The bounds figure: both panels, the negative lower bound in view, nothing clipped, the legend
off the data (contrastlab.theory.bounds_plot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contrastlab.theory import bounds_figure, idealized_bounds, plot_bounds
from tests.figure_layout import layout_problems

pytest.importorskip("matplotlib")

KS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


@pytest.mark.parametrize("C", [3, 10, 100])
def test_bounds_figure_reads(C: int) -> None:
    table = idealized_bounds(C, KS, 1.0)
    fig = bounds_figure(table)
    assert layout_problems(fig) == []
    linear, log = fig.axes
    lower = table.column("bao_lower")
    bottom, top = linear.get_ylim()
    assert bottom < lower.min() and bottom < 0.0  # the (negative) lower bound is in view
    assert top >= np.nanmax(table.column("bao_upper"))
    assert log.get_yscale() == "log"
    assert linear.get_yscale() == "linear"
    # at most 8 labelled K ticks, all from the table
    ticks = [t for t in log.get_xticks() if t >= 1]
    assert 2 <= len(ticks) <= 8 and set(ticks) <= set(KS)


def test_off_scale_marks_one_per_point_above() -> None:
    table = idealized_bounds(10, KS, 1.0)
    fig = bounds_figure(table)
    linear = fig.axes[0]
    top = linear.get_ylim()[1]
    expected = sum(int((np.isfinite(y) & (y > top)).sum())
                   for y in (table.column(c) for c in ("arora", "nozawa_sato", "ash")))
    marks = sum(len(line.get_xdata()) for line in linear.get_lines()
                if line.get_linestyle() == "None" and np.allclose(line.get_ydata(), top))
    assert expected > 0 and marks == expected


def test_plot_bounds_writes_each_format(tmp_path: Path) -> None:
    table = idealized_bounds(5, [1, 4, 16], 1.0)
    for suffix in (".png", ".svg", ".pdf"):
        out = plot_bounds(table, tmp_path / f"b{suffix}")
        assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="suffix"):
        plot_bounds(table, tmp_path / "b.txt")


def test_layout_check_sees_a_clipped_title_and_a_legend_on_the_data() -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.0, 2.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([1, 2, 3], [1, 3, 2], label="data")
    ax.legend()
    ax.set_title("a title far too long to fit in a figure only three inches wide")
    problems = layout_problems(fig)
    assert any("clipped" in p for p in problems) and any("legend" in p for p in problems)

import pytest

from contrastlab.report.recipe_figures import (
    bounds_curves,
    gap_inside_bounds,
    metric_vs_k,
    nc_vs_dc_grid,
)
from contrastlab.theory.bounds import idealized_bounds
from tests.figure_layout import layout_problems
from tests.report import fig_png, png_stats


def _drawn(fig):
    colours, non_white = png_stats(fig_png(fig))
    assert colours > 50 and non_white > 0.05
    assert layout_problems(fig) == []


def test_metric_vs_k_with_reference_and_band():
    rows = [{"k": k, "g": g, "y": k * 0.1 + s, "ref": k * 0.1} for k in (1, 2, 4)
            for g in ("a", "b") for s in (0.0, 0.05)]
    fig = metric_vs_k(rows, [("y", "loss (nats)")], "g", reference={"y": "ref"}, title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "log2" in ax.get_xlabel()
    assert len(ax.get_lines()) == 4  # two groups, each with its reference
    _drawn(fig)


def test_bounds_curves_one_panel_per_c():
    rows = list(idealized_bounds(10, list(range(1, 65))).rows)
    rows += list(idealized_bounds(20, list(range(1, 65))).rows)
    fig = bounds_curves(rows)
    assert len([a for a in fig.axes if a.get_title()]) == 2
    _drawn(fig)


def test_gap_inside_bounds_rings_points_outside():
    rows = [{"data": "d", "K": k, "gap": g, "delta_lower": -1.0, "delta_upper": 1.0}
            for k, g in ((1, 0.0), (4, 2.0), (16, 0.5))]
    fig = gap_inside_bounds(rows)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "outside the bounds" in labels
    assert layout_problems(fig) == []
    inside = gap_inside_bounds([dict(r, gap=0.0) for r in rows])
    assert "outside the bounds" not in inside.axes[0].get_legend_handles_labels()[1]


@pytest.mark.parametrize("log", [False, True])
def test_nc_vs_dc_grid(log):
    rows = [{"loss": lo, "beta": b, "normalize": n, "m": 0.1 + b}
            for lo in ("hscl", "hucl") for b in (0.0, 2.0) for n in ("sphere", "none")]
    fig = nc_vs_dc_grid(rows, "m", "distance", log=log)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 2
    _drawn(fig)

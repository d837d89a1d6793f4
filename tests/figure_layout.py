"""A figure a reader can read: no text cut by the figure's edge, no legend over the data.

:func:`layout_problems` draws a matplotlib figure (Agg) and lists what is broken; the bounds
figure and every report figure are checked with it (issue 18: "every figure checked for clipped
labels and legends over data")."""

from __future__ import annotations

from typing import Any


def _drawn(fig: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _undrawn_tick_labels(fig: Any) -> set[int]:
    """The ids of the tick labels matplotlib does not draw (their tick is outside the view)."""
    skip = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick, loc in zip(axis.get_major_ticks(), axis.get_majorticklocs(), strict=False):
                if not lo - 1e-9 * abs(hi - lo) <= loc <= hi + 1e-9 * abs(hi - lo):
                    skip |= {id(tick.label1), id(tick.label2)}
    return skip


def layout_problems(fig: Any) -> list[str]:
    """What a reader would see as broken: a text (title, label, tick, legend entry) cut by the
    figure's edge, or a legend over an axes' data area."""
    from matplotlib.text import Text

    renderer = _drawn(fig)
    box = fig.bbox
    undrawn = _undrawn_tick_labels(fig)
    problems = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        ext = text.get_window_extent(renderer)
        if ext.x0 < box.x0 - 1 or ext.y0 < box.y0 - 1 or ext.x1 > box.x1 + 1 or ext.y1 > box.y1 + 1:
            problems.append(f"text {text.get_text()!r} clipped by the figure edge")
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        ext = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ext.overlaps(ax.get_window_extent(renderer)):
                problems.append("a legend lies over the data of an axes")
    return problems

"""The figure of a bounds table (``contrastlab bounds --plot``): every bound on R_mu-supv against K.

Two panels share the K axis (log scale, ticks at the table's K):

- **the bounds that matter, on a linear scale**: Bao et al. (2022)'s upper and lower bounds, the
  contrastive loss R_cont they are evaluated at and R*_mu-supv, with y limited to their range
  (so Bao's lower bound, negative at large K, shows with the zero line); a looser bound (Arora et
  al. 2019, Nozawa & Sato 2021, Ash et al. 2022) is drawn where it falls in that range, and a
  mark on the top edge (one shape per bound) stands at each K where it is above the scale;
- **every bound on a log scale**: the growth of the loose bounds (Arora's and Ash's reach
  1e47 at C = 10, K = 1024), the positive values only.

The legend sits to the right of the panels, never over the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contrastlab._validation import check_choice
from contrastlab.theory.bounds import BoundsTable

__all__ = ["LOOSE_SERIES", "OFF_SCALE_MARKERS", "TIGHT_SERIES", "bounds_figure", "plot_bounds"]

#: (column, label, line style, colour): drawn in full in both panels
TIGHT_SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("bao_upper", "Bao et al. upper bound", "-", "C0"),
    ("R_cont", "R_cont (contrastive loss)", "--", "C4"),
    ("bao_lower", "Bao et al. lower bound", "-.", "C5"),
)
#: the looser upper bounds: on the linear panel only within its range
LOOSE_SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("arora", "Arora et al. (K >= C)", "-", "C1"),
    ("nozawa_sato", "Nozawa & Sato (K >= C)", "-", "C2"),
    ("ash", "Ash et al.", "-", "C3"),
)
#: the marker of each series off the top of the linear panel (one shape each, so that marks
#: at the same K stay apart)
OFF_SCALE_MARKERS = {"bao_upper": "^", "R_cont": "^", "bao_lower": "^", "arora": "v",
                     "nozawa_sato": "D", "ash": "^"}


def _linear_range(table: BoundsTable) -> tuple[float, float]:
    """(bottom, top) of the linear panel: the tight series and R*_mu-supv, with 8 % margins."""
    values = [table.column(c) for c, *_ in TIGHT_SERIES if c in table.columns]
    if "R_mu_supv_star" in table.columns:
        values.append(table.column("R_mu_supv_star"))
    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    lo, hi = min(float(finite.min()), 0.0), float(finite.max())
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def _draw_linear(ax: Any, table: BoundsTable, k: np.ndarray) -> None:
    bottom, top = _linear_range(table)
    for name, label, style, colour in TIGHT_SERIES + LOOSE_SERIES:
        if name not in table.columns:
            continue
        y = table.column(name)
        inside = np.isfinite(y) & (y <= top)
        shown = np.where(inside, y, np.nan)
        loose = (name, label, style, colour) in LOOSE_SERIES
        ax.plot(k, shown, style, color=colour, marker="o", ms=3, label=label,
                alpha=0.8 if loose else 1.0)
        off = np.isfinite(y) & (y > top)
        if off.any():
            ax.plot(k[off], np.full(int(off.sum()), top), OFF_SCALE_MARKERS[name], color=colour,
                    ms=6, clip_on=False, alpha=0.9)
    if "R_mu_supv_star" in table.columns:
        ax.axhline(table.rows[0]["R_mu_supv_star"], color="k", ls=":", lw=1.2, label="R*_mu-supv")
    ax.axhline(0.0, color="0.75", lw=0.8)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("nats (linear)")


def _draw_log(ax: Any, table: BoundsTable, k: np.ndarray) -> None:
    for name, _label, style, colour in TIGHT_SERIES + LOOSE_SERIES:
        if name not in table.columns:
            continue
        y = table.column(name)
        good = np.isfinite(y) & (y > 0)
        ax.plot(k[good], y[good], style, color=colour, marker="o", ms=3)
    if "R_mu_supv_star" in table.columns:
        ax.axhline(table.rows[0]["R_mu_supv_star"], color="k", ls=":", lw=1.2)
    ax.set_yscale("log")
    ax.set_ylabel("nats (log)")


def _k_ticks(ax: Any, k: np.ndarray) -> None:
    """Log-scale K with at most 8 labelled ticks, taken from the table's K values."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ks = np.unique(k)
    step = max(1, int(np.ceil(len(ks) / 8)))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ks[::step].tolist()))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())


def bounds_figure(table: BoundsTable) -> Any:
    """The two-panel :class:`matplotlib.figure.Figure` of a :class:`BoundsTable` (module
    docstring). Needs matplotlib: without it an ``ImportError`` says to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
    k = table.column("K")
    fig = Figure(figsize=(8.0, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _draw_linear(top, table, k)
    _draw_log(bottom, table, k)
    C = table.meta.get("C")
    for ax in (top, bottom):
        if isinstance(C, int) and k.min() <= C <= k.max():
            ax.axvline(C, color="0.6", ls=":", lw=1)  # Arora and Nozawa-Sato start at K = C
        ax.grid(True, which="major", color="0.92")
    _k_ticks(bottom, k)
    bottom.set_xlabel("K (negatives)")
    top.set_title(f"Bounds on R_mu-supv, C = {C if C is not None else '?'} "
                  "(marks on the top edge: above the linear scale)", fontsize=10)
    handles, labels = top.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return fig


def plot_bounds(table: BoundsTable, path: str | Path) -> Path:
    """Save :func:`bounds_figure` of ``table`` to ``path`` (``.png``, ``.svg`` or ``.pdf``, by
    the suffix). Needs matplotlib (optional): without it an ``ImportError`` says so."""
    out = Path(path)
    check_choice("path suffix", out.suffix.lower(), (".png", ".svg", ".pdf"))
    bounds_figure(table).savefig(out)
    return out

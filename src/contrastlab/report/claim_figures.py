"""Figures of the theorem recipes (:mod:`contrastlab.recipes.lemma1`,
:mod:`~contrastlab.recipes.lower_bounds`, :mod:`~contrastlab.recipes.nc_optimal`): pure functions
from tidy rows or arrays to matplotlib Figures (Agg backend), in the style of
:mod:`contrastlab.report.figures` (Okabe-Ito colours, units or "dimensionless" on the axes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from contrastlab.report.figures import colour, legend_outside
from contrastlab.report.grouping import finite

__all__ = ["embedding_panels", "harris_gaps", "labelled_heatmaps", "metric_strips",
           "metric_vs_budget"]

# values at or below this are drawn at the floor of a log axis (exact zeros, float round-off)
_FLOOR = 1e-17


def _groups(rows: Sequence[Mapping[str, Any]], group: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(str(r.get(group)), None)
    return list(seen)


def metric_strips(rows: Sequence[Mapping[str, Any]],
                  panels: Sequence[tuple[str, str, float | None]], group: str,
                  title: str = "") -> Figure:
    """One panel per ``(metric, y label, threshold)``: the value of every row as a point, one
    column per value of ``group`` (jittered), on a log axis (values <= 1e-17 drawn at 1e-17);
    the threshold, when given, is a dashed red line."""
    if not rows:
        raise ValueError("rows must hold at least one row")
    groups = _groups(rows, group)
    fig = Figure(figsize=(max(4.2, 0.9 * len(groups) + 2.2) * len(panels) / 1.6 + 1, 4.2),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    rng = np.random.default_rng(0)
    for ax, (metric, ylabel, threshold) in zip(axes, panels, strict=True):
        for i, g in enumerate(groups):
            vals = [finite(r.get(metric)) for r in rows if str(r.get(group)) == g]
            ys = np.array([max(v, _FLOOR) for v in vals if v is not None])
            if ys.size:
                xs = i + rng.uniform(-0.18, 0.18, ys.size)
                ax.plot(xs, ys, "o", ms=4, alpha=0.8, color=colour(i))
        if threshold is not None:
            ax.axhline(threshold, color="#D55E00", ls="--", lw=1.2,
                       label=f"threshold {threshold:g}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="major")
    if title:
        fig.suptitle(title)
    legend_outside(fig)
    return fig


def metric_vs_budget(rows: Sequence[Mapping[str, Any]], panels: Sequence[tuple[str, str]],
                     x: str = "budget", xlabel: str = "iteration budget (log scale)",
                     title: str = "") -> Figure:
    """Each metric of ``panels`` (``(metric, label)``) against ``x`` on log-log axes, in one
    panel (values <= 1e-17 drawn at 1e-17)."""
    if not rows:
        raise ValueError("rows must hold at least one row")
    fig = Figure(figsize=(5.6, 4), layout="constrained")
    ax = fig.subplots()
    srt = sorted(rows, key=lambda r: float(r[x]))
    for i, (metric, label) in enumerate(panels):
        pts = [(float(r[x]), finite(r.get(metric))) for r in srt]
        xs = [a for a, v in pts if v is not None]
        ys = [max(v, _FLOOR) for _, v in pts if v is not None]
        ax.plot(xs, ys, marker="o", color=colour(i), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("value (dimensionless, log scale)")
    ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=10)
    legend_outside(fig)
    return fig


def embedding_panels(panels: Sequence[tuple[str, Any, Any]]) -> Figure:
    """2-D embeddings, one panel per ``(title, Z, labels)`` (the first two coordinates of Z),
    coloured by class, with the unit circle."""
    if not panels:
        raise ValueError("panels must hold at least one (title, Z, labels)")
    n = len(panels)
    fig = Figure(figsize=(3.4 * n, 4.1), layout="constrained")  # + the legend below
    axes = np.atleast_1d(fig.subplots(1, n))
    theta = np.linspace(0, 2 * np.pi, 200)
    for ax, (title, z, labels) in zip(axes, panels, strict=True):
        zz = np.asarray(z, dtype=np.float64)
        yy = np.asarray(labels)
        if zz.ndim != 2 or zz.shape[1] < 2:
            raise ValueError(f"Z of panel {title!r} must be (N, >=2); got shape {zz.shape}")
        ax.plot(np.cos(theta), np.sin(theta), color="0.75", lw=1)
        for c in np.unique(yy):
            pts = zz[yy == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=30, alpha=0.6, color=colour(int(c)),
                       label=f"class {int(c)} ({len(pts)} samples)")
        ax.set_box_aspect(1)  # equal scales (the limits below are equal)
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("z_1 (unit-sphere coordinates)")
        ax.set_ylabel("z_2")
    legend_outside(fig, loc="outside lower center")
    return fig


def harris_gaps(rows: Sequence[Mapping[str, Any]], nc_rows: Sequence[Mapping[str, Any]] = (),
                title: str = "") -> Figure:
    """L(beta) - L(0) against beta, one panel per family (``other-class``: HSCL - SCL,
    ``marginal``: HUCL - UCL); one line per representation (``gap_mean`` averaged over the rows
    of that representation and beta) and the NC geometry (``nc_rows``: ``gap``) dashed; a
    symmetric-log y axis so a negative gap (a violated bound) shows."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2))
    names = {"other-class": "supervised: HSCL(beta) - SCL", "marginal":
             "unsupervised: HUCL(beta) - UCL"}
    for ax, fam in zip(axes, ("other-class", "marginal"), strict=True):
        sub = [r for r in rows if r.get("family") == fam]
        for i, rep in enumerate(_groups(sub, "representation")):
            by_b: dict[float, list[float]] = {}
            for r in sub:
                v = finite(r.get("gap_mean"))
                if str(r.get("representation")) == rep and v is not None:
                    by_b.setdefault(float(r["beta"]), []).append(v)
            bs = sorted(by_b)
            ax.plot(bs, [float(np.mean(by_b[b])) for b in bs], marker="o", ms=3,
                    color=colour(i), label=rep)
        nc = sorted((r for r in nc_rows if r.get("family") == fam), key=lambda r: r["beta"])
        if nc:
            ax.plot([0.0] + [float(r["beta"]) for r in nc], [0.0] + [float(r["gap"]) for r in nc],
                    ls="--", marker="x", color="#000000", label="NC geometry (ETF)")
        ax.axhline(0.0, color="#D55E00", lw=1)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xlabel("hardness beta (dimensionless)")
        ax.set_ylabel("L(beta) - L(0) (nats, symlog)")
        ax.set_title(names[fam], fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    legend_outside(fig)
    return fig


def labelled_heatmaps(mats: Sequence[tuple[str, Any]]) -> Figure:
    """Cosine heatmaps with free titles (``(title, CxC matrix)``), on the scale [-1, 1]; the
    colour bar marks the simplex-ETF value -1/(C-1) (:func:`contrastlab.report.figures.
    cosine_heatmaps`, titled for an optimum)."""
    from contrastlab.report.figures import cosine_heatmaps

    if not mats:
        raise ValueError("mats must hold at least one (title, matrix)")
    fig = cosine_heatmaps([(str(title), mat) for title, mat in mats])
    fig.suptitle("Class-mean cosines at the optimum\n(ETF: off-diagonal = -1/(C-1))", fontsize=10)
    return fig

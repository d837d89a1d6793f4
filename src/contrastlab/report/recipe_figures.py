"""Figures of the recipes (:mod:`contrastlab.recipes`): pure functions from tidy rows to
matplotlib Figures (Agg backend), in the style of :mod:`contrastlab.report.figures` (Okabe-Ito
colours, the k axis in log2, units on the axes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from contrastlab.report.figures import colour, legend_outside, log2_k_axis
from contrastlab.report.grouping import finite

__all__ = ["accuracy_vs_beta", "bounds_curves", "gap_inside_bounds", "metric_vs_k", "nc_vs_dc_grid",
           "nozawa_k_curves"]


def _panel_row(n: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure of ``n`` panels side by side, each ``width`` x ``height``
    inches, and its axes."""
    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(1, n))


def _finish(fig: Figure, title: str) -> Figure:
    """The figure with its title (if any) and the legend outside the axes."""
    if title:
        fig.suptitle(title)
    legend_outside(fig)
    return fig


def metric_vs_k(
    rows: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, str]],
    group: str,
    reference: Mapping[str, str] | None = None,
    title: str = "",
) -> Figure:
    """One panel per ``(metric, y label)``; one line per value of ``group`` (mean over rows with
    the same group and k, min-max band). ``reference`` maps a metric to a column drawn dashed
    (e.g. the closed form at the ETF)."""
    fig, axes = _panel_row(len(panels), 4.6, 3.8)
    groups = sorted({str(r.get(group)) for r in rows})
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        for i, g in enumerate(groups):
            for col, style, suffix in ((metric, "-", ""),
                                       ((reference or {}).get(metric), "--", " (reference)")):
                if col is None:
                    continue
                by_k: dict[int, list[float]] = {}
                for r in rows:
                    v = finite(r.get(col))
                    if str(r.get(group)) == g and v is not None and isinstance(r.get("k"), int):
                        by_k.setdefault(int(r["k"]), []).append(v)
                if not by_k:
                    continue
                ks = sorted(by_k)
                vals = [np.asarray(by_k[k]) for k in ks]
                mean = np.array([v.mean() for v in vals])
                ax.plot(ks, mean, ls=style, marker="o" if not suffix else "x", ms=3,
                        color=colour(i), label=f"{group}={g}{suffix}")
                if not suffix and any(len(v) > 1 for v in vals):
                    ax.fill_between(ks, [v.min() for v in vals], [v.max() for v in vals],
                                    color=colour(i), alpha=0.2, linewidth=0)
        log2_k_axis(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return _finish(fig, title)


def bounds_curves(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Bound curves vs K, one panel per C: Bao's upper and lower bounds on R_mu-supv against
    Arora, Nozawa-Sato and Ash (rows of :class:`contrastlab.theory.bounds.BoundsTable`, with
    ``C``, ``K`` and the bound columns), log10 scale; undefined values (K < C) are gaps."""
    cs = sorted({int(r["C"]) for r in rows})
    fig, axes = _panel_row(len(cs), 5.2, 4)
    series = (("bao_upper", "Bao et al. upper", "-"), ("arora", "Arora et al.", "-"),
              ("nozawa_sato", "Nozawa & Sato", "-"), ("ash", "Ash et al.", "-"),
              ("R_mu_supv_star", "R*_mu-supv (idealized)", ":"),
              ("bao_lower", "Bao et al. lower", "-."))
    for ax, c in zip(axes, cs, strict=True):
        sub = sorted((r for r in rows if int(r["C"]) == c), key=lambda r: int(r["K"]))
        for i, (key, label, style) in enumerate(series):
            ks = [int(r["K"]) for r in sub]
            vals = [finite(r.get(key)) for r in sub]
            ys = [v if v is not None and v > 0 else np.nan for v in vals]
            if any(np.isfinite(ys)):
                ax.plot(ks, ys, ls=style, color=colour(i), label=label)
        log2_k_axis(ax)
        ax.set_yscale("log")
        ax.set_ylabel("bound on R_mu-supv (nats, log scale)")
        ax.set_title(f"C = {c}: bounds at the idealized R*_cont(K)")
        ax.grid(alpha=0.3, which="both")
    return _finish(fig, title)


def gap_inside_bounds(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """The measured surrogate gap R_mu-supv - R_cont vs K with Bao's gap bounds Delta_L (below)
    and Delta_U (above), one panel per data set (``data`` column; rows with ``K``, ``gap``,
    ``delta_lower``, ``delta_upper``); points outside the band are ringed in red."""
    datas = sorted({str(r["data"]) for r in rows})
    fig, axes = _panel_row(len(datas), 5, 4)
    for ax, d in zip(axes, datas, strict=True):
        sub = sorted((r for r in rows if str(r["data"]) == d), key=lambda r: int(r["K"]))
        ks = np.array([int(r["K"]) for r in sub])
        lo = np.array([float(r["delta_lower"]) for r in sub])
        hi = np.array([float(r["delta_upper"]) for r in sub])
        gap = np.array([float(r["gap"]) for r in sub])
        ax.fill_between(ks, lo, hi, color="#56B4E9", alpha=0.25, label="Bao: [Delta_L, Delta_U]")
        ax.plot(ks, hi, color="#0072B2", ls="-.", lw=1)
        ax.plot(ks, lo, color="#0072B2", ls=":", lw=1)
        ax.plot(ks, gap, "o", color="#E69F00", label="measured R_mu-supv - R_cont")
        out = (gap < lo) | (gap > hi)
        if out.any():
            ax.scatter(ks[out], gap[out], s=150, facecolors="none", edgecolors="#D55E00",
                       linewidths=2, label="outside the bounds")
        log2_k_axis(ax)
        ax.set_ylabel("surrogate gap (nats)")
        ax.set_title(d)
        ax.grid(alpha=0.3)
    return _finish(fig, title)


def nc_vs_dc_grid(rows: Sequence[Mapping[str, Any]], metric: str, ylabel: str,
                  log: bool = False, title: str = "") -> Figure:
    """``metric`` vs beta, one panel per loss, one line per normalization (rows with ``loss``,
    ``beta``, ``normalize`` and the metric; mean over seeds)."""
    losses = sorted({str(r["loss"]) for r in rows})
    norms = sorted({str(r["normalize"]) for r in rows})
    fig, axes = _panel_row(len(losses), 4.6, 3.8)
    for ax, loss in zip(axes, losses, strict=True):
        for i, n in enumerate(norms):
            by_b: dict[float, list[float]] = {}
            for r in rows:
                v = finite(r.get(metric))
                if str(r["loss"]) == loss and str(r["normalize"]) == n and v is not None:
                    by_b.setdefault(float(r["beta"]), []).append(v)
            if by_b:
                bs = sorted(by_b)
                ax.plot(bs, [float(np.mean(by_b[b])) for b in bs], marker="o", color=colour(i),
                        label=f"normalize={n}")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("hardness beta (dimensionless)")
        ax.set_ylabel(ylabel)
        ax.set_title(loss)
        ax.grid(alpha=0.3)
    return _finish(fig, title)


def nozawa_k_curves(curve: Sequence[Mapping[str, Any]], key: str, title: str = "") -> Figure:
    """Nozawa & Sato's K sweep from its ``k_curve`` rows (one per K + 1 = ``key``): left, the
    measured single-view InfoNCE loss L_Info against their lower bound, the CURL bound and the
    collision term; right, the mean-classifier accuracy (mean over seeds, +- one standard
    deviation)."""
    fig, (left, right) = _panel_row(2, 4.8, 3.8)
    xs = [int(r[key]) for r in curve]
    for i, (col, label) in enumerate((("info_loss", "L_Info (measured)"),
                                      ("lower_bound", "lower bound (Nozawa & Sato)"),
                                      ("curl_lower_bound", "lower bound (CURL)"),
                                      ("collision", "collision term Col"))):
        left.plot(xs, [r[col] for r in curve], marker="o", ms=3, color=colour(i),
                  ls="-" if i == 0 else "--", label=label)
    left.set_ylabel("nats (held-out, mean over seeds)")
    sd = [finite(r.get("mu_accuracy_sd")) or 0.0 for r in curve]
    right.errorbar(xs, [r["mu_accuracy"] for r in curve], yerr=sd, marker="o", ms=3,
                   capsize=3, color=colour(0), label="mu accuracy")
    right.set_ylabel("mean-classifier accuracy (test)")
    for ax in (left, right):
        log2_k_axis(ax)
        ax.set_xlabel("K + 1 (minibatch size)")
        ax.grid(alpha=0.3)
    return _finish(fig, title or "Nozawa & Sato: L_Info, its lower bounds and accuracy vs K")


def accuracy_vs_beta(curve: Sequence[Mapping[str, Any]], ylabel: str, title: str = "") -> Figure:
    """Robinson et al.'s beta sweep from its ``beta_curve`` rows: the accuracy (mean over seeds,
    +- one standard deviation) against the hardness beta (beta = 0: the debiased loss), and the
    biased baseline (``beta: 'biased'``), if any, as a dashed line."""
    fig, (ax,) = _panel_row(1, 5.2, 3.8)
    hard = [r for r in curve if r["beta"] != "biased"]
    ax.errorbar([float(r["beta"]) for r in hard], [r["accuracy"] for r in hard],
                yerr=[finite(r.get("accuracy_sd")) or 0.0 for r in hard], marker="o", ms=3,
                capsize=3, color=colour(0), label="debiased hard-negative loss")
    for r in curve:
        if r["beta"] == "biased":
            ax.axhline(r["accuracy"], ls="--", color=colour(1), label="biased (InfoNCE)")
    ax.set_xscale("symlog", linthresh=1.0)
    ticks = [float(r["beta"]) for r in hard]
    ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
    ax.minorticks_off()
    ax.set_xlabel("hardness beta (0: debiased)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _finish(fig, title or "Robinson et al.: accuracy vs the hardness beta")

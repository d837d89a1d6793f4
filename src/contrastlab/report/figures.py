"""Figures from tidy results: pure functions returning matplotlib Figures (Agg backend).

Every function takes plain data (lists of dicts, arrays) and returns a
:class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG and SVG.
:func:`figures_from_store` builds every figure the runs of an output directory support.

Runs are merged as :mod:`contrastlab.report.grouping` says: one curve per group of runs that
agree on every swept key except the seed (and except the figure's x axis, ``loss.k`` for the
curves vs k), labelled by those keys (``"hucl beta=5 sphere"``); the seeds of a group give the
mean and its 95 % interval. Colours are the Okabe-Ito palette (colour-blind safe), or a
sequential colour map of k where k tells the curves apart; the k axis is in log2; legends sit
outside the axes; the simplex-ETF reference is drawn wherever the number of classes C is known.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # never switch the backend under a running pyplot
    matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from contrastlab.report.grouping import (
    K_KEY,
    SEED_KEYS,
    Group,
    finite,
    group_records,
    mean_interval,
    series_keys,
    swept_keys,
)

__all__ = [
    "ACCURACY_PANELS",
    "OKABE_ITO",
    "colour",
    "contrastive_loss_vs_k",
    "cosine_heatmaps",
    "downstream_vs_k",
    "epoch_metrics",
    "figures_from_store",
    "legend_outside",
    "log2_k_axis",
    "num_classes_of",
    "open_store",
    "save",
    "spectra",
    "study_losses_vs_k",
    "study_violations",
]

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")
# the accuracies drawn side by side (when the runs stored them): metric -> panel title
ACCURACY_PANELS = {"mc_acc": "mean classifier", "probe_acc": "linear probe", "knn_acc": "kNN"}
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_K_CMAP_TOP = 0.85  # viridis cut below its pale yellow end, which vanishes on white


def colour(i: int) -> str:
    """The ``i``-th colour of the Okabe-Ito palette (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def _k_tick(value: float, _pos: Any = None) -> str:
    return str(round(value)) if value >= 1 and float(value).is_integer() else f"{value:g}"


def log2_k_axis(ax: Any) -> None:
    """The number of negatives k on the x axis of ``ax``: log2 scale, integer ticks, label."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_k_tick))
    ax.set_xlabel("number of negatives k (log2 scale)")


def _int_k(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def legend_outside(fig: Figure, fontsize: int = 7, loc: str = "outside center right") -> None:
    """One legend for every labelled artist of the figure's axes, outside them: on the right
    (default) or where ``loc`` says (an ``outside ...`` location of constrained layout)."""
    handles, labels, seen = [], [], set()
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in seen:
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
    if handles:
        # right of the axes, vertically centred by default: clear of the figure's title
        # ("outside" + any standard location is valid at run time; matplotlib's stubs list only
        # a few, hence the Any)
        where: Any = loc
        fig.legend(handles, labels, loc=where, fontsize=fontsize)


def _done(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status", "done") == "done"]


def _k_series(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] | None
              ) -> tuple[list[Group], list[str]]:
    """The finished rows with an explicit k, grouped by every swept key but the seeds and k."""
    usable = [r for r in _done(rows) if _int_k(r.get(K_KEY)) is not None]
    all_keys = list(keys) if keys is not None else swept_keys(usable)
    skeys = series_keys(all_keys)
    return group_records(usable, skeys), skeys


def _values_by_k(group: Group, metric: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in group.records:
        k, v = _int_k(r.get(K_KEY)), finite(r.get(metric))
        if k is not None and v is not None:
            out.setdefault(k, []).append(v)
    return out


def _mean_band(ax: Any, by_k: Mapping[int, Sequence[float]], label: str,
               clip: tuple[float, float] = (-math.inf, math.inf), **style: Any) -> None:
    """Mean over the seeds vs k and the 95 % interval of the mean (where >= 2 seeds), the
    band clipped to the metric's range ``clip`` (an accuracy lies in [0, 1])."""
    ks = sorted(by_k)
    if not ks:
        return
    ivs = [mean_interval(by_k[k]) for k in ks]
    ax.plot(ks, [iv.mean for iv in ivs], marker=style.pop("marker", "o"), label=label, **style)
    band = [(k, iv.low, iv.high) for k, iv in zip(ks, ivs, strict=True)
            if iv.low is not None and iv.high is not None]
    if band:
        ax.fill_between([b[0] for b in band], [max(b[1], clip[0]) for b in band],
                        [min(b[2], clip[1]) for b in band], color=style.get("color"),
                        alpha=0.2, linewidth=0)


def _downstream_temperatures(rows: Sequence[Mapping[str, Any]]) -> set[float]:
    """The temperatures the rows' R_mu-supv was evaluated at (the loss's t; 1 for the logistic
    and hinge scores: :func:`contrastlab.theory.downstream.downstream_temperature`)."""
    from contrastlab.theory.downstream import downstream_temperature

    out = set()
    for r in rows:
        t = finite(r.get("loss.temperature"))
        out.add(downstream_temperature(str(r.get("loss.score") or "infonce"),
                                       1.0 if t is None else t))
    return out


def _group_style(i: int) -> dict[str, Any]:
    return {"color": colour(i), "ls": _LINESTYLES[(i // len(OKABE_ITO)) % len(_LINESTYLES)]}


def _check_rows(name: str, rows: Any) -> list[Mapping[str, Any]]:
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes) or not all(
            isinstance(r, Mapping) for r in rows):
        raise ValueError(f"{name} must be a list of dicts; got {type(rows).__name__}")
    return list(rows)


_BAND = "band: 95 % interval of the mean over seeds, none with one seed"


def downstream_vs_k(
    rows: Sequence[Mapping[str, Any]],
    accuracy: str = "mc_acc",
    loss: str = "mc_ce",
    num_classes: int | None = None,
    bounds: Sequence[Mapping[str, Any]] | None = None,
    extra_accuracies: Sequence[str] = ("probe_acc", "knn_acc"),
    keys: Sequence[str] | None = None,
) -> Figure:
    """Downstream accuracy and loss vs k: the mean over seeds and its 95 % interval, one line
    per group of runs (every swept key but the seed and k; ``keys`` defaults to
    :func:`~contrastlab.report.grouping.swept_keys` of the finished rows). ``rows`` are flat
    records (``loss.k``, ``loss.name``, ``loss.normalize``, metrics) as from
    :func:`contrastlab.experiments.results.load_records`.

    Panels: ``accuracy``, then each of ``extra_accuracies`` the rows stored (linear probe, kNN),
    on a shared y axis, then ``loss``. With ``num_classes`` C, chance 1/C is drawn on the
    accuracy panels and the idealized supervised optimum (Bao et al.; the value at the simplex
    ETF) on the loss panel; ``bounds`` (rows of
    :func:`contrastlab.theory.bounds.bounds_from_measurement`, with ``K``, ``bao_upper``,
    ``bao_lower``) are drawn there as Bao's bounds at the measured contrastive loss."""
    rows = _check_rows("rows", rows)
    groups, _ = _k_series(rows, keys)
    accs = [accuracy] + [m for m in extra_accuracies if m != accuracy and any(
        finite(r.get(m)) is not None for g in groups for r in g.records)]
    n = len(accs) + 1
    fig, axes = panel_figure(n, 3.6, 3.9, 2.6)
    acc_axes, ax_loss = axes[:-1], axes[-1]
    for ax in acc_axes[1:]:
        ax.sharey(acc_axes[0])
    for ax, metric in zip(acc_axes, accs, strict=True):
        for i, g in enumerate(groups):
            _mean_band(ax, _values_by_k(g, metric), g.label, clip=(0.0, 1.0),
                       **_group_style(i))
        ax.set_title(f"{ACCURACY_PANELS.get(metric, metric)} [{metric}]", fontsize=9)
        if num_classes is not None and num_classes >= 2:
            ax.axhline(1.0 / num_classes, color="#888888", ls=":", lw=1,
                       label=f"chance 1/C (C={num_classes})")
    acc_axes[0].set_ylabel("downstream accuracy (fraction)")
    for i, g in enumerate(groups):
        _mean_band(ax_loss, _values_by_k(g, loss), g.label, clip=(0.0, math.inf),
                   **_group_style(i))
    temps = _downstream_temperatures(rows)
    if num_classes is not None and num_classes >= 2 and len(temps) == 1:
        from contrastlab.theory.bounds import idealized_supervised_minimum

        # the runs' R_mu-supv is at the loss's temperature t (theory/downstream.py): unit
        # features and scores f^T mu / t, i.e. Bao's b^2 = 1/t
        (t,) = temps
        ax_loss.axhline(idealized_supervised_minimum(num_classes, b=1.0 / math.sqrt(t)),
                        color="black", ls="--",
                        label=f"idealized optimum R*_mu-supv at the ETF (C={num_classes}, "
                              f"t={t:g})")
    if bounds:
        for key, style in (("bao_upper", "-."), ("bao_lower", ":")):
            pts = sorted((int(b["K"]), v) for b in bounds
                         if (v := finite(b.get(key))) is not None and finite(b.get("K")))
            if pts:
                ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], color="#555555",
                             ls=style, label=f"{key} at measured contrastive loss")
    ax_loss.set_title(f"downstream loss [{loss}]", fontsize=9)
    ax_loss.set_ylabel(f"downstream loss [{loss}] (nats)")
    for ax in axes:
        log2_k_axis(ax)
        ax.grid(alpha=0.3)
    legend_outside(fig)
    fig.suptitle(f"Downstream performance vs k ({_BAND}; accuracies clipped to [0, 1])",
                 fontsize=10)
    return fig


def _etf_loss_for(row: Mapping[str, Any], num_classes: int, k: int) -> float | None:
    """The ETF closed form of the run's loss (``nce``: its score, the sum form for
    ``infonce``; the Jiang losses: InfoNCE summed or averaged over the negatives)."""
    from contrastlab.theory.etf import etf_loss

    name = str(row.get("loss.name", ""))
    if name == "nce":
        loss = str(row.get("loss.score") or "infonce")
        sampler = str(row.get("loss.sampler") or "uniform")
        negatives = "other-class" if sampler in ("other-class", "tilted-other-class") \
            else "marginal"
    elif name in ("scl", "hscl", "ucl", "hucl"):
        loss = "infonce-mean" if row.get("loss.negatives_reduction") == "mean" else "infonce"
        negatives = "other-class" if name in ("scl", "hscl") else "marginal"
    else:  # the in-batch losses have no fixed k
        return None
    beta = finite(row.get("loss.beta")) or 0.0
    temperature = finite(row.get("loss.temperature")) or 1.0
    try:
        return etf_loss(num_classes, k, loss=loss, temperature=temperature,
                        negatives=negatives, beta=beta if negatives == "marginal" else 0.0)
    except (ValueError, TypeError):
        return None


def contrastive_loss_vs_k(
    rows: Sequence[Mapping[str, Any]],
    metric: str = "heldout_loss",
    num_classes: int | None = None,
    keys: Sequence[str] | None = None,
) -> Figure:
    """Measured contrastive loss vs k (mean and 95 % interval over seeds) next to the
    closed-form value at the unit simplex ETF (:func:`contrastlab.theory.etf.etf_loss`), one
    line per group of runs (every swept key but the seed and k, as in :func:`downstream_vs_k`);
    the ETF curve of a group is drawn dashed in its colour, with C from ``num_classes`` or the
    runs' ``data.options.classes``."""
    rows = _check_rows("rows", rows)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    groups, _ = _k_series(rows, keys)
    for i, g in enumerate(groups):
        by_k = _values_by_k(g, metric)
        if not by_k:
            continue
        style = _group_style(i)
        _mean_band(ax, by_k, g.label, **style)
        example = g.records[0]
        c = num_classes or example.get("data.options.classes")
        if not isinstance(c, int) or c < 2:
            continue
        pts = [(k, _etf_loss_for(example, c, k)) for k in sorted(by_k)]
        pts2 = [(k, v) for k, v in pts if v is not None]
        if pts2:
            ax.plot([p[0] for p in pts2], [p[1] for p in pts2], ls="--", marker="x",
                    color=style["color"], label=f"{g.label}: ETF closed form (C={c})")
    log2_k_axis(ax)
    ax.set_ylabel(f"contrastive loss [{metric}] (nats)")
    ax.grid(alpha=0.3)
    legend_outside(fig)
    ax.set_title(f"Contrastive loss vs k and its value at the simplex ETF\n({_BAND})",
                 fontsize=9)
    return fig


def cosine_heatmaps(matrices: Mapping[Any, Any] | Sequence[tuple[Any, Any]],
                    ncols: int | None = None) -> Figure:
    """Class-mean cosine heatmaps on a shared colour scale [-1, 1] whose colour bar marks the
    simplex-ETF value -1/(C-1). ``matrices``: ``{k: CxC matrix}`` (panels titled ``k = 4``,
    sorted by k) or ``{label: matrix}`` (panels titled with the label, e.g. the run's
    ``"hucl beta=5 k=4 sphere"``, in the given order); ``ncols`` panels per row (default as
    many as fit in :data:`MAX_FIGURE_WIDTH`)."""
    raw = list(matrices.items() if isinstance(matrices, Mapping) else matrices)
    if not raw:
        raise ValueError("matrices must hold at least one (k, matrix)")
    by_k = all(_int_k(key) is not None for key, _ in raw)
    items = sorted(raw, key=lambda kv: kv[0]) if by_k else raw
    n = len(items)
    if ncols is None:
        nrows, cols, size = panel_grid(n, 3.2, 3.4, 1.4)
    else:
        cols = max(1, min(ncols, n))
        nrows = math.ceil(n / cols)
        size = (3.2 * cols + 1.4, 3.4 * nrows)
    fig = Figure(figsize=size, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    im = None
    c = 2
    for ax, (key, mat) in zip(axes, items, strict=False):
        m = np.asarray(mat, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrices[{key!r}] must be a square matrix; got shape {m.shape}")
        c = m.shape[0]
        im = ax.imshow(m, vmin=-1.0, vmax=1.0, cmap="cividis")
        ax.set_title(f"k = {key}" if by_k else str(key), fontsize=8)
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        if c <= 10:
            for i in range(c):
                for j in range(c):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < 0.3 else "black")
        ax.set_xlabel("class")
        ax.set_ylabel("class")
    for ax in axes[n:]:
        ax.set_axis_off()
    assert im is not None
    cbar = fig.colorbar(im, ax=list(axes[:n]), shrink=0.9)
    cbar.set_label("cosine of class means (dimensionless)")
    etf = -1.0 / (c - 1) if c > 1 else -1.0
    cbar.ax.axhline(etf, color="#D55E00", lw=2)
    cbar.set_ticks(sorted({-1.0, etf, 0.0, 1.0}))
    cbar.ax.set_yticklabels([f"{t:.2f}" + (" = -1/(C-1)" if t == etf else "")
                             for t in sorted({-1.0, etf, 0.0, 1.0})])
    fig.suptitle("Class-mean cosines (ETF: off-diagonal = -1/(C-1))")
    return fig


def _k_norm(ks: Sequence[int]) -> tuple[Any, Any]:
    """(colour map, norm) of the sequential k colours: viridis on log2 k."""
    from matplotlib.colors import ListedColormap, LogNorm

    base = matplotlib.colormaps["viridis"]
    cmap = ListedColormap(base(np.linspace(0.0, _K_CMAP_TOP, 256)), name="viridis_k")
    lo, hi = min(ks), max(ks)
    return cmap, LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 2)


def series_styles(groups: Sequence[Group], keys: Sequence[str]
                  ) -> tuple[dict[str, dict[str, Any]], list[int] | None]:
    """Line styles for curves that differ by ``keys`` (one per group): where ``loss.k`` is among
    the keys and varies, colour by k (sequential, log2) and line style and marker by the other
    keys, and return the k values for a colour bar; otherwise Okabe-Ito colours by group."""
    k_of = {g.label: _int_k(dict(zip(keys, g.values, strict=True)).get(K_KEY))
            for g in groups}
    ks = sorted({k for k in k_of.values() if k is not None})
    styles: dict[str, dict[str, Any]] = {}
    if K_KEY not in keys or len(ks) < 2:
        for i, g in enumerate(groups):
            styles[g.label] = dict(_group_style(i), marker="o")
        return styles, None
    cmap, norm = _k_norm(ks)
    rest_keys = [k for k in keys if k != K_KEY]
    rest_index: dict[tuple[str, ...], int] = {}
    for g in groups:
        vals = dict(zip(keys, g.values, strict=True))
        rest = tuple(repr(vals[k]) for k in rest_keys)
        j = rest_index.setdefault(rest, len(rest_index))
        k = k_of[g.label]
        styles[g.label] = {"color": cmap(norm(k)) if k is not None else "#555555",
                           "ls": _LINESTYLES[j % len(_LINESTYLES)],
                           "marker": _MARKERS[j % len(_MARKERS)]}
    return styles, ks


def _k_colorbar(fig: Figure, axes: Sequence[Any], ks: Sequence[int]) -> None:
    from matplotlib.cm import ScalarMappable

    cmap, norm = _k_norm(ks)
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), shrink=0.8,
                        location="right")
    cbar.set_ticks(list(ks))
    cbar.set_ticklabels([str(k) for k in ks])
    cbar.minorticks_off()
    cbar.set_label("number of negatives k (colour, log2)")


def _stack(values: Any) -> np.ndarray:
    """A spectrum (1-D) or several (one per seed) as a 2-D array of rows."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return np.abs(values.astype(np.float64))
    if isinstance(values, Sequence) and values and not isinstance(values[0], int | float):
        rows = [np.abs(np.asarray(v, dtype=np.float64).ravel()) for v in values]
        size = rows[0].size
        return np.stack([r for r in rows if r.size == size])
    return np.abs(np.asarray(values, dtype=np.float64).ravel())[None, :]


def spectra(curves: Mapping[str, Any] | Sequence[tuple[str, Any]], floor: float = 1e-12,
            ylabel: str = "log10(sigma_i / sigma_max)",
            styles: Mapping[str, Mapping[str, Any]] | None = None,
            k_colorbar: Sequence[int] | None = None,
            etf_rank: int | None = None) -> Figure:
    """Singular-value spectra ``log10(sigma_i / sigma_max)``, one line per configuration
    (``{label: values}``, any order; sorted descending). ``values`` may also be several spectra
    (one per seed): the line is the mean of their log ratios, the band their min-max. Zeros
    are clipped to ``floor`` so a collapsed dimension shows as a drop to the bottom of the
    plot. ``styles`` (label -> line keywords, e.g. from :func:`series_styles`) and
    ``k_colorbar`` (the k values the colours stand for) colour the lines by k; ``etf_rank``
    (C - 1) marks where the spectrum of a simplex ETF ends (C - 1 equal values, then zeros)."""
    items = list(curves.items() if isinstance(curves, Mapping) else curves)
    if not items:
        raise ValueError("curves must hold at least one (label, spectrum)")
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    for i, (label, vals) in enumerate(items):
        s = -np.sort(-_stack(vals), axis=1)
        s = s[s[:, 0] > 0] if s.size else s
        if s.size == 0:
            continue
        ratio = np.log10(np.maximum(s / s[:, :1], floor))
        x = np.arange(1, s.shape[1] + 1)
        style = dict((styles or {}).get(str(label)) or {"color": colour(i), "marker": "o"})
        ax.plot(x, ratio.mean(axis=0), label=str(label), **style)
        if ratio.shape[0] > 1 and len(items) <= 4:  # more bands than that hide the lines
            ax.fill_between(x, ratio.min(axis=0), ratio.max(axis=0), color=style.get("color"),
                            alpha=0.15, linewidth=0)
    if etf_rank is not None and etf_rank >= 1:
        ax.axvline(etf_rank + 0.5, color="#D55E00", ls="--", lw=1,
                   label=f"simplex ETF: C-1 = {etf_rank} equal values, then zero")
    ax.set_xlabel("index i (sorted, 1 = largest)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel.replace(": ", ":\n") + " (decades)", fontsize=9)
    ax.grid(alpha=0.3)
    if k_colorbar:
        _k_colorbar(fig, [ax], k_colorbar)
    legend_outside(fig)
    ax.set_title("Spectra: mean over seeds (band: min-max, up to 4 curves);\n"
                 "collapsed dimensions drop to the floor", fontsize=9)
    return fig


# value of each metric at the simplex ETF with C classes (neural collapse)
_ETF_REFERENCE = {
    "effective_rank": lambda c: float(c - 1),
    "class_mean_effective_rank": lambda c: float(c - 1),
    "etf_distance": lambda c: 0.0,
    "equiangularity_mean": lambda c: 0.0,
    "nc1": lambda c: 0.0,
}


def _mean_history(hists: Sequence[Sequence[Mapping[str, Any]]], metric: str
                  ) -> list[tuple[int, float]]:
    by_epoch: dict[int, list[float]] = {}
    for hist in hists:
        for e in hist:
            ep, v = _int_k(e.get("epoch")), finite(e.get(metric))
            if ep is not None and v is not None:
                by_epoch.setdefault(ep, []).append(v)
    return [(ep, float(np.mean(vs))) for ep, vs in sorted(by_epoch.items())]


def epoch_metrics(
    histories: Mapping[str, Sequence[Any]],
    metrics: Sequence[str] = ("nc1", "etf_distance", "effective_rank"),
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    k_colorbar: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Figure:
    """NC metrics and effective rank over epochs: one panel per metric, one line per run or
    group (``{label: [epoch metrics dicts]}``, or ``{label: [[dicts of seed 0], [seed 1],
    ...]}`` for the mean over seeds). ``styles`` and ``k_colorbar`` as in :func:`spectra`;
    with ``num_classes`` C the value at the simplex ETF is drawn (effective rank C - 1, ETF
    distance, NC1 and equiangularity 0)."""
    if not histories:
        raise ValueError("histories must hold at least one run")
    fig, axes = panel_figure(len(metrics), 4.0, 3.8, 2.4)
    units = {"effective_rank": "dimensions", "nc1": "dimensionless",
             "etf_distance": "dimensionless"}
    for ax, m in zip(axes, metrics, strict=True):
        for i, (label, hist) in enumerate(histories.items()):
            hists = [hist] if not hist or isinstance(hist[0], Mapping) else list(hist)
            pts = _mean_history(hists, m)
            if pts:
                style = dict((styles or {}).get(str(label)) or {"color": colour(i)})
                style.setdefault("marker", ".")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=str(label), **style)
        if num_classes is not None and num_classes >= 2 and m in _ETF_REFERENCE:
            ax.axhline(_ETF_REFERENCE[m](num_classes), color="#D55E00", ls="--", lw=1,
                       label=f"simplex ETF value (C={num_classes})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{m} ({units.get(m, 'value')})")
        ax.grid(alpha=0.3)
    if k_colorbar:
        _k_colorbar(fig, list(axes), k_colorbar)
    legend_outside(fig)
    fig.suptitle("Neural-collapse metrics and effective rank over training (mean over seeds)")
    return fig


def study_violations(rows: Sequence[Mapping[str, Any]], metric: str
                     ) -> list[tuple[str, int, int]]:
    """(prior, k_from, k_to) where ``metric`` increases between consecutive k of a prior."""
    by_prior: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        v = finite(r.get(metric))
        if v is not None:
            by_prior.setdefault(str(r.get("prior")), []).append((int(r["k"]), v))
    out = []
    for prior, pts in by_prior.items():
        pts.sort()
        for (k0, v0), (k1, v1) in itertools.pairwise(pts):
            if v1 > v0 + 1e-6:
                out.append((prior, k0, k1))
    return out


def study_losses_vs_k(rows: Sequence[Mapping[str, Any]],
                      metrics: Sequence[str] = ("mean_classifier_loss", "supervised_loss"),
                      violations: Sequence[Any] | None = None) -> Figure:
    """Unbalanced-prior study (:attr:`contrastlab.theory.study.StudyResult.rows`): downstream
    loss of the optimum vs k, one line per prior, one panel per metric; every increase
    between consecutive k (a monotonicity violation) is highlighted by a red segment and ring.
    ``violations`` (the study's confirmed ones, objects with ``prior``, ``metric``, ``k_from``,
    ``k_to``) replace the detection from the rows when given."""
    rows = _check_rows("rows", rows)
    fig, axes = panel_figure(len(metrics), 5.0, 4.0, 0.0)
    priors = sorted({str(r.get("prior")) for r in rows})
    for ax, m in zip(axes, metrics, strict=True):
        series: dict[str, dict[int, float]] = {}
        for r in rows:
            v = finite(r.get(m))
            if v is not None and isinstance(r.get("k"), int):
                series.setdefault(str(r.get("prior")), {})[int(r["k"])] = v
        for i, p in enumerate(priors):
            pts = sorted(series.get(p, {}).items())
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", color=colour(i),
                        label=f"prior: {p}")
        if violations is None:
            viol = study_violations(rows, m)
        else:
            viol = [(str(v.prior), int(v.k_from), int(v.k_to)) for v in violations
                    if getattr(v, "metric", m) == m]
        for j, (p, k0, k1) in enumerate(viol):
            s = series.get(p, {})
            if k0 in s and k1 in s:
                ax.plot([k0, k1], [s[k0], s[k1]], color="#D55E00", lw=4, alpha=0.6,
                        label="monotonicity violation" if j == 0 else None)
                ax.scatter([k1], [s[k1]], s=160, facecolors="none", edgecolors="#D55E00",
                           linewidths=2)
        log2_k_axis(ax)
        ax.set_ylabel(f"{m} at the optimum (nats)")
        ax.set_title(f"{m}: {len(viol)} violation(s)")
        ax.grid(alpha=0.3)
    legend_outside(fig)
    fig.suptitle("Downstream loss of the contrastive optimum vs k, per class prior")
    return fig


# the widest figure, in inches: at the report's 100 dpi it fits the page's 1200-pixel column, so
# every figure is shown at its natural size (tests/report/test_browser.py compares the pixels)
MAX_FIGURE_WIDTH = 11.5


def panel_grid(n: int, panel_width: float, panel_height: float,
               extra_width: float) -> tuple[int, int, tuple[float, float]]:
    """``(rows, columns, figsize)`` for ``n`` panels of the given size in inches plus
    ``extra_width`` (a legend outside the axes): as many columns as fit in
    :data:`MAX_FIGURE_WIDTH`, at least one, the panels shrunk to fit when one column does not."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    cols = max(1, min(n, int((MAX_FIGURE_WIDTH - extra_width) // panel_width)))
    rows = -(-n // cols)
    width = min(MAX_FIGURE_WIDTH, cols * panel_width + extra_width)
    return rows, cols, (width, rows * panel_height)


def panel_figure(n: int, panel_width: float, panel_height: float,
                 extra_width: float) -> tuple[Figure, list[Any]]:
    """A constrained-layout figure with ``n`` axes laid out by :func:`panel_grid` (row by row;
    the unused cells of the last row removed)."""
    nrows, ncols, size = panel_grid(n, panel_width, panel_height, extra_width)
    fig = Figure(figsize=size, layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols)).ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def save(fig: Figure, path: str | Path, dpi: int = 110) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.svg`` (any suffix of ``path`` is replaced),
    cropped to what is drawn (``bbox_inches="tight"``: no clipped labels or legends); returns
    the two paths.

    The figure is laid out once (:func:`tight_box`) and both files are drawn from that layout,
    the SVG in a forked process while this one draws the PNG (:mod:`contrastlab._fork`): the
    PNG has the pixels of matplotlib's ``savefig(bbox_inches="tight")`` of the fresh figure,
    which would run the constrained layout (the costliest part of a draw) again for every file
    (tests/report/test_figures.py)."""
    from contrastlab._fork import fork_call

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    png, svg = p.with_suffix(".png"), p.with_suffix(".svg")
    box = tight_box(fig, dpi)
    with frozen_layout(fig):
        pending = fork_call(functools.partial(fig.savefig, svg, dpi=dpi, bbox_inches=box))
        try:
            fig.savefig(png, dpi=dpi, bbox_inches=box)
        finally:
            pending.result()
    return [png, svg]


def tight_box(fig: Figure, dpi: int) -> Any:
    """What ``bbox_inches="tight"`` crops to at ``dpi`` (the drawn extent plus matplotlib's
    default pad), after laying the figure out (its layout engine, e.g. constrained, runs once;
    nothing is rendered)."""
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    fig.draw_without_rendering()
    return fig.get_tightbbox(canvas.get_renderer()).padded(rcParams["savefig.pad_inches"])


@contextlib.contextmanager
def frozen_layout(fig: Figure) -> Iterator[None]:
    """Keep the figure's current layout (no layout engine) inside the block, so that drawing it
    again does not lay it out again; the engine is back afterwards."""
    engine = fig.get_layout_engine()
    if engine is None:
        yield
        return
    with matplotlib.rc_context({"figure.autolayout": False,
                                "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # None, not 'none': savefig then skips its layout pass
    try:
        yield
    finally:
        fig.set_layout_engine(engine)


def open_store(out_dir: str | Path) -> Any:
    """The :class:`~contrastlab.experiments.store.ResultStore` of ``out_dir`` (read, never
    created); ValueError naming ``out_dir`` if it is not a results directory."""
    from contrastlab.experiments.store import DB_NAME, ResultStore, StoreError

    d = Path(out_dir)
    if not d.is_dir() or not (d / DB_NAME).is_file():
        raise ValueError(f"out_dir {str(d)!r} is not a results directory (no {DB_NAME}); "
                         "run a config or sweep there first")
    try:
        return ResultStore(d, create=False)
    except StoreError as exc:
        raise ValueError(f"out_dir {str(d)!r} is not a usable results directory: {exc}") from None


def _measured_bounds(records: Sequence[Mapping[str, Any]], c: int | None,
                     keys: Sequence[str] | None = None) -> list[dict[str, Any]] | None:
    """Bao's bounds at the mean measured held-out loss per k, only where that loss is Bao's
    R_cont: one group of runs (nothing swept but k and the seeds), one loss, the sum-form
    InfoNCE with negatives from the marginal (``nce`` with score ``infonce`` and the uniform
    sampler, or ``ucl`` summed over its negatives), unit-sphere features, temperature 1
    (so b = 1)."""
    if c is None or c < 2:
        return None
    all_keys = list(keys) if keys is not None else swept_keys(records)
    if series_keys(all_keys):
        return None
    kinds = {(r.get("loss.name"), r.get("loss.score"), r.get("loss.sampler"),
              r.get("loss.negatives_reduction"), r.get("loss.normalize"),
              r.get("loss.temperature")) for r in records}
    if len(kinds) != 1:
        return None
    name, score, sampler, reduction, normalize, temperature = kinds.pop()
    sum_form = (name == "nce" and score == "infonce" and sampler == "uniform") or (
        name == "ucl" and reduction == "sum")
    if not sum_form or normalize != "sphere" or temperature != 1.0:
        return None
    by_k: dict[int, list[float]] = {}
    for r in records:
        v = finite(r.get("heldout_loss"))
        if isinstance(r.get("loss.k"), int) and v is not None:
            by_k.setdefault(int(r["loss.k"]), []).append(v)
    if not by_k:
        return None
    from contrastlab.theory.bounds import bounds_from_measurement

    ks = sorted(by_k)
    try:
        table = bounds_from_measurement([float(np.mean(by_k[k])) for k in ks], ks, 1.0, C=c)
    except ValueError:
        return None
    return list(table.rows)


def num_classes_of(records: Sequence[Mapping[str, Any]],
                   reports: Sequence[Mapping[str, Any]] = ()) -> int | None:
    """The number of classes C shared by the runs: from their geometry reports
    (``num_classes``), else their config (``data.options.classes``); None if unknown or not
    one value."""
    for found in ({(rep.get("geometry") or {}).get("num_classes") for rep in reports},
                  {r.get("data.options.classes") for r in records}):
        found.discard(None)
        if len(found) == 1:
            c = _int_k(found.pop())
            return c if c is not None and c >= 2 else None
    return None


def _lowest_seed(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(records, key=lambda r: (tuple(str(r.get(k)) for k in SEED_KEYS),
                                          str(r.get("run_id"))))


def figures_from_store(out_dir: str | Path) -> dict[str, Figure]:
    """Every figure the runs of ``out_dir`` support: ``downstream_vs_k``,
    ``contrastive_loss_vs_k``, ``cosine_heatmaps``, ``spectra``, ``class_mean_spectra``,
    ``epoch_metrics``. Runs are grouped by every swept key but the seed
    (:func:`~contrastlab.report.grouping.swept_keys`, as ``contrastlab results``): the curves
    vs k by the others, the heatmaps (one per group, from its lowest seed), spectra and epoch
    curves (mean over the seeds of a group) by all of them, coloured by k where k varies.
    Figures without data (e.g. no finished run) are left out.
    Raises ValueError (naming ``out_dir``) if it is not a results directory."""
    from contrastlab.experiments.results import load_records

    store = open_store(out_dir)
    try:
        done = store.runs("done")
        reports = {r["run_id"]: store.reports(r["run_id"]) for r in done}
        histories = {r["run_id"]: store.epochs(r["run_id"]) for r in done}
    finally:
        store.close()
    figs: dict[str, Figure] = {}
    records = [r for r in load_records(out_dir)
               if r.get("status") == "done" and r["run_id"] in reports]
    if not records:
        return figs
    keys = swept_keys(records)
    c = num_classes_of(records, list(reports.values()))
    if any(finite(r.get("mc_acc")) is not None for r in records):
        figs["downstream_vs_k"] = downstream_vs_k(
            records, num_classes=c, bounds=_measured_bounds(records, c, keys), keys=keys)
    if any(finite(r.get("heldout_loss")) is not None for r in records):
        figs["contrastive_loss_vs_k"] = contrastive_loss_vs_k(records, num_classes=c, keys=keys)
    # one group per setting (every swept key but the seeds); rows by the others, columns by k
    run_keys = series_keys(keys, exclude=())
    k_swept = K_KEY in run_keys
    if k_swept:
        run_keys = [k for k in run_keys if k != K_KEY] + [K_KEY]
    groups = group_records(records, run_keys)
    styles, ks = series_styles(groups, run_keys)
    mats: list[tuple[str, Any]] = []
    cov: dict[str, list[Any]] = {}
    means: dict[str, list[Any]] = {}
    hist: dict[str, list[Any]] = {}
    for g in groups:
        members = _lowest_seed(g.records)
        for r in members:
            geo = reports[r["run_id"]].get("geometry") or {}
            if geo.get("cosine") is not None:
                seed = ", ".join(f"{k}={r.get(k)}" for k in SEED_KEYS if k in r and (
                    k == "seed" or len({str(x.get(k)) for x in members}) > 1))
                mats.append((f"{g.label}\n({seed})" if seed else g.label, geo["cosine"]))
                break
        for r in members:
            geo = reports[r["run_id"]].get("geometry") or {}
            if geo.get("covariance_spectrum"):
                cov.setdefault(g.label, []).append(geo["covariance_spectrum"])
            if geo.get("class_mean_spectrum"):
                means.setdefault(g.label, []).append(geo["class_mean_spectrum"])
            if histories.get(r["run_id"]):
                hist.setdefault(g.label, []).append(histories[r["run_id"]])
    etf_rank = c - 1 if c is not None else None
    if mats:
        n_k = len({g.value(run_keys, K_KEY) for g in groups}) if k_swept else 0
        figs["cosine_heatmaps"] = cosine_heatmaps(mats, ncols=n_k if 2 <= n_k <= 8 else None)
    if cov:
        figs["spectra"] = spectra(cov, ylabel="embedding covariance: log10(sigma_i/sigma_max)",
                                  styles=styles, k_colorbar=ks, etf_rank=etf_rank)
    if means:
        figs["class_mean_spectra"] = spectra(
            means, ylabel="class-mean covariance: log10(sigma_i/sigma_max)", styles=styles,
            k_colorbar=ks, etf_rank=etf_rank)
    if hist:
        figs["epoch_metrics"] = epoch_metrics(hist, styles=styles, k_colorbar=ks,
                                              num_classes=c)
    return figs

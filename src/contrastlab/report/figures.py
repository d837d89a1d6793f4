"""Figures from tidy results: pure functions returning matplotlib Figures (Agg backend).

Every function takes plain data (lists of dicts, arrays) and returns a
:class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG and SVG.
:func:`figures_from_store` builds every figure the runs of an output directory support.

Colours are the Okabe-Ito palette (colour-blind safe); the k axis is in log2.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # never switch the backend under a running pyplot
    matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "OKABE_ITO",
    "contrastive_loss_vs_k",
    "cosine_heatmaps",
    "downstream_vs_k",
    "epoch_metrics",
    "figures_from_store",
    "save",
    "spectra",
    "study_losses_vs_k",
    "study_violations",
]

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")


def _colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _log2_k_axis(ax: Any) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of negatives k (log2 scale)")


def _label(row: Mapping[str, Any]) -> str:
    name = row.get("loss.name", "?")
    norm = row.get("loss.normalize")
    return f"{name}/{norm}" if norm is not None else str(name)


def _group_by_k(rows: Sequence[Mapping[str, Any]], metric: str
                ) -> dict[str, dict[int, list[float]]]:
    """label -> k -> values of ``metric`` over the finished runs (the seeds)."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r.get("status", "done") != "done":
            continue
        k, v = r.get("loss.k"), _num(r.get(metric))
        if not isinstance(k, int) or v is None:
            continue
        out.setdefault(_label(r), {}).setdefault(k, []).append(v)
    return out


def _mean_band(ax: Any, groups: dict[str, dict[int, list[float]]]) -> None:
    for i, (label, by_k) in enumerate(sorted(groups.items())):
        ks = sorted(by_k)
        vals = [np.asarray(by_k[k]) for k in ks]
        mean = np.array([v.mean() for v in vals])
        lo = np.array([v.min() for v in vals])
        hi = np.array([v.max() for v in vals])
        c = _colour(i)
        ax.plot(ks, mean, marker="o", color=c, label=f"{label} (mean)")
        ax.fill_between(ks, lo, hi, color=c, alpha=0.25, linewidth=0)


def _check_rows(name: str, rows: Any) -> list[Mapping[str, Any]]:
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes) or not all(
            isinstance(r, Mapping) for r in rows):
        raise ValueError(f"{name} must be a list of dicts; got {type(rows).__name__}")
    return list(rows)


def downstream_vs_k(
    rows: Sequence[Mapping[str, Any]],
    accuracy: str = "mc_acc",
    loss: str = "mc_ce",
    num_classes: int | None = None,
    bounds: Sequence[Mapping[str, Any]] | None = None,
) -> Figure:
    """Downstream accuracy and loss vs k: mean over seeds and a min-max band, one line per
    (loss, normalization). ``rows`` are flat records (``loss.k``, ``loss.name``,
    ``loss.normalize``, metrics) as from :func:`contrastlab.experiments.results.load_records`.
    With ``num_classes``, the idealized supervised optimum (Bao et al.) is drawn on the loss
    panel; ``bounds`` (rows of :func:`contrastlab.theory.bounds.bounds_from_measurement`, with
    ``K``, ``bao_upper``, ``bao_lower``) are drawn there as Bao's bounds at the measured
    contrastive loss."""
    rows = _check_rows("rows", rows)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    _mean_band(ax_acc, _group_by_k(rows, accuracy))
    _mean_band(ax_loss, _group_by_k(rows, loss))
    if num_classes is not None and num_classes >= 2:
        from contrastlab.theory.bounds import idealized_supervised_minimum

        ax_loss.axhline(idealized_supervised_minimum(num_classes), color="black", ls="--",
                        label=f"idealized optimum R*_mu-supv (C={num_classes})")
    if bounds:
        for key, style in (("bao_upper", "-."), ("bao_lower", ":")):
            pts = sorted((int(b["K"]), v) for b in bounds
                         if (v := _num(b.get(key))) is not None and _num(b.get("K")))
            if pts:
                ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], color="#555555",
                             ls=style, label=f"{key} at measured contrastive loss")
    ax_acc.set_ylabel(f"downstream accuracy [{accuracy}] (fraction)")
    ax_loss.set_ylabel(f"downstream loss [{loss}] (nats)")
    for ax in (ax_acc, ax_loss):
        _log2_k_axis(ax)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("Downstream performance vs k (band: min-max over seeds)")
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
    beta = _num(row.get("loss.beta")) or 0.0
    temperature = _num(row.get("loss.temperature")) or 1.0
    try:
        return etf_loss(num_classes, k, loss=loss, temperature=temperature,
                        negatives=negatives, beta=beta if negatives == "marginal" else 0.0)
    except (ValueError, TypeError):
        return None


def contrastive_loss_vs_k(
    rows: Sequence[Mapping[str, Any]],
    metric: str = "heldout_loss",
    num_classes: int | None = None,
) -> Figure:
    """Measured contrastive loss vs k (mean and band over seeds) next to the closed-form value
    at the unit simplex ETF (:func:`contrastlab.theory.etf.etf_loss`), one line per
    (loss, normalization); the ETF curve is drawn dashed in the same colour."""
    rows = _check_rows("rows", rows)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    groups = _group_by_k(rows, metric)
    _mean_band(ax, groups)
    for i, label in enumerate(sorted(groups)):
        example = next(r for r in rows if _label(r) == label)
        c = num_classes or example.get("data.options.classes")
        if not isinstance(c, int) or c < 2:
            continue
        ks = sorted(groups[label])
        pts = [(k, _etf_loss_for(example, c, k)) for k in ks]
        pts2 = [(k, v) for k, v in pts if v is not None]
        if pts2:
            ax.plot([p[0] for p in pts2], [p[1] for p in pts2], ls="--", marker="x",
                    color=_colour(i), label=f"{label}: ETF closed form (C={c})")
    _log2_k_axis(ax)
    ax.set_ylabel(f"contrastive loss [{metric}] (nats)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title("Contrastive loss vs k and its value at the simplex ETF")
    return fig


def cosine_heatmaps(matrices: Mapping[int, Any] | Sequence[tuple[int, Any]]) -> Figure:
    """Class-mean cosine heatmaps, one per k (``{k: CxC matrix}``), on a shared colour scale
    [-1, 1] whose colour bar marks the simplex-ETF value -1/(C-1)."""
    items = sorted(matrices.items() if isinstance(matrices, Mapping) else matrices,
                   key=lambda kv: kv[0])
    if not items:
        raise ValueError("matrices must hold at least one (k, matrix)")
    n = len(items)
    fig = Figure(figsize=(3.2 * n + 1.2, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    im = None
    c = 2
    for ax, (k, mat) in zip(axes, items, strict=True):
        m = np.asarray(mat, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrices[{k}] must be a square matrix; got shape {m.shape}")
        c = m.shape[0]
        im = ax.imshow(m, vmin=-1.0, vmax=1.0, cmap="cividis")
        ax.set_title(f"k = {k}")
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        if c <= 10:
            for i in range(c):
                for j in range(c):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < 0.3 else "black")
        ax.set_xlabel("class")
        ax.set_ylabel("class")
    assert im is not None
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.9)
    cbar.set_label("cosine of class means (dimensionless)")
    etf = -1.0 / (c - 1) if c > 1 else -1.0
    cbar.ax.axhline(etf, color="#D55E00", lw=2)
    cbar.set_ticks(sorted({-1.0, etf, 0.0, 1.0}))
    cbar.ax.set_yticklabels([f"{t:.2f}" + (" = -1/(C-1)" if t == etf else "")
                             for t in sorted({-1.0, etf, 0.0, 1.0})])
    fig.suptitle("Class-mean cosines (ETF: off-diagonal = -1/(C-1))")
    return fig


def spectra(curves: Mapping[str, Any] | Sequence[tuple[str, Any]], floor: float = 1e-12,
            ylabel: str = "log10(sigma_i / sigma_max)") -> Figure:
    """Singular-value spectra ``log10(sigma_i / sigma_max)``, one line per configuration
    (``{label: values}``, any order; sorted descending). Zeros are clipped to ``floor`` so a
    collapsed dimension shows as a drop to the bottom of the plot."""
    items = list(curves.items() if isinstance(curves, Mapping) else curves)
    if not items:
        raise ValueError("curves must hold at least one (label, spectrum)")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, (label, vals) in enumerate(items):
        s = np.sort(np.abs(np.asarray(vals, dtype=np.float64).ravel()))[::-1]
        if s.size == 0 or s[0] <= 0:
            continue
        ratio = np.log10(np.maximum(s / s[0], floor))
        ax.plot(np.arange(1, s.size + 1), ratio, marker="o", color=_colour(i), label=str(label))
    ax.set_xlabel("index i (sorted, 1 = largest)")
    ax.set_ylabel(ylabel + " (decades)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title("Spectra (collapsed dimensions drop to the floor)")
    return fig


def epoch_metrics(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    metrics: Sequence[str] = ("nc1", "etf_distance", "effective_rank"),
) -> Figure:
    """NC metrics and effective rank over epochs: one panel per metric, one line per run
    (``{label: [epoch metrics dicts]}``)."""
    if not histories:
        raise ValueError("histories must hold at least one run")
    fig = Figure(figsize=(4 * len(metrics), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    units = {"effective_rank": "dimensions", "nc1": "dimensionless",
             "etf_distance": "dimensionless"}
    for ax, m in zip(axes, metrics, strict=True):
        for i, (label, hist) in enumerate(histories.items()):
            pts = [(e.get("epoch"), _num(e.get(m))) for e in hist]
            pts2 = [(int(x), y) for x, y in pts if isinstance(x, int) and y is not None]
            if pts2:
                ax.plot([p[0] for p in pts2], [p[1] for p in pts2], marker=".",
                        color=_colour(i), label=str(label))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{m} ({units.get(m, 'value')})")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle("Neural-collapse metrics and effective rank over training")
    return fig


def study_violations(rows: Sequence[Mapping[str, Any]], metric: str
                     ) -> list[tuple[str, int, int]]:
    """(prior, k_from, k_to) where ``metric`` increases between consecutive k of a prior."""
    by_prior: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        v = _num(r.get(metric))
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
    fig = Figure(figsize=(5 * len(metrics), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    priors = sorted({str(r.get("prior")) for r in rows})
    for ax, m in zip(axes, metrics, strict=True):
        series: dict[str, dict[int, float]] = {}
        for r in rows:
            v = _num(r.get(m))
            if v is not None and isinstance(r.get("k"), int):
                series.setdefault(str(r.get("prior")), {})[int(r["k"])] = v
        for i, p in enumerate(priors):
            pts = sorted(series.get(p, {}).items())
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", color=_colour(i),
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
        _log2_k_axis(ax)
        ax.set_ylabel(f"{m} at the optimum (nats)")
        ax.set_title(f"{m}: {len(viol)} violation(s)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Downstream loss of the contrastive optimum vs k, per class prior")
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 110) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.svg`` (any suffix of ``path`` is replaced);
    returns the two paths."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix in (".png", ".svg"):
        target = p.with_suffix(suffix)
        fig.savefig(target, dpi=dpi)
        out.append(target)
    return out


def _open_store(out_dir: str | Path) -> Any:
    from contrastlab.experiments.store import DB_NAME, ResultStore, StoreError

    d = Path(out_dir)
    if not d.is_dir() or not (d / DB_NAME).is_file():
        raise ValueError(f"out_dir {str(d)!r} is not a results directory (no {DB_NAME}); "
                         "run a config or sweep there first")
    try:
        return ResultStore(d, create=False)
    except StoreError as exc:
        raise ValueError(f"out_dir {str(d)!r} is not a usable results directory: {exc}") from None


def _run_label(run: Mapping[str, Any]) -> str:
    cfg = run.get("config") or {}
    loss = cfg.get("loss") or {}
    return (f"{loss.get('name')}/{loss.get('normalize')} k={loss.get('k')} "
            f"seed={cfg.get('seed')}")


def _measured_bounds(records: Sequence[Mapping[str, Any]], c: int | None
                     ) -> list[dict[str, Any]] | None:
    """Bao's bounds at the mean measured held-out loss per k, only where that loss is Bao's
    R_cont: one loss, the sum-form InfoNCE with negatives from the marginal (``nce`` with score
    ``infonce`` and the uniform sampler, or ``ucl`` summed over its negatives), unit-sphere
    features, temperature 1 (so b = 1)."""
    if c is None or c < 2:
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
        v = _num(r.get("heldout_loss"))
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


def figures_from_store(out_dir: str | Path) -> dict[str, Figure]:
    """Every figure the runs of ``out_dir`` support: ``downstream_vs_k``,
    ``contrastive_loss_vs_k``, ``cosine_heatmaps``, ``spectra``, ``class_mean_spectra``,
    ``epoch_metrics``. Figures without data (e.g. no finished run) are left out.
    Raises ValueError (naming ``out_dir``) if it is not a results directory."""
    from contrastlab.experiments.results import load_records

    store = _open_store(out_dir)
    try:
        runs = store.runs()
        done = [r for r in runs if r["status"] == "done"]
        reports = {r["run_id"]: store.reports(r["run_id"]) for r in done}
        histories = {_run_label(r): store.epochs(r["run_id"]) for r in done}
    finally:
        store.close()
    figs: dict[str, Figure] = {}
    records = [r for r in load_records(out_dir) if r.get("status") == "done"]
    if not records:
        return figs
    classes = {r.get("data.options.classes") for r in records}
    c = classes.pop() if len(classes) == 1 else None
    c = c if isinstance(c, int) else None
    if any(_num(r.get("mc_acc")) is not None for r in records):
        figs["downstream_vs_k"] = downstream_vs_k(records, num_classes=c,
                                                  bounds=_measured_bounds(records, c))
    if any(_num(r.get("heldout_loss")) is not None for r in records):
        figs["contrastive_loss_vs_k"] = contrastive_loss_vs_k(records)
    # one heatmap per k: the first finished run (lowest seed) with that k
    mats: dict[int, Any] = {}
    cov: dict[str, Any] = {}
    means: dict[str, Any] = {}
    for r in sorted(done, key=lambda r: (str(r["config"].get("seed")), r["run_id"])):
        geo = reports[r["run_id"]].get("geometry") or {}
        k = (r["config"].get("loss") or {}).get("k")
        if isinstance(k, int) and geo.get("cosine") is not None and k not in mats:
            mats[k] = geo["cosine"]
        if geo.get("covariance_spectrum"):
            cov[_run_label(r)] = geo["covariance_spectrum"]
        if geo.get("class_mean_spectrum"):
            means[_run_label(r)] = geo["class_mean_spectrum"]
    if mats:
        figs["cosine_heatmaps"] = cosine_heatmaps(mats)
    if cov:
        figs["spectra"] = spectra(cov, ylabel="embedding covariance: log10(sigma_i/sigma_max)")
    if means:
        figs["class_mean_spectra"] = spectra(
            means, ylabel="class-mean covariance: log10(sigma_i/sigma_max)")
    hist = {k: v for k, v in histories.items() if v}
    if hist:
        figs["epoch_metrics"] = epoch_metrics(hist)
    return figs

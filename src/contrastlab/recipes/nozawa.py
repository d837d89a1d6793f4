"""Recipe for Nozawa & Sato, "Understanding negative samples in instance discriminative
self-supervised representation learning" (NeurIPS 2021).

``nozawa_k_sweep`` trains a SimCLR-style encoder (augmented views, InfoNCE over the batch) for
each minibatch size K + 1 (their K negatives are the other samples of the batch), optionally with
the learning rate scaled as ``base_lr x B / 256`` (their ``lr_utils.py``), and measures at the
end, on held-out data: the mean-classifier (mu) accuracy, the single-view InfoNCE loss L_Info
at K + 1, and their lower bound on it and the CURL variant
(:mod:`contrastlab.evaluation.nozawa_sato`, through ``eval.final_nozawa_sato``).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastlab.recipes import runners
from contrastlab.recipes.params import check_keys, take
from contrastlab.recipes.published import attach_published, published_rows
from contrastlab.recipes.runners import Outcome, RunContext, register_runner
from contrastlab.recipes.stats import accuracy_trend_metrics, paired_trend

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["nozawa_k_sweep", "nozawa_published_comparison"]

_KEY = "train.batch_size"
_SCALINGS = ("linear", "none")


@register_runner("nozawa_k_sweep")
def nozawa_k_sweep(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``config`` (``data.pairs: augment``), ``batch_sizes`` (the K + 1), ``seeds``,
    ``lr_scaling`` (``linear``: ``optim.lr`` is the base rate for a batch of 256 and each run
    uses ``lr x B / 256``; ``none``: the same rate at every B), ``set`` (dotted overrides) and
    optionally ``published`` (``{mu_accuracy: {K + 1: fraction}}``: Nozawa & Sato's table).

    Metrics (means over seeds per K + 1): ``min_accuracy_gain`` / ``..._lower`` (mu accuracy at
    the largest K + 1 minus at the smallest, and its one-sided 95 % lower bound over paired
    seeds), ``min_accuracy_step_upper`` (the smallest one-sided 95 % upper bound of the change
    between consecutive sizes: < 0 is a significant fall), ``max_bound_excess`` (the largest,
    over runs, of the larger of the two lower bounds minus the measured L_Info: <= 0 when both
    bounds hold), ``min_info_loss_step`` (the smallest rise of the mean L_Info from one size to
    the next), ``min_accuracy_over_chance``, ``unconverged_runs``; with ``published``, those of
    :func:`nozawa_published_comparison`. Table ``k_curve``: per K + 1, the mean and standard
    deviation of every term of the bound and of the accuracy."""
    check_keys("params", params, ("config", "batch_sizes", "seeds", "lr_scaling", "set",
                                  "published"))
    base = take(params, "config", None, dict)
    sizes = sorted(int(b) for b in take(params, "batch_sizes", [32, 128, 512], list))
    seeds = take(params, "seeds", [0], list)
    scaling = take(params, "lr_scaling", "linear", str)
    overrides = dict(take(params, "set", {}, dict))
    published = take(params, "published", None, (dict, type(None)))
    if scaling not in _SCALINGS:
        raise ValueError(f"params.lr_scaling must be one of {', '.join(_SCALINGS)}; got "
                         f"{scaling!r}")
    if len(sizes) < 2:
        raise ValueError(f"params.batch_sizes must hold at least two sizes; got {sizes}")
    lr = float(overrides.pop("optim.lr", (base.get("optim") or {}).get("lr", 1e-3)))
    overrides["eval.final_nozawa_sato"] = True
    recs: list[dict[str, Any]] = []
    for b in sizes:  # one sweep per size: the rate is tied to it, which a product grid cannot do
        rate = lr * b / 256 if scaling == "linear" else lr
        recs += runners.sweep_records(base, {"seed": seeds}, ctx.out_dir / "runs", ctx,
                                      {**overrides, _KEY: b, "optim.lr": rate})
    if not recs:
        return Outcome({}, notes=["no run finished"])
    rows = [_row(r) for r in recs]
    curve = _k_curve(rows)
    trends = paired_trend(rows, "mu_accuracy", key=_KEY)
    metrics = accuracy_trend_metrics(trends, key=_KEY)
    c = rows[0]["C"]
    info = [r["info_loss"] for r in curve]
    metrics.update({
        "max_bound_excess": max(max(r["lower_bound"], r["curl_lower_bound"]) - r["info_loss"]
                                for r in rows),
        "min_info_loss_step": min(b - a for a, b in itertools.pairwise(info)),
        "min_accuracy_over_chance": min(r["mu_accuracy"] for r in curve) - 1.0 / c,
        "unconverged_runs": float(sum(1 for r in rows if not r["converged"])),
        "runs": float(len(rows)),
    })
    notes = [f"K+1={r[_KEY]}: mu accuracy {r['mu_accuracy']:.4f} (sd {r['mu_accuracy_sd']:.4f}),"
             f" L_Info {r['info_loss']:.3f}, lower bound {r['lower_bound']:.3f} (CURL "
             f"{r['curl_lower_bound']:.3f}), Col {r['collision']:.3f}, d(f) {r['d']:.3f}, "
             f"upsilon {r['upsilon']:.3f} over {r['seeds']} seeds" for r in curve]
    notes += runners.unconverged_note([f"K+1={r[_KEY]} seed {r['seed']}" for r in rows
                                       if not r["converged"]])
    tables: dict[str, Any] = {"runs": rows, "k_curve": curve, "accuracy_trend": trends}
    if published is not None:
        attach_published(*nozawa_published_comparison(curve, published), "batch_size",
                         lambda b: f"K+1={b}", metrics, tables, notes)
    return Outcome(metrics, tables, _figures(curve), notes)


def nozawa_published_comparison(curve: list[dict[str, Any]], published: dict[str, Any]
                                 ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The measured mu accuracy (mean over seeds, from the ``k_curve`` rows) against the
    paper's, ``published = {mu_accuracy: {K + 1: fraction}}`` (Nozawa & Sato's CIFAR-10 table:
    72.75 % at K + 1 = 32 to 80.12 % at 512).

    Metrics: ``published_max_abs_gap`` (the largest |measured - published|; a size not measured
    counts as an infinite gap), ``published_gain`` (measured accuracy at the largest published
    size minus at the smallest) and ``published_gain_paper``. Table rows: batch_size, published,
    measured, its standard deviation over seeds, the gap."""
    check_keys("params.published", published, ("mu_accuracy",))
    paper = {int(b): float(a) for b, a in dict(published.get("mu_accuracy") or {}).items()}
    if len(paper) < 2:
        raise ValueError("params.published.mu_accuracy must map at least two sizes K + 1 to an "
                         f"accuracy; got {published.get('mu_accuracy')!r}")
    table, gap = published_rows(paper, {int(r[_KEY]): (r["mu_accuracy"], r["mu_accuracy_sd"])
                                        for r in curve}, "batch_size")
    lo, hi = min(paper), max(paper)
    at = {r["batch_size"]: r["measured"] for r in table}
    return {"published_max_abs_gap": gap, "published_gain": at[hi] - at[lo],
            "published_gain_paper": paper[hi] - paper[lo]}, table


_TERMS = ("mu_accuracy", "info_loss", "lower_bound", "curl_lower_bound", "collision", "d",
          "upsilon", "sup_loss", "sub_loss")


def _row(r: dict[str, Any]) -> dict[str, Any]:
    """The tidy row of one finished run."""
    ns = r["reports"]["nozawa_sato"]
    return {_KEY: int(r[_KEY]), "seed": r["seed"],
            "C": int(r["reports"]["geometry"]["num_classes"]),
            **{t: float(ns[t]) for t in _TERMS}, "mc_acc": float(r["mc_acc"]),
            "converged": r.get("converged") == 1.0}


def _k_curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    curve = []
    for b in sorted({r[_KEY] for r in rows}):
        sel = [r for r in rows if r[_KEY] == b]
        row: dict[str, Any] = {_KEY: b, "seeds": len(sel)}
        for t in _TERMS:
            v = np.asarray([r[t] for r in sel], dtype=np.float64)
            row[t] = float(v.mean())
            row[t + "_sd"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
        curve.append(row)
    return curve


def _figures(curve: list[dict[str, Any]]) -> dict[str, Figure]:
    from contrastlab.report.recipe_figures import nozawa_k_curves

    return {"loss_and_bounds_vs_k": nozawa_k_curves(curve, _KEY)}

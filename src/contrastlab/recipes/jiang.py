"""Recipe for Jiang, Nguyen, Ishwar & Aeron, "Hard-negative sampling for contrastive learning:
optimal representation geometry and neural- vs dimensional-collapse" (TMLR 2023).

``jiang_nc_vs_dc`` trains HSCL and HUCL for every hardness beta and feature normalization with
Adam from a random initialization and d = C - 1, and measures where training ends: neural
collapse (class means at the simplex ETF, NC1 near 0) or dimensional collapse (a decaying
spectrum of the embedding covariance).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastlab.recipes import runners
from contrastlab.recipes.params import check_keys, take
from contrastlab.recipes.published import attach_published, published_rows
from contrastlab.recipes.runners import Outcome, RunContext, register_runner
from contrastlab.recipes.stats import paired_bounds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["jiang_nc_vs_dc", "published_comparison"]

_NORMALIZED = ("sphere", "ball")


def _spectrum_ratio(spectrum: Any, rank: int) -> float:
    s = np.sort(np.abs(np.asarray(spectrum, dtype=np.float64)))[::-1][:rank]
    return float(s[-1] / s[0]) if s.size and s[0] > 0 else 0.0


@register_runner("jiang_nc_vs_dc")
def jiang_nc_vs_dc(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``config`` (the experiment config; ``model.out_dim`` should be C - 1),
    ``losses`` (pairs ``[soft, hard]`` such as ``[scl, hscl]``: beta = 0 is run as the soft
    loss, which is the hard loss at beta = 0), ``betas``, ``normalizations``, ``seeds``,
    ``set``, and optionally ``published`` (the paper's numbers, for the ``gpu`` profile:
    ``{loss, normalize, accuracy: {beta: top-1 fraction}}``).

    Per run: ETF distance and NC1 of the final embeddings, the effective rank and the ratio
    sigma_min / sigma_max of the embedding covariance over its top C - 1 directions. Metrics
    (means over seeds; ``b*`` is, per hard loss and normalization, the beta >= 2 with the
    smallest mean ETF distance):

    - ``hard_normalized_max_etf_distance`` / ``..._max_nc1``: the worst, over hard losses and
      normalizations, of the ETF distance / NC1 at ``b*`` (every loss and every normalization
      must reach NC with some beta);
    - ``unnormalized_max_spectrum_ratio``: the largest sigma_min / sigma_max over the runs
      without normalization (every one must be collapsed);
    - ``soft_normalized_max_spectrum_ratio``: the same over the normalized runs at beta = 0
      (Jiang et al.: without hard negatives, dimensional collapse too);
    - ``min_hard_advantage`` and ``min_hard_advantage_lower``: over (loss, normalization), the
      paired (same seed) ETF distance at beta = 0 minus at ``b*``, its mean and its one-sided
      95 % lower bound over seeds (> 0: hard negatives end closer to NC than none; one seed has
      no bound);
    - ``min_accuracy_over_chance``: the worst mean-classifier accuracy minus 1/C of the
      normalized hard runs (a sanity check: NC geometry with chance accuracy is impossible);
    - ``unconverged_runs``: runs whose held-out loss still fell by more than 1 % over their last
      20 % of epochs (:mod:`contrastlab.convergence`).

    Table ``beta_curve``: per (loss, normalization, beta), the mean and standard deviation over
    seeds of the ETF distance, NC1, effective rank, spectrum ratio and accuracy. With
    ``published``, the metrics of :func:`published_comparison` and its table ``published``.
    """
    check_keys("params", params, ("config", "losses", "betas", "normalizations", "seeds",
                                  "set", "published"))
    published = take(params, "published", None, (dict, type(None)))
    base = take(params, "config", None, dict)
    pairs = take(params, "losses", [["scl", "hscl"], ["ucl", "hucl"]], list)
    betas = [float(b) for b in take(params, "betas", [0, 2, 5, 10], list)]
    norms = take(params, "normalizations", ["sphere", "ball", "none"], list)
    seeds = take(params, "seeds", [0], list)
    overrides = take(params, "set", {}, dict)
    hard_betas = [b for b in betas if b > 0] or [0.0]
    names = [n for pair in pairs for n in pair]
    # one grid: the soft losses resolve beta to 0, so each runs once per normalization
    recs = runners.sweep_records(base, {"loss.name": names, "loss.beta": hard_betas,
                                        "loss.normalize": norms, "seed": seeds},
                                 ctx.out_dir / "runs", ctx, overrides)
    if not recs:
        return Outcome({}, notes=["no run finished"])
    family = {soft: hard for soft, hard in pairs}
    rows = [_nc_vs_dc_row(r, family) for r in recs]
    c = rows[0]["C"]
    best, notes = _hard_beta_summary(rows, family, norms, betas)
    metrics = _nc_vs_dc_metrics(rows, best, c)
    notes += runners.unconverged_note([f"{x['loss']} beta={x['beta']:g} {x['normalize']} "
                                       f"seed {x['seed']}" for x in rows if not x["converged"]])
    curve = _beta_curve(rows, notes)
    tables: dict[str, Any] = {"runs": rows, "beta_curve": curve}
    if published is not None:
        attach_published(*published_comparison(curve, published), "beta",
                         lambda b: f"beta={b:g}", metrics, tables, notes)
    return Outcome(metrics, tables,
                   _nc_vs_dc_figures(rows, recs, seeds[0], c), notes)


def published_comparison(curve: list[dict[str, Any]], published: dict[str, Any]
                         ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The measured mean-classifier accuracy (mean over seeds, from the ``beta_curve`` rows)
    against the paper's, for ``published = {loss, normalize, accuracy: {beta: fraction}}``
    (Jiang et al. 2023's CIFAR-100 numbers: SCL 10.38 %, HSCL beta = 5 58.39 %).

    Metrics: ``published_max_abs_gap`` (the largest |measured - published| over the published
    betas; a beta that was not measured counts as an infinite gap), ``published_hard_gain``
    (measured accuracy at the published best beta > 0 minus at beta = 0: the size of the effect
    the paper reports, 48 points) and ``published_hard_gain_paper``. Table rows: beta,
    published, measured, its standard deviation over seeds and the gap."""
    check_keys("params.published", published, ("loss", "normalize", "accuracy"))
    loss, norm = str(published.get("loss")), str(published.get("normalize"))
    paper = {float(b): float(a) for b, a in dict(published.get("accuracy") or {}).items()}
    if 0.0 not in paper or len(paper) < 2:
        raise ValueError("params.published.accuracy must map beta = 0 and at least one beta > 0 "
                         f"to an accuracy; got {published.get('accuracy')!r}")
    table, gap = published_rows(paper, {r["beta"]: (r["mc_acc"], r["mc_acc_sd"]) for r in curve
                                        if r["loss"] == loss and r["normalize"] == norm}, "beta")
    best = max((b for b in paper if b > 0), key=lambda b: paper[b])
    at = {r["beta"]: r["measured"] for r in table}
    return {"published_max_abs_gap": gap,
            "published_hard_gain": at[best] - at[0.0],
            "published_hard_gain_paper": paper[best] - paper[0.0]}, table


def _mean(sel: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([x[key] for x in sel])) if sel else math.nan


def _nc_vs_dc_row(r: dict[str, Any], family: dict[str, str]) -> dict[str, Any]:
    """The tidy row of one finished run; a soft loss is named by its hard loss (beta = 0)."""
    geo = r["reports"]["geometry"]
    c = int(geo["num_classes"])
    name = str(r["loss.name"])
    return {
        "loss": family.get(name, name), "beta": float(r.get("loss.beta") or 0.0),
        "normalize": r["loss.normalize"], "seed": r["seed"],
        "etf_distance": float(geo["etf_distance"]), "nc1": float(geo["nc1"]),
        "effective_rank": float(geo["effective_rank"]),
        "spectrum_ratio": _spectrum_ratio(geo["covariance_spectrum"], c - 1),
        "class_mean_spectrum_ratio": _spectrum_ratio(geo["class_mean_spectrum"], c - 1),
        "mc_acc": float(r["mc_acc"]), "C": c, "converged": r.get("converged") == 1.0,
    }


def _hard_beta_summary(rows: list[dict[str, Any]], family: dict[str, str], norms: list[Any],
                       betas: list[float]) -> tuple[dict[str, list[float]], list[str]]:
    """Per hard loss and normalization, at ``b*`` (the beta >= 2 with the smallest mean ETF
    distance): the ETF distance and NC1, and the paired advantage over beta = 0 (mean and
    one-sided 95 % lower bound over the common seeds), with a note for each advantage."""
    best: dict[str, list[float]] = {"etf": [], "nc1": [], "advantage": [], "lower": []}
    notes = []
    for hard in family.values():
        for n in (x for x in norms if x in _NORMALIZED):
            per_beta = {b: [x for x in rows if x["loss"] == hard and x["normalize"] == n
                            and x["beta"] == b] for b in betas}
            hard_b = [b for b in betas if b >= 2 and per_beta[b]]
            if not hard_b:
                continue
            b_star = min(hard_b, key=lambda b: _mean(per_beta[b], "etf_distance"))
            best["etf"].append(_mean(per_beta[b_star], "etf_distance"))
            best["nc1"].append(_mean(per_beta[b_star], "nc1"))
            if per_beta.get(0.0):
                soft = {x["seed"]: x["etf_distance"] for x in per_beta[0.0]}
                hard_at = {x["seed"]: x["etf_distance"] for x in per_beta[b_star]}
                common = sorted(set(soft) & set(hard_at))
                if common:
                    # paired over seeds: ETF(beta = 0) - ETF(b*) = -(ETF(b*) - ETF(0))
                    b = paired_bounds([hard_at[s] for s in common], [soft[s] for s in common])
                    best["advantage"].append(b["mean"])
                    best["lower"].append(b["lower"])
                    notes.append(f"{hard} {n}: ETF distance at beta = 0 minus at beta = {b_star:g}"
                                 f" {b['mean']:+.4f} (one-sided 95 % lower bound "
                                 f"{b['lower']:+.4f}, {len(common)} seeds)")
    return best, notes


def _nc_vs_dc_metrics(rows: list[dict[str, Any]], best: dict[str, list[float]], c: int
                      ) -> dict[str, float]:
    none = [x for x in rows if x["normalize"] == "none"]
    soft_norm = [x for x in rows if x["normalize"] in _NORMALIZED and x["beta"] == 0]
    hard_norm = [x for x in rows if x["normalize"] in _NORMALIZED and x["beta"] >= 2]
    return {
        "hard_normalized_max_etf_distance": max(best["etf"], default=math.nan),
        "hard_normalized_max_nc1": max(best["nc1"], default=math.nan),
        "unnormalized_max_spectrum_ratio": max((x["spectrum_ratio"] for x in none),
                                               default=math.nan),
        "unnormalized_max_effective_rank": max((x["effective_rank"] for x in none),
                                               default=math.nan),
        "soft_normalized_max_spectrum_ratio": max((x["spectrum_ratio"] for x in soft_norm),
                                                  default=math.nan),
        "min_hard_advantage": min(best["advantage"], default=math.nan),
        "min_hard_advantage_lower": min(best["lower"], default=math.nan),
        "min_accuracy_over_chance": min((x["mc_acc"] for x in hard_norm), default=math.nan)
        - 1.0 / c,
        "unconverged_runs": float(sum(1 for x in rows if not x["converged"])),
        "runs": float(len(rows)),
    }


def _beta_curve(rows: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """The table ``beta_curve`` (mean and standard deviation over seeds per (loss,
    normalization, beta)); a note per row is appended to ``notes``."""
    curve = []
    for key in sorted({(x["loss"], x["normalize"], x["beta"]) for x in rows}):
        sel = [x for x in rows if (x["loss"], x["normalize"], x["beta"]) == key]
        row: dict[str, Any] = {"loss": key[0], "normalize": key[1], "beta": key[2],
                               "seeds": len(sel)}
        for m in ("etf_distance", "nc1", "effective_rank", "spectrum_ratio", "mc_acc"):
            v = np.asarray([x[m] for x in sel], dtype=np.float64)
            row[m] = float(v.mean())
            row[m + "_sd"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
        curve.append(row)
        notes.append(f"{key[0]} {key[1]} beta={key[2]:g}: ETF distance {row['etf_distance']:.3f}"
                     f" (sd {row['etf_distance_sd']:.3f}), NC1 {row['nc1']:.3g}, "
                     f"sigma_min/sigma_max {row['spectrum_ratio']:.2g}, accuracy "
                     f"{row['mc_acc']:.3f} over {len(sel)} seeds")
    return curve


def _nc_vs_dc_figures(rows: list[dict[str, Any]], recs: list[dict[str, Any]], seed0: Any,
                      c: int) -> dict[str, Figure]:
    from contrastlab.report.figures import epoch_metrics, spectra
    from contrastlab.report.recipe_figures import nc_vs_dc_grid

    spectra_by = {f"{r['loss.name']} b={r.get('loss.beta') or 0:g} {r['loss.normalize']}":
                  r["reports"]["geometry"]["covariance_spectrum"]
                  for r in recs if r["seed"] == seed0}
    hist = {f"{r['loss.name']} b={r.get('loss.beta') or 0:g} {r['loss.normalize']}": r["epochs"]
            for r in recs if r["seed"] == seed0 and r["loss.normalize"] != "ball"}
    return {
        "etf_distance_vs_beta": nc_vs_dc_grid(rows, "etf_distance", "ETF distance (dimensionless)",
                                              title="Distance to the simplex ETF at the end"),
        "effective_rank_vs_beta": nc_vs_dc_grid(
            rows, "effective_rank", f"effective rank (dimensions, of {c - 1})",
            title="Effective rank of the embedding covariance"),
        "spectra": spectra(spectra_by, ylabel="embedding covariance: log10(sigma_i/sigma_max)"),
        "epoch_metrics": epoch_metrics(hist, ("nc1", "etf_distance", "effective_rank")),
    }

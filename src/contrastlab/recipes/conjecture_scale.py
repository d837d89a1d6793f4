"""Awasthi, Dikkala & Kamath (ICML 2022), their conjecture for unbalanced classes, at
scale: ``awasthi_conjecture_scale``.

For a non-uniform class prior the exact population optimum is no longer the simplex ETF, and
Awasthi et al. conjecture that its downstream classification loss is still non-increasing in k.
This runner asks it over a grid of numbers of classes C, temperatures t, members of the loss
family (logistic, InfoNCE, hinge) and a seeded family of at least 200 priors (Dirichlet draws at
several concentrations, Zipf laws at several exponents, two-level laws, the balanced prior), for
k = 1, 2, 4, ...: one :func:`contrastlab.theory.study.monotonicity_study` per (C, t, loss), which
solves every (prior, k), evaluates both downstream losses (R_mu-supv, the mean classifier's
cross-entropy, and L_sup) at ``downstream_temperature(loss, t)``, and re-solves every apparent
rise with more restarts before it counts as a violation.

Every optimum of the smooth losses (logistic, InfoNCE) carries the duality-gap certificate of
:mod:`contrastlab.theory.certify`; the hinge loss is not smooth, its optima have no certificate
and are reported as uncertified. The logistic loss has no temperature (it equals InfoNCE at
t = 1), so it is solved once per C and recorded at t = 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from contrastlab.recipes.params import check_keys, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

__all__ = ["FAMILY_DEFAULTS", "TABLE_COLUMNS", "awasthi_conjecture_scale", "conjecture_metrics",
           "conjecture_priors", "largest_rise_figure", "largest_rises", "solve_grid"]

#: the default prior family: >= 200 priors for every C >= 3
FAMILY_DEFAULTS: dict[str, Any] = {
    "dirichlet": [0.3, 1.0, 3.0, 10.0], "per_alpha": 48,
    "zipf": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0],
    "two_level": [2.0, 4.0, 10.0, 30.0], "balanced": True,
}
#: the columns of the ``optima`` table: one row per (C, t, loss, prior, k)
TABLE_COLUMNS = ("C", "temperature", "loss", "prior", "k", "contrastive_loss",
                 "mean_classifier_loss", "supervised_loss", "mean_classifier_accuracy",
                 "duality_gap", "certified", "grad_norm", "downstream_temperature")
DOWNSTREAM = ("mean_classifier_loss", "supervised_loss")
SMOOTH = ("logistic", "infonce")


def conjecture_priors(num_classes: int, family: Mapping[str, Any] | None = None,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """The seeded prior family, keyed by its :func:`contrastlab.data.latent.parse_prior` spec
    (so that every prior of a report can be rebuilt from its name): ``per_alpha`` Dirichlet
    draws at each concentration of ``dirichlet`` (seeds ``seed``, ``seed + 1``, ...), the Zipf
    laws of the exponents ``zipf``, the two-level laws with 1, C // 2 and C - 1 heavy classes at
    each ratio of ``two_level``, and the balanced prior."""
    from contrastlab.data.latent import parse_prior

    fam = {**FAMILY_DEFAULTS, **(family or {})}
    check_keys("params.family", fam, tuple(FAMILY_DEFAULTS))
    c = int(num_classes)
    specs = ["balanced"] if fam["balanced"] else []
    specs += [f"dirichlet:{a:g}:{seed + i}" for a in fam["dirichlet"]
              for i in range(int(fam["per_alpha"]))]
    specs += [f"zipf:{s:g}" for s in fam["zipf"]]
    heavy = sorted({h for h in (1, c // 2, c - 1) if 1 <= h < c})
    specs += [f"two-level:{h}:{r:g}" for h in heavy for r in fam["two_level"]]
    return {s: parse_prior(s, c) for s in specs}


def _grid(classes: Sequence[int], temperatures: Sequence[float], losses: Sequence[str]
          ) -> list[tuple[int, float, str]]:
    """The (C, t, loss) studies; the temperature-free logistic loss once per C, at t = 1."""
    out: list[tuple[int, float, str]] = []
    for c, loss in itertools.product(classes, losses):
        ts = [1.0] if loss == "logistic" else list(temperatures)
        out += [(int(c), float(t), str(loss)) for t in ts]
    return out


def _row(c: int, t: float, loss: str, r: Mapping[str, Any], t_down: float) -> dict[str, Any]:
    from contrastlab.theory.certify import CERTIFY_TOL

    gap = r.get("duality_gap")
    return {
        "C": c, "temperature": t, "loss": loss, "prior": r["prior"], "k": int(r["k"]),
        "contrastive_loss": float(r["contrastive_loss"]),
        "mean_classifier_loss": float(r.get("mean_classifier_loss", math.nan)),
        "supervised_loss": float(r.get("supervised_loss", math.nan)),
        "mean_classifier_accuracy": float(r["mean_classifier_accuracy"]),
        "duality_gap": None if gap is None else float(gap),
        "certified": gap is not None and float(gap) <= CERTIFY_TOL,
        "grad_norm": float(r["grad_norm"]), "downstream_temperature": t_down,
    }


def solve_grid(classes: Sequence[int], temperatures: Sequence[float], losses: Sequence[str],
               ks: Sequence[int], family: Mapping[str, Any] | None, study: Mapping[str, Any],
               log: Any = None, progress: bool | None = False
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """``(rows, violations, seconds per study)``: one :func:`~contrastlab.theory.study.
    monotonicity_study` per (C, t, loss) over the prior family of C; ``study`` holds its
    ``restarts``, ``recheck_restarts``, ``tol``, ``seed``, ``max_iter``. ``progress``: each
    study's bar over its optima (None: at a terminal)."""
    import time

    from contrastlab.theory.study import monotonicity_study

    rows: list[dict[str, Any]] = []
    viols: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for c, t, loss in _grid(classes, temperatures, losses):
        priors = conjecture_priors(c, family, int(study.get("seed", 0)))
        if log is not None:
            log(f"awasthi-conjecture-scale: C={c} t={t:g} {loss}: {len(priors)} priors x "
                f"{len(ks)} k")
        t0 = time.perf_counter()
        res = monotonicity_study(num_classes=c, priors=priors, ks=ks, loss=loss, temperature=t,
                                 progress=progress, **study)
        seconds[f"C={c} t={t:g} {loss}"] = time.perf_counter() - t0
        t_down = float(res.config["downstream_temperature"])
        rows += [_row(c, t, loss, r, t_down) for r in res.rows]
        viols += [{"C": c, "temperature": t, "loss": loss, **vars(v), "size": v.size}
                  for v in res.violations]
    return rows, viols, seconds


def largest_rises(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per (C, t, loss, prior): the largest change of ``metric`` from one k to the next (> 0 a
    rise, <= 0 a non-increasing path) and where it happens."""
    paths: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    for r in rows:
        key = (r["C"], r["temperature"], r["loss"], r["prior"])
        paths.setdefault(key, []).append((int(r["k"]), float(r[metric])))
    out = []
    for (c, t, loss, prior), pts in paths.items():
        steps = [(b[1] - a[1], a[0], b[0]) for a, b in itertools.pairwise(sorted(pts))]
        rise, k0, k1 = max(steps) if steps else (math.nan, 0, 0)
        out.append({"C": c, "temperature": t, "loss": loss, "prior": prior, "metric": metric,
                    "largest_rise": rise, "k_from": k0, "k_to": k1})
    return out


def conjecture_metrics(rows: Sequence[Mapping[str, Any]], violations: Sequence[Mapping[str, Any]],
                       priors_per_c: Mapping[int, int]) -> dict[str, float]:
    """The metrics the recipe's checks read (module docstring): confirmed violations per
    downstream loss, certification of the smooth losses' optima, the family's size."""
    smooth = [r for r in rows if r["loss"] in SMOOTH]
    gaps = [r["duality_gap"] for r in smooth if r["duality_gap"] is not None]
    return {
        "downstream_violations": float(len(violations)),
        **{f"{m}_violations": float(sum(v["metric"] == m for v in violations))
           for m in DOWNSTREAM},
        "largest_confirmed_rise": max((float(v["size"]) for v in violations), default=0.0),
        "priors_with_violation": float(len({(v["C"], v["temperature"], v["loss"], v["prior"])
                                            for v in violations})),
        "uncertified_smooth_optima": float(sum(not r["certified"] for r in smooth)),
        "max_smooth_duality_gap": max(gaps, default=math.nan) if len(gaps) == len(smooth)
        else math.inf,
        "uncertified_hinge_optima": float(sum(r["loss"] == "hinge" for r in rows)),
        "min_priors_per_C": float(min(priors_per_c.values(), default=0)),
        "min_mean_classifier_accuracy": min((r["mean_classifier_accuracy"] for r in rows),
                                            default=math.nan),
        "optima": float(len(rows)),
    }


def largest_rise_figure(rises: Sequence[Mapping[str, Any]], tol: float) -> Figure:
    """The largest rise of each downstream loss from one k to the next, one point per prior,
    per C (x) and (loss, t) series; symmetric-log y axis; a rise above ``tol`` (a confirmed
    violation: the rows are the re-checked optima) is ringed in red."""
    from contrastlab.report.figures import colour, legend_outside, panel_figure

    fig, axes = panel_figure(len(DOWNSTREAM), 5.0, 4.0, 2.6)
    cs = sorted({int(r["C"]) for r in rises})
    series = sorted({(str(r["loss"]), float(r["temperature"])) for r in rises})
    width = 0.8 / max(1, len(series))
    for ax, metric in zip(axes, DOWNSTREAM, strict=True):
        for j, (loss, t) in enumerate(series):
            pts = [r for r in rises if r["metric"] == metric and r["loss"] == loss
                   and float(r["temperature"]) == t and math.isfinite(float(r["largest_rise"]))]
            off = -0.4 + width * (j + 0.5)
            xs = [cs.index(int(r["C"])) + off for r in pts]
            ys = [float(r["largest_rise"]) for r in pts]
            ax.scatter(xs, ys, s=9, alpha=0.6, color=colour(j), label=f"{loss}, t={t:g}")
            bad = [(x, y) for x, y in zip(xs, ys, strict=True) if y > tol]
            if bad:
                ax.scatter([x for x, _ in bad], [y for _, y in bad], s=70, facecolors="none",
                           edgecolors="#D55E00", linewidths=1.5, label="confirmed rise")
        ax.axhline(tol, color="#D55E00", ls="--", lw=1, label=f"tolerance {tol:g}")
        ax.set_yscale("symlog", linthresh=tol)
        ax.set_xticks(range(len(cs)), [f"C={c}" for c in cs])
        ax.set_xlim(-0.6, len(cs) - 0.4)
        ax.set_ylabel(f"largest rise of {metric} (nats)")
        ax.set_title(f"{metric} between consecutive k", fontsize=10)
        ax.grid(alpha=0.3)
    legend_outside(fig)
    fig.suptitle("Does the optimum's downstream loss rise with k? (one point per prior)")
    return fig


def _notes(violations: Sequence[Mapping[str, Any]], seconds: Mapping[str, float],
           rows: Sequence[Mapping[str, Any]], limit: int = 30) -> list[str]:
    """Every confirmed rise (L_sup first, then the largest; at most ``limit``), the measured
    cost of each study, and what the hinge optima are."""
    notes = [f"counterexample: C={v['C']}, t={v['temperature']:g}, {v['loss']}, prior "
             f"{v['prior']}: {v['metric']} rises from k={v['k_from']} to k={v['k_to']}, "
             f"{v['value_from']:.8f} -> {v['value_to']:.8f} (+{v['size']:.2e})"
             for v in sorted(violations, key=lambda v: (v["metric"] != "supervised_loss",
                                                       -float(v["size"])))[:limit]]
    if len(violations) > limit:
        notes.append(f"... and {len(violations) - limit} more confirmed rises (table "
                     "'violations')")
    if not violations:
        notes.append("no confirmed rise of either downstream loss anywhere on the grid")
    notes += [f"{key}: {s:.1f} s for {n} optima ({s / max(n, 1):.3f} s per optimum)"
              for key, s in seconds.items()
              for n in [sum(f"C={r['C']} t={r['temperature']:g} {r['loss']}" == key
                            for r in rows)]]
    if any(r["loss"] == "hinge" for r in rows):
        notes.append("the hinge loss is not smooth: its optima carry no duality-gap certificate "
                     "and are reported as uncertified (best of the random and warm starts)")
    return notes


@register_runner("awasthi_conjecture_scale")
def awasthi_conjecture_scale(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Awasthi et al.'s unbalanced-prior conjecture over (C, t, loss, prior, k) (module
    docstring). Params: ``classes``, ``temperatures``, ``losses`` (``logistic``, ``infonce``,
    ``hinge``), ``ks`` (:func:`ks_list`), ``family`` (overrides of :data:`FAMILY_DEFAULTS`),
    ``restarts``, ``recheck_restarts``, ``tol``, ``seed``. The corruption solves with one
    L-BFGS iteration of one start and no real re-check."""
    check_keys("params", params, ("classes", "temperatures", "losses", "ks", "family",
                                  "restarts", "recheck_restarts", "tol", "seed"))
    classes = [int(c) for c in take(params, "classes", [3, 5, 10, 20, 50], list)]
    temps = [float(t) for t in take(params, "temperatures", [0.1, 0.5, 1.0], list)]
    losses = [str(x) for x in take(params, "losses", ["logistic", "infonce", "hinge"], list)]
    ks = ks_list("params.ks", params.get("ks", "2^0..2^12"))
    family = take(params, "family", {}, dict)
    tol = float(take(params, "tol", 1e-6, (int, float)))
    study: dict[str, Any] = {
        "restarts": int(take(params, "restarts", 3, int)),
        "recheck_restarts": int(take(params, "recheck_restarts", 12, int)), "tol": tol,
        "seed": int(take(params, "seed", 0, int))}
    if ctx.corrupt:
        study.update(restarts=1, recheck_restarts=1, max_iter=1)
    rows, viols, seconds = solve_grid(classes, temps, losses, ks, family, study, ctx.log,
                                      ctx.progress)
    sizes = {c: len(conjecture_priors(c, family, study["seed"])) for c in classes}
    rises = [x for m in DOWNSTREAM for x in largest_rises(rows, m)]
    metrics = conjecture_metrics(rows, viols, sizes)
    metrics["seconds_per_optimum"] = sum(seconds.values()) / max(1, len(rows))
    figs = {"largest_rise": largest_rise_figure(rises, tol)}
    tables = {"optima": rows, "violations": viols, "largest_rises": rises,
              "priors": [{"C": c, "priors": n} for c, n in sizes.items()]}
    return Outcome(metrics, tables, figs, _notes(viols, seconds, rows))

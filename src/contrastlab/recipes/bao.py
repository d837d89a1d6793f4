"""Recipes for Bao, Nagano & Nozawa, "On the surrogate gap between contrastive and supervised
losses" (ICML 2022), against Arora et al. (2019), Nozawa & Sato (2021) and Ash et al.
(2022).

``bao_bounds``:

1. the idealized curves (their Figs. 3-4): every bound evaluated at the idealized contrastive
   minimum R*_cont(K) for each C (:func:`contrastlab.theory.bounds.idealized_bounds`);
2. the measured surrogate gap R_mu-supv - R_cont of trained encoders, for each data set and K,
   against Bao's gap bounds Delta_L <= R_mu-supv - R_cont <= Delta_U
   (:func:`~contrastlab.theory.bounds.bao_delta_lower`, :func:`~contrastlab.theory.bounds.
   bao_delta_upper`) with b = 1 (unit-sphere features, temperature 1: Bao's setting) and the
   test split's label frequencies as the prior.

R_cont is the held-out InfoNCE loss in its sum form (``nce`` with ``score: infonce``, uniform
negatives from the marginal, natural log, t = 1) and
R_mu-supv the cross-entropy of the mean classifier (logits f(x)^T mu_c, t = 1), both on the same
test subset. The recipe refuses configs with other conventions: the bounds would not apply.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from contrastlab.recipes import runners
from contrastlab.recipes.params import check_keys, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner
from contrastlab.recipes.stats import accuracy_trend_metrics, paired_trend

__all__ = ["bao_bounds", "idealized_checks", "measured_gaps"]

# nce with score "infonce" is the sum form log(1 + sum_i exp(v_i)) (its reduction is the score's)
_REQUIRED = {"loss.name": "nce", "loss.score": "infonce", "loss.normalize": "sphere",
             "loss.temperature": 1.0, "loss.sampler": "uniform"}


def idealized_checks(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The orderings of the bounds on idealized rows (one C): counts of the K where each fails."""
    def fin(v: Any) -> bool:
        return isinstance(v, float) and math.isfinite(v)

    c = int(rows[0]["C"])
    rows = sorted(rows, key=lambda r: r["K"])
    others = ("arora", "nozawa_sato", "ash")
    not_smallest = sum(
        1 for r in rows if r["K"] >= c
        and any(fin(r[o]) and r[o] < r["bao_upper"] - 1e-12 for o in others))
    upper_ok = [r["bao_upper"] >= r["R_mu_supv_star"] - 1e-12 for r in rows]
    lower_ok = [r["R_mu_supv_star"] - r["Delta_L"] >= r["R_cont"] - 1e-12 for r in rows]
    undefined_below_c = sum(1 for r in rows if r["K"] < c and (fin(r["arora"])
                                                                or fin(r["nozawa_sato"])))
    dec = [b["bao_upper"] <= a["bao_upper"] + 1e-12
           for a, b in itertools.pairwise(rows)]
    return {
        "bao_upper_nonfinite": float(sum(1 for r in rows if not fin(r["bao_upper"]))),
        "bao_upper_not_smallest": float(not_smallest),
        "bao_upper_below_optimum": float(upper_ok.count(False)),
        "bao_lower_above_contrastive": float(lower_ok.count(False)),
        "arora_ns_defined_below_C": float(undefined_below_c),
        "bao_upper_increases": float(dec.count(False)),
    }


def measured_gaps(records: list[dict[str, Any]], data: str) -> list[dict[str, Any]]:
    """One row per K: mean over seeds of R_cont (``heldout_loss``) and R_mu-supv (``mc_ce``),
    the gap and Bao's Delta_L and Delta_U for the test labels' frequencies."""
    from contrastlab.theory.bounds import bao_delta_lower, bao_delta_upper

    for key, want in _REQUIRED.items():
        got = {r.get(key) for r in records}
        if got != {want}:
            raise ValueError(f"config {key} must be {want!r} for Bao's bounds; got "
                             f"{sorted(map(str, got))}")
    by_k: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_k.setdefault(int(r["loss.k"]), []).append(r)
    rows = []
    for k, rs in sorted(by_k.items()):
        counts = np.asarray(rs[0]["reports"]["geometry"]["class_counts"], dtype=np.float64)
        prior = counts / counts.sum()
        r_cont = float(np.mean([x["heldout_loss"] for x in rs]))
        r_mu = float(np.mean([x["mc_ce"] for x in rs]))
        rows.append({
            "data": data, "K": k, "R_cont": r_cont, "R_mu_supv": r_mu, "gap": r_mu - r_cont,
            "delta_lower": float(bao_delta_lower(k, prior=prior, b=1.0)),
            "delta_upper": float(bao_delta_upper(k, prior=prior, b=1.0)),
            "mc_acc": float(np.mean([x["mc_acc"] for x in rs])), "seeds": len(rs),
            "C": int(counts.size),
        })
    return rows


@register_runner("bao_bounds")
def bao_bounds(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``idealized`` (``classes``: list of C, ``ks``; optional), ``datasets`` (name ->
    ``{config, ks, seeds, set}``). Metrics: the idealized orderings of :func:`idealized_checks`
    summed over C; ``measured_outside_bounds`` (the (data set, K) whose gap leaves
    [Delta_L, Delta_U]); ``min_accuracy_over_chance`` and ``min_accuracy_to_chance`` (the worst
    mean-classifier accuracy minus, and divided by, the chance level 1/C: the encoders learned
    the classes); ``min_accuracy_gain`` (per data set, the accuracy at
    the largest K minus at the smallest: it should not fall)."""
    from contrastlab.report.recipe_figures import bounds_curves, gap_inside_bounds
    from contrastlab.theory.bounds import idealized_bounds

    check_keys("params", params, ("idealized", "datasets"))
    metrics: dict[str, float] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    figs = {}
    ideal = take(params, "idealized", {}, dict)
    notes: list[str] = []
    if ideal:
        ideal_rows: list[dict[str, Any]] = []
        for c in take(ideal, "classes", [10, 100], list):
            rows = list(idealized_bounds(int(c), ks_list("params.idealized.ks",
                                                         ideal.get("ks", "1..1024"))).rows)
            for key, v in idealized_checks(rows).items():
                metrics[key] = metrics.get(key, 0.0) + v
            beaten = [r["K"] for r in rows if r["K"] >= int(c) and any(
                isinstance(r[o], float) and math.isfinite(r[o]) and r[o] < r["bao_upper"]
                for o in ("arora", "nozawa_sato", "ash"))]
            if beaten:
                notes.append(f"C={c}: another bound is below Bao's upper bound at K = "
                             f"{', '.join(map(str, beaten))}")
            ideal_rows += rows
        tables["idealized_bounds"] = ideal_rows
        figs["idealized_bounds"] = bounds_curves(
            ideal_rows, title="Bounds on R_mu-supv at the idealized contrastive minimum")
    gaps: list[dict[str, Any]] = []
    trends: list[dict[str, Any]] = []
    unconverged: list[str] = []
    for name, spec in take(params, "datasets", {}, dict).items():
        spec = take({"d": spec}, "d", None, dict)
        check_keys(f"params.datasets.{name}", spec, ("config", "ks", "seeds", "set"))
        grid = {"loss.k": ks_list(f"params.datasets.{name}.ks", spec.get("ks")),
                "seed": take(spec, "seeds", [0], list)}
        recs = runners.sweep_records(take(spec, "config", None, dict), grid,
                                     ctx.out_dir / "runs" / name, ctx, take(spec, "set", {}, dict))
        if recs:
            gaps += measured_gaps(recs, name)
            trends += [{"data": name, **t} for t in paired_trend(recs, "mc_acc")]
            unconverged += [f"{name} K={r['loss.k']} seed={r['seed']}" for r in recs
                            if r.get("converged") != 1.0]
    if trends:
        metrics.update(accuracy_trend_metrics(trends))
        tables["accuracy_trend"] = trends
        metrics["unconverged_runs"] = float(len(unconverged))
        notes += runners.unconverged_note(unconverged)
    if gaps:
        out = [g for g in gaps if not g["delta_lower"] <= g["gap"] <= g["delta_upper"]]
        metrics["measured_outside_bounds"] = float(len(out))
        metrics["measured_points"] = float(len(gaps))
        metrics["min_margin_to_bounds"] = min(min(g["gap"] - g["delta_lower"],
                                                  g["delta_upper"] - g["gap"]) for g in gaps)
        metrics["min_accuracy_over_chance"] = min(g["mc_acc"] - 1.0 / g["C"] for g in gaps)
        metrics["min_accuracy_to_chance"] = min(g["mc_acc"] * g["C"] for g in gaps)
        tables["measured_gaps"] = gaps
        figs["measured_gap"] = gap_inside_bounds(
            gaps, title="Measured surrogate gap R_mu-supv - R_cont inside Bao's bounds")
    for t in trends:
        if t["from"] == "previous" and any(
                u["from"] == "first" and u["data"] == t["data"] and u["loss.k_a"] == t["loss.k_a"]
                for u in trends):
            continue  # the first step: already noted as a change from the smallest K
        notes.append(f"{t['data']} accuracy K={t['loss.k_a']} -> {t['loss.k_b']}: "
                     f"{t['mean']:+.4f} (one-sided 95 % bounds [{t['lower']:+.4f}, "
                     f"{t['upper']:+.4f}], {int(t['n'])} seeds)")
    for g in gaps:
        notes.append(f"{g['data']} K={g['K']}: R_cont {g['R_cont']:.3f}, R_mu-supv "
                     f"{g['R_mu_supv']:.3f}, gap {g['gap']:.3f} in [{g['delta_lower']:.3f}, "
                     f"{g['delta_upper']:.3f}], accuracy {g['mc_acc']:.3f}")
    return Outcome(metrics, tables, figs, notes)

"""Recipe for Lemma 1 of Awasthi, Dikkala & Kamath (ICML 2022).

``awasthi_lemma1``: for a strictly convex loss and any k, the optimal representation is
latent-indistinguishable (every sample of a class at one point). Free unit-norm embeddings of n
samples per class are optimized from random starts on the exact population loss of the finite
samples (:func:`contrastlab.theory.optimize.optimize_per_sample`), balanced and unbalanced
priors; the within-class spread of the optimum is measured and its value compared with the best
class-collapsed representation (:func:`contrastlab.theory.optimize.optimize_population`).
"""

from __future__ import annotations

import math
from typing import Any

from contrastlab.recipes.params import check_keys, class_problems, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner

__all__ = ["awasthi_lemma1"]


@register_runner("awasthi_lemma1")
def awasthi_lemma1(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``problems`` (list of ``{classes, per_class, dim, prior}``; prior a spec of
    :func:`contrastlab.data.latent.parse_prior`), ``ks``, ``temperature``, ``restarts``,
    ``max_iter``, ``budgets`` (L-BFGS iteration budgets of the convergence figure, run on the
    first problem and k), ``seed``. The corruption stops L-BFGS after one iteration.

    Per (problem, k): the per-sample optimum (free unit vectors, n per class, d dims) and the
    best class-collapsed representation (the class-level program, ``restarts + 2`` starts).
    Metrics: ``max_within_class_spread``; ``max_below_collapsed`` = max (L_collapsed -
    L_per_sample) (> 0 would be a non-collapsed representation better than every collapsed one);
    ``max_above_collapsed`` = max (L_per_sample - L_collapsed); ``max_grad_norm`` (Riemannian);
    ``balanced_max_etf_cosine_error`` of the class means; ``max_spread_to_grad`` (how the spread
    scales with the stationarity reached).
    """
    check_keys("params", params, ("problems", "ks", "temperature", "restarts", "max_iter",
                                  "budgets", "seed"))
    problems = class_problems(params, [{"classes": 4, "per_class": 4, "prior": "balanced"}])
    ks = ks_list("params.ks", params.get("ks", [1, 16, 256]))
    t = float(take(params, "temperature", 1.0, (int, float)))
    restarts = int(take(params, "restarts", 1, int))
    max_iter = 1 if ctx.corrupt else int(take(params, "max_iter", 3000, int))
    budgets = [int(b) for b in take(params, "budgets", [1, 3, 10, 30, 100, 3000], list)]
    seed = int(take(params, "seed", 0, int))
    rows, scatter = _solve(problems, ks, t, restarts, max_iter, seed, ctx)
    metrics = _metrics(rows)
    budget_rows = _convergence(problems[0], ks[0], budgets, t, seed, rows[0]["collapsed_loss"],
                               scatter)
    figs = _figures(rows, budget_rows, scatter, problems[0], ks[0])
    notes = [f"spread / gradient norm at the optima is at most {metrics['max_spread_to_grad']:.3g}"
             " (the spread is a multiple of the stationarity reached)"]
    return Outcome(metrics, {"optima": rows, "convergence": budget_rows}, figs, notes)


def _solve(problems: list[dict[str, Any]], ks: list[int], t: float, restarts: int,
           max_iter: int, seed: int, ctx: RunContext
           ) -> tuple[list[dict[str, Any]], list[tuple[str, Any, Any]]]:
    """The per-sample optimum and the best collapsed one per (problem, k): the rows, and the
    embeddings of the two-dimensional problems at the smallest k (for the scatter figure)."""
    from contrastlab.theory.optimize import optimize_per_sample, optimize_population

    rows: list[dict[str, Any]] = []
    scatter: list[tuple[str, Any, Any]] = []
    for p in problems:
        ctx.log(f"awasthi-lemma1: C={p['C']} n={p['n']} d={p['d']} prior={p['prior']} "
                f"k={ks[0]}..{ks[-1]}")
        for k in ks:
            opt = optimize_per_sample(p["n"], prior=p["rho"], k=k, temperature=t, dim=p["d"],
                                      restarts=restarts, seed=seed + k, max_iter=max_iter)
            col = optimize_population(prior=p["rho"], k=k, temperature=t, dim=p["d"],
                                      restarts=restarts + 2, seed=seed + k,
                                      with_downstream=False)
            spread = opt.within_class_spread
            rows.append({
                "C": p["C"], "n": p["n"], "d": p["d"], "prior": p["prior"], "k": k,
                "per_sample_loss": opt.loss, "collapsed_loss": col.loss,
                "loss_minus_collapsed": opt.loss - col.loss,
                "within_class_spread": spread, "grad_norm": opt.grad_norm,
                "spread_to_grad": spread / max(opt.grad_norm, 1e-300),
                "etf_cosine_error": opt.etf_cosine_error,
                "group": f"C={p['C']} n={p['n']} {p['prior']}",
            })
            if p["d"] == 2 and k == ks[0]:
                scatter.append((f"C={p['C']}, {p['prior']}, k={k}: optimum", opt.Z.numpy(),
                                opt.labels.numpy()))
    return rows, scatter


def _metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    balanced = [r for r in rows if r["prior"] == "balanced"]
    return {
        "max_within_class_spread": max(r["within_class_spread"] for r in rows),
        "max_below_collapsed": max(-r["loss_minus_collapsed"] for r in rows),
        "max_above_collapsed": max(r["loss_minus_collapsed"] for r in rows),
        "max_grad_norm": max(r["grad_norm"] for r in rows),
        "max_spread_to_grad": max(r["spread_to_grad"] for r in rows),
        "balanced_max_etf_cosine_error": max((r["etf_cosine_error"] for r in balanced),
                                             default=math.nan),
        "solves": float(len(rows)),
    }


def _convergence(p0: dict[str, Any], k0: int, budgets: list[int], t: float, seed: int,
                 collapsed_loss: float, scatter: list[tuple[str, Any, Any]]
                 ) -> list[dict[str, Any]]:
    """Spread and gradient norm vs the L-BFGS budget on the first problem and k (the
    convergence figure's rows); for a two-dimensional problem the embedding after the smallest
    budget goes first in ``scatter``."""
    from contrastlab.theory.optimize import optimize_per_sample

    budget_rows = []
    for b in sorted(set(budgets)):
        o = optimize_per_sample(p0["n"], prior=p0["rho"], k=k0, temperature=t, dim=p0["d"],
                                restarts=1, seed=seed + k0, max_iter=b)
        budget_rows.append({"budget": b, "within_class_spread": o.within_class_spread,
                            "grad_norm": o.grad_norm, "loss_gap": o.loss - collapsed_loss,
                            "group": "per-sample optimum"})
        if p0["d"] == 2 and b == min(budgets):
            scatter.insert(0, (f"C={p0['C']}, {p0['prior']}, k={k0}: after {b} L-BFGS "
                               "iteration(s)", o.Z.numpy(), o.labels.numpy()))
    return budget_rows


def _figures(rows: list[dict[str, Any]], budget_rows: list[dict[str, Any]],
             scatter: list[tuple[str, Any, Any]], p0: dict[str, Any], k0: int
             ) -> dict[str, Any]:
    from contrastlab.report.claim_figures import embedding_panels, metric_strips, metric_vs_budget

    figs = {
        "spread_by_problem": metric_strips(
            rows, [("within_class_spread", "max within-class distance (unit-sphere units)",
                    1e-4),
                   ("grad_norm", "Riemannian gradient norm at the result", 1e-7)],
            "group", title="Per-sample optimum: every class collapses to a point (dashed: "
            "check thresholds)"),
        "convergence": metric_vs_budget(
            budget_rows, [("within_class_spread", "max within-class distance"),
                          ("grad_norm", "Riemannian gradient norm")],
            xlabel="L-BFGS iteration budget (log scale)",
            title=f"C={p0['C']}, n={p0['n']}, {p0['prior']}, k={k0}: the spread falls with the "
            "gradient"),
    }
    if scatter:
        figs["embeddings"] = embedding_panels(scatter)
    return figs

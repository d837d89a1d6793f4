"""Recipe for the optimality of neural collapse in Jiang, Nguyen, Ishwar & Aeron (TMLR
2023).

``jiang_nc_optimal``: SCL, HSCL (beta > 0) and UCL over free features on the unit sphere or in
the unit ball with d >= C - 1 are minimized by neural collapse; the features are optimized from
random starts (:func:`contrastlab.recipes.measures.optimize_free_features`) and compared with the
ETF.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from contrastlab.recipes.measures import (
    FAMILIES,
    class_mean_geometry,
    optimize_free_features,
    within_class_spread,
)
from contrastlab.recipes.params import check_keys, class_problems, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["jiang_nc_optimal"]


def _loss_specs(raw: Any, where: str) -> list[tuple[str, float]]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list of {{name, beta}}; got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}[{i}] must be a mapping {{name, beta}}; got {item!r}")
        check_keys(f"{where}[{i}]", item, ("name", "beta"))
        name = item.get("name")
        if name not in FAMILIES:
            raise ValueError(f"{where}[{i}].name must be one of {', '.join(FAMILIES)}; got "
                             f"{name!r}")
        beta = float(take(item, "beta", 0.0, (int, float)))
        if beta < 0 or (name in ("scl", "ucl") and beta != 0):
            raise ValueError(f"{where}[{i}].beta must be >= 0 (and 0 for scl/ucl); got {beta}")
        out.append((str(name), beta))
    return out


@dataclass
class _Setup:
    """The solves asked for, read from the parameters."""

    problems: list[dict[str, Any]]
    ks: list[int]
    checked: list[tuple[str, float]]
    observed: list[tuple[str, float]]
    constraints: list[Any]
    offsets: list[int]
    t: float
    max_iter: int
    restarts: int
    seed: int


@register_runner("jiang_nc_optimal")
def jiang_nc_optimal(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``problems`` (``{classes, per_class}``, balanced), ``ks``, ``losses`` (list of
    ``{name: scl|hscl|ucl, beta}``, checked), ``observe`` (the same, reported but not checked,
    e.g. HUCL whose minimizer Jiang et al. leave open; solved at the first dimension offset from
    one start), ``constraints`` (``sphere``, ``ball``),
    ``dim_offsets`` (d = C - 1 + offset), ``temperature``, ``restarts`` (random starts per
    solve, the best kept: HSCL has spurious local minima), ``max_iter``, ``seed``. The
    corruption optimizes without any normalization (``corrupt_max_iter`` iterations, default
    20: the loss has no minimizer there and the features grow without bound).

    Metrics over the checked solves: ``max_etf_cosine_error`` (class means), ``max_zero_sum``,
    ``max_within_class_spread``, ``max_unit_norm_error`` (the ball's optimum is on the sphere),
    ``max_closed_form_gap`` (|loss - ETF closed form|, :func:`contrastlab.theory.etf.etf_loss`),
    ``max_grad_norm`` (projected).
    """
    setup = _read_setup(params, ctx)
    rows, heat = _solve_all(setup, ctx)
    chk = [r for r in rows if r["checked"]]
    metrics = {
        "max_etf_cosine_error": max(r["etf_cosine_error"] for r in chk),
        "max_zero_sum": max(r["zero_sum"] for r in chk),
        "max_within_class_spread": max(r["within_class_spread"] for r in chk),
        "max_unit_norm_error": max(r["unit_norm_error"] for r in chk),
        "max_closed_form_gap": max(r["closed_form_gap"] for r in chk),
        "max_grad_norm": max(r["grad_norm"] for r in chk),
        "solves": float(len(chk)),
    }
    return Outcome(metrics, {"optima": rows}, _figures(setup, chk, heat),
                   _notes(rows, chk, setup.restarts))


def _read_setup(params: dict[str, Any], ctx: RunContext) -> _Setup:
    check_keys("params", params, ("problems", "ks", "losses", "observe", "constraints",
                                  "dim_offsets", "temperature", "restarts", "max_iter",
                                  "corrupt_max_iter", "seed"))
    problems = class_problems(params, [{"classes": 4, "per_class": 3}])
    if any(p["prior"] != "balanced" for p in problems):
        raise ValueError("params.problems[].prior must be balanced (the NC theorem's setting)")
    ks = ks_list("params.ks", params.get("ks", [1, 16, 256]))
    checked = _loss_specs(take(params, "losses", [{"name": "scl"}, {"name": "hscl", "beta": 1},
                                                  {"name": "ucl"}], list), "params.losses")
    observed = _loss_specs(take(params, "observe", [], list), "params.observe")
    constraints = take(params, "constraints", ["sphere", "ball"], list)
    for cons in constraints:
        if cons not in ("sphere", "ball"):
            raise ValueError(f"params.constraints must be sphere or ball; got {cons!r}")
    offsets = [int(o) for o in take(params, "dim_offsets", [0], list)]
    t = float(take(params, "temperature", 1.0, (int, float)))
    max_iter = int(take(params, "max_iter", 3000, int))
    restarts = int(take(params, "restarts", 2, int))
    if restarts < 1:
        raise ValueError(f"params.restarts must be >= 1; got {restarts}")
    seed = int(take(params, "seed", 0, int))
    if ctx.corrupt:
        constraints = ["none"]
        max_iter = int(take(params, "corrupt_max_iter", 20, int))
    return _Setup(problems, ks, checked, observed, constraints, offsets, t, max_iter, restarts,
                  seed)


def _solve_all(setup: _Setup, ctx: RunContext
               ) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """Every (problem, dimension, k, loss, constraint): the best of the random starts, as a row;
    and the class-mean cosines of the checked solves of the first problem at the largest k (for
    the heatmaps)."""
    from contrastlab.theory.etf import etf_loss

    s = setup
    rows: list[dict[str, Any]] = []
    heat: list[tuple[str, Any]] = []
    for p in s.problems:
        c, n = p["C"], p["n"]
        y = torch.arange(c).repeat_interleave(n)
        for off in s.offsets:
            d = c - 1 + off
            ctx.log(f"jiang-nc-optimal: C={c} n={n} d={d}")
            for k in s.ks:
                for (name, beta), is_checked in ([(spec, True) for spec in s.checked]
                                                 + [(spec, False) for spec in s.observed]):
                    if not is_checked and off != s.offsets[0]:
                        continue  # observations: the first d only, one start (they are slow)
                    neg = FAMILIES[name]
                    closed = etf_loss(c, k, temperature=s.t, negatives=neg, beta=beta)
                    for cons in s.constraints:
                        row, cosine = _solve(s, y, c, n, d, k, name, beta, cons, is_checked,
                                             closed)
                        rows.append(row)
                        if (p is s.problems[0] and k == s.ks[-1] and off == s.offsets[0]
                                and cons == s.constraints[-1] and is_checked):
                            heat.append((f"{row['group']}, {cons}, k={k}", cosine))
    return rows, heat


def _solve(s: _Setup, y: torch.Tensor, c: int, n: int, d: int, k: int, name: str,
           beta: float, cons: str, is_checked: bool, closed: float) -> tuple[dict[str, Any], Any]:
    """One solve from ``restarts`` random starts (one for an observation): its row and the
    cosine matrix of its class means."""
    starts = [optimize_free_features(
        y, k=k, negatives=FAMILIES[name], beta=beta, temperature=s.t, dim=d,
        constraint=cons, seed=s.seed + k + 1000 * r, max_iter=s.max_iter)
        for r in range(s.restarts if is_checked else 1)]
    res = min(starts, key=lambda st: st.loss)
    n_stuck = sum(1 for st in starts if st.loss > res.loss + 1e-9)
    geo = class_mean_geometry(res.z, y)
    label = f"{name}" + (f" b={beta:g}" if beta else "")
    row = {
        "C": c, "n": n, "d": d, "k": k, "loss": name, "beta": beta,
        "constraint": cons, "checked": is_checked, "group": label,
        "value": res.loss, "etf_closed_form": closed,
        "closed_form_gap": abs(res.loss - closed),
        "within_class_spread": within_class_spread(res.z, y),
        "etf_cosine_error": geo["etf_cosine_error"],
        "zero_sum": geo["zero_sum"],
        "unit_norm_error": geo["unit_norm_error"],
        "grad_norm": res.grad_norm, "iterations": res.iterations,
        "starts": len(starts), "starts_above_best": n_stuck,
    }
    return row, geo["cosine"].numpy()


def _notes(rows: list[dict[str, Any]], chk: list[dict[str, Any]], restarts: int) -> list[str]:
    stuck = [r for r in chk if r["starts_above_best"]]
    notes = [f"{sum(r['starts_above_best'] for r in stuck)} of {restarts * len(chk)} random "
             f"starts ended at a stationary point above the best start's value (spurious local "
             f"minima; the claim is about the minimizer, the best of {restarts} starts), in: "
             + (", ".join(sorted({f"{r['group']} {r['constraint']} C={r['C']} k={r['k']}"
                                  for r in stuck})) or "none")]
    for r in rows:
        if not r["checked"]:
            notes.append(f"observed (not checked) {r['group']} {r['constraint']} C={r['C']} "
                         f"d={r['d']} k={r['k']}: loss {r['value']:.6f} vs ETF "
                         f"{r['etf_closed_form']:.6f}, ETF cosine error "
                         f"{r['etf_cosine_error']:.2e}, within-class spread "
                         f"{r['within_class_spread']:.2e}")
    return notes


def _figures(s: _Setup, chk: list[dict[str, Any]], heat: list[tuple[str, Any]]
             ) -> dict[str, Figure]:
    from contrastlab.report.claim_figures import labelled_heatmaps, metric_strips
    from contrastlab.report.recipe_figures import metric_vs_k

    p0 = s.problems[0]
    first = [r for r in chk if r["C"] == p0["C"] and r["d"] == p0["C"] - 1 + s.offsets[0]
             and r["constraint"] == s.constraints[0]]
    return {
        "value_vs_k": metric_vs_k(
            first, [("value", "loss at the optimum (nats)")], "group",
            reference={"value": "etf_closed_form"},
            title=f"C = {p0['C']}, {s.constraints[0]}: the optimum's loss vs k (dashed: "
            "ETF closed form)"),
        "checks_by_loss": metric_strips(
            chk, [("etf_cosine_error", "max |cos(mu_c, mu_c') + 1/(C-1)|", 1e-4),
                  ("within_class_spread", "max within-class distance", 1e-4),
                  ("closed_form_gap", "|loss - ETF closed form| (nats)", 1e-6),
                  ("unit_norm_error", "max | ||z_i|| - 1 |", 1e-6)],
            "group", title="Free features at the optimum vs the NC geometry (dashed: "
            "thresholds)"),
        "class_mean_cosines": labelled_heatmaps(heat),
    }

"""Recipes for Awasthi, Dikkala & Kamath, "Do more negative samples necessarily hurt in
contrastive learning?" (ICML 2022).

- ``awasthi_balanced_etf``: the exact population optimum for balanced classes is the simplex ETF
  for every k, so its downstream loss does not depend on k (their Theorem for rho_c = 1/C).
- ``awasthi_unbalanced``: the unbalanced-prior study of their conjecture (downstream loss of the
  optimum non-increasing in k).
- ``awasthi_k_sweep``: trained encoders on real data for k from 1 to 1024 (their CIFAR
  experiment at CPU scale).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastlab.recipes import runners
from contrastlab.recipes.params import check_keys, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner
from contrastlab.recipes.stats import paired_trend

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["awasthi_balanced_etf", "awasthi_k_sweep", "awasthi_unbalanced"]


def _spread(rows: list[dict[str, Any]], key: str, group: tuple[str, ...]) -> float:
    by: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        by.setdefault(tuple(r[g] for g in group), []).append(float(r[key]))
    return max(max(v) - min(v) for v in by.values())


def _min_step(rows: list[dict[str, Any]], key: str, group: tuple[str, ...]) -> float:
    """The smallest increase of ``key`` between consecutive k within a group."""
    by: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    for r in rows:
        by.setdefault(tuple(r[g] for g in group), []).append((int(r["k"]), float(r[key])))
    steps = [b[1] - a[1] for pts in by.values() for a, b in itertools.pairwise(sorted(pts))]
    return min(steps) if steps else math.nan


@register_runner("awasthi_balanced_etf")
def awasthi_balanced_etf(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Solve the exact population program (:func:`contrastlab.theory.optimize.
    optimize_population`, L-BFGS with restarts on free unit vectors, d = C - 1) for every
    (C, loss, k) and compare with the ETF closed forms (:func:`contrastlab.theory.etf.etf_loss`).

    Params: ``classes`` (list), ``ks`` (see :func:`ks_list`), ``losses`` (``infonce``,
    ``logistic``), ``temperature``, ``restarts``, ``max_iter``, ``seed``. The corruption stops
    L-BFGS after one iteration of a single random start.

    The solves are independent: they run in forked processes, one per usable CPU core (not
    ``--workers``, which counts training processes), while this process imports what draws the
    figures (:mod:`contrastlab._fork`); every result is that of the serial loop, bit for bit.
    """
    from contrastlab._fork import fork_available, fork_call, usable_cores

    check_keys("params", params, ("classes", "ks", "losses", "temperature", "restarts",
                                  "max_iter", "seed"))
    classes = take(params, "classes", [4, 10, 20], list)
    ks = ks_list("params.ks", params.get("ks", "2^0..2^12"))
    losses = take(params, "losses", ["infonce"], list)
    t = float(take(params, "temperature", 1.0, (int, float)))
    restarts = 1 if ctx.corrupt else int(take(params, "restarts", 2, int))
    max_iter = 1 if ctx.corrupt else int(take(params, "max_iter", 3000, int))
    seed = int(take(params, "seed", 0, int))
    tasks = [(c, loss, k) for c in classes for loss in losses for k in ks]
    workers = usable_cores() if fork_available() else 1
    for c in classes:
        for loss in losses:
            ctx.log(f"awasthi-balanced-etf: C={c} loss={loss} k={ks[0]}..{ks[-1]}")
    ctx.log(f"awasthi-balanced-etf: {len(tasks)} independent solves on {workers} process(es)")
    # the solves run in a forked process (which imports the theory engine, torch included) while
    # this one imports what draws the figures
    pending = fork_call(_balanced_solves, tasks, functools.partial(
        _balanced_solve, temperature=t, restarts=restarts, max_iter=max_iter, seed=seed), workers)
    from contrastlab.report.figures import cosine_heatmaps
    from contrastlab.report.recipe_figures import metric_vs_k

    solved = pending.result()
    rows = [row for row, _ in solved]
    heat: dict[int, Any] = {
        k: cos for (c, loss, k), (_, cos) in zip(tasks, solved, strict=True)
        if c == classes[0] and loss == losses[0] and k in (ks[0], ks[len(ks) // 2], ks[-1])}
    metrics = {
        "max_etf_cosine_error": max(r["etf_cosine_error"] for r in rows),
        "max_zero_sum": max(r["zero_sum"] for r in rows),
        "max_closed_form_gap": max(r["closed_form_gap"] for r in rows),
        "max_downstream_spread": _spread(rows, "mean_classifier_loss", ("C", "loss")),
        "max_supervised_spread": _spread(rows, "supervised_loss", ("C", "loss")),
        "min_mean_classifier_accuracy": min(r["mean_classifier_accuracy"] for r in rows),
        "min_contrastive_increase": _min_step(rows, "contrastive_loss", ("C", "loss")),
        "solves": float(len(rows)),
    }
    for r in rows:
        r["group"] = f"C={r['C']} {r['loss']}"
    figs = {
        "losses_vs_k": metric_vs_k(
            rows, [("contrastive_loss", "contrastive loss at the optimum (nats)"),
                   ("mean_classifier_loss", "downstream loss R_mu-supv of the optimum (nats)"),
                   ("etf_cosine_error", "max |cos + 1/(C-1)| (dimensionless)")],
            "group", reference={"contrastive_loss": "etf_closed_form"},
            title="Balanced classes: the optimum vs k (dashed: ETF closed form)"),
        "optimum_cosines": cosine_heatmaps(heat),
    }
    return Outcome(metrics, {"optima": rows}, figs)


def _balanced_solves(tasks: list[tuple[int, str, int]],
                     solve: Callable[[tuple[int, str, int]], tuple[dict[str, Any], np.ndarray]],
                     workers: int) -> list[tuple[dict[str, Any], np.ndarray]]:
    """``[solve(task) for task in tasks]`` over ``workers`` processes, forked after the theory
    engine is imported (so that they share it). A solve depends on its task and the settings
    only: the same results in the same order for any number of processes."""
    from contrastlab._fork import fork_map
    from contrastlab.theory import etf, optimize  # noqa: F401  (imported here, once, for all)

    return fork_map(solve, tasks, workers)


def _balanced_solve(task: tuple[int, str, int], temperature: float, restarts: int,
                    max_iter: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """One program of :func:`awasthi_balanced_etf`, ``task`` = (C, loss, k): its row of the
    ``optima`` table and the cosine matrix of its optimum."""
    from contrastlab.theory.etf import etf_loss
    from contrastlab.theory.optimize import optimize_population

    c, loss, k = task
    opt = optimize_population(num_classes=c, k=k, loss=loss, temperature=temperature,
                              restarts=restarts, max_iter=max_iter, seed=seed + k)
    closed = etf_loss(c, k, loss=loss, temperature=temperature)
    ds = opt.downstream
    row = {
        "C": c, "loss": loss, "k": k, "contrastive_loss": opt.loss,
        "etf_closed_form": closed, "closed_form_gap": abs(opt.loss - closed),
        "etf_cosine_error": opt.etf_cosine_error, "zero_sum": opt.zero_sum,
        "mean_classifier_loss": float(ds["mean_classifier_loss"]),
        "supervised_loss": float(ds["supervised_loss"]),
        "mean_classifier_accuracy": float(ds["mean_classifier_accuracy"]),
        "converged": bool(opt.converged), "iterations": opt.iterations,
    }
    return row, opt.cosines.numpy()


@register_runner("awasthi_unbalanced")
def awasthi_unbalanced(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """The unbalanced-prior study (:func:`contrastlab.theory.study.monotonicity_study`): the
    optimum of the exact population loss for each prior and k, its downstream losses, and every
    confirmed increase between consecutive k (re-solved with more restarts before it counts).

    Params: ``classes``, ``ks``, ``priors`` (specs for :func:`~contrastlab.theory.study.
    parse_prior`, or ``default``), ``loss``, ``restarts``, ``recheck_restarts``, ``tol``,
    ``seed``. The corruption solves with one L-BFGS iteration and no recheck.
    """
    from contrastlab.data.latent import parse_prior
    from contrastlab.report.figures import study_losses_vs_k
    from contrastlab.theory import study as st

    check_keys("params", params, ("classes", "ks", "priors", "loss", "restarts",
                                  "recheck_restarts", "tol", "seed"))
    c = int(take(params, "classes", 5, int))
    ks = ks_list("params.ks", params.get("ks", "2^0..2^12"))
    spec = params.get("priors", "default")
    if spec == "default":
        priors = st.default_priors(c, int(take(params, "seed", 0, int)))
    elif isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec):
        priors = {s: parse_prior(s, c) for s in spec}
    else:
        raise ValueError(f"params.priors must be 'default' or a list of prior specs; got {spec!r}")
    tol = float(take(params, "tol", 1e-6, (int, float)))
    kwargs: dict[str, Any] = dict(
        num_classes=c, priors=priors, ks=ks, loss=str(take(params, "loss", "infonce", str)),
        restarts=int(take(params, "restarts", 3, int)),
        recheck_restarts=int(take(params, "recheck_restarts", 12, int)), tol=tol,
        seed=int(take(params, "seed", 0, int)), progress=ctx.progress)
    if ctx.corrupt:
        kwargs.update(restarts=1, recheck_restarts=1, max_iter=1)
    ctx.log(f"awasthi-unbalanced: C={c}, {len(priors)} priors x {len(ks)} k")
    res = st.monotonicity_study(**kwargs)
    rows = res.rows
    viol = {m: [v for v in res.violations if v.metric == m] for m in
            ("supervised_loss", "mean_classifier_loss")}
    balanced = [r for r in rows if r["prior"] == "balanced"]
    metrics = {
        "supervised_loss_violations": float(len(viol["supervised_loss"])),
        "mean_classifier_loss_violations": float(len(viol["mean_classifier_loss"])),
        "largest_mean_classifier_increase": max((v.size for v in viol["mean_classifier_loss"]),
                                                default=0.0),
        "min_mean_classifier_accuracy": min(r["mean_classifier_accuracy"] for r in rows),
        "max_grad_norm": max(r["grad_norm"] for r in rows),
        "balanced_max_etf_cosine_error": max((r["etf_cosine_error"] for r in balanced),
                                             default=math.nan),
        "priors": float(len(priors)),
    }
    notes = [f"confirmed increase of {v.metric} for prior {v.prior}: k={v.k_from}->{v.k_to}, "
             f"{v.value_from:.6f} -> {v.value_to:.6f} (+{v.size:.2e})" for v in res.violations]
    figs = {"study_losses_vs_k": study_losses_vs_k(rows, violations=res.violations)}
    table = [{k: v for k, v in r.items()} for r in rows]
    return Outcome(metrics, {"study": table,
                             "violations": [vars(v) | {"size": v.size} for v in res.violations]},
                   figs, notes)


@register_runner("awasthi_k_sweep")
def awasthi_k_sweep(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Train through the experiment engine for every k (and seed) and measure the class-mean
    geometry and the downstream accuracy of each run.

    Params: ``config`` (the experiment config, a mapping), ``ks``, ``seeds``, ``set`` (dotted
    overrides). Metrics (C classes; accuracy = mean-classifier test accuracy; the geometry is
    that of the class means of the unit-norm training embeddings at the end):

    - ``min_accuracy_change_upper``: the smallest one-sided 95 % upper bound, over seeds, of the
      paired accuracy change from the smallest k to every larger k and between consecutive k
      (< 0: accuracy fell significantly somewhere; one seed has no bound and fails);
    - ``max_accuracy_drop``: max over k of the mean acc(k_min) - acc(k) (reported);
    - ``max_etf_distance``: max over k of the mean over seeds of the distance of the class
      means to the simplex ETF (:func:`contrastlab.geometry.etf_distance`; random Gaussian
      means in R^16 give 0.64 for C = 10);
    - ``max_pair_cosine_error``: max over k of the mean over seeds of the largest
      |cos(mu_c, mu_c') + 1/(C-1)| over class pairs (per-pair equiangularity; random means
      give 0.64);
    - ``min_accuracy_over_chance``: min over k of acc(k) - 1/C (did anything get learned?);
    - ``unconverged_runs``: runs whose held-out loss still fell by more than 1 % over their
      last 20 % of epochs (:mod:`contrastlab.convergence`).
    """
    check_keys("params", params, ("config", "ks", "seeds", "set"))
    base = take(params, "config", None, dict)
    ks = ks_list("params.ks", params.get("ks", [1, 16, 256, 1024]))
    seeds = take(params, "seeds", [0], list)
    recs = runners.sweep_records(base, {"loss.k": ks, "seed": seeds}, ctx.out_dir / "runs",
                                 ctx, take(params, "set", {}, dict))
    if not recs:
        return Outcome({}, notes=["no run finished"])
    c = int(recs[0]["reports"]["geometry"]["num_classes"])
    rows = [_k_sweep_row(r, c) for r in recs]
    by_k: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_k.setdefault(row["k"], []).append(row)

    def kmean(key: str) -> dict[int, float]:
        return {k: float(np.mean([x[key] for x in v])) for k, v in by_k.items()}

    acc = kmean("mc_acc")
    k0 = min(acc)
    trend = paired_trend(recs, "mc_acc")
    unconverged = [x for x in rows if not x["converged"]]
    metrics = {
        "min_accuracy_change_upper": min((t["upper"] for t in trend), default=math.nan),
        "max_accuracy_drop": max(acc[k0] - a for a in acc.values()),
        "max_etf_distance": max(kmean("etf_distance").values()),
        "max_pair_cosine_error": max(kmean("max_pair_cosine_error").values()),
        "min_accuracy_over_chance": min(acc.values()) - 1.0 / c,
        "unconverged_runs": float(len(unconverged)),
        "accuracy_at_smallest_k": acc[k0],
        "accuracy_at_largest_k": acc[max(acc)],
        "runs": float(len(rows)),
    }
    notes = [f"k={t['loss.k_a']} -> {t['loss.k_b']}: accuracy {t['mean']:+.4f} (one-sided 95 % "
             f"bounds [{t['lower']:+.4f}, {t['upper']:+.4f}], {int(t['n'])} seeds)"
             for t in trend if t["from"] == "first" or t["loss.k_a"] != k0]
    etf, pair = kmean("etf_distance"), kmean("max_pair_cosine_error")
    notes += [f"k={k}: accuracy {acc[k]:.3f}, ETF distance {etf[k]:.3f}, largest pair cosine "
              f"error {pair[k]:.3f} (means over {len(by_k[k])} seeds)" for k in sorted(by_k)]
    notes += runners.unconverged_note([f"k={x['k']} seed {x['seed']}" for x in unconverged])
    return Outcome(metrics, {"runs": rows, "accuracy_trend": trend}, _k_sweep_figures(recs, c),
                   notes)


def _k_sweep_row(r: dict[str, Any], c: int) -> dict[str, Any]:
    """The tidy row of one finished run of ``awasthi_k_sweep`` (C = ``c`` classes)."""
    geo = r["reports"]["geometry"]
    cos = np.asarray(geo["cosine"], dtype=np.float64)
    off = ~np.eye(c, dtype=bool)
    return {
        "k": int(r["loss.k"]), "seed": r["seed"], "mc_acc": float(r["mc_acc"]),
        "probe_acc": r.get("probe_acc"), "knn_acc": r.get("knn_acc"),
        "heldout_loss": r.get("heldout_loss"),
        "mean_cosine": float(cos[off].mean()),
        "max_pair_cosine_error": float(np.abs(cos[off] + 1.0 / (c - 1)).max()),
        "etf_distance": float(geo["etf_distance"]), "nc1": r.get("nc1"),
        "distinct_negatives": r.get("distinct_negatives"),
        "converged": r.get("converged") == 1.0,
    }


def _k_sweep_figures(recs: list[dict[str, Any]], c: int) -> dict[str, Figure]:
    from contrastlab.report.figures import (
        contrastive_loss_vs_k,
        cosine_heatmaps,
        downstream_vs_k,
        epoch_metrics,
    )

    mats: dict[int, Any] = {}
    for r in sorted(recs, key=lambda r: (r["seed"], r["loss.k"])):
        mats.setdefault(int(r["loss.k"]), r["reports"]["geometry"]["cosine"])
    hist_by = {f"k={r['loss.k']} seed={r['seed']}": r["epochs"] for r in recs}
    return {
        "downstream_vs_k": downstream_vs_k(recs, num_classes=c),
        "contrastive_loss_vs_k": contrastive_loss_vs_k(recs, num_classes=c),
        "class_mean_cosines": cosine_heatmaps(mats),
        "epoch_metrics": epoch_metrics(hist_by, ("etf_distance", "nc1", "mc_acc")),
    }

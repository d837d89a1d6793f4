"""Recipe for Robinson, Chuang, Sra & Jegelka, "Contrastive learning with hard negative samples"
(ICLR 2021), with the debiased loss of Chuang et al., "Debiased contrastive learning" (NeurIPS
2020).

``robinson_beta_sweep`` trains a SimCLR-style encoder (augmented views, negatives from the
batch) with the debiased hard-negative loss (``debiased-hard``: class prior tau+, hardness beta;
beta = 0 is the debiased loss) for each beta, and optionally the biased baseline (plain
InfoNCE), and compares the downstream accuracy: at the paper's hardness (``hard_beta``) against
beta = 0, and at the largest beta against ``hard_beta`` (too hard a sampler hurts).
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

__all__ = ["robinson_beta_sweep", "robinson_published_comparison"]

_ACCURACIES = ("probe_acc", "mc_acc")
#: the label of the biased baseline (plain InfoNCE) in the tables and the published numbers
BIASED = "biased"


@register_runner("robinson_beta_sweep")
def robinson_beta_sweep(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``config`` (the ``debiased-hard`` loss with its ``tau_plus``), ``betas`` (with 0,
    ``hard_beta`` and a larger one), ``hard_beta`` (the paper's hardness, fixed in advance:
    no beta is selected on the test data), ``seeds``, ``biased`` (also train the biased
    baseline, ``infonce`` at the same temperature), ``accuracy`` (``probe_acc``: the linear
    evaluation, or ``mc_acc``), ``set`` and optionally ``published`` (``{accuracy: {beta or
    'biased': fraction}}``: the paper's table).

    Metrics (paired over seeds, one-sided 95 % bounds): ``hard_gain`` / ``hard_gain_lower``
    (accuracy at ``hard_beta`` minus at beta = 0), ``too_hard_change`` / ``..._upper`` (at the
    largest beta minus at ``hard_beta``: < 0 when too hard hurts), ``debiased_gain`` /
    ``..._lower`` (beta = 0 minus the biased baseline; NaN without it),
    ``min_accuracy_over_chance``, ``unconverged_runs``; with ``published``, those of
    :func:`robinson_published_comparison`. Table ``beta_curve``: per loss and beta, the mean and
    standard deviation of the accuracy over seeds."""
    check_keys("params", params, ("config", "betas", "hard_beta", "seeds", "biased", "accuracy",
                                  "set", "published"))
    base = take(params, "config", None, dict)
    betas = sorted(float(b) for b in take(params, "betas", [0.0, 1.0, 6.0], list))
    hard = float(take(params, "hard_beta", 1.0, (int, float)))
    seeds = take(params, "seeds", [0], list)
    biased = bool(take(params, "biased", False, bool))
    acc_key = take(params, "accuracy", "probe_acc", str)
    overrides = take(params, "set", {}, dict)
    published = take(params, "published", None, (dict, type(None)))
    if acc_key not in _ACCURACIES:
        raise ValueError(f"params.accuracy must be one of {', '.join(_ACCURACIES)}; got "
                         f"{acc_key!r}")
    if 0.0 not in betas or hard not in betas or max(betas) <= hard or hard <= 0:
        raise ValueError(f"params.betas must hold 0, hard_beta ({hard:g} > 0) and a larger "
                         f"beta; got {betas}")
    if acc_key == "probe_acc":
        overrides = {**overrides, "eval.linear_probe": True}
    recs = _train(base, betas, seeds, biased, overrides, ctx)
    if not recs:
        return Outcome({}, notes=["no run finished"])
    rows = [_row(r, acc_key) for r in recs]
    curve = _beta_curve(rows)
    metrics, said = _comparisons(rows, hard, max(betas))
    metrics.update({
        "min_accuracy_over_chance": min(r["accuracy"] for r in curve) - 1.0 / rows[0]["C"],
        "unconverged_runs": float(sum(1 for x in rows if not x["converged"])),
        "runs": float(len(rows)),
    })
    notes = [f"{_label(r['beta'])}: {acc_key} {r['accuracy']:.4f} (sd {r['accuracy_sd']:.4f}) "
             f"over {r['seeds']} seeds" for r in curve] + [said]
    notes += runners.unconverged_note([f"{_label(x['beta'])} seed {x['seed']}" for x in rows
                                       if not x["converged"]])
    tables: dict[str, Any] = {"runs": rows, "beta_curve": curve}
    if published is not None:
        attach_published(*robinson_published_comparison(curve, published, hard), "beta",
                         _label, metrics, tables, notes)
    return Outcome(metrics, tables, _figures(curve, acc_key), notes)


def _train(base: dict[str, Any], betas: list[float], seeds: list[Any], biased: bool,
           overrides: dict[str, Any], ctx: RunContext) -> list[dict[str, Any]]:
    """The finished runs: every beta and seed, and the biased baseline (plain InfoNCE at the
    loss's temperature and normalization) for every seed when ``biased``."""
    recs = runners.sweep_records(base, {"loss.beta": betas, "seed": seeds},
                                 ctx.out_dir / "runs", ctx, overrides)
    if biased:
        loss = dict(base.get("loss") or {})
        plain = {"name": "infonce", "temperature": loss.get("temperature", 0.5),
                 "normalize": loss.get("normalize", "sphere")}
        recs += runners.sweep_records({**base, "loss": plain}, {"seed": seeds},
                                      ctx.out_dir / "runs", ctx, overrides)
    return recs


def _comparisons(rows: list[dict[str, Any]], hard: float, top: float
                 ) -> tuple[dict[str, float], str]:
    """The paired comparisons of the accuracy over seeds (the runner's metrics ``hard_gain``,
    ``too_hard_change`` and ``debiased_gain`` with their bounds) and a note."""
    by = {(x["beta"], x["seed"]): x["accuracy"] for x in rows}

    def paired(a: Any, b: Any) -> dict[str, float]:
        common = sorted({s for (k, s) in by if k == a} & {s for (k, s) in by if k == b})
        if not common:
            return {"mean": math.nan, "lower": math.nan, "upper": math.nan}
        return paired_bounds([by[(a, s)] for s in common], [by[(b, s)] for s in common])

    gain, too_hard, debiased = paired(0.0, hard), paired(hard, top), paired(BIASED, 0.0)
    note = (f"accuracy at beta = {hard:g} minus at beta = 0: {gain['mean']:+.4f} (one-sided 95 % "
            f"lower bound {gain['lower']:+.4f}); at beta = {top:g} minus at beta = {hard:g}: "
            f"{too_hard['mean']:+.4f} (upper bound {too_hard['upper']:+.4f})")
    return {"hard_gain": gain["mean"], "hard_gain_lower": gain["lower"],
            "too_hard_change": too_hard["mean"], "too_hard_change_upper": too_hard["upper"],
            "debiased_gain": debiased["mean"], "debiased_gain_lower": debiased["lower"]}, note


def robinson_published_comparison(curve: list[dict[str, Any]], published: dict[str, Any],
                                  hard_beta: float
                                  ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The measured accuracy (mean over seeds, from the ``beta_curve`` rows) against the
    paper's, ``published = {accuracy: {beta or 'biased': fraction}}`` (Robinson et al.'s STL-10
    linear accuracies, tau+ = 0.1: debiased 84.26 %, beta = 1 87.44 %, beta = 6 83.09 %;
    biased 80.15 %).

    Metrics: ``published_max_abs_gap`` (the largest |measured - published|; an entry not
    measured counts as an infinite gap), ``published_hard_gain`` (measured accuracy at
    ``hard_beta`` minus at beta = 0) and ``published_hard_gain_paper``. Table rows: beta,
    published, measured, its standard deviation over seeds, the gap."""
    check_keys("params.published", published, ("accuracy",))
    paper = {_beta_key(b): float(a) for b, a in dict(published.get("accuracy") or {}).items()}
    if 0.0 not in paper or hard_beta not in paper:
        raise ValueError(f"params.published.accuracy must give beta = 0 and hard_beta "
                         f"({hard_beta:g}); got {published.get('accuracy')!r}")
    table, gap = published_rows(paper, {r["beta"]: (r["accuracy"], r["accuracy_sd"])
                                        for r in curve}, "beta", _order)
    at = {r["beta"]: r["measured"] for r in table}
    return {"published_max_abs_gap": gap,
            "published_hard_gain": at[hard_beta] - at[0.0],
            "published_hard_gain_paper": paper[hard_beta] - paper[0.0]}, table


def _label(b: Any) -> str:
    return BIASED if b == BIASED else f"beta={b:g}"


def _beta_key(b: Any) -> Any:
    return BIASED if str(b) == BIASED else float(b)


def _order(b: Any) -> float:
    """The biased baseline first, then beta increasing."""
    return -1.0 if b == BIASED else float(b)


def _row(r: dict[str, Any], acc_key: str) -> dict[str, Any]:
    """The tidy row of one finished run: beta (``biased`` for plain InfoNCE), seed, accuracy."""
    beta = BIASED if r["loss.name"] == "infonce" else float(r.get("loss.beta") or 0.0)
    return {"beta": beta, "seed": r["seed"], "accuracy": float(r[acc_key]),
            "C": int(r["reports"]["geometry"]["num_classes"]),
            "converged": r.get("converged") == 1.0}


def _beta_curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    curve = []
    for b in sorted({x["beta"] for x in rows}, key=_order):
        v = np.asarray([x["accuracy"] for x in rows if x["beta"] == b], dtype=np.float64)
        curve.append({"beta": b, "seeds": int(v.size), "accuracy": float(v.mean()),
                      "accuracy_sd": float(v.std(ddof=1)) if v.size > 1 else math.nan})
    return curve


def _figures(curve: list[dict[str, Any]], acc_key: str) -> dict[str, Figure]:
    from contrastlab.report.recipe_figures import accuracy_vs_beta

    label = {"probe_acc": "linear-probe accuracy (test)",
             "mc_acc": "mean-classifier accuracy (test)"}[acc_key]
    return {"accuracy_vs_beta": accuracy_vs_beta(curve, label)}

"""Recipes for the theorems of the seeds about the optimum and about every representation.

- ``awasthi_lemma1`` (seed 000, Lemma 1): for a strictly convex loss and any k, the optimal
  representation is latent-indistinguishable (every sample of a class at one point). Free
  unit-norm embeddings of n samples per class are optimized from random starts on the exact
  population loss of the finite samples
  (:func:`contrastlab.theory.optimize.optimize_per_sample`), balanced and unbalanced priors;
  the within-class spread of the optimum is measured and its value compared with the best
  class-collapsed representation (:func:`contrastlab.theory.optimize.optimize_population`).
- ``jiang_lower_bounds`` (seed 001, SPEC A3, C4): for any representation f, HSCL(beta) >= SCL
  and HUCL(beta) >= UCL, both non-decreasing in beta (Harris inequality); at the NC geometry
  HSCL = SCL and HUCL > UCL for beta > 0. Measured with the exact expectation over the negatives'
  law (no sampling noise) for every (anchor, positive) pair of random encoders on a Gaussian
  mixture, and cross-checked against the library losses and a Monte-Carlo estimate.
- ``jiang_nc_optimal`` (seed 001, SPEC A3, A7): SCL, HSCL (beta > 0) and UCL over free
  features on the unit sphere or in the unit ball with d >= C - 1 are minimized by neural
  collapse; the features are optimized from random starts and compared with the ETF.

The pair convention of :func:`exact_pair_losses` is the Jiang et al. code's (SPEC A3): the
anchor i counts among its own positives, the negatives are i.i.d. from
q_i(j) ∝ exp(beta z_i^T z_j) on the other classes (supervised) or on every sample (unsupervised),
and the loss of the pair (i, p) is log(1 + sum_r exp((s_ij_r - s_ip) / t)) (``sum``, the paper)
or with the mean over the k negatives (``mean``, their code).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from contrastlab.recipes.params import check_keys, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner

__all__ = [
    "FreeFeatures",
    "awasthi_lemma1",
    "beta_increments",
    "class_mean_geometry",
    "exact_pair_losses",
    "hard_log_law",
    "jiang_lower_bounds",
    "jiang_nc_optimal",
    "optimize_free_features",
    "projected_grad_norm",
    "sampled_pair_losses",
    "within_class_spread",
]

# the supervised / unsupervised families of Jiang et al.: loss name -> law of the negatives
FAMILIES = {"scl": "other-class", "hscl": "other-class", "ucl": "marginal", "hucl": "marginal"}
_HARD = {"other-class": "hscl", "marginal": "hucl"}
_SOFT = {"other-class": "scl", "marginal": "ucl"}


# ------------------------------------------------------------------------------------------
# measurements (pure functions, unit-tested on hand-made inputs)
# ------------------------------------------------------------------------------------------


def within_class_spread(z: torch.Tensor, labels: torch.Tensor) -> float:
    """The largest distance between two samples of the same class (0 iff every class sits at
    one point: latent indistinguishability)."""
    z = z.detach().to(torch.float64)
    out = 0.0
    for c in torch.unique(labels):
        zc = z[labels == c]
        if zc.shape[0] > 1:
            out = max(out, float(torch.cdist(zc, zc).max()))
    return out


def class_mean_geometry(z: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Geometry of the class means mu_c of ``z`` (classes 0..C-1): ``etf_cosine_error`` =
    max_{c != c'} |cos(mu_c, mu_c') + 1/(C-1)|, ``zero_sum`` = ||sum_c mu_c||,
    ``unit_norm_error`` = max_i | ||z_i|| - 1 | over the samples, and the cosine matrix."""
    z = z.detach().to(torch.float64)
    c = int(labels.max()) + 1
    means = torch.stack([z[labels == j].mean(0) for j in range(c)])
    unit = means / means.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.T
    off = ~torch.eye(c, dtype=torch.bool)
    return {
        "etf_cosine_error": float((cos[off] + 1.0 / (c - 1)).abs().max()),
        "zero_sum": float(means.sum(0).norm()),
        "unit_norm_error": float((z.norm(dim=1) - 1.0).abs().max()),
        "cosine": cos,
    }


def projected_grad_norm(z: torch.Tensor, grad: torch.Tensor, constraint: str) -> float:
    """Norm of the part of ``grad`` (dL/dz) a feasible descent can use: tangent to the sphere
    (``sphere``); the full gradient inside the unit ball, and on its boundary without the
    component that points out of it (``ball``); the full gradient (``none``). Zero at a
    first-order stationary point of the constrained problem."""
    if constraint == "none":
        return float(grad.norm())
    norms = z.norm(dim=1, keepdim=True).clamp_min(1e-300)
    radial = (grad * z).sum(dim=1, keepdim=True) / norms  # d L / d ||z|| along z
    if constraint == "sphere":
        return float((grad - radial * z / norms).norm())
    on_boundary = norms > 1.0 - 1e-9
    # on the boundary descent (-grad) leaves the ball iff radial < 0: drop that component
    proj = torch.where(on_boundary & (radial < 0), grad - radial * z / norms, grad)
    return float(proj.norm())


def hard_log_law(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float
                 ) -> torch.Tensor:
    """(B, B) log-probabilities of the negatives' law q_i(j) ∝ exp(beta z_i^T z_j) on the
    allowed candidates (other classes for ``other-class``, all for ``marginal``). Any real beta
    (a negative one tilts toward easy negatives: the corruption of ``jiang-lower-bounds``)."""
    if negatives not in ("other-class", "marginal"):
        raise ValueError(f"negatives must be 'other-class' or 'marginal'; got {negatives!r}")
    z = z.to(torch.float64)
    logits = float(beta) * (z @ z.T)
    if negatives == "other-class":
        logits = logits.masked_fill(labels[:, None] == labels[None, :], -math.inf)
    return torch.log_softmax(logits, dim=1)


def _pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos_i, pos_p = torch.nonzero(labels[:, None] == labels[None, :], as_tuple=True)
    return pos_i, pos_p


def exact_pair_losses(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float,
                      k: int, temperature: float = 1.0, reduction: str = "sum"
                      ) -> torch.Tensor:
    """The exact expected loss of every (anchor, positive) pair (row-major over (i, p) with
    y_p = y_i, p = i included) over k i.i.d. negatives from :func:`hard_log_law` (the
    one-dimensional integral of :mod:`contrastlab.losses.expectation`: error ~1e-14 relative).
    For beta >= 0 it equals ``hscl``/``hucl(..., exact=True, reduction="none")``."""
    from contrastlab.losses.scl import pair_losses

    z = z.to(torch.float64)
    log_q = hard_log_law(z, labels, negatives, beta)
    logits = (z @ z.T) / temperature
    pos_i, pos_p = _pairs(labels)
    return pair_losses(logits, log_q, pos_i, logits[pos_i, pos_p], k, "loss", reduction)


def sampled_pair_losses(z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float,
                        k: int, generator: torch.Generator, temperature: float = 1.0,
                        reduction: str = "sum") -> torch.Tensor:
    """One Monte-Carlo draw of the losses of :func:`exact_pair_losses` (k negatives drawn per
    pair from the same law)."""
    from contrastlab.losses.scl import pair_losses

    z = z.to(torch.float64)
    log_q = hard_log_law(z, labels, negatives, beta)
    logits = (z @ z.T) / temperature
    pos_i, pos_p = _pairs(labels)
    return pair_losses(logits, log_q, pos_i, logits[pos_i, pos_p], k, "sampled", reduction,
                       generator)


def beta_increments(losses: Mapping[float, torch.Tensor]) -> float:
    """The smallest increase, over consecutive betas (sorted) and elementwise over the pairs, of
    the per-pair losses ``{beta: (R,) tensor}`` (>= 0 iff every pair's loss is non-decreasing in
    beta)."""
    betas = sorted(losses)
    steps = [float((losses[b] - losses[a]).min()) for a, b in itertools.pairwise(betas)]
    return min(steps) if steps else math.nan


# ------------------------------------------------------------------------------------------
# free-feature optimizer (sphere, ball, or none)
# ------------------------------------------------------------------------------------------


@dataclass
class FreeFeatures:
    """Result of :func:`optimize_free_features`."""

    z: torch.Tensor
    loss: float
    grad_norm: float
    iterations: int


def optimize_free_features(
    labels: torch.Tensor,
    prior: torch.Tensor | None = None,
    k: int = 1,
    negatives: str = "marginal",
    beta: float = 0.0,
    temperature: float = 1.0,
    dim: int | None = None,
    constraint: str = "sphere",
    seed: int = 0,
    max_iter: int = 3000,
    tol: float = 1e-11,
    init_norm: float = 0.5,
) -> FreeFeatures:
    """Minimize the exact population loss of free per-sample features
    (:func:`contrastlab.theory.population.sample_level_loss`: anchor and positive uniform in a
    class, k negatives i.i.d. from the marginal or the other classes, tilted by
    exp(beta z_a^T z_j) with the gradient through the law) by L-BFGS (strong Wolfe) over
    z = normalize(u, constraint) (:func:`contrastlab.losses.normalize.normalize`: the sphere, the
    unit ball of Jiang et al.'s ``model.py``, or none).

    The start is Gaussian; for ``ball`` and ``none`` it is rescaled to norm ``init_norm`` (inside
    the ball, so the ball's interior is explored). ``grad_norm`` is
    :func:`projected_grad_norm` at the result.
    """
    from contrastlab.losses.normalize import normalize
    from contrastlab.theory.population import sample_level_loss

    c = int(labels.max()) + 1
    d = c - 1 if dim is None else int(dim)
    objective: dict[str, Any] = {"prior": prior, "k": k, "loss": "infonce",
                                 "temperature": temperature, "negatives": negatives,
                                 "beta": beta}
    g = torch.Generator().manual_seed(seed)
    u0 = torch.randn(labels.numel(), d, generator=g, dtype=torch.float64)
    if constraint != "sphere":
        u0 = init_norm * u0 / u0.norm(dim=1, keepdim=True)
    u = u0.requires_grad_(True)
    opt = torch.optim.LBFGS([u], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=1e-16, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = sample_level_loss(normalize(u, constraint), labels, **objective)
        value.backward()
        return value

    opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    z = normalize(u.detach(), constraint).requires_grad_(True)
    value = sample_level_loss(z, labels, **objective)
    value.backward()
    assert z.grad is not None
    return FreeFeatures(z.detach(), float(value.detach()),
                        projected_grad_norm(z.detach(), z.grad, constraint), iters)


# ------------------------------------------------------------------------------------------
# awasthi-lemma1
# ------------------------------------------------------------------------------------------


def _prior(spec: Any, c: int) -> tuple[str, torch.Tensor]:
    from contrastlab.theory.study import parse_prior

    if not isinstance(spec, str):
        raise ValueError(f"params.problems[].prior must be a prior spec string; got {spec!r}")
    return spec, parse_prior(spec, c)


def _problems(params: Mapping[str, Any], default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    probs = take(params, "problems", default, list)
    out = []
    for i, p in enumerate(probs):
        if not isinstance(p, Mapping):
            raise ValueError(f"params.problems[{i}] must be a mapping; got {p!r}")
        check_keys(f"params.problems[{i}]", p, ("classes", "per_class", "dim", "prior"))
        c = int(take(p, "classes", 4, int))
        n = int(take(p, "per_class", 3, int))
        if c < 2 or n < 2:
            raise ValueError(f"params.problems[{i}]: classes and per_class must be >= 2")
        d = int(take(p, "dim", c - 1, int))
        name, rho = _prior(p.get("prior", "balanced"), c)
        out.append({"C": c, "n": n, "d": d, "prior": name, "rho": rho})
    return out


@register_runner("awasthi_lemma1")
def awasthi_lemma1(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``problems`` (list of ``{classes, per_class, dim, prior}``; prior a spec of
    :func:`contrastlab.theory.study.parse_prior`), ``ks``, ``temperature``, ``restarts``,
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
    from contrastlab.report.claim_figures import embedding_panels, metric_strips, metric_vs_budget
    from contrastlab.theory.optimize import optimize_per_sample, optimize_population

    check_keys("params", params, ("problems", "ks", "temperature", "restarts", "max_iter",
                                  "budgets", "seed"))
    problems = _problems(params, [{"classes": 4, "per_class": 4, "prior": "balanced"}])
    ks = ks_list("params.ks", params.get("ks", [1, 16, 256]))
    t = float(take(params, "temperature", 1.0, (int, float)))
    restarts = int(take(params, "restarts", 1, int))
    max_iter = 1 if ctx.corrupt else int(take(params, "max_iter", 3000, int))
    budgets = [int(b) for b in take(params, "budgets", [1, 3, 10, 30, 100, 3000], list)]
    seed = int(take(params, "seed", 0, int))
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
    balanced = [r for r in rows if r["prior"] == "balanced"]
    metrics = {
        "max_within_class_spread": max(r["within_class_spread"] for r in rows),
        "max_below_collapsed": max(-r["loss_minus_collapsed"] for r in rows),
        "max_above_collapsed": max(r["loss_minus_collapsed"] for r in rows),
        "max_grad_norm": max(r["grad_norm"] for r in rows),
        "max_spread_to_grad": max(r["spread_to_grad"] for r in rows),
        "balanced_max_etf_cosine_error": max((r["etf_cosine_error"] for r in balanced),
                                             default=math.nan),
        "solves": float(len(rows)),
    }
    # the convergence figure: spread and gradient norm vs the L-BFGS budget, first problem
    p0, k0 = problems[0], ks[0]
    budget_rows = []
    for b in sorted(set(budgets)):
        o = optimize_per_sample(p0["n"], prior=p0["rho"], k=k0, temperature=t, dim=p0["d"],
                                restarts=1, seed=seed + k0, max_iter=b)
        budget_rows.append({"budget": b, "within_class_spread": o.within_class_spread,
                            "grad_norm": o.grad_norm, "loss_gap": o.loss - rows[0][
                                "collapsed_loss"], "group": "per-sample optimum"})
        if p0["d"] == 2 and b == min(budgets):
            scatter.insert(0, (f"C={p0['C']}, {p0['prior']}, k={k0}: after {b} L-BFGS "
                               "iteration(s)", o.Z.numpy(), o.labels.numpy()))
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
    notes = [f"spread / gradient norm at the optima is at most {metrics['max_spread_to_grad']:.3g}"
             " (the spread is a multiple of the stationarity reached)"]
    return Outcome(metrics, {"optima": rows, "convergence": budget_rows}, figs, notes)


# ------------------------------------------------------------------------------------------
# jiang-lower-bounds
# ------------------------------------------------------------------------------------------

REPRESENTATIONS = ("mlp-sphere", "mlp-ball", "mlp-none", "random-sphere", "clustered-sphere")


def _representation(kind: str, x: torch.Tensor, labels: torch.Tensor, dim: int, seed: int
                    ) -> torch.Tensor:
    """Features of the inputs ``x`` under a random map: a random MLP (PyTorch's default
    initialization, seeded; 2 hidden layers of 64, on the standardized inputs, its outputs
    rescaled to a median norm of 1 so that the ball clips about half of them) followed by the
    sphere, ball or no normalization; i.i.d. Gaussian directions (no class structure); or noisy
    class centers on the sphere (partial class structure)."""
    from contrastlab.losses.normalize import normalize
    from contrastlab.models import build_encoder

    g = torch.Generator().manual_seed(seed)
    if kind in ("mlp-sphere", "mlp-ball", "mlp-none"):
        x = x.to(torch.float64)
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            enc = build_encoder("mlp", tuple(x.shape[1:]), dim, normalize="none", hidden=64,
                                depth=2).double()
        with torch.no_grad():
            z = enc(x)
        z = z / z.norm(dim=1).median().clamp_min(1e-12)
        return normalize(z, kind[4:])
    if kind == "random-sphere":
        return normalize(torch.randn(x.shape[0], dim, generator=g, dtype=torch.float64))
    if kind == "clustered-sphere":
        c = int(labels.max()) + 1
        centers = torch.randn(c, dim, generator=g, dtype=torch.float64)
        noise = torch.randn(x.shape[0], dim, generator=g, dtype=torch.float64)
        return normalize(centers[labels] + 0.5 * noise)
    raise ValueError(f"params.representations must be among {', '.join(REPRESENTATIONS)}; "
                     f"got {kind!r}")


@register_runner("jiang_lower_bounds")
def jiang_lower_bounds(params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Params: ``classes``, ``per_class``, ``input_dim`` (the Gaussian mixture), ``dim`` (d of
    the representations, default C - 1), ``representations`` (of :data:`REPRESENTATIONS`),
    ``seeds``, ``ks``, ``betas`` (0 included), ``temperature``, ``reductions`` (``sum``,
    ``mean``), ``nc`` (``{classes, per_class, k, betas}``: the NC geometry), ``mc``
    (``{draws, k}``: Monte-Carlo repetitions of the sampled estimator). The corruption flips the
    sign of the tilt (q ∝ exp(-beta s): easy negatives).

    Metrics (per (anchor, positive) pair, over every representation, seed, k, reduction):
    ``min_hscl_minus_scl`` / ``min_hucl_minus_ucl`` (min over beta > 0 of the gap),
    ``min_beta_increment`` (both families), at the NC geometry ``nc_max_abs_hscl_minus_scl``,
    ``nc_min_hucl_minus_ucl`` (min over beta > 0 of the mean gap), ``nc_closed_form_gap``
    (measured vs :func:`contrastlab.theory.etf.etf_loss`), ``spec_reference_error`` (the closed
    forms vs SPEC A7's 1.9876 and 2.1861 at C = 10, k = 16, beta = 1), ``engine_agreement``
    (max difference with ``hscl``/``hucl(exact=True)`` per pair, and at the middle k with the
    population form :func:`contrastlab.theory.population.sample_level_loss`, which builds the
    law and the pairs independently) and ``mc_max_z`` (max |MC mean - exact| / standard error).
    """
    from contrastlab.data.latent import make_generator
    from contrastlab.data.synthetic import gaussian_mixture
    from contrastlab.losses.scl import hscl, hucl
    from contrastlab.report.claim_figures import harris_gaps
    from contrastlab.theory.etf import etf_loss, simplex_etf
    from contrastlab.theory.population import sample_level_loss

    check_keys("params", params, ("classes", "per_class", "input_dim", "dim", "representations",
                                  "seeds", "ks", "betas", "temperature", "reductions", "nc",
                                  "mc"))
    c = int(take(params, "classes", 5, int))
    n = int(take(params, "per_class", 8, int))
    input_dim = int(take(params, "input_dim", 16, int))
    d = int(take(params, "dim", c - 1, int))
    reps = take(params, "representations", list(REPRESENTATIONS), list)
    seeds = [int(s) for s in take(params, "seeds", [0, 1], list)]
    ks = ks_list("params.ks", params.get("ks", [1, 16, 256]))
    betas = sorted({0.0, *(float(b) for b in take(params, "betas", [0, 0.5, 1, 2, 5, 10],
                                                   list))})
    if min(betas) < 0:
        raise ValueError(f"params.betas must be >= 0; got {betas}")
    t = float(take(params, "temperature", 1.0, (int, float)))
    reductions = take(params, "reductions", ["sum"], list)
    nc = take(params, "nc", {}, dict)
    check_keys("params.nc", nc, ("classes", "per_class", "k", "betas"))
    mc = take(params, "mc", {}, dict)
    check_keys("params.mc", mc, ("draws", "k"))
    sign = -1.0 if ctx.corrupt else 1.0
    y = torch.arange(c).repeat_interleave(n)
    mixture = gaussian_mixture(c, input_dim, seed=0)
    library = {"other-class": hscl, "marginal": hucl}

    rows: list[dict[str, Any]] = []
    gaps: dict[str, list[float]] = {"other-class": [], "marginal": []}
    increments: list[float] = []
    agreement = 0.0
    mc_rows: list[dict[str, Any]] = []
    mc_draws = int(take(mc, "draws", 200, int))
    mc_k = int(take(mc, "k", ks[len(ks) // 2], int))
    for s in seeds:
        x = mixture.sample_inputs(y, make_generator(1000 + s))
        for kind in reps:
            z = _representation(str(kind), x, y, d, seed=s)
            for neg in ("other-class", "marginal"):
                for k in ks:
                    for red in reductions:
                        per = {b: exact_pair_losses(z, y, neg, sign * b, k, t, red)
                               for b in betas}
                        base = per[0.0]
                        for b in betas:
                            lib = library[neg](z, y, beta=b, k=k, temperature=t,
                                               normalize="none", exact=True,
                                               negatives_reduction=red, reduction="none",
                                               tiled=False)
                            agreement = max(agreement, float((lib - per[b]).abs().max()))
                            if k == mc_k:  # an independent construction: the population form
                                pop = sample_level_loss(
                                    z, y, k=k, loss="infonce" if red == "sum" else
                                    "infonce-mean", temperature=t, negatives=neg, beta=b)
                                agreement = max(agreement, abs(float(pop) - float(per[b].mean())))
                            if b > 0:
                                gaps[neg].append(float((per[b] - base).min()))
                            rows.append({
                                "representation": kind, "seed": s, "family": neg,
                                "loss": _HARD[neg] if b > 0 else _SOFT[neg], "k": k,
                                "reduction": red, "beta": b, "loss_value": float(per[b].mean()),
                                "gap_mean": float((per[b] - base).mean()),
                                "gap_min_pair": float((per[b] - base).min()),
                            })
                        increments.append(beta_increments(per))
                        if s == seeds[0] and k == mc_k and red == reductions[0]:
                            for b in (betas[0], betas[-1]):
                                gen = torch.Generator().manual_seed(7)
                                draws = torch.stack([
                                    sampled_pair_losses(z, y, neg, sign * b, k, gen, t,
                                                        red).mean()
                                    for _ in range(mc_draws)])
                                exact = float(per[b].mean())
                                se = float(draws.std()) / math.sqrt(mc_draws)
                                mc_rows.append({
                                    "representation": kind, "family": neg, "k": k, "beta": b,
                                    "exact": exact, "mc_mean": float(draws.mean()), "mc_se": se,
                                    "z": abs(float(draws.mean()) - exact) / max(se, 1e-300)})
        ctx.log(f"jiang-lower-bounds: seed {s} done ({len(rows)} rows)")

    # the NC geometry: n samples per class at the vertices of the simplex ETF
    nc_c = int(take(nc, "classes", 10, int))
    nc_n = int(take(nc, "per_class", 2, int))
    nc_k = int(take(nc, "k", 16, int))
    nc_betas = sorted({float(b) for b in take(nc, "betas", [0.5, 1, 2, 5], list)})
    y_nc = torch.arange(nc_c).repeat_interleave(nc_n)
    z_nc = simplex_etf(nc_c).repeat_interleave(nc_n, 0)
    nc_rows: list[dict[str, Any]] = []
    closed_gap = 0.0
    for neg in ("other-class", "marginal"):
        soft = exact_pair_losses(z_nc, y_nc, neg, 0.0, nc_k, t, "sum")
        closed_gap = max(closed_gap, abs(float(soft.mean()) - etf_loss(
            nc_c, nc_k, temperature=t, negatives=neg)))
        for b in nc_betas:
            hard = exact_pair_losses(z_nc, y_nc, neg, sign * b, nc_k, t, "sum")
            closed = etf_loss(nc_c, nc_k, temperature=t, negatives=neg, beta=b)
            closed_gap = max(closed_gap, abs(float(hard.mean()) - closed))
            nc_rows.append({"family": neg, "loss": _HARD[neg], "beta": b, "k": nc_k,
                            "soft": float(soft.mean()), "hard": float(hard.mean()),
                            "gap": float(hard.mean() - soft.mean()),
                            "max_abs_pair_gap": float((hard - soft).abs().max()),
                            "closed_form": closed})
    spec_error = max(abs(etf_loss(10, 16) - 1.9876), abs(etf_loss(10, 16, beta=1.0) - 2.1861))
    metrics = {
        "min_hscl_minus_scl": min(gaps["other-class"], default=math.nan),
        "min_hucl_minus_ucl": min(gaps["marginal"], default=math.nan),
        "min_beta_increment": min(increments, default=math.nan),
        "nc_max_abs_hscl_minus_scl": max(r["max_abs_pair_gap"] for r in nc_rows
                                         if r["family"] == "other-class"),
        "nc_min_hucl_minus_ucl": min(r["gap"] for r in nc_rows if r["family"] == "marginal"),
        "nc_closed_form_gap": closed_gap,
        "spec_reference_error": spec_error,
        "engine_agreement": agreement,
        "mc_max_z": max((r["z"] for r in mc_rows), default=math.nan),
        "representations_measured": float(len(reps) * len(seeds)),
    }
    nc_at_1 = [r for r in nc_rows if r["beta"] == 1.0 and r["family"] == "marginal"]
    notes = [f"NC geometry, C={nc_c}, k={nc_k}: HUCL(beta={r['beta']:g}) = {r['hard']:.4f} vs "
             f"UCL = {r['soft']:.4f} (closed form {r['closed_form']:.4f})" for r in nc_at_1]
    notes.append("the smallest per-pair gaps HSCL - SCL and HUCL - UCL over beta > 0 are "
                 f"{metrics['min_hscl_minus_scl']:.3g} and {metrics['min_hucl_minus_ucl']:.3g}")
    figs = {"harris_gaps": harris_gaps(
        [r for r in rows if r["k"] == mc_k and r["reduction"] == reductions[0]], nc_rows,
        title=f"L(beta) - L(0), mean over pairs and seeds (k = {mc_k}); NC: C = {nc_c}, "
        f"k = {nc_k}")}
    return Outcome(metrics, {"losses": rows, "nc_geometry": nc_rows, "monte_carlo": mc_rows},
                   figs, notes)


# ------------------------------------------------------------------------------------------
# jiang-nc-optimal
# ------------------------------------------------------------------------------------------


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
    from contrastlab.report.claim_figures import labelled_heatmaps, metric_strips
    from contrastlab.report.recipe_figures import metric_vs_k
    from contrastlab.theory.etf import etf_loss

    check_keys("params", params, ("problems", "ks", "losses", "observe", "constraints",
                                  "dim_offsets", "temperature", "restarts", "max_iter",
                                  "corrupt_max_iter", "seed"))
    problems = _problems(params, [{"classes": 4, "per_class": 3}])
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
    rows: list[dict[str, Any]] = []
    heat: list[tuple[str, Any]] = []
    for p in problems:
        c, n = p["C"], p["n"]
        y = torch.arange(c).repeat_interleave(n)
        for off in offsets:
            d = c - 1 + off
            ctx.log(f"jiang-nc-optimal: C={c} n={n} d={d}")
            for k in ks:
                for (name, beta), is_checked in ([(s, True) for s in checked]
                                                 + [(s, False) for s in observed]):
                    if not is_checked and off != offsets[0]:
                        continue  # observations: the first d only, one start (they are slow)
                    neg = FAMILIES[name]
                    closed = etf_loss(c, k, temperature=t, negatives=neg, beta=beta)
                    for cons in constraints:
                        starts = [optimize_free_features(
                            y, k=k, negatives=neg, beta=beta, temperature=t, dim=d,
                            constraint=cons, seed=seed + k + 1000 * r, max_iter=max_iter)
                            for r in range(restarts if is_checked else 1)]
                        res = min(starts, key=lambda s: s.loss)
                        n_stuck = sum(1 for s in starts if s.loss > res.loss + 1e-9)
                        geo = class_mean_geometry(res.z, y)
                        label = f"{name}" + (f" b={beta:g}" if beta else "")
                        rows.append({
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
                        })
                        if (p is problems[0] and k == ks[-1] and off == offsets[0]
                                and cons == constraints[-1] and is_checked):
                            heat.append((f"{label}, {cons}, k={k}", geo["cosine"].numpy()))
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
    first = [r for r in chk if r["C"] == problems[0]["C"] and r["d"] == problems[0]["C"] - 1
             + offsets[0] and r["constraint"] == constraints[0]]
    figs = {
        "value_vs_k": metric_vs_k(
            first, [("value", "loss at the optimum (nats)")], "group",
            reference={"value": "etf_closed_form"},
            title=f"C = {problems[0]['C']}, {constraints[0]}: the optimum's loss vs k (dashed: "
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
    return Outcome(metrics, {"optima": rows}, figs, notes)

"""Recipe for the lower bounds of Jiang, Nguyen, Ishwar & Aeron (TMLR 2023).

``jiang_lower_bounds``: for any representation f, HSCL(beta) >= SCL and HUCL(beta) >= UCL, both
non-decreasing in beta (Harris inequality); at the NC geometry HSCL = SCL and HUCL > UCL for
beta > 0. Measured with the exact expectation over the negatives' law (no sampling noise,
:func:`contrastlab.recipes.measures.exact_pair_losses`) for every (anchor, positive) pair of
random encoders on a Gaussian mixture, and cross-checked against the library losses and a
Monte-Carlo estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from contrastlab.recipes.measures import (
    HARD_LOSS,
    SOFT_LOSS,
    beta_increments,
    exact_pair_losses,
    sampled_pair_losses,
)
from contrastlab.recipes.params import check_keys, ks_list, take
from contrastlab.recipes.runners import Outcome, RunContext, register_runner

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["REPRESENTATIONS", "jiang_lower_bounds"]

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


@dataclass
class _Grid:
    """The measurement grid read from the parameters."""

    c: int
    n: int
    input_dim: int
    d: int
    reps: list[Any]
    seeds: list[int]
    ks: list[int]
    betas: list[float]
    t: float
    reductions: list[Any]
    nc: dict[str, Any]
    mc: dict[str, Any]
    sign: float  # -1: the corruption (easy negatives)
    mc_draws: int = 0
    mc_k: int = 0


@dataclass
class _Tally:
    """What the measurement over the random representations accumulates."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    gaps: dict[str, list[float]] = field(
        default_factory=lambda: {"other-class": [], "marginal": []})
    increments: list[float] = field(default_factory=list)
    agreement: float = 0.0
    mc_rows: list[dict[str, Any]] = field(default_factory=list)


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
    forms vs reference values 1.9876 and 2.1861 at C = 10, k = 16, beta = 1), ``engine_agreement``
    (max difference with ``hscl``/``hucl(exact=True)`` per pair, and at the middle k with the
    population form :func:`contrastlab.theory.population.sample_level_loss`, which builds the
    law and the pairs independently) and ``mc_max_z`` (max |MC mean - exact| / standard error).
    """
    from contrastlab.data.latent import make_generator
    from contrastlab.data.synthetic import gaussian_mixture

    grid = _read_grid(params, ctx)
    y = torch.arange(grid.c).repeat_interleave(grid.n)
    mixture = gaussian_mixture(grid.c, grid.input_dim, seed=0)
    grid.mc_draws = int(take(grid.mc, "draws", 200, int))
    grid.mc_k = int(take(grid.mc, "k", grid.ks[len(grid.ks) // 2], int))
    tally = _Tally()
    for s in grid.seeds:
        x = mixture.sample_inputs(y, make_generator(1000 + s))
        for kind in grid.reps:
            z = _representation(str(kind), x, y, grid.d, seed=s)
            _measure(z, y, kind, s, grid, tally)
        ctx.log(f"jiang-lower-bounds: seed {s} done ({len(tally.rows)} rows)")
    nc_rows, closed_gap, nc_c, nc_k = _nc_geometry(grid)
    metrics = _metrics(grid, tally, nc_rows, closed_gap)
    nc_at_1 = [r for r in nc_rows if r["beta"] == 1.0 and r["family"] == "marginal"]
    notes = [f"NC geometry, C={nc_c}, k={nc_k}: HUCL(beta={r['beta']:g}) = {r['hard']:.4f} vs "
             f"UCL = {r['soft']:.4f} (closed form {r['closed_form']:.4f})" for r in nc_at_1]
    notes.append("the smallest per-pair gaps HSCL - SCL and HUCL - UCL over beta > 0 are "
                 f"{metrics['min_hscl_minus_scl']:.3g} and {metrics['min_hucl_minus_ucl']:.3g}")
    return Outcome(metrics, {"losses": tally.rows, "nc_geometry": nc_rows,
                             "monte_carlo": tally.mc_rows},
                   _figures(grid, tally, nc_rows, nc_c, nc_k), notes)


def _read_grid(params: dict[str, Any], ctx: RunContext) -> _Grid:
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
    return _Grid(c, n, input_dim, d, reps, seeds, ks, betas, t, reductions, nc, mc,
                 sign=-1.0 if ctx.corrupt else 1.0)


def _measure(z: torch.Tensor, y: torch.Tensor, kind: Any, s: int, grid: _Grid, tally: _Tally
             ) -> None:
    """Every family, k and reduction on the features ``z`` of one representation (seed ``s``):
    the exact per-pair losses at every beta, compared with the library losses and (at
    ``grid.mc_k``) the population form; on the first seed, the Monte-Carlo cross-check."""
    for neg in ("other-class", "marginal"):
        for k in grid.ks:
            for red in grid.reductions:
                per = {b: exact_pair_losses(z, y, neg, grid.sign * b, k, grid.t, red)
                       for b in grid.betas}
                base = per[0.0]
                for b in grid.betas:
                    for gap in _engine_gaps(z, y, neg, b, k, red, per[b], grid):
                        tally.agreement = max(tally.agreement, gap)
                    if b > 0:
                        tally.gaps[neg].append(float((per[b] - base).min()))
                    tally.rows.append({
                        "representation": kind, "seed": s, "family": neg,
                        "loss": HARD_LOSS[neg] if b > 0 else SOFT_LOSS[neg], "k": k,
                        "reduction": red, "beta": b, "loss_value": float(per[b].mean()),
                        "gap_mean": float((per[b] - base).mean()),
                        "gap_min_pair": float((per[b] - base).min()),
                    })
                tally.increments.append(beta_increments(per))
                if s == grid.seeds[0] and k == grid.mc_k and red == grid.reductions[0]:
                    tally.mc_rows += _monte_carlo(z, y, kind, neg, k, red, per, grid)


def _engine_gaps(z: torch.Tensor, y: torch.Tensor, neg: str, b: float, k: int, red: Any,
                 exact: torch.Tensor, grid: _Grid) -> list[float]:
    """The largest difference of the exact per-pair losses ``exact`` (at beta ``b``) with the
    library's ``hscl``/``hucl(exact=True)``, and at ``grid.mc_k`` the difference of their mean
    with the population form (an independent construction)."""
    from contrastlab.losses.scl import hscl, hucl
    from contrastlab.theory.population import sample_level_loss

    library = {"other-class": hscl, "marginal": hucl}
    lib = library[neg](z, y, beta=b, k=k, temperature=grid.t, normalize="none", exact=True,
                       negatives_reduction=red, reduction="none", tiled=False)
    gaps = [float((lib - exact).abs().max())]
    if k == grid.mc_k:
        pop = sample_level_loss(z, y, k=k, loss="infonce" if red == "sum" else "infonce-mean",
                                temperature=grid.t, negatives=neg, beta=b)
        gaps.append(abs(float(pop) - float(exact.mean())))
    return gaps


def _monte_carlo(z: torch.Tensor, y: torch.Tensor, kind: Any, neg: str, k: int, red: Any,
                 per: dict[float, torch.Tensor], grid: _Grid) -> list[dict[str, Any]]:
    """The sampled estimator (``grid.mc_draws`` draws) against the exact mean at the smallest
    and the largest beta."""
    rows = []
    for b in (grid.betas[0], grid.betas[-1]):
        gen = torch.Generator().manual_seed(7)
        draws = torch.stack([
            sampled_pair_losses(z, y, neg, grid.sign * b, k, gen, grid.t, red).mean()
            for _ in range(grid.mc_draws)])
        exact = float(per[b].mean())
        se = float(draws.std()) / math.sqrt(grid.mc_draws)
        rows.append({
            "representation": kind, "family": neg, "k": k, "beta": b,
            "exact": exact, "mc_mean": float(draws.mean()), "mc_se": se,
            "z": abs(float(draws.mean()) - exact) / max(se, 1e-300)})
    return rows


def _nc_geometry(grid: _Grid) -> tuple[list[dict[str, Any]], float, int, int]:
    """The NC geometry, n samples per class at the vertices of the simplex ETF: the soft and
    hard losses per family and beta, and the largest gap to the closed forms."""
    from contrastlab.theory.etf import etf_loss, simplex_etf

    nc, t = grid.nc, grid.t
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
            hard = exact_pair_losses(z_nc, y_nc, neg, grid.sign * b, nc_k, t, "sum")
            closed = etf_loss(nc_c, nc_k, temperature=t, negatives=neg, beta=b)
            closed_gap = max(closed_gap, abs(float(hard.mean()) - closed))
            nc_rows.append({"family": neg, "loss": HARD_LOSS[neg], "beta": b, "k": nc_k,
                            "soft": float(soft.mean()), "hard": float(hard.mean()),
                            "gap": float(hard.mean() - soft.mean()),
                            "max_abs_pair_gap": float((hard - soft).abs().max()),
                            "closed_form": closed})
    return nc_rows, closed_gap, nc_c, nc_k


def _metrics(grid: _Grid, tally: _Tally, nc_rows: list[dict[str, Any]], closed_gap: float
             ) -> dict[str, float]:
    from contrastlab.theory.etf import etf_loss

    spec_error = max(abs(etf_loss(10, 16) - 1.9876), abs(etf_loss(10, 16, beta=1.0) - 2.1861))
    return {
        "min_hscl_minus_scl": min(tally.gaps["other-class"], default=math.nan),
        "min_hucl_minus_ucl": min(tally.gaps["marginal"], default=math.nan),
        "min_beta_increment": min(tally.increments, default=math.nan),
        "nc_max_abs_hscl_minus_scl": max(r["max_abs_pair_gap"] for r in nc_rows
                                         if r["family"] == "other-class"),
        "nc_min_hucl_minus_ucl": min(r["gap"] for r in nc_rows if r["family"] == "marginal"),
        "nc_closed_form_gap": closed_gap,
        "spec_reference_error": spec_error,
        "engine_agreement": tally.agreement,
        "mc_max_z": max((r["z"] for r in tally.mc_rows), default=math.nan),
        "representations_measured": float(len(grid.reps) * len(grid.seeds)),
    }


def _figures(grid: _Grid, tally: _Tally, nc_rows: list[dict[str, Any]], nc_c: int, nc_k: int
             ) -> dict[str, Figure]:
    from contrastlab.report.claim_figures import harris_gaps

    return {"harris_gaps": harris_gaps(
        [r for r in tally.rows if r["k"] == grid.mc_k and r["reduction"] == grid.reductions[0]],
        nc_rows, title=f"L(beta) - L(0), mean over pairs and seeds (k = {grid.mc_k}); NC: C = "
        f"{nc_c}, k = {nc_k}")}

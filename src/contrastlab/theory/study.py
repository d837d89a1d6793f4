"""The unbalanced-prior study: is the downstream loss of the optimum monotone in k?

Awasthi et al. (2022) prove that for balanced classes the optimum of the population contrastive
loss is the simplex ETF for every k, so its downstream quality does not depend on k; they leave
open (and probe only with small simulations) what happens for an unbalanced class prior. This
module answers it numerically, exactly: for each prior of a family and each k of a grid it solves
for the optimal class vectors (:func:`contrastlab.theory.optimize.optimize_population`, exact
population loss, several restarts plus a warm start from the previous k) and evaluates the
downstream losses of the optimum (:mod:`contrastlab.theory.downstream`).

Temperature: the downstream losses of every optimum, R_mu-supv (Bao et al. 2022's mean
supervised loss, the mean classifier's cross-entropy) and L_sup, are evaluated at the
temperature of the study's contrastive loss, t = ``downstream_temperature(loss, temperature)``
(``temperature`` for the InfoNCE forms, 1 for ``logistic`` and ``hinge``): the module convention
of :mod:`contrastlab.theory.downstream`. So at t != 1 the R_mu-supv column is on
the same score scale f^T mu_c / t as the contrastive loss and L_sup; at t = 1 it is Bao et al.'s
R_mu-supv. The t used is recorded in the result's config as ``downstream_temperature``.

A *violation* is an increase of a downstream loss from one k to the next beyond ``tol``. Every
apparent violation is re-solved at both ends with ``recheck_restarts`` random starts (and warm
starts from both neighbours) before it is reported, with its size and its prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from contrastlab._progress import progress_bar
from contrastlab._tables import markdown_table
from contrastlab._validation import check_positive_int
from contrastlab.data.latent import (
    check_prior,
    dirichlet_prior,
    two_level_prior,
    zipf_prior,
)
from contrastlab.theory.downstream import downstream_report, downstream_temperature
from contrastlab.theory.optimize import PopulationOptimum, optimize_population

DOWNSTREAM_KEYS = ("mean_classifier_loss", "supervised_loss")
DEFAULT_KS = tuple(2**e for e in range(13))  # 1 .. 4096


def default_priors(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The family of priors of the study: Zipf, Dirichlet draws and two-level priors."""
    c = num_classes
    priors = {
        "balanced": torch.full((c,), 1.0 / c, dtype=torch.float64),
        "zipf(0.5)": zipf_prior(c, 0.5),
        "zipf(1)": zipf_prior(c, 1.0),
        "zipf(2)": zipf_prior(c, 2.0),
        "two-level(1 heavy x10)": two_level_prior(c, 1, 10.0),
        f"two-level({c // 2} heavy x4)": two_level_prior(c, max(1, c // 2), 4.0),
    }
    for i in range(2):
        priors[f"dirichlet(1, seed {seed + i})"] = dirichlet_prior(c, 1.0, seed=seed + i)
    return priors


@dataclass
class Violation:
    """A confirmed increase of a downstream loss between two consecutive k."""

    prior: str
    metric: str
    k_from: int
    k_to: int
    value_from: float
    value_to: float

    @property
    def size(self) -> float:
        return self.value_to - self.value_from


#: the columns of a study's table (markdown and text)
STUDY_COLUMNS = ("prior", "k", "contrastive_loss", "mean_classifier_loss", "supervised_loss",
                 "mean_classifier_accuracy", "etf_cosine_error", "converged")


@dataclass
class StudyResult:
    """Tidy result of :func:`monotonicity_study`: one row per (prior, k)."""

    rows: list[dict[str, Any]]
    violations: list[Violation]
    rechecked: int
    config: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        body = [[f"{v:.6g}" if isinstance(v, float) else str(v)
                 for v in (r.get(c) for c in STUDY_COLUMNS)] for r in self.rows]
        return markdown_table(STUDY_COLUMNS, body)


def _solve(
    prior: torch.Tensor,
    k: int,
    restarts: int,
    seed: int,
    inits: Sequence[torch.Tensor],
    **objective: Any,
) -> PopulationOptimum:
    """The best optimum over the random starts and the warm starts ``inits``, with its
    downstream losses at the loss's temperature (module docstring)."""
    best: PopulationOptimum | None = None
    for i, init in enumerate([None, *inits]):
        res = optimize_population(
            prior=prior,
            k=k,
            restarts=restarts if init is None else 1,
            seed=seed + 7919 * i,
            init=init,
            with_downstream=False,
            **objective,
        )
        if best is None or res.loss < best.loss:
            best = res
    assert best is not None
    # the study's own t, passed explicitly (downstream_report applies it to R_mu-supv and L_sup)
    report = downstream_report(
        best.V, best.prior, loss=objective["loss"], temperature=objective["temperature"]
    )
    best.downstream = {key: val for key, val in report.items() if key != "cosine"}
    return best


def _downstream(res: PopulationOptimum) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in DOWNSTREAM_KEYS:
        v = res.downstream.get(key)
        if isinstance(v, (int, float)):
            out[key] = float(v)
    return out


def _solve_path(
    rho: torch.Tensor, ks: Sequence[int], restarts: int, seed: int, objective: dict[str, Any],
    bar: Any = None,
) -> list[PopulationOptimum]:
    """The optimum at every k in ``ks`` (ascending), each warm-started from the previous one;
    ``bar`` (a tqdm bar or None) advances by one per k."""
    sols: list[PopulationOptimum] = []
    for i, k in enumerate(ks):
        inits = [sols[-1].V] if sols else []
        sols.append(_solve(rho, k, restarts, seed + i, inits, **objective))
        if bar is not None:
            bar.update(1)
    return sols


def _recheck_violations(
    name: str,
    rho: torch.Tensor,
    ks: Sequence[int],
    sols: list[PopulationOptimum],
    recheck_restarts: int,
    tol: float,
    seed: int,
    objective: dict[str, Any],
) -> tuple[list[Violation], int]:
    """(confirmed violations, number of rechecks) along one prior's path of optima.

    An apparent violation is re-solved with more restarts and warm starts from the neighbours;
    a better optimum replaces the entry of ``sols`` in place.
    """
    violations: list[Violation] = []
    rechecked = 0
    for metric in DOWNSTREAM_KEYS:
        for i in range(len(ks) - 1):
            a, b = _downstream(sols[i]).get(metric), _downstream(sols[i + 1]).get(metric)
            if a is None or b is None or b <= a + tol:
                continue
            rechecked += 1
            for j in (i, i + 1):
                neigh = [s.V for s in sols[max(0, j - 1) : j + 2]]
                again = _solve(rho, ks[j], recheck_restarts, seed + 104729 + j, neigh, **objective)
                if again.loss < sols[j].loss - 1e-12:
                    sols[j] = again
            a, b = _downstream(sols[i])[metric], _downstream(sols[i + 1])[metric]
            if b > a + tol:
                violations.append(Violation(name, metric, ks[i], ks[i + 1], a, b))
    return violations, rechecked


def _study_rows(
    name: str, ks: Sequence[int], sols: list[PopulationOptimum]
) -> list[dict[str, Any]]:
    """One row per (prior ``name``, k): the optimum's losses and the optimizer's diagnostics,
    including the certified bound on its suboptimality (``duality_gap``, None where the loss is
    not convex in G: :mod:`contrastlab.theory.certify`)."""
    rows: list[dict[str, Any]] = []
    for k, res in zip(ks, sols, strict=True):
        rows.append(
            {
                "prior": name,
                "k": k,
                "contrastive_loss": res.loss,
                **_downstream(res),
                "mean_classifier_accuracy": float(
                    res.downstream.get("mean_classifier_accuracy", math.nan)
                ),
                "etf_cosine_error": res.etf_cosine_error,
                "min_norm": float(res.norms.min()),
                "grad_norm": res.grad_norm,
                "converged": res.converged,
                "duality_gap": res.duality_gap,
            }
        )
    return rows


def monotonicity_study(
    num_classes: int = 5,
    priors: dict[str, torch.Tensor] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    dim: int | None = None,
    restarts: int = 3,
    recheck_restarts: int = 12,
    tol: float = 1e-6,
    seed: int = 0,
    max_iter: int = 3000,
    progress: bool | None = False,
) -> StudyResult:
    """Solve for the optimum at every (prior, k) and test the monotonicity of its downstream loss.

    Returns one row per (prior, k) with the contrastive loss of the optimum, its downstream
    losses (mean-classifier cross-entropy R_mu-supv and L_sup, both at the loss's temperature
    ``downstream_temperature(loss, temperature)``, see the module docstring), the
    mean-classifier accuracy and the optimizer's diagnostics, plus the confirmed violations.
    ``max_iter`` is the L-BFGS budget of every solve (1 gives deliberately unconverged optima,
    for testing checks). ``progress``: a progress bar (tqdm, on stderr) over the (prior, k)
    solves, with the prior being solved and the time left (None: only when stderr is a
    terminal).
    """
    check_positive_int("num_classes", num_classes)
    t_down = downstream_temperature(loss, temperature)
    ks = sorted({check_positive_int("k", int(k)) for k in ks})
    priors = default_priors(num_classes, seed) if priors is None else priors
    objective: dict[str, Any] = {
        "loss": loss,
        "temperature": temperature,
        "negatives": negatives,
        "dim": dim,
        "max_iter": check_positive_int("max_iter", max_iter),
    }
    rows: list[dict[str, Any]] = []
    violations: list[Violation] = []
    rechecked = 0
    bar = progress_bar(len(priors) * len(ks), "optima", progress, unit="optimum")
    for name, prior in priors.items():
        rho = check_prior(prior, num_classes)
        bar.set_postfix_str(f"prior {name}")
        sols = _solve_path(rho, ks, restarts, seed, objective, bar)
        found, n_rechecked = _recheck_violations(
            name, rho, ks, sols, recheck_restarts, tol, seed, objective
        )
        violations.extend(found)
        rechecked += n_rechecked
        rows.extend(_study_rows(name, ks, sols))
    bar.close()
    return StudyResult(
        rows,
        violations,
        rechecked,
        {
            "num_classes": num_classes,
            "ks": list(ks),
            **objective,
            "restarts": restarts,
            "recheck_restarts": recheck_restarts,
            "tol": tol,
            "downstream_temperature": t_down,
        },
    )

"""Text/JSON output of the theory commands (``contrastlab optimum``, ``contrastlab conjecture``).

The CLI (:mod:`contrastlab.cli`) only parses arguments and prints what these functions return.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from contrastlab._progress import progress_bar
from contrastlab._tables import columns_table
from contrastlab.data.latent import parse_prior
from contrastlab.theory.optimize import optimize_population
from contrastlab.theory.study import STUDY_COLUMNS, default_priors, monotonicity_study


def parse_ks(text: str) -> list[int]:
    """Parse a comma-separated list of positive integers (the ``--k`` option)."""
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--k must be a comma-separated list of integers >= 1; got {text!r}"
        ) from None
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"--k must be a comma-separated list of integers >= 1; got {text!r}")
    return ks


def optimum_output(
    classes: int,
    prior: str,
    ks: Sequence[int],
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    beta: float = 0.0,
    dim: int | None = None,
    constraint: str = "sphere",
    restarts: int = 4,
    seed: int = 0,
    as_json: bool = False,
    width: int | None = None,
    progress: bool | None = False,
) -> str:
    """The geometry table of the optimum for each k (one row per k; with ``width``, split into
    blocks of columns that repeat k when wider). ``progress``: a progress bar (tqdm, on stderr)
    over the k values, with the k being solved and the time left (None: only when stderr is a
    terminal)."""
    rho = parse_prior(prior, classes)
    rows = []
    with progress_bar(len(ks), "optima", progress, unit="optimum") as bar:
        for k in ks:
            bar.set_postfix_str(f"k={k}")
            res = optimize_population(
                prior=rho,
                k=k,
                loss=loss,
                temperature=temperature,
                negatives=negatives,
                beta=beta,
                dim=dim,
                constraint=constraint,
                restarts=restarts,
                seed=seed,
            )
            row = res.summary()
            row["prior"] = prior
            row["min_cosine"] = float(res.cosines.min())
            if as_json:
                row["cosines"] = res.cosines.tolist()
                row["V"] = res.V.tolist()
            rows.append(row)
            bar.update(1)
    if as_json:
        return json.dumps({"prior": rho.tolist(), "rows": rows}, indent=2)
    cols = [
        "k",
        "loss",
        "etf_cosine_error",
        "min_cosine",
        "zero_sum",
        "min_norm",
        "mean_classifier_loss",
        "supervised_loss",
        "mean_classifier_accuracy",
        "grad_norm",
        "converged",
        "duality_gap",
    ]
    head = (
        f"optimum of the population {loss} loss ({negatives} negatives, beta={beta}, "
        f"t={temperature}), C={classes}, prior {prior} = "
        f"[{', '.join(f'{p:.4f}' for p in rho.tolist())}], {constraint}"
    )
    return head + "\n" + columns_table(rows, cols, width=width, keep=1)


def conjecture_output(
    classes: int,
    ks: Sequence[int],
    priors: Sequence[str] | None = None,
    loss: str = "infonce",
    temperature: float = 1.0,
    negatives: str = "marginal",
    restarts: int = 3,
    recheck_restarts: int = 12,
    seed: int = 0,
    as_json: bool = False,
    progress: bool | None = False,
    width: int | None = None,
) -> str:
    """Run the unbalanced-prior study and report the table and the confirmed violations;
    ``progress``: a progress bar on stderr while it solves (None: when stderr is a terminal)."""
    family = (
        default_priors(classes, seed)
        if not priors
        else {p: parse_prior(p, classes) for p in priors}
    )
    res = monotonicity_study(
        classes,
        family,
        ks,
        loss,
        temperature,
        negatives,
        restarts=restarts,
        recheck_restarts=recheck_restarts,
        seed=seed,
        progress=progress,
    )
    viol = [
        {
            "prior": v.prior,
            "metric": v.metric,
            "k_from": v.k_from,
            "k_to": v.k_to,
            "value_from": v.value_from,
            "value_to": v.value_to,
            "size": v.size,
        }
        for v in res.violations
    ]
    if as_json:
        return json.dumps(
            {
                "config": res.config,
                "rows": res.rows,
                "violations": viol,
                "rechecked": res.rechecked,
            },
            indent=2,
            default=str,
        )
    out = [columns_table(res.rows, list(STUDY_COLUMNS), width=width, keep=2), ""]
    out.append(f"apparent violations re-solved: {res.rechecked}; confirmed: {len(viol)}")
    for v in viol:
        out.append(
            f"  {v['prior']}: {v['metric']} rises from k={v['k_from']} "
            f"({v['value_from']:.6g}) to k={v['k_to']} ({v['value_to']:.6g}), "
            f"+{v['size']:.3g}"
        )
    if not viol:
        out.append("downstream losses of the optimum are non-increasing in k for every prior.")
    return "\n".join(out)

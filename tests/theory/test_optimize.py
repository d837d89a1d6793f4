"""The optimizer of the population loss: the ETF for balanced classes, Lemma 1, the study."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from contrastlab.data.latent import parse_prior, two_level_prior
from contrastlab.theory.certify import gram_convexity
from contrastlab.theory.etf import etf_cosine, etf_loss
from contrastlab.theory.optimize import optimize_per_sample, optimize_population
from contrastlab.theory.population import population_loss
from contrastlab.theory.study import monotonicity_study


@pytest.mark.parametrize(("C", "ks"), [(3, [1, 2, 64]), (10, [1, 16, 4096]), (50, [1, 64])])
@pytest.mark.parametrize("negatives", ["marginal", "other-class"])
def test_balanced_optimum_is_the_etf_for_every_k(C, ks, negatives) -> None:
    for k in ks:
        res = optimize_population(
            num_classes=C, k=k, negatives=negatives, restarts=1, seed=k, with_downstream=False
        )
        off = ~torch.eye(C, dtype=torch.bool)
        assert (res.cosines[off] - etf_cosine(C)).abs().max() <= 1e-5, res.summary()
        assert res.zero_sum <= 1e-5
        assert res.loss == pytest.approx(etf_loss(C, k, "infonce", 1.0, negatives), abs=1e-9)
        assert res.converged


def test_ball_constraint_reaches_the_sphere() -> None:
    res = optimize_population(
        num_classes=5, k=8, constraint="ball", restarts=1, with_downstream=False
    )
    assert float(res.norms.min()) > 0.999
    assert res.etf_cosine_error < 1e-4


def test_unbalanced_optimum_is_not_the_etf() -> None:
    rho = two_level_prior(5, 1, 10.0)
    res = optimize_population(prior=rho, k=16, restarts=2, with_downstream=False)
    assert res.etf_cosine_error > 1e-3
    assert res.loss < etf_loss(5, 16) + 1.0  # finite, sane
    assert res.converged


def test_lemma1_per_sample_optimum_collapses() -> None:
    res = optimize_per_sample(3, num_classes=4, k=3, restarts=1)
    assert res.within_class_spread < 1e-5
    assert res.etf_cosine_error < 1e-5
    assert res.loss == pytest.approx(0.824929, abs=1e-6)  # SPEC A7 checks: UCL (4, 3, 3)


def test_study_table_and_violations_are_reported() -> None:
    priors = {
        "balanced": torch.full((4,), 0.25, dtype=torch.float64),
        "zipf:1": parse_prior("zipf:1", 4),
    }
    out = monotonicity_study(4, priors, ks=[1, 4, 16], restarts=1, recheck_restarts=2)
    assert len(out.rows) == 6
    assert {r["prior"] for r in out.rows} == {"balanced", "zipf:1"}
    bal = [r for r in out.rows if r["prior"] == "balanced"]
    # balanced: the optimum is the ETF for every k, so its downstream loss is flat in k
    assert (
        max(r["mean_classifier_loss"] for r in bal) - min(r["mean_classifier_loss"] for r in bal)
        < 1e-6
    )
    assert "| prior | k |" in out.to_markdown()
    for v in out.violations:
        assert v.size > 0


@pytest.mark.parametrize("spec", ["zipf", "dirichlet:0.5:3", "two-level:2:5", "1,2,3,4"])
def test_parse_prior(spec: str) -> None:
    rho = parse_prior(spec, 4)
    assert rho.shape == (4,) and abs(float(rho.sum()) - 1) < 1e-12


@pytest.mark.parametrize("spec", ["zipf:x", "1,2", "uniformish", "1,-1,2,3"])
def test_parse_prior_errors(spec: str) -> None:
    with pytest.raises(ValueError, match="prior"):
        parse_prior(spec, 4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_classes": 4, "dim": 0}, "dim"),
        ({"num_classes": 4, "constraint": "cube"}, "constraint"),
        ({}, "num_classes"),
        ({"prior": torch.tensor([0.7, 0.7])}, "prior"),
    ],
)
def test_bad_input(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        optimize_population(**kwargs)


def test_certified_optimum_stops_the_restarts_and_reports_the_gap() -> None:
    res = optimize_population(num_classes=6, k=16, restarts=4, with_downstream=False)
    assert res.duality_gap is not None and res.duality_gap <= 1e-6 and res.certified
    assert len(res.restart_losses) == 1  # the first start is certified: no more starts
    row = res.summary()
    assert row["duality_gap"] == res.duality_gap and row["duality_gap_reason"] is None
    assert row["starts_run"] == 1
    # the reported loss is the exact population loss of the returned vectors
    assert res.loss == pytest.approx(float(population_loss(res.V, None, k=16)), abs=1e-12)


@pytest.mark.parametrize(("loss", "beta"), [("hinge", 0.0), ("infonce", 1.0)])
def test_non_convex_objectives_run_every_start_without_a_certificate(loss, beta) -> None:
    res = optimize_population(
        num_classes=4, k=4, loss=loss, beta=beta, restarts=2, with_downstream=False
    )
    assert res.duality_gap is None and not res.certified
    assert res.duality_gap_reason == gram_convexity(loss, beta) is not None
    assert len(res.restart_losses) == 2


def test_low_dimension_is_not_certified_and_runs_every_start() -> None:
    """d = 2 < C - 1: the Gram relaxation's optimum (the ETF, rank 4) is out of reach, so the
    gap stays large (a valid but loose bound) and every start runs."""
    res = optimize_population(num_classes=5, k=8, dim=2, restarts=3, with_downstream=False)
    assert res.duality_gap is not None and res.duality_gap > 1e-3
    assert res.loss - etf_loss(5, 8) <= res.duality_gap
    assert len(res.restart_losses) == 3


_SCRIPT = """
import torch
from contrastlab.data.latent import zipf_prior
from contrastlab.theory.optimize import optimize_population
res = optimize_population(prior=zipf_prior(12, 1.0), k=64, restarts=2)
print(repr(res.loss), res.duality_gap, res.iterations, res.V.numpy().tobytes().hex())
print(res.downstream["supervised_loss"], torch.get_num_threads())
"""


def test_results_do_not_depend_on_the_thread_count() -> None:
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        lines = proc.stdout.splitlines()
        assert lines[-1].split()[-1] == threads  # the caller's setting is restored
        outs.append([lines[0], lines[1].split()[0]])
    assert outs[0] == outs[1]


def test_study_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    priors = {"zipf:1": parse_prior("zipf:1", 3)}
    quiet = monotonicity_study(3, priors, ks=[1, 4], restarts=1, recheck_restarts=1)
    assert capsys.readouterr().err == ""
    loud = monotonicity_study(3, priors, ks=[1, 4], restarts=1, recheck_restarts=1,
                              progress=True)
    err = capsys.readouterr().err
    assert "optima" in err and "2/2" in err and "prior zipf:1" in err
    assert loud.rows == quiet.rows  # the bar changes nothing

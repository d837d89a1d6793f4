"""The checks of the Bao recipes are real: hand-made inputs outside the bounds are counted."""

import pytest

from contrastlab.recipes.bao import idealized_checks, measured_gaps
from contrastlab.theory.bounds import bao_delta_lower, bao_delta_upper, idealized_bounds


def _record(k, r_cont, r_mu, **over):
    rec = {"loss.name": "nce", "loss.score": "infonce", "loss.normalize": "sphere",
           "loss.temperature": 1.0, "loss.sampler": "uniform",
           "loss.k": k, "heldout_loss": r_cont, "mc_ce": r_mu, "mc_acc": 0.9,
           "reports": {"geometry": {"class_counts": [50, 50, 100]}}}
    rec.update(over)
    return rec


def test_measured_gap_uses_bao_deltas_with_the_label_prior():
    rows = measured_gaps([_record(4, 1.5, 1.0), _record(4, 1.7, 1.2)], "x")
    (row,) = rows
    prior = [0.25, 0.25, 0.5]
    assert row["gap"] == pytest.approx(-0.5)
    assert row["delta_upper"] == pytest.approx(float(bao_delta_upper(4, prior=prior, b=1.0)))
    assert row["delta_lower"] == pytest.approx(float(bao_delta_lower(4, prior=prior, b=1.0)))
    assert row["R_cont"] == pytest.approx(1.6) and row["C"] == 3


def test_measured_gap_refuses_other_conventions():
    with pytest.raises(ValueError, match=r"loss\.temperature must be 1\.0"):
        measured_gaps([_record(4, 1.5, 1.0, **{"loss.temperature": 0.5})], "x")


def test_idealized_checks_pass_on_the_real_table_and_catch_a_broken_one():
    rows = list(idealized_bounds(10, list(range(1, 65))).rows)
    assert all(v == 0 for v in idealized_checks(rows).values())
    broken = [dict(r) for r in rows]
    broken[20]["bao_upper"] = broken[20]["R_mu_supv_star"] - 1.0  # an invalid upper bound
    broken[3]["arora"] = 1.0  # defined below C
    got = idealized_checks(broken)
    assert got["bao_upper_below_optimum"] == 1 and got["arora_ns_defined_below_C"] == 1
    assert got["bao_upper_increases"] >= 1

"""The pieces of the awasthi-conjecture-scale runner (Awasthi, Dikkala & Kamath 2022's
unbalanced-prior conjecture at scale; issue 17, item 4)."""

import math

import pytest

from contrastlab.recipes import load_recipe
from contrastlab.recipes.checks import evaluate_checks
from contrastlab.recipes.conjecture_scale import (
    TABLE_COLUMNS,
    conjecture_metrics,
    conjecture_priors,
    largest_rise_figure,
    largest_rises,
    solve_grid,
)
from tests.figure_layout import layout_problems


@pytest.mark.parametrize("c", [3, 5, 10, 20, 50])
def test_default_family_has_200_priors_of_every_kind(c):
    priors = conjecture_priors(c)
    assert len(priors) >= 200
    kinds = {name.split(":")[0] for name in priors}
    assert kinds == {"balanced", "dirichlet", "zipf", "two-level"}
    alphas = {name.split(":")[1] for name in priors if name.startswith("dirichlet")}
    assert alphas == {"0.3", "1", "3", "10"}
    assert len({n for n in priors if n.startswith("zipf")}) >= 5
    for rho in priors.values():
        assert rho.shape == (c,) and math.isclose(float(rho.sum()), 1.0, abs_tol=1e-12)
    # seeded: the same family twice, a different one for another seed
    again = conjecture_priors(c)
    assert all(bool((again[n] == priors[n]).all()) for n in priors)
    other = conjecture_priors(c, seed=7)
    assert not bool((other["dirichlet:1:7"] == priors["dirichlet:1:0"]).all())


def _row(prior, k, mc, sup, loss="infonce", gap=1e-9):
    return {"C": 3, "temperature": 1.0, "loss": loss, "prior": prior, "k": k,
            "mean_classifier_loss": mc, "supervised_loss": sup, "mean_classifier_accuracy": 1.0,
            "duality_gap": gap, "certified": gap is not None and gap <= 1e-6}


def _checks(metrics, profile="full"):
    return {r.check.name: r.passed
            for r in evaluate_checks(load_recipe("awasthi-conjecture-scale").checks_for(profile),
                                     metrics)}


def test_checks_fail_on_a_planted_violation_and_pass_without():
    rows = [_row("p", k, 0.5 - 0.01 * i, 0.4 - 0.01 * i) for i, k in enumerate([1, 2, 4])]
    sizes = {3: 201}
    ok = _checks(conjecture_metrics(rows, [], sizes))
    assert ok == {"monotone-downstream": True, "monotone-lsup": True, "certified": True,
                  "prior-family": True}
    planted = [{"C": 3, "temperature": 1.0, "loss": "infonce", "prior": "p", "metric":
                "supervised_loss", "k_from": 2, "k_to": 4, "value_from": 0.39,
                "value_to": 0.395, "size": 0.005}]
    bad = _checks(conjecture_metrics(rows, planted, sizes))
    assert not bad["monotone-downstream"] and not bad["monotone-lsup"]
    # a rise of R_mu-supv alone fails the downstream claim, not the L_sup one
    planted[0]["metric"] = "mean_classifier_loss"
    mc = _checks(conjecture_metrics(rows, planted, sizes))
    assert not mc["monotone-downstream"] and mc["monotone-lsup"]


def test_certified_check_fails_on_an_uncertified_smooth_optimum_not_on_hinge():
    sizes = {3: 201}
    hinge = [_row("p", 1, 0.5, 0.4, loss="hinge", gap=None)]
    m = conjecture_metrics(hinge, [], sizes)
    assert m["uncertified_hinge_optima"] == 1 and _checks(m)["certified"]
    for gap in (None, 1e-3):
        m = conjecture_metrics([_row("p", 1, 0.5, 0.4, gap=gap)], [], sizes)
        assert m["uncertified_smooth_optima"] == 1 and not _checks(m)["certified"]
    assert not _checks(conjecture_metrics(hinge, [], {3: 13}))["prior-family"]


def test_largest_rises_and_figure():
    rows = [_row("down", k, 0.5 - 0.01 * i, 0.4) for i, k in enumerate([1, 2, 4])]
    rows += [_row("up", k, 0.5 + 0.01 * i, 0.4) for i, k in enumerate([1, 2, 4])]
    rises = {r["prior"]: r for r in largest_rises(rows, "mean_classifier_loss")}
    assert rises["down"]["largest_rise"] == pytest.approx(-0.01)
    assert rises["up"]["largest_rise"] == pytest.approx(0.01)
    allr = [x for m in ("mean_classifier_loss", "supervised_loss") for x in largest_rises(rows, m)]
    assert layout_problems(largest_rise_figure(allr, 1e-6)) == []


def test_grid_table_schema_and_certificates():
    rows, viols, secs = solve_grid(
        [3], [0.5], ["infonce", "logistic", "hinge"], [1, 4],
        {"dirichlet": [1.0], "per_alpha": 1, "zipf": [1.0], "two_level": [4.0]},
        {"restarts": 1, "recheck_restarts": 2, "tol": 1e-6, "seed": 0})
    # logistic has no temperature: one study at t = 1; 5 priors x 2 k per study
    assert set(secs) == {"C=3 t=0.5 infonce", "C=3 t=1 logistic", "C=3 t=0.5 hinge"}
    assert len(rows) == 3 * 5 * 2
    for r in rows:
        assert tuple(r) == TABLE_COLUMNS
        if r["loss"] == "hinge":
            assert r["duality_gap"] is None and r["certified"] is False
        else:
            assert r["certified"] and r["duality_gap"] <= 1e-6
    assert {r["downstream_temperature"] for r in rows if r["loss"] == "infonce"} == {0.5}
    for v in viols:
        assert v["size"] > 1e-6 and {"prior", "k_from", "k_to", "metric"} <= set(v)

from pathlib import Path

import pytest

from contrastlab.recipes import PROFILES, list_recipes, load_recipe
from contrastlab.recipes.catalog import all_runners

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"awasthi-balanced-etf", "awasthi-unbalanced", "awasthi-k-sweep", "jiang-nc-vs-dc",
            "bao-bounds", "bao-text", "awasthi-lemma1", "jiang-lower-bounds", "jiang-nc-optimal"}


def test_every_claim_has_a_recipe_and_the_repo_links_them():
    names = {r.name for r in list_recipes()}
    assert REQUIRED <= names
    linked = {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    assert linked == names


def test_the_catalog_holds_exactly_the_runners_the_recipes_use():
    # a runner module missing from the catalog would leave its recipes unloadable, one no
    # recipe uses would be dead code
    assert set(all_runners()) == {r.runner for r in list_recipes()}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_recipe_is_complete(name):
    r = load_recipe(name)
    assert r.name == name and r.path is not None and r.path.stem == name
    assert set(r.profiles) == set(PROFILES)
    assert "seeds/" in r.source and r.claim and r.corruption
    assert all(c.why for c in r.checks)
    for p in PROFILES:
        assert r.profiles[p].get("about")
        r.params(p)
        assert len(r.checks_for(p)) == len(r.checks)


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


GOOD = """
name: t
title: t
claim: c
source: seeds/000
runner: awasthi_balanced_etf
corruption: unconverged
profiles:
  quick: {params: {classes: [3], ks: [1, 2]}, thresholds: {etf: 0.5}}
  full: {params: {classes: [3], ks: [1, 2]}}
checks:
  - {name: etf, kind: claim, metric: max_etf_cosine_error, op: "<=", value: 1.0e-4, why: w}
"""


def test_load_from_path_and_threshold_override(tmp_path):
    r = load_recipe(_write(tmp_path, GOOD))
    assert r.checks_for("quick")[0].value == 0.5
    assert r.checks_for("full")[0].value == 1e-4
    with pytest.raises(ValueError, match="profile must be one of 'quick', 'full'"):
        r.params("fast")


@pytest.mark.parametrize(("old", "new", "match"), [
    ("runner: awasthi_balanced_etf", "runner: nope", "runner must be one of"),
    ("corruption: unconverged", "corruption: ''", "corruption must be a non-empty string"),
    ("  full: {params: {classes: [3], ks: [1, 2]}}\n", "", "profiles must define exactly"),
    ("thresholds: {etf: 0.5}", "thresholds: {nope: 0.5}", "names no check"),
    ("op: \"<=\"", "op: \"=<\"", "op must be one of"),
    ("name: t\n", "name: t\nextra: 1\n", "unknown field"),
    ("kind: claim", "kind: sanity", "at least one check must be of kind 'claim'"),
])
def test_bad_recipe_files_fail_in_one_line(tmp_path, old, new, match):
    assert old in GOOD
    with pytest.raises(ValueError, match=match) as info:
        load_recipe(_write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(info.value)


def test_unknown_name_lists_the_recipes():
    with pytest.raises(ValueError, match=r"recipe must be one of .*awasthi-balanced-etf"):
        load_recipe("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe("/nonexistent/x.yaml")


def test_env_directory_overrides(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text(GOOD.replace("name: t", "name: mine"))
    monkeypatch.setenv("CONTRASTLAB_RECIPES", str(tmp_path))
    assert "mine" in {r.name for r in list_recipes()}

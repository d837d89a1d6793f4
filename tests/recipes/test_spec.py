import re
from pathlib import Path

import pytest

from contrastlab.recipes import PROFILES, list_recipes, load_recipe
from contrastlab.recipes.catalog import all_runners
from contrastlab.recipes.spec import OPTIONAL_PROFILES, unmet_requirement

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


def test_the_catalog_names_the_module_of_every_registered_runner():
    import importlib

    from contrastlab.recipes.catalog import RUNNER_MODULES
    from contrastlab.recipes.runners import RUNNERS

    runners = all_runners()
    for name, module in RUNNER_MODULES.items():  # a lookup imports the module, which registers
        assert runners[name].__module__ == f"contrastlab.recipes.{module}", name
    # and no module registers a runner not listed
    src = REPO / "src" / "contrastlab" / "recipes"
    registering = {p.stem for p in src.glob("*.py") if "@register_runner(" in p.read_text()}
    assert registering == set(RUNNER_MODULES.values())
    for module in registering:
        importlib.import_module(f"contrastlab.recipes.{module}")
    assert set(RUNNERS) == set(RUNNER_MODULES)
    with pytest.raises(KeyError):
        runners["no_such_runner"]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_recipe_is_complete(name):
    r = load_recipe(name)
    assert r.name == name and r.path is not None and r.path.stem == name
    assert set(PROFILES) <= set(r.profiles) <= set(PROFILES) | set(OPTIONAL_PROFILES)
    # the source cites the paper (authors, venue and year) and quotes it
    assert re.search(r"\((?:ICML|TMLR) 20\d\d\)", r.source) and r.claim and r.corruption
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
    ("  full: {params: {classes: [3], ks: [1, 2]}}\n", "", "profiles must define quick, full"),
    ("  full: {", "  fast: {params: {}}\n  full: {", "may define gpu"),
    ("  full: {params: {classes: [3], ks: [1, 2]}}", "  full: {params: {}, requires: [tpu]}",
     "requires must be a list of cuda, data.root"),
    ("  full: {params: {classes: [3], ks: [1, 2]}}",
     "  full: {params: {}, checks: [{name: etf, metric: m, op: '<=', value: 1, kind: claim}]}",
     "check names must be unique"),
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


GPU = GOOD.replace("checks:\n", """  gpu:
    requires: [cuda, data.root]
    params: {classes: [3], ks: [1, 2], config: {data: {root: null}}}
    thresholds: {published: 0.1}
    checks:
      - {name: published, kind: claim, metric: published_gap, op: "<=", value: 0.05, why: p}
checks:
""")


def test_a_gpu_profile_adds_its_checks_and_requirements(tmp_path, monkeypatch):
    r = load_recipe(_write(tmp_path, GPU))
    assert [c.name for c in r.checks_for("quick")] == ["etf"]
    assert [(c.name, c.value) for c in r.checks_for("gpu")] == [("etf", 1e-4),
                                                                ("published", 0.1)]
    assert r.requires("quick") == [] and r.requires("gpu") == ["cuda", "data.root"]
    assert unmet_requirement(r, "quick", r.params("quick")) is None
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msg = unmet_requirement(r, "gpu", r.params("gpu"))
    assert msg is not None and "needs a CUDA device" in msg and "\n" not in msg
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    msg = unmet_requirement(r, "gpu", r.params("gpu"))
    assert msg is not None and "--param set.data.root=DIR" in msg
    assert unmet_requirement(r, "gpu", {**r.params("gpu"), "set": {"data.root": "/d"}}) is None


def test_unknown_name_lists_the_recipes():
    with pytest.raises(ValueError, match=r"recipe must be one of .*awasthi-balanced-etf"):
        load_recipe("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe("/nonexistent/x.yaml")


def test_env_directory_overrides(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text(GOOD.replace("name: t", "name: mine"))
    monkeypatch.setenv("CONTRASTLAB_RECIPES", str(tmp_path))
    assert "mine" in {r.name for r in list_recipes()}

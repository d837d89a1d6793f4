"""Every recipe's quick profile runs here: it must PASS, and its deliberately corrupted variant
(shuffled labels for the trained recipes, a one-step optimizer for the exact ones) must FAIL."""

import json

import pytest
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.recipes import list_recipes, load_recipe, run_recipe

NAMES = sorted(r.name for r in list_recipes())
TRAINED = {"awasthi-k-sweep", "jiang-nc-vs-dc", "bao-bounds", "bao-text", "nozawa-k-sweep",
           "robinson-hard-negatives"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("repro")


# The corrupted variants of the trained recipes run on a smaller grid (fewer k, betas, epochs):
# the same pipeline and the same checks, fed shuffled labels, at a fraction of the cost.
SMALL = {
    "awasthi-k-sweep": {"ks": [1, 256], "set": {"train.epochs": 10, "eval.every": 2}},
    "jiang-nc-vs-dc": {"losses": [["scl", "hscl"]], "betas": [0, 5],
                       "normalizations": ["sphere", "none"],
                       "set": {"train.epochs": 20, "eval.every": 4}},
    "nozawa-k-sweep": {"batch_sizes": [16, 128], "set": {"train.epochs": 5, "eval.every": 1}},
    "robinson-hard-negatives": {"set": {"train.epochs": 5, "eval.every": 1}},
    "bao-bounds": {"idealized": {"classes": [10], "ks": "1..64"},
                   "datasets": {"mnist1d": {"ks": [1, 16], "seeds": [0, 1, 2], "set": {
                       "train.epochs": 10, "eval.every": 2},
                       "config": load_recipe("bao-bounds").params("quick")["datasets"][
                           "mnist1d"]["config"]}}},
}

# Claims that do not reproduce: the recipe reports an honest FAIL of exactly these checks, each
# with a margin far larger than the spread between machines (the closing notes and
# recipes/RESULTS.md give the values and say why); every other recipe's quick profile PASSes.
KNOWN_FAILS = {
    # at C = 3, K = 3 Arora's bound (1.27) is below Bao's (1.64)
    "bao-text": {"upper-tightest"},
    # the class means of MNIST-1D collapse (NC1 -> 0.02 at 150 epochs) but not to an ETF
    # (distance 0.4 at 150 epochs, 0.8 at 30; threshold 0.2)
    "awasthi-k-sweep": {"approach-etf", "equiangular-pairs"},
    # no dimensional collapse by the recipe's own criterion (sigma_min/sigma_max 0.2-0.7 against
    # 0.01), and beta = 0 is not farther from the ETF beyond seed-to-seed spread
    "jiang-nc-vs-dc": {"dc-without-normalization", "dc-without-hard-negatives",
                       "hard-negatives-help"},
    # Awasthi's conjecture fails on certified optima: R_mu-supv rises by up to 3.6e-3 from one k
    # to the next for skewed Dirichlet and two-level priors (C = 3, 5; 56 confirmed rises)
    "awasthi-conjecture-scale": {"monotone-downstream"},
    # on MNIST-1D at 1,500 steps the accuracy falls with beta: 0.386 (beta = 0), 0.358 (1), 0.333
    # (6); beta = 1 minus beta = 0 is -0.028 (lower bound -0.049), beta = 6 minus beta = 1 is
    # -0.024 with an upper bound of +0.030 over 3 seeds
    "robinson-hard-negatives": {"hard-negatives-help", "too-hard-hurts"},
}
# Checks of a known-FAIL recipe whose observed value lies near its threshold, so that their
# outcome may differ between machines (the verdict does not): not asserted either way.
BORDERLINE = {
    # the accuracy gain from K = 1 to 256 is +0.007 with a lower bound of -0.011 over 3 seeds
    "bao-text": {"accuracy-improves"},
    # one SCL run at beta = 0 ends with its held-out loss still falling by 1.2 % (tol 1 %)
    "jiang-nc-vs-dc": {"converged"},
    # k = 1, seed 2: the held-out loss falls by 1.09 % over the last 20 % of epochs (0.21289 ->
    # 0.21057; tol 1 %); the same values at 3700a38 and now, converged in an earlier CI run
    "awasthi-k-sweep": {"converged"},
    # L_sup rises by 1e-6 to 1.3e-5 per doubling of k (C = 3, prior dirichlet:0.3:1, k = 4..256),
    # a smooth trend, but the smallest steps are near the solver's tolerance
    "awasthi-conjecture-scale": {"monotone-lsup"},
}


def _run(name, out, corrupt, params=None):
    said = []
    res = run_recipe(name, "quick", out, corrupt=corrupt,
                     workers=2 if name in TRAINED else 1, params=params, log=said.append)
    # what it is doing, before any work, and when it has measured (issue 18: progress)
    assert said[0].startswith(f"{name}, quick profile") and "running" in said[0], said[:1]
    assert said[-1].startswith(f"{name}: measured in"), said[-1:]
    return res


@pytest.mark.parametrize("name", NAMES)
def test_quick_profile_passes_and_writes_its_evidence(name, out):
    res = _run(name, out, False)
    failed = {c.check.name for c in res.checks if not c.passed}
    assert failed - BORDERLINE.get(name, set()) == KNOWN_FAILS.get(name, set()), res.summary()
    verdict = "FAIL" if failed else "PASS"
    assert res.summary().splitlines()[-1] == f"{verdict} {name}"
    d = out / name / "quick"
    data = json.loads((d / "result.json").read_text())
    assert data["verdict"] == verdict and data["checks"] and data["metrics"]
    assert {c["name"] for c in data["checks"] if not c["passed"]} == failed
    assert {c["kind"] for c in data["checks"]} <= {"claim", "sanity", "formula"}
    html = (d / "report.html").read_text()
    assert "PASS" in html and res.recipe.claim.split()[0] in html
    assert html.count("data:image/png;base64,") == len(res.outcome.figures) >= 1
    for paths in res.figure_paths.values():
        assert {p.suffix for p in paths} == {".png", ".svg"}
        assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_result_fails(name, out):
    res = _run(name, out, True, SMALL.get(name))
    assert not res.passed, res.summary()
    assert res.summary().splitlines()[-1] == f"FAIL {name}"
    # the deliberately wrong variant fails on the claim itself, not only on a sanity check
    failed_claims = [c.check.name for c in res.checks if not c.passed and c.check.kind == "claim"]
    assert failed_claims, res.summary()
    assert res.failed_claims == failed_claims
    data = json.loads((out / name / "quick-corrupt" / "result.json").read_text())
    assert data["verdict"] == "FAIL" and data["corrupt"] is True


def test_trained_recipe_is_a_function_of_its_config(out, tmp_path):
    # every run computes with train.threads (1 when unset) whatever the worker count: the quick
    # profile trained by 1 worker gives the same check values, bit for bit, as by 2 workers
    # (bao-text: the cheapest trained quick profile, 9 runs, a linear encoder)
    name = "bao-text"
    two = _run(name, out, False)  # resumes the stored runs of the test above, or trains them
    one = run_recipe(name, "quick", tmp_path, workers=1)
    assert [(c.check.name, c.observed) for c in one.checks] == [
        (c.check.name, c.observed) for c in two.checks]
    assert one.outcome.tables["measured_gaps"] == two.outcome.tables["measured_gaps"]


def test_trained_recipe_resumes_without_retraining(out):
    # the quick run above stored its runs: running again trains nothing and gives the same result
    from contrastlab.experiments.store import ResultStore

    runs = out / "awasthi-k-sweep" / "quick" / "runs"

    def attempts():
        with ResultStore(runs, create=False) as store:
            return {r["run_id"]: (r["status"], r["attempts"]) for r in store.runs()}

    first = json.loads((out / "awasthi-k-sweep" / "quick" / "result.json").read_text())
    before = attempts()
    again = _run("awasthi-k-sweep", out, False)
    assert attempts() == before and all(st == "done" for st, _ in before.values())
    assert again.outcome.metrics == pytest.approx(first["metrics"])


def test_cli_repro_list_and_exit_codes(out):
    runner = CliRunner()
    res = runner.invoke(app, ["repro", "--list"])
    assert res.exit_code == 0 and all(n in res.output for n in NAMES)
    small = ["--param", "classes=[3]", "--param", "ks=[1,2]"]
    res = runner.invoke(app, ["repro", "awasthi-balanced-etf", *small, "--out", str(out / "cli")])
    assert res.exit_code == 0, res.output
    assert "PASS awasthi-balanced-etf" in res.output and "report:" in res.output
    data = json.loads((out / "cli" / "awasthi-balanced-etf" / "quick" / "result.json")
                      .read_text())
    assert data["params"]["classes"] == [3] and data["metrics"]["solves"] == 2
    res = runner.invoke(app, ["repro", "awasthi-balanced-etf", *small, "--corrupt", "--out",
                              str(out / "cli")])
    assert res.exit_code == 1 and "FAIL awasthi-balanced-etf" in res.output
    res = runner.invoke(app, ["repro", "nope"])
    assert res.exit_code == 2 and "recipe must be one of" in res.output
    res = runner.invoke(app, ["repro"])
    assert res.exit_code == 2 and "name is required" in res.output
    res = runner.invoke(app, ["repro", "awasthi-balanced-etf", "--profile", "fast"])
    assert res.exit_code == 2 and "profile must be one of" in res.output
    res = runner.invoke(app, ["repro", "awasthi-balanced-etf", "--param", "kz=[1]"])
    assert res.exit_code == 2 and "unknown parameter(s) kz" in res.output
    res = runner.invoke(app, ["repro", "awasthi-balanced-etf", "--param", "ks"])
    assert res.exit_code == 2 and "--param must be KEY=VALUE" in res.output


def test_cli_repro_summary(out, tmp_path):
    # every result written above, as one Markdown page; a directory without results is refused
    runner = CliRunner()
    dest = tmp_path / "RESULTS.md"
    res = runner.invoke(app, ["repro", "--summary", "--out", str(out), "--to", str(dest)])
    assert res.exit_code == 0, res.output
    text = dest.read_text()
    assert "| recipe | profile | verdict |" in text and "## bao-bounds [quick]" in text
    assert "| check | kind | condition | observed | result |" in text
    res = runner.invoke(app, ["repro", "--summary", "--out", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no recipe results" in res.output

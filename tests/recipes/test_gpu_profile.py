"""The ``gpu`` profiles: the papers' own experiments, refused off a GPU (one line, exit 2,
before any work) and judged against the published numbers (:func:`published_comparison`)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.recipes import list_recipes, load_recipe
from contrastlab.recipes.jiang import published_comparison

PAPER = {"loss": "hscl", "normalize": "ball",
         "accuracy": {0: 0.1038, 2: 0.3186, 5: 0.5839, 10: 0.5707, 30: 0.5457}}


def _curve(acc: dict[float, float], normalize: str = "ball") -> list[dict]:
    return [{"loss": "hscl", "normalize": normalize, "beta": b, "mc_acc": a, "mc_acc_sd": 0.01}
            for b, a in acc.items()]


def test_published_comparison_measures_the_gap_and_the_effect():
    measured = {0.0: 0.12, 2.0: 0.30, 5.0: 0.55, 10.0: 0.57, 30.0: 0.50}
    metrics, table = published_comparison(_curve(measured) + _curve({0.0: 0.9}, "none"), PAPER)
    assert metrics["published_max_abs_gap"] == pytest.approx(0.0457)  # beta = 30
    assert metrics["published_hard_gain"] == pytest.approx(0.55 - 0.12)  # the paper's best: 5
    assert metrics["published_hard_gain_paper"] == pytest.approx(0.5839 - 0.1038)
    assert [r["beta"] for r in table] == [0.0, 2.0, 5.0, 10.0, 30.0]
    assert table[2]["gap"] == pytest.approx(0.55 - 0.5839)
    # a published beta that was not measured is an infinite gap: the check cannot pass
    metrics, _ = published_comparison(_curve({0.0: 0.1038, 5.0: 0.5839}), PAPER)
    assert math.isinf(metrics["published_max_abs_gap"])
    with pytest.raises(ValueError, match="must map beta = 0"):
        published_comparison(_curve(measured), {**PAPER, "accuracy": {5: 0.58}})
    with pytest.raises(ValueError, match="unknown parameter"):
        published_comparison(_curve(measured), {**PAPER, "acc": {}})


def test_the_gpu_profiles_name_their_needs():
    gpu = [r for r in list_recipes() if "gpu" in r.profiles]
    assert {"jiang-nc-vs-dc", "nozawa-k-sweep",
            "robinson-hard-negatives"} <= {r.name for r in gpu}
    for r in gpu:
        assert "cuda" in r.requires("gpu") and r.profiles["gpu"].get("about")
        assert any(c.kind == "claim" and c.metric.startswith("published")
                   for c in r.checks_for("gpu"))
        assert r.params("gpu")["config"]["train"]["device"] == "cuda"


def test_a_gpu_profile_is_refused_without_cuda_in_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(app, ["repro", "jiang-nc-vs-dc", "--profile", "gpu", "--out",
                                   str(tmp_path)])
    assert res.exit_code == 2 and "needs a CUDA device" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    res = CliRunner().invoke(app, ["repro", "jiang-nc-vs-dc", "--profile", "gpu", "--out",
                                   str(tmp_path)])
    assert res.exit_code == 2 and "--param set.data.root=DIR" in res.output
    assert not list(tmp_path.iterdir())


def test_the_jiang_gpu_profile_is_the_papers_setup():
    r = load_recipe("jiang-nc-vs-dc")
    p = r.params("gpu")
    cfg = p["config"]
    assert (cfg["data"]["name"], cfg["model"]["encoder"], cfg["model"]["out_dim"]) == (
        "cifar100", "resnet50", 99)
    assert (cfg["loss"]["k"], cfg["loss"]["temperature"], cfg["train"]["epochs"],
            cfg["train"]["batch_size"]) == (256, 1.0, 401, 512)
    assert p["published"]["accuracy"][5] == 0.5839 and p["betas"] == [0, 2, 5, 10, 30]


def test_nozawa_published_comparison_measures_the_gap_and_the_gain():
    from contrastlab.recipes.nozawa import nozawa_published_comparison

    paper = {"mu_accuracy": {32: 0.7275, 128: 0.7722, 512: 0.8012}}
    curve = [{"train.batch_size": b, "mu_accuracy": a, "mu_accuracy_sd": 0.01}
             for b, a in ((32, 0.70), (128, 0.78), (512, 0.79))]
    metrics, table = nozawa_published_comparison(curve, paper)
    assert metrics["published_max_abs_gap"] == pytest.approx(0.0275)  # K + 1 = 32
    assert metrics["published_gain"] == pytest.approx(0.79 - 0.70)
    assert metrics["published_gain_paper"] == pytest.approx(0.8012 - 0.7275)
    assert [r["batch_size"] for r in table] == [32, 128, 512]
    metrics, _ = nozawa_published_comparison(curve[:2], paper)  # 512 not measured
    assert math.isinf(metrics["published_max_abs_gap"])
    with pytest.raises(ValueError, match="at least two sizes"):
        nozawa_published_comparison(curve, {"mu_accuracy": {32: 0.7}})


def test_the_nozawa_gpu_profile_is_the_papers_setup():
    p = load_recipe("nozawa-k-sweep").params("gpu")
    cfg = p["config"]
    assert (cfg["data"]["name"], cfg["model"]["encoder"], cfg["model"]["head_dim"]) == (
        "cifar10", "resnet18-cifar", 128)
    assert (cfg["loss"]["temperature"], cfg["optim"]["name"], cfg["optim"]["lr"],
            cfg["train"]["epochs"], p["lr_scaling"]) == (0.5, "sgd", 1.0, 500, "linear")
    assert p["batch_sizes"] == [32, 64, 128, 256, 512]
    assert p["published"]["mu_accuracy"][512] == 0.8012


def test_robinson_published_comparison_measures_the_gap_and_the_gain():
    from contrastlab.recipes.robinson import robinson_published_comparison

    paper = {"accuracy": {"biased": 0.8015, 0: 0.8426, 1: 0.8744, 6: 0.8309}}
    curve = [{"beta": b, "accuracy": a, "accuracy_sd": 0.01}
             for b, a in (("biased", 0.79), (0.0, 0.84), (1.0, 0.86), (6.0, 0.85))]
    metrics, table = robinson_published_comparison(curve, paper, 1.0)
    assert metrics["published_max_abs_gap"] == pytest.approx(0.85 - 0.8309)  # beta = 6
    assert metrics["published_hard_gain"] == pytest.approx(0.86 - 0.84)
    assert metrics["published_hard_gain_paper"] == pytest.approx(0.8744 - 0.8426)
    assert [r["beta"] for r in table] == ["biased", 0.0, 1.0, 6.0]
    metrics, _ = robinson_published_comparison(curve[1:], paper, 1.0)  # no biased run
    assert math.isinf(metrics["published_max_abs_gap"])
    with pytest.raises(ValueError, match="hard_beta"):
        robinson_published_comparison(curve, paper, 2.0)


def test_the_robinson_gpu_profile_is_the_papers_setup():
    p = load_recipe("robinson-hard-negatives").params("gpu")
    cfg = p["config"]
    assert (cfg["data"]["name"], cfg["model"]["encoder"], cfg["model"]["head_dim"]) == (
        "stl10", "resnet50", 128)
    assert (cfg["loss"]["tau_plus"], cfg["loss"]["temperature"], cfg["train"]["batch_size"],
            cfg["train"]["epochs"], p["biased"], p["accuracy"]) == (
        0.1, 0.5, 256, 400, True, "probe_acc")
    assert p["published"]["accuracy"][1] == 0.8744 and p["betas"] == [0, 0.5, 1, 2, 6]


def _tiny(config: dict, root: Path) -> dict:
    """A gpu profile's config on the CPU, on small files in the data set's real format, one
    step per run: the same data path, model, loss and evaluation, a fraction of the cost."""
    cfg = copy.deepcopy(config)
    cfg["data"]["root"] = str(root)
    cfg["train"] = {**cfg["train"], "device": "cpu", "epochs": 1, "steps_per_epoch": 1,
                    "batch_size": 8, "checkpoint": False}
    # evaluated on the 128-d head output (the 2048-d backbone's spectra cost most of the time)
    cfg["eval"] = {**cfg["eval"], "every": 0, "max_train": 40, "max_test": 20, "features": "output",
                   "linear_probe": False, "final_probes": [], "final_knn": False,
                   "final_lsup": False}
    return cfg


def test_the_nozawa_gpu_profile_runs_end_to_end_on_cpu(tmp_path, monkeypatch):
    # their ResNet-18 on (fake) CIFAR-10 files, K + 1 in {4, 8}, through the runner and its
    # comparison with the published accuracies: the pipeline a GPU would run, one step a size
    import torchvision.datasets.cifar

    from contrastlab.recipes.nozawa import nozawa_k_sweep
    from contrastlab.recipes.runners import RunContext
    from tests.data.test_real import write_cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    write_cifar(tmp_path / "cifar", hundred=False, per_file=12)
    params = copy.deepcopy(load_recipe("nozawa-k-sweep").params("gpu"))
    params.update(config=_tiny(params["config"], tmp_path / "cifar"), batch_sizes=[4, 8],
                  seeds=[0], published={"mu_accuracy": {4: 0.7, 8: 0.75}})
    out = nozawa_k_sweep(params, RunContext(tmp_path / "out"))
    assert out.metrics["runs"] == 2 and math.isfinite(out.metrics["published_max_abs_gap"])
    assert [r["train.batch_size"] for r in out.tables["k_curve"]] == [4, 8]
    assert [r["batch_size"] for r in out.tables["published"]] == [4, 8]


def test_the_robinson_gpu_profile_runs_end_to_end_on_cpu(tmp_path):
    # their ResNet-50 on (fake) STL-10 binary files, beta in {0, 1, 6} and the biased baseline
    from contrastlab.recipes.robinson import robinson_beta_sweep
    from contrastlab.recipes.runners import RunContext
    from tests.data.test_stl10 import _write

    _write(tmp_path / "stl", n_train=40, n_test=20)
    params = copy.deepcopy(load_recipe("robinson-hard-negatives").params("gpu"))
    config = _tiny(params["config"], tmp_path / "stl")
    config["data"]["options"] = {"size": 32}  # ResNet-50 on 32 px: the same path, 9x cheaper
    params.update(config=config, betas=[0, 1, 6], seeds=[0], accuracy="mc_acc")
    out = robinson_beta_sweep(params, RunContext(tmp_path / "out"))
    assert out.metrics["runs"] == 4  # three betas and the biased baseline
    assert [r["beta"] for r in out.tables["published"]] == ["biased", 0.0, 0.5, 1.0, 2.0, 6.0]
    assert math.isinf(out.metrics["published_max_abs_gap"])  # 0.5 and 2 were not run here
    assert math.isfinite(out.metrics["debiased_gain"])

"""The loss registry (contrastlab.losses.registry): the built-in specs, their resolution in the
run config, and a loss registered from outside the package that trains and sweeps (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.experiments.sweep import run_sweep
from contrastlab.losses import info_nce, normalize, pool_hard_contrastive
from contrastlab.losses.registry import (
    LossSpec,
    get_loss,
    loss_names,
    register_loss,
    registered_at_run_time,
    unregister_loss,
)
from contrastlab.train.config import ConfigError, parse_config
from contrastlab.train.step import contrastive_loss
from tests.experiments.helpers import snapshot
from tests.losses.toy_losses import align_uniform, pool_triplet

BUILT_IN = ("infonce", "supcon", "debiased-hard", "nce", "scl", "hscl", "ucl", "hucl")
POOL_ARGS = ("anchors", "positives", "anchor_labels", "pool", "pool_labels", "generator",
             "stats")


def _raw(**loss: Any) -> dict[str, Any]:
    return {
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 3, "dim": 6, "n_train": 96,
                                                  "n_test": 48}},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 16}},
        "loss": loss,
        "optim": {"lr": 0.003},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "threads": 1},
        "eval": {"every": 1, "final_lsup": False, "final_knn": False, "final_probes": []},
    }


@pytest.fixture
def toys() -> Iterator[None]:
    register_loss(LossSpec("align-uniform", align_uniform, "in-batch", ("z1", "z2"),
                           {"temperature": "temperature"}, defaults={"temperature": 2.0},
                           reference="Wang & Isola 2020, eq. (4)-(5)"))
    register_loss(LossSpec("pool-triplet", pool_triplet, "pool", POOL_ARGS,
                           {"k": "k", "sampler": "sampler", "beta": "beta",
                            "replacement": "replace"}, reference="margin loss, k negatives"))
    yield
    unregister_loss("align-uniform")
    unregister_loss("pool-triplet")


def test_the_built_in_losses_and_their_laws() -> None:
    assert loss_names()[: len(BUILT_IN)] == BUILT_IN
    laws = {n: get_loss(n).law() for n in BUILT_IN}
    assert laws == {"infonce": None, "supcon": None, "debiased-hard": None, "nce": "uniform",
                    "scl": "other-class", "hscl": "tilted-other-class", "ucl": "uniform",
                    "hucl": "tilted"}
    assert {n for n in BUILT_IN if get_loss(n).tilted()} == {"debiased-hard", "hscl", "hucl"}
    assert get_loss("nce").tilted("tilted-other-class") and get_loss("nce").supervised(
        "tilted-other-class")
    assert {n for n in BUILT_IN if get_loss(n).explicit_k} == {"nce", "scl", "hscl", "ucl",
                                                                "hucl"}
    assert registered_at_run_time() == ()


@pytest.mark.parametrize(("name", "want"), [
    ("infonce", {"k": None, "sampler": None, "beta": 0.0, "temperature": 0.5, "tau_plus": None}),
    ("supcon", {"k": None, "sampler": None, "beta": 0.0, "temperature": 0.1}),
    ("debiased-hard", {"beta": 1.0, "tau_plus": 0.1, "temperature": 0.5}),
    ("hucl", {"k": 8, "sampler": "tilted", "beta": 1.0, "temperature": 1.0, "pool_size": 32}),
    ("scl", {"sampler": "other-class", "beta": 0.0}),
])
def test_defaults_come_from_the_spec(name: str, want: dict[str, Any]) -> None:
    loss = {"name": name, "k": 8, "beta": None}
    got = parse_config(_raw(**loss)).loss.model_dump()
    assert {key: got[key] for key in want} == want


def test_the_step_calls_the_spec_as_the_loss_functions() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), "sphere")
    z2 = normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), "sphere")
    pool = normalize(torch.randn(10, 4, generator=g, dtype=torch.float64), "sphere")
    labels, pool_labels = torch.arange(6) % 3, torch.arange(10) % 3
    cfg = parse_config(_raw(name="infonce"))
    torch.testing.assert_close(contrastive_loss(cfg.loss, z1, z2, labels),
                               info_nce(z1, z2, temperature=0.5, normalize="none"))
    cfg = parse_config(_raw(name="hscl", k=4, beta=2.0, exact=True))
    want = pool_hard_contrastive(torch.cat([z1, z2]), torch.cat([z2, z1]),
                                 torch.cat([labels, labels]), pool, pool_labels, "other-class",
                                 beta=2.0, k=4, exact=True)
    torch.testing.assert_close(contrastive_loss(cfg.loss, z1, z2, labels, pool, pool_labels),
                               want)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "Bad Name"}, "LossSpec.name must be"),
    ({"family": "memory-bank"}, "family must be one of"),
    ({"batch": ("z1", "queue")}, "batch argument must be one of"),
    ({"params": {"margin": "margin"}}, "params key must be one of"),
    ({"params": {"k": "k"}}, "an in-batch loss has no k"),
    ({"family": "pool"}, "a pool loss takes k"),
    ({"family": "pool", "batch": ("pool",), "params": {"k": "k"}}, "a fixed sampler or"),
    ({"fn": 3}, "fn must be callable"),
])
def test_a_bad_spec_is_one_line(kwargs: dict[str, Any], message: str) -> None:
    spec: dict[str, Any] = {"name": "x", "fn": align_uniform, "family": "in-batch",
                            "batch": ("z1", "z2")}
    with pytest.raises(ValueError, match=message):
        LossSpec(**{**spec, **kwargs})


def test_built_in_losses_cannot_be_replaced_and_names_are_unique(toys: None) -> None:
    with pytest.raises(ValueError, match="built in"):
        register_loss(LossSpec("infonce", align_uniform, "in-batch", ("z1", "z2")))
    with pytest.raises(ValueError, match="already registered"):
        register_loss(LossSpec("align-uniform", align_uniform, "in-batch", ("z1", "z2")))
    assert [s.name for s in registered_at_run_time()] == ["align-uniform", "pool-triplet"]


def test_an_unknown_loss_lists_the_registered_ones(toys: None) -> None:
    with pytest.raises(ConfigError, match=r"loss\.name must be one of .*'pool-triplet'; got 'x'"):
        parse_config(_raw(name="x"))


def test_a_loss_registered_from_outside_resolves_and_trains(toys: None) -> None:
    cfg = parse_config(_raw(name="align-uniform", k=5, sampler="tilted"))
    assert (cfg.loss.k, cfg.loss.sampler, cfg.loss.temperature, cfg.loss.beta) == (
        None, None, 2.0, 0.0)  # in-batch: k and the sampler do not apply
    result = T.train(cfg)
    assert result.status == "done"
    losses = [e["train_loss"] for e in result.epochs]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert result.epochs[-1]["distinct_negatives"] == 2 * 32 - 2

    cfg = parse_config(_raw(name="pool-triplet", k=6, sampler="tilted-other-class", beta=3.0))
    assert (cfg.loss.pool_size, cfg.loss.beta, cfg.loss.replacement) == (32, 3.0, False)
    result = T.train(cfg)
    assert result.status == "done" and result.epochs[-1]["distinct_negatives"] == 6
    with pytest.raises(ConfigError, match=r"loss\.k is required for 'pool-triplet'"):
        parse_config(_raw(name="pool-triplet"))


def test_a_loss_registered_from_outside_sweeps_on_worker_processes(
    toys: None, tmp_path: Path
) -> None:
    """The spawned workers register the sweep process's losses again; the numbers equal those
    of the same sweep run in this process."""
    raw = _raw(name="pool-triplet", k=4)
    raw["sweep"] = {"loss.name": ["pool-triplet", "align-uniform"], "seed": [0, 1]}
    ids = run_sweep(raw, tmp_path / "two", workers=2, log=None)
    assert len(ids) == 4
    run_sweep(raw, tmp_path / "one", workers=1, log=None)
    two, one = snapshot(tmp_path / "two"), snapshot(tmp_path / "one")
    assert set(two) == set(ids) and all(v[0] == "done" for v in two.values())
    assert two == one


TINY = """
seed: 0
data: {name: synthetic, options: {classes: 3, dim: 6, n_train: 96, n_test: 48}}
model: {encoder: mlp, out_dim: 4, options: {hidden: 16}}
loss: {name: align-uniform}
train: {epochs: 1, batch_size: 32, progress: false}
eval: {final_lsup: false, final_knn: false, final_probes: [], linear_probe: false}
"""


def _cli(args: list[str], plugins: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "CONTRASTLAB_PLUGINS": plugins, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_the_command_line_runs_and_sweeps_a_plugin_loss(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(TINY)
    done = _cli(["run", "cfg.yaml", "--out", "one"], "tests.losses.toy_plugin", tmp_path)
    assert done.returncode == 0, done.stderr
    swept = _cli(["sweep", "cfg.yaml", "--out", "two", "--workers", "2",
                  "--set", "sweep={seed: [0, 1]}"], "tests.losses.toy_plugin", tmp_path)
    assert swept.returncode == 0, swept.stderr
    plain = _cli(["run", "cfg.yaml", "--out", "three"], "", tmp_path)
    assert plain.returncode == 2 and "loss.name must be one of" in plain.stderr
    bad = _cli(["run", "cfg.yaml", "--out", "four"], "no_such_plugin_module", tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "Error: CONTRASTLAB_PLUGINS: cannot import 'no_such_plugin_module'"), bad.stderr


def test_installed_entry_points_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import contrastlab.losses.registry as R

    ep = importlib.metadata.EntryPoint(name="toys", value="tests.losses.toy_plugin:SPEC",
                                       group=R.PLUGIN_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == R.PLUGIN_GROUP else [])
    monkeypatch.setattr(R, "_plugins_loaded", False)
    try:
        assert "align-uniform" in loss_names()
        assert get_loss("align-uniform").default("temperature") == 2.0
    finally:
        unregister_loss("align-uniform")

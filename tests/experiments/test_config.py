"""Configs: YAML + --set overrides, resolution, run ids, and one-line errors before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from contrastlab.experiments import cli_run, cli_sweep
from contrastlab.train.config import (
    ConfigError,
    apply_overrides,
    expand_sweep,
    load_config,
    parse_config,
    parse_override,
    run_id,
)

BASE: dict[str, Any] = {
    "data": {"name": "synthetic", "options": {"classes": 3, "dim": 4}},
    "model": {"encoder": "mlp", "out_dim": 2},
    "loss": {"name": "hucl", "k": 16, "beta": 2.0},
    "train": {"epochs": 1, "batch_size": 32},
}


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["loss.name=foo"], "loss.name must be one of 'infonce', 'supcon', 'debiased-hard', "
                            "'nce', 'scl', 'hscl', 'ucl', 'hucl'; got 'foo'"),
        (["loss.k=0"], "loss.k must be an integer >= 1; got 0"),
        (["loss.k=-4"], "loss.k must be an integer >= 1; got -4"),
        (["loss.beta=-0.5"], "loss.beta must be >= 0; got -0.5"),
        (["data.name=imagenet"], "data.name must be one of 'synthetic'"),
        (["data.name=cifar10"], "data.root is required for 'cifar10'"),
        (["data.name=cifar100", "data.root=/no/such/dir"], "data.root: no folder "
                                                           "cifar-100-python/ at '/no/such/dir'"),
        (["data.name=fashion-mnist", "data.root=/no/such/dir"], "data.root: no such directory "
                                                                "at '/no/such/dir'"),
        (["loss.kk=3"], "loss.kk is not a field of loss; allowed: name, k, beta"),
        (["loss.name=ucl", "loss.k=null"], "loss.k is required for 'ucl'"),
        (["loss.temperature=0"], "loss.temperature must be > 0; got 0"),
        (["optim.name=lbfgs"], "optim.name must be one of 'adam', 'sgd'; got 'lbfgs'"),
        (["model.encoder=vit"], "model.encoder must be one of"),
        (["model.options.depthh=2"], "model.options.depthh is not an option of encoder 'mlp'"),
        (["sweep.loss.k=[4, 0]"], "loss.k must be an integer >= 1; got 0 (sweep point "
                                  "loss.k=0)"),
        (["loss.name=infonce", "loss.exact=true"], "loss.exact applies to scl, hscl, ucl"),
        (["train.epochs=many"], "train.epochs must be an integer; got 'many'"),
        (["loss.pool_size=8"], "loss.pool_size must be >= loss.k (16) when loss.replacement is "
                               "false (k distinct negatives per anchor); got 8"),
        (["loss.name=nce", "loss.k=64", "loss.pool_size=32"],
         "loss.pool_size must be >= loss.k (64) when loss.replacement is false"),
        (["loss.replacement=1"], "loss.replacement must be one of False, True; got 1"),
        (["loss.k=true"], "loss.k must be an integer; got True"),
        (["train.progress=1"], "train.progress must be true or false; got 1"),
    ],
)
def test_bad_configs_fail_fast_with_one_line(tmp_path: Path, sets: list[str],
                                             message: str) -> None:
    path = _write(tmp_path, BASE)
    with pytest.raises(ConfigError) as info:
        load_config(path, sets)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert isinstance(info.value, ValueError)
    # the CLI entry points refuse it before any work: no output directory appears
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        cli_run(path, sets, out)
    with pytest.raises(ValueError):
        cli_sweep(path, sets, out, workers=1)
    assert not out.exists()


def test_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: {name: [\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        load_config(_write(tmp_path, BASE), ["loss.k"])


def test_overrides_use_yaml_semantics() -> None:
    assert parse_override("loss.k=16") == (["loss", "k"], 16)
    assert parse_override("loss.exact=true") == (["loss", "exact"], True)
    assert parse_override("optim.lr=0.5") == (["optim", "lr"], 0.5)
    assert parse_override("loss.name=hucl") == (["loss", "name"], "hucl")
    assert parse_override("sweep.loss.k=[1, 4]") == (["sweep", "loss.k"], [1, 4])
    raw = apply_overrides({"loss": {"k": 1}}, ["loss.k=4", "data.options.dim=3", "seed=2"])
    assert raw == {"loss": {"k": 4}, "data": {"options": {"dim": 3}}, "seed": 2}
    cfg = load_config(None, ["optim.lr=1e-3"], base=BASE)  # PyYAML reads 1e-3 as a string
    assert cfg.optim.lr == pytest.approx(1e-3)


def test_resolution_and_run_ids(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.loss.sampler == "tilted" and cfg.loss.pool_size == 32
    assert cfg.loss.temperature == 1.0
    ucl = load_config(_write(tmp_path, BASE), ["loss.name=ucl"])
    assert ucl.loss.beta == 0.0 and ucl.loss.sampler == "uniform"
    info = load_config(_write(tmp_path, BASE), ["loss.name=infonce"])
    assert info.loss.k is None and info.loss.temperature == 0.5 and info.loss.pool_size is None
    # the run id ignores how a run is executed, not what it computes
    same = load_config(_write(tmp_path, BASE), ["train.progress=false", "train.threads=1",
                                                "output.dir=elsewhere"])
    assert run_id(same) == run_id(cfg)
    assert run_id(load_config(_write(tmp_path, BASE), ["loss.k=17"])) != run_id(cfg)


def test_sweep_expansion_dedups_equivalent_points(tmp_path: Path) -> None:
    raw = {**BASE, "sweep": {"loss.name": ["ucl", "hucl"], "loss.beta": [1.0, 5.0],
                             "seed": [0, 1]}}
    cfg = load_config(_write(tmp_path, raw))
    points = expand_sweep(cfg)
    # beta does not apply to ucl: its two beta values are one run (per seed)
    names = [(p.loss.name, p.loss.beta, p.seed) for p in points]
    assert names == [("ucl", 0.0, 0), ("ucl", 0.0, 1), ("hucl", 1.0, 0), ("hucl", 1.0, 1),
                     ("hucl", 5.0, 0), ("hucl", 5.0, 1)]
    assert len({run_id(p) for p in points}) == 6
    assert all(p.sweep == {} for p in points)


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    sets = []
    if raw["data"]["name"] in ("cifar10", "cifar100", "fashion-mnist", "stl10"):
        # a directory given by the user, with the files the data set reads (names only here)
        from contrastlab.data.real import _CIFAR_FILES, FASHION_MNIST_FILES
        from contrastlab.data.stl10 import STL10_FILES

        names = {"cifar10": [f"cifar-10-batches-py/{f}" for f in _CIFAR_FILES["cifar10"]],
                 "cifar100": [f"cifar-100-python/{f}" for f in _CIFAR_FILES["cifar100"]],
                 "fashion-mnist": [f"{f}.gz" for f in FASHION_MNIST_FILES],
                 "stl10": [f"stl10_binary/{f}" for f in STL10_FILES]}
        for name in names[raw["data"]["name"]]:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"")
        sets.append(f"data.root={tmp_path}")
    cfg = load_config(path, sets)
    points = expand_sweep(cfg)
    assert len(points) >= 2
    assert len({run_id(p) for p in points}) == len(points)


def test_demo_config_is_the_k_sweep() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    points = expand_sweep(cfg)
    assert {p.data.name for p in points} == {"mnist1d"}
    assert {p.loss.normalize for p in points} == {"sphere"}
    assert {(p.loss.name, p.loss.k) for p in points} == {
        (name, k) for name in ("ucl", "hucl") for k in (1, 16, 256)}
    assert {p.seed for p in points} == {0, 1, 2}  # the answer line needs >= 3 seeds


def test_replacement_resolution_and_run_ids(tmp_path: Path) -> None:
    import json

    from contrastlab.train.config import hashed_config as _hashed

    path = _write(tmp_path, BASE)
    cfg = load_config(path)
    assert cfg.loss.replacement is False and cfg.loss.pool_size == 32  # distinct by default
    rep = load_config(path, ["loss.replacement=true", "loss.pool_size=8"])  # i.i.d.: any pool
    assert rep.loss.replacement is True and rep.loss.pool_size == 8
    # the exact forms draw nothing: their expectation is over i.i.d. draws
    exact = load_config(path, ["loss.exact=true", "loss.pool_size=8"])
    assert exact.loss.replacement is True
    info = load_config(path, ["loss.name=infonce", "loss.replacement=true"])
    assert info.loss.replacement is False  # does not apply: the 2B - 2 other views
    # the run id changes where the computation changed (distinct draws, the new default) and
    # nowhere else: with replacement, in-batch and exact runs keep the ids of earlier versions
    with_rep = load_config(path, ["loss.replacement=true"])
    assert run_id(with_rep) != run_id(cfg)
    assert json.loads(json.dumps(_hashed(cfg)))["loss"]["replacement"] is False
    for kept in (with_rep, exact, info):
        assert "replacement" not in _hashed(kept)["loss"]
    points = expand_sweep(load_config(path, ["sweep.loss.exact=[true]",
                                             "sweep.loss.replacement=[false, true]"]))
    assert len(points) == 1  # the exact form does not depend on it


def test_cli_refuses_a_pool_smaller_than_k_with_exit_code_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from contrastlab.cli import app

    path = _write(tmp_path, BASE)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(path), "--set", "loss.k=64", "--set",
                                   "loss.pool_size=48", "--out", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "Error: loss.pool_size must be >= loss.k (64) when loss.replacement is false"), res.output
    assert "loss.replacement=true" in lines[0]
    assert not out.exists()  # refused before any work


def test_a_config_is_resolved_once_and_frozen() -> None:
    cfg = parse_config({"loss": {"name": "hucl", "k": 8}, "train": {"batch_size": 16}})
    assert parse_config(cfg) is cfg  # passed down as is, not resolved again
    with pytest.raises(ValidationError, match="frozen"):
        cfg.loss.k = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
    changed = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"beta": None})})
    again = parse_config(changed)  # a copy is resolved again: beta gets its default back
    assert again is not changed and again.loss.beta == 1.0 and parse_config(again) is again
    assert run_id(again) == run_id(cfg)

"""The loggers of ``train.loggers`` (issue 18, item 1): the config field (default ``[csv]``, never
in the run id, a missing package refused at parse time), ``metrics.csv`` (bitwise, and the same
file after a kill and a resume), TensorBoard, Weights & Biases (offline) and MLflow (a local file
store); loggers never change the numbers. The optional packages' tests are skipped when they
are not installed."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.cli import main
from contrastlab.data.registry import load_dataset
from contrastlab.experiments.runner import execute_run, run_dir
from contrastlab.experiments.store import ResultStore
from contrastlab.train.config import (
    ConfigError,
    expand_sweep,
    hashed_config,
    parse_config,
    run_config_dict,
    run_id,
)
from contrastlab.train.loggers import flat_config, scalar_metrics

RAW: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "synthetic", "options": {"classes": 3, "dim": 4, "n_train": 64,
                                              "n_test": 32}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 8}},
    "loss": {"name": "ucl", "k": 4},
    "train": {"epochs": 3, "batch_size": 16, "progress": False, "device": "cpu"},
    "eval": {"every": 2, "final_lsup": False, "final_knn": False},
}
#: the run id of RAW computed by the version before ``train.loggers`` existed (commit 67635ac)
RAW_ID = "7109de82154063fd"


def _cfg(**train: Any) -> Any:
    return parse_config({**RAW, "train": {**RAW["train"], **train}})


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("synthetic", seed=0, classes=3, dim=4, n_train=64, n_test=32)


class Kill(T.Callback):
    """Raises in ``on_epoch`` of epoch ``at``: after the loggers wrote it, before its
    checkpoint (what a kill at that moment leaves)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt(f"killed at epoch {epoch}")


def _killed_and_resumed(cfg: Any, data: Any, directory: Path, at: int) -> Any:
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, data, checkpoint_dir=directory, log_dir=directory, callbacks=[Kill(at)])
    resumed = T.train(cfg, data, checkpoint_dir=directory, log_dir=directory)
    assert resumed.status == "done" and resumed.resumed_from == at - 1
    return resumed


# --------------------------------------------------------------------------------------------
# the config field
# --------------------------------------------------------------------------------------------


def test_the_default_is_csv_and_loggers_never_enter_the_run_id() -> None:
    cfg = _cfg()
    assert cfg.train.loggers == ["csv"]
    assert run_id(cfg) == RAW_ID  # the id of the version before the field existed
    assert "loggers" not in hashed_config(cfg)["train"]
    assert run_config_dict(cfg)["train"]["loggers"] == ["csv"]  # stored with the run
    for loggers in ([], ["csv", "tensorboard"], ["tensorboard"]):
        assert run_id(_cfg(loggers=loggers)) == RAW_ID
    grid = parse_config({**RAW, "sweep": {"train.loggers": [["csv"], ["tensorboard", "csv"]]}})
    assert len(expand_sweep(grid)) == 1  # the same run


@pytest.mark.parametrize(("value", "message"), [
    (["foo"], "train.loggers must be one of 'csv', 'tensorboard', 'wandb', 'mlflow'; got 'foo'"),
    (["csv", "csv"], "train.loggers must not name a logger twice; got ['csv', 'csv']"),
    ("csv", "train.loggers must be a list; got 'csv'"),
    ([1], "train.loggers must be a string; got 1"),
])
def test_a_bad_logger_list_is_a_one_line_config_error(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(loggers=value)
    assert str(info.value) == message


@pytest.mark.parametrize(("name", "package"), [
    ("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_logger_without_its_package_fails_when_the_config_is_parsed(
        name: str, package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # not importable, found by no finder
    with pytest.raises(ConfigError) as info:
        _cfg(loggers=["csv", name])
    msg = str(info.value)
    assert msg.startswith(f"train.loggers: {name!r} needs the package {package!r}, which is not "
                          f"installed; pip install 'contrastlab[{name}]'")
    assert "\n" not in msg


def test_the_command_line_refuses_a_missing_logger_package_with_exit_code_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "cfg.yaml").write_text(json.dumps(RAW))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)
    for command in ("run", "sweep"):
        with pytest.raises(SystemExit) as info:
            main([command, "cfg.yaml", "--out", "out", "--set", "train.loggers=[csv, wandb]",
                  "--set", "sweep={seed: [0, 1]}" if command == "sweep" else "sweep={}"])
        out, err = capsys.readouterr()
        assert info.value.code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("Error: train.loggers: 'wandb' needs the package 'wandb'")
        assert "pip install 'contrastlab[wandb]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]  # nothing written


# --------------------------------------------------------------------------------------------
# csv
# --------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_metrics_csv_has_a_row_per_epoch_that_reads_back_bitwise(tmp_path: Path,
                                                                 data: Any) -> None:
    result = T.train(_cfg(), data, log_dir=tmp_path)
    header, rows = _read_csv(tmp_path / "metrics.csv")
    names = list(dict.fromkeys(k for m in result.epochs for k in m))
    assert header == names and "probe_acc" in names and "converged" in names
    assert len(rows) == len(result.epochs) == 3
    for row, metrics in zip(rows, result.epochs, strict=True):
        for name in names:
            value = metrics.get(name)
            if value is None:
                assert row[name] == ""  # not measured that epoch (eval.every = 2)
            else:
                assert type(value)(row[name]) == value  # floats as their repr: bitwise
    assert "probe_acc" not in result.epochs[0] and rows[0]["probe_acc"] == ""


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_killed_and_resumed_run_writes_the_file_of_an_uninterrupted_run(
        tmp_path: Path, data: Any, at: int) -> None:
    cfg = _cfg()
    full = T.train(cfg, data, checkpoint_dir=tmp_path / "a", log_dir=tmp_path / "a")
    # killed after the csv row of epoch `at` was written, before its checkpoint: that row is
    # written again on resume, once
    resumed = _killed_and_resumed(cfg, data, tmp_path / "b", at)
    assert resumed.epochs == full.epochs
    want = (tmp_path / "a" / "metrics.csv").read_bytes()
    assert (tmp_path / "b" / "metrics.csv").read_bytes() == want
    # stopped after an epoch (stop_after) and resumed: the same file again
    T.train(cfg, data, checkpoint_dir=tmp_path / "c", log_dir=tmp_path / "c", stop_after=at)
    T.train(cfg, data, checkpoint_dir=tmp_path / "c", log_dir=tmp_path / "c")
    assert (tmp_path / "c" / "metrics.csv").read_bytes() == want


def test_a_run_of_the_runner_writes_metrics_csv_into_its_run_directory(tmp_path: Path) -> None:
    cfg = _cfg()
    rid, status = execute_run(cfg, tmp_path)
    assert status == "done"
    header, rows = _read_csv(run_dir(tmp_path, rid) / "metrics.csv")
    with ResultStore(tmp_path) as store:
        epochs = store.epochs(rid)
    assert [int(r["epoch"]) for r in rows] == [m["epoch"] for m in epochs] == [1, 2, 3]
    assert "seconds" not in header  # wall times would differ between equal runs
    for row, metrics in zip(rows, epochs, strict=True):  # what the database holds, bitwise
        for name in header:
            value = metrics.get(name)
            assert row[name] == "" if value is None else float(row[name]) == value
    none = _cfg(loggers=[])
    rid, _ = execute_run(none, tmp_path / "none")
    assert not (run_dir(tmp_path / "none", rid) / "metrics.csv").exists()


# --------------------------------------------------------------------------------------------
# loggers do not change the numbers
# --------------------------------------------------------------------------------------------


def test_loggers_do_not_change_the_numbers(tmp_path: Path, data: Any) -> None:
    pytest.importorskip("tensorboard")
    only_csv = T.train(_cfg(loggers=["csv"]), data, log_dir=tmp_path / "a")
    # tensorboard too, and a logger asking for every step's loss
    both = T.train(_cfg(loggers=["csv", "tensorboard"]), data, log_dir=tmp_path / "b",
                   callbacks=[T.TensorBoardLogger(tmp_path / "steps", log_every_n_steps=1)])
    assert both.epochs == only_csv.epochs  # every metric, bitwise
    assert strip(both.reports) == strip(only_csv.reports)
    for a, b in zip(only_csv.model.state_dict().values(), both.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert ((tmp_path / "a" / "metrics.csv").read_bytes()
            == (tmp_path / "b" / "metrics.csv").read_bytes())


def strip(obj: Any) -> Any:
    """``obj`` without wall times."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# tensorboard
# --------------------------------------------------------------------------------------------


def _events(directory: Path) -> Any:
    """The events of a run directory as TensorBoard reads them (purges applied)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _scalar_series(acc: Any) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.util.tensor_util import make_ndarray

    return {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]
            if tag != "config/text_summary" and not tag.startswith("_hparams_")}


def _config_texts(acc: Any) -> list[str]:
    from tensorboard.util.tensor_util import make_ndarray

    return [make_ndarray(e.tensor_proto).item().decode()
            for e in acc.Tensors("config/text_summary")]


def test_tensorboard_logs_every_metric_per_epoch_and_the_config(tmp_path: Path,
                                                                data: Any) -> None:
    pytest.importorskip("tensorboard")
    import numpy as np

    cfg = _cfg(loggers=["tensorboard"])
    result = T.train(cfg, data, log_dir=tmp_path)
    assert not (tmp_path / "metrics.csv").exists()
    acc = _events(tmp_path / "tensorboard")
    series = _scalar_series(acc)
    names = {k for m in result.epochs for k in scalar_metrics(m)}
    assert set(series) == names and "epoch" not in series
    for name in names:
        want = [(m["epoch"], float(np.float32(m[name]))) for m in result.epochs
                if m.get(name) is not None]
        assert series[name] == want, name
    [text] = _config_texts(acc)
    assert json.loads("\n".join(line[4:] for line in text.splitlines())) == run_config_dict(cfg)
    hp = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    assert b"loss.name" in hp["_hparams_/session_start_info"]
    assert set(flat_config(cfg)) >= {"loss.name", "train.loggers", "data.options.classes"}


@pytest.mark.parametrize("at", [1, 2])
def test_tensorboard_after_a_kill_and_a_resume_holds_each_epoch_once(
        tmp_path: Path, data: Any, at: int) -> None:
    pytest.importorskip("tensorboard")
    cfg = _cfg(loggers=["tensorboard"])
    T.train(cfg, data, checkpoint_dir=tmp_path / "a", log_dir=tmp_path / "a")
    _killed_and_resumed(cfg, data, tmp_path / "b", at)
    full, resumed = _events(tmp_path / "a/tensorboard"), _events(tmp_path / "b/tensorboard")
    assert _scalar_series(resumed) == _scalar_series(full)
    assert len(_config_texts(resumed)) == 1


def test_tensorboard_step_losses_on_request(tmp_path: Path, data: Any) -> None:
    pytest.importorskip("tensorboard")
    seen: list[float | None] = []

    class Steps(T.Callback):
        def on_step(self, step: int, loss: float | None) -> None:
            seen.append(loss)

    tb = T.TensorBoardLogger(tmp_path, log_every_n_steps=2)
    T.train(_cfg(loggers=[], epochs=1), data, callbacks=[tb, Steps()])
    steps = _scalar_series(_events(tmp_path / "steps"))["train_loss"]
    assert [s for s, _ in steps] == [2, 4] and len(seen) == 4  # 64 samples / 16 a batch
    assert [v for _, v in steps] == pytest.approx([seen[1], seen[3]], rel=1e-6)
    with pytest.raises(ValueError, match="log_every_n_steps must be an integer >= 1"):
        T.TensorBoardLogger(tmp_path, log_every_n_steps=0)


# --------------------------------------------------------------------------------------------
# wandb: a stand-in module (what is sent), then the real package offline
# --------------------------------------------------------------------------------------------


class FakeWandb:
    """What :class:`WandbLogger` sends to ``wandb``: ``init`` keywords, ``log`` calls,
    the summary and the exit code."""

    def __init__(self) -> None:
        self.inits: list[dict[str, Any]] = []
        self.logs: list[tuple[dict[str, float], int]] = []
        self.summary: dict[str, Any] = {}
        self.exit_codes: list[int] = []

    def init(self, **kwargs: Any) -> Any:
        self.inits.append(kwargs)
        return types.SimpleNamespace(
            log=lambda values, step: self.logs.append((values, step)),
            summary=self.summary,
            finish=lambda exit_code: self.exit_codes.append(exit_code))


def test_wandb_logger_sends_the_config_and_every_epoch(tmp_path: Path, data: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)  # type: ignore[arg-type]
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    cfg = _cfg(loggers=[])
    part = T.train(cfg, data, checkpoint_dir=tmp_path, stop_after=2,
                   callbacks=[T.WandbLogger(tmp_path, mode="offline")])
    done = T.train(cfg, data, checkpoint_dir=tmp_path,
                   callbacks=[T.WandbLogger(tmp_path, mode="offline")])
    first, again = fake.inits
    assert first["id"].startswith(RAW_ID + "-") and again["id"] == first["id"]  # resumed
    assert first["name"] == RAW_ID and first["resume"] == "allow"
    assert first["project"] == "contrastlab" and first["mode"] == "offline"
    assert first["dir"] == str(tmp_path) and first["config"] == run_config_dict(cfg)
    assert fake.logs == [(scalar_metrics(m), m["epoch"]) for m in done.epochs]
    assert part.status == "stopped" and fake.exit_codes == [0, 0]
    assert fake.summary["status"] == "done"
    # a fresh start (no checkpoint) is another wandb run
    T.train(cfg, data, stop_after=1, callbacks=[T.WandbLogger(tmp_path, project="p")])
    assert fake.inits[2]["id"] != first["id"] and fake.inits[2]["project"] == "p"


def test_wandb_offline_run(tmp_path: Path, data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _cfg(loggers=["csv", "wandb"])
    result = T.train(cfg, data, log_dir=tmp_path / "run")
    assert result.status == "done"
    wid = (tmp_path / "run" / "wandb_id").read_text().strip()
    assert wid.startswith(RAW_ID + "-")
    assert list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{wid}/run-{wid}.wandb"))
    assert (tmp_path / "run" / "metrics.csv").is_file()


# --------------------------------------------------------------------------------------------
# mlflow (a local file store)
# --------------------------------------------------------------------------------------------


def test_mlflow_logs_the_config_and_every_epoch_across_a_resume(
        tmp_path: Path, data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3 asks for it
    cfg = _cfg(loggers=["mlflow"])
    rdir = tmp_path / "run"
    T.train(cfg, data, checkpoint_dir=rdir, log_dir=rdir, stop_after=1)
    client = MlflowClient(tracking_uri=uri)
    mid = (rdir / "mlflow_run_id").read_text().strip()
    assert client.get_run(mid).info.status == "KILLED"  # stopped, to be resumed
    result = _killed_and_resumed(cfg, data, rdir, 3)
    assert (rdir / "mlflow_run_id").read_text().strip() == mid  # the same MLflow run
    run = client.get_run(mid)
    assert run.info.status == "FINISHED" and run.info.run_name == RAW_ID
    assert run.data.params["loss.name"] == "ucl" and run.data.params["loss.k"] == "4"
    assert run.data.tags["contrastlab.run_id"] == RAW_ID
    history = client.get_metric_history(mid, "train_loss")
    # epoch 3 was logged twice (killed before its checkpoint); the last value is the run's
    assert sorted({m.step for m in history}) == [1, 2, 3]
    for m in result.epochs:
        assert [h.value for h in history if h.step == m["epoch"]][-1] == m["train_loss"]
    exp = client.get_experiment_by_name("contrastlab")
    assert exp is not None and len(client.search_runs([exp.experiment_id])) == 1
    local = client.download_artifacts(mid, "config.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == run_config_dict(cfg)

"""The loggers of ``train.loggers``: callbacks (:mod:`contrastlab.train.callbacks`) that log
every per-epoch metric and the resolved config of a run into its run directory.

- ``csv`` (:class:`CSVLogger`, the default): ``<run dir>/metrics.csv``, a header of every metric
  name (in the order they first appear) and one row per epoch; floats are written as their
  ``repr`` (they read back bitwise), a missing or None metric as an empty cell. A resumed run
  rewrites the file from the checkpoint's history, then appends: a run killed and resumed gives
  the file of an uninterrupted run, byte for byte (no epoch twice, whatever the kill).
- ``tensorboard`` (:class:`TensorBoardLogger`): ``torch.utils.tensorboard.SummaryWriter`` into
  ``<run dir>/tensorboard``: a scalar per metric per epoch (the epoch as the step), the
  resolved config as text (tag ``config``) and, once the run is done, its hyperparameters (the
  flattened config) for TensorBoard's HParams tab. A resumed run purges the epochs after its
  checkpoint. ``log_every_n_steps`` (Python API) adds the step losses under ``steps/``.
- ``wandb`` (:class:`WandbLogger`): a Weights & Biases run named by the run id, its files under
  ``<run dir>/wandb``, resumed with the run (its id kept in ``<run dir>/wandb_id``); the mode
  and project come from wandb's settings (``WANDB_MODE=offline``, ``WANDB_PROJECT``; project
  ``contrastlab`` by default).
- ``mlflow`` (:class:`MLflowLogger`): an MLflow run named by the run id (id kept in ``<run
  dir>/mlflow_run_id``) on MLflow's tracking URI (``MLFLOW_TRACKING_URI``), experiment
  ``contrastlab``: the metrics per epoch (the epoch as the step), the flattened config as
  parameters and ``config.json`` as an artifact.

:func:`build_loggers` makes the loggers a config names. The optional packages are imported when
a logger starts; the config refuses a logger whose package is missing
(:data:`contrastlab.train.config.LOGGERS`). The loggers read and never change the numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from contrastlab.train.callbacks import Callback, FitState
from contrastlab.train.config import ExperimentConfig, run_config_dict

__all__ = [
    "CSVLogger",
    "MLflowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "build_loggers",
    "flat_config",
    "scalar_metrics",
]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric metrics of an epoch, as floats, without ``epoch`` (the step)."""
    return {k: float(v) for k, v in metrics.items()
            if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as ``{"loss.k": 8, ...}``: scalars as they are, None as ``"None"``,
    lists and mappings as compact JSON (what hyperparameter tables accept)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, bool | int | float | str):
            out[prefix] = node
        elif node is None:
            out[prefix] = "None"
        else:
            out[prefix] = json.dumps(node, sort_keys=True, separators=(",", ":"))

    walk("", run_config_dict(cfg))
    return out


def _config_text(cfg: ExperimentConfig) -> str:
    """The resolved config as an indented JSON block (markdown code, TensorBoard's text)."""
    text = json.dumps(run_config_dict(cfg), indent=2)
    return "\n".join("    " + line for line in text.splitlines())


def _stored_id(path: Path, new: Callable[[], str], reuse: bool) -> str:
    """The id kept in ``path`` (``reuse``: a resumed run), or a new one written there."""
    if reuse and path.is_file():
        kept = path.read_text().strip()
        if kept:
            return kept
    made = new()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(made + "\n")
    return made


class CSVLogger(Callback):
    """``metrics.csv`` in ``directory`` (module docstring)."""

    def __init__(self, directory: str | Path, filename: str = "metrics.csv") -> None:
        self.path = Path(directory) / filename
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []

    @staticmethod
    def _cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, bool | int | str):
            return str(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def _line(self, row: Mapping[str, Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            [self._cell(row.get(c)) for c in self._columns])
        return buf.getvalue()

    def _add_columns(self, row: Mapping[str, Any]) -> bool:
        new = [k for k in row if k not in self._columns]
        self._columns.extend(new)
        return bool(new)

    def _rewrite(self) -> None:
        """The whole file from the rows so far, written atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(self._columns)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(header.getvalue() + "".join(self._line(r) for r in self._rows))
        os.replace(tmp, self.path)

    def on_fit_start(self, fit: FitState) -> None:
        """Start from the epochs done (a resumed checkpoint's history): rows after them, from an
        attempt killed before its checkpoint, are dropped."""
        self._rows, self._columns = [dict(m) for m in fit.history], []
        for row in self._rows:
            self._add_columns(row)
        if self._rows:
            self._rewrite()
        else:
            self.path.unlink(missing_ok=True)

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        """Append the epoch's row (rewrite the file when it brings a new metric name)."""
        row = dict(metrics)
        self._rows.append(row)
        if self._add_columns(row) or not self.path.is_file():
            self._rewrite()
            return
        with self.path.open("a") as f:
            f.write(self._line(row))


class TensorBoardLogger(Callback):
    """TensorBoard event files in ``directory`` (module docstring); ``log_every_n_steps``: also
    the training loss of every n-th optimizer step (a device synchronization per step), in
    ``directory/steps`` with the step as the x axis."""

    def __init__(self, directory: str | Path, log_every_n_steps: int | None = None) -> None:
        if log_every_n_steps is not None and (
                isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int)
                or log_every_n_steps < 1):
            raise ValueError(f"log_every_n_steps must be an integer >= 1 or None; got "
                             f"{log_every_n_steps!r}")
        self.directory = Path(directory)
        self.log_every_n_steps = log_every_n_steps
        self.wants_step_loss = log_every_n_steps is not None
        self._writer: Any = None
        self._steps: Any = None

    def on_fit_start(self, fit: FitState) -> None:
        """Open the writers; a resumed run purges what an interrupted attempt wrote after its
        checkpoint, a fresh one all an earlier attempt wrote."""
        from torch.utils.tensorboard import SummaryWriter

        fresh = fit.start_epoch == 0
        self._writer = SummaryWriter(str(self.directory),
                                     purge_step=0 if fresh else fit.start_epoch + 1)
        if fresh:
            self._writer.add_text("config", _config_text(fit.cfg), 0)
        if self.log_every_n_steps is not None:
            done = fit.start_epoch * fit.steps_per_epoch
            self._steps = SummaryWriter(str(self.directory / "steps"),
                                        purge_step=0 if fresh else done + 1)

    def on_step(self, step: int, loss: float | None) -> None:
        n = self.log_every_n_steps
        if self._steps is not None and loss is not None and n is not None and step % n == 0:
            self._steps.add_scalar("train_loss", loss, step)

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        if self._writer is None:
            return
        for name, value in scalar_metrics(metrics).items():
            self._writer.add_scalar(name, value, epoch)
        self._writer.flush()

    def on_fit_end(self, fit: FitState) -> None:
        """The hyperparameters (once the run is done, by the call that finished it); close."""
        if self._writer is None:
            return
        if fit.status == "done" and fit.start_epoch < fit.cfg.train.epochs:
            from torch.utils.tensorboard.summary import hparams

            names = {k: 0.0 for m in fit.history for k in scalar_metrics(m)}
            for summary in hparams(flat_config(fit.cfg), names):
                self._writer.file_writer.add_summary(summary, fit.cfg.train.epochs)
        for writer in (self._writer, self._steps):
            if writer is not None:
                writer.close()
        self._writer = self._steps = None


class WandbLogger(Callback):
    """A Weights & Biases run (module docstring); ``mode`` (e.g. ``"offline"``), ``project``
    and ``init`` (more keywords of ``wandb.init``) default to wandb's settings."""

    def __init__(self, directory: str | Path, project: str | None = None,
                 mode: str | None = None, **init: Any) -> None:
        self.directory = Path(directory)
        self.project = project
        self.mode = mode
        self.init = init
        self._run: Any = None

    def on_fit_start(self, fit: FitState) -> None:
        import wandb

        init: Any = wandb.init  # mode: any of wandb's (its literal type is too narrow here)
        self.directory.mkdir(parents=True, exist_ok=True)
        wid = _stored_id(self.directory / "wandb_id",
                         lambda: f"{fit.run_id}-{secrets.token_hex(4)}",
                         reuse=fit.start_epoch > 0)
        project = self.project or os.environ.get("WANDB_PROJECT") or "contrastlab"
        # a fresh start (even after a killed attempt) is a new wandb run: no epoch twice
        self._run = init(project=project, name=fit.run_id, id=wid, resume="allow",
                               dir=str(self.directory), config=run_config_dict(fit.cfg),
                               mode=self.mode, **self.init)

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        if self._run is not None:
            self._run.log(scalar_metrics(metrics), step=epoch)

    def on_fit_end(self, fit: FitState) -> None:
        if self._run is None:
            return
        self._run.summary["status"] = fit.status
        self._run.finish(exit_code=0 if fit.status in ("done", "stopped") else 1)
        self._run = None


#: the status of an MLflow run after a call of train that ended with this status
_MLFLOW_STATUS = {"done": "FINISHED", "stopped": "KILLED", "nan": "FAILED", "failed": "FAILED"}


class MLflowLogger(Callback):
    """An MLflow run (module docstring); ``tracking_uri`` (default: MLflow's, e.g.
    ``MLFLOW_TRACKING_URI``) and ``experiment`` name where it goes."""

    def __init__(self, directory: str | Path, tracking_uri: str | None = None,
                 experiment: str = "contrastlab") -> None:
        self.directory = Path(directory)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._id: str | None = None

    def _experiment_id(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self._client.create_experiment(self.experiment))
        except Exception:  # created meanwhile by another run
            return str(self._client.get_experiment_by_name(self.experiment).experiment_id)

    def _new_run(self, fit: FitState) -> str:
        """A new MLflow run with the config as parameters and as ``config.json``."""
        from mlflow.entities import Param

        run = self._client.create_run(self._experiment_id(), run_name=fit.run_id,
                                      tags={"contrastlab.run_id": fit.run_id})
        rid = str(run.info.run_id)
        params = [Param(k, str(v)[:500]) for k, v in flat_config(fit.cfg).items()]
        for i in range(0, len(params), 100):  # MLflow's limit per batch
            self._client.log_batch(rid, params=params[i : i + 100])
        self._client.log_dict(rid, run_config_dict(fit.cfg), "config.json")
        return rid

    def on_fit_start(self, fit: FitState) -> None:
        """Open the run of an earlier call (resumed) or a new one."""
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        kept = self.directory / "mlflow_run_id"
        self._id = None
        if kept.is_file():
            try:
                earlier = str(self._client.get_run(kept.read_text().strip()).info.run_id)
                if fit.start_epoch > 0:  # resumed: go on with the run of the earlier call
                    self._client.update_run(earlier, status="RUNNING")
                    self._id = earlier
                else:  # an attempt killed before its first checkpoint: a new run
                    self._client.set_terminated(earlier, "KILLED")
            except Exception:  # another tracking URI, or deleted: a new run
                self._id = None
        if self._id is None:
            self._id = self._new_run(fit)
            self.directory.mkdir(parents=True, exist_ok=True)
            kept.write_text(self._id + "\n")

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        if self._id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self._id, metrics=[
            Metric(k, v, now, epoch) for k, v in scalar_metrics(metrics).items()])

    def on_fit_end(self, fit: FitState) -> None:
        if self._id is not None:
            self._client.set_terminated(self._id, _MLFLOW_STATUS.get(fit.status, "FAILED"))
        self._id = None


#: ``train.loggers`` name -> the logger, given the run directory
_MAKERS: dict[str, Callable[[Path], Callback]] = {
    "csv": CSVLogger,
    "tensorboard": lambda d: TensorBoardLogger(d / "tensorboard"),
    "wandb": WandbLogger,
    "mlflow": MLflowLogger,
}


def build_loggers(cfg: ExperimentConfig, directory: str | Path) -> list[Callback]:
    """The loggers that ``cfg.train.loggers`` names, writing into the run directory
    ``directory``, in the order named."""
    return [_MAKERS[name](Path(directory)) for name in cfg.train.loggers]

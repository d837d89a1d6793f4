"""Experiments: configs, runs, sweeps and the results database.

- the run configuration (pydantic models, YAML loading, ``--set`` overrides, sweep expansion
  and the run id) is the trainer's: :mod:`contrastlab.train.config`;
- :mod:`~contrastlab.experiments.files`: atomic writes and the per-run file lock;
- :mod:`~contrastlab.experiments.plan`: a sweep's plan, shared by its executors (the grid's
  points and run ids, their registration in the database, the runs' directories and the
  sweep's log lines) and the layout of an output directory;
- :mod:`~contrastlab.experiments.runner`: :func:`run_config` (one run into an output directory);
- :mod:`~contrastlab.experiments.sweep`: :func:`run_sweep` (a grid on a process pool, resumable;
  it dispatches ``executor="ray"`` to :mod:`~contrastlab.experiments.ray_sweep`);
- :mod:`~contrastlab.experiments.ray_sweep`: the same on Ray (local or a cluster);
- :mod:`~contrastlab.experiments.store`: the SQLite results database;
- :mod:`~contrastlab.experiments.records`: the flat record of each run (the one reading of the
  database that the tables, exports and reports start from);
- :mod:`~contrastlab.experiments.samples`: the sample set (split and size) of every stored
  metric, and the lines that state it;
- :mod:`~contrastlab.experiments.results`: :func:`results_table` and :func:`export_results`;
- :mod:`~contrastlab.experiments.frames`: :func:`load_results` (one row per run) and
  :func:`load_epochs` (tidy per-epoch metrics), pandas DataFrames;
- :mod:`~contrastlab.experiments.embed`: :func:`embed_run` (a finished run's split embedded by
  its final encoder, saved as the ``.npz`` that ``contrastlab geometry`` reads).

The ``cli_*`` functions are what the ``contrastlab run / sweep / results / embed / geometry``
commands call; they return the text to print and raise ``ValueError`` (one line) on bad input.
Heavy modules (torch, the training loop, pandas) are imported only when they are used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from contrastlab.experiments.store import StoreError
from contrastlab.train.config import (
    ConfigError,
    ExperimentConfig,
    expand_sweep,
    load_config,
    parse_config,
    run_id,
)

__all__ = [
    "CommandOutput",
    "ConfigError",
    "ExperimentConfig",
    "StoreError",
    "cli_embed",
    "cli_geometry",
    "cli_results",
    "cli_run",
    "cli_sweep",
    "embed_run",
    "expand_sweep",
    "export_results",
    "load_config",
    "load_epochs",
    "load_results",
    "parse_config",
    "results_table",
    "run_config",
    "run_id",
    "run_sweep",
]


def run_config(cfg: Any, out_dir: str | Path, progress: bool | None = None) -> str:
    """See :func:`contrastlab.experiments.runner.run_config`."""
    from contrastlab.experiments.runner import run_config as _run

    return _run(cfg, out_dir, progress=progress)


def run_sweep(cfg: Any, out_dir: str | Path, workers: int = 1, **kwargs: Any) -> list[str]:
    """See :func:`contrastlab.experiments.sweep.run_sweep`."""
    from contrastlab.experiments.sweep import run_sweep as _sweep

    return _sweep(cfg, out_dir, workers=workers, **kwargs)


def results_table(out_dir: str | Path, filters: Any = None, group_by: Any = None,
                  metrics: Any = None) -> str:
    """See :func:`contrastlab.experiments.results.results_table`."""
    from contrastlab.experiments.results import results_table as _table

    return _table(out_dir, filters=filters, group_by=group_by, metrics=metrics)


def export_results(out_dir: str | Path, path: str | Path) -> Path:
    """See :func:`contrastlab.experiments.results.export_results`."""
    from contrastlab.experiments.results import export_results as _export

    return _export(out_dir, path)


def load_results(out_dir: str | Path) -> Any:
    """See :func:`contrastlab.experiments.frames.load_results`."""
    from contrastlab.experiments.frames import load_results as _load

    return _load(out_dir)


def load_epochs(out_dir: str | Path) -> Any:
    """See :func:`contrastlab.experiments.frames.load_epochs`."""
    from contrastlab.experiments.frames import load_epochs as _load

    return _load(out_dir)


def embed_run(run_dir: str | Path, split: str = "train", out: str | Path | None = None) -> Any:
    """See :func:`contrastlab.experiments.embed.embed_run`."""
    from contrastlab.experiments.embed import embed_run as _embed

    return _embed(run_dir, split=split, out=out)


class CommandOutput(NamedTuple):
    """What a ``cli_*`` function returns: the text to print and the exit code (0: every run
    done; 1: a run failed or ended non-finite, listed last in ``text``)."""

    text: str
    exit_code: int


def _failures(out_dir: Path, ids: Sequence[str]) -> list[str]:
    """One line per run of ``ids`` that did not end ``done``: id, status and its error."""
    from contrastlab.experiments.store import ResultStore

    mine = set(ids)
    with ResultStore(out_dir, create=False) as store:
        rows = [r for r in store.runs() if r["run_id"] in mine and r["status"] != "done"]
    return [f"  {r['run_id']} {r['status']}: {r.get('error') or '(no error recorded)'}"
            for r in rows]


def _out_dir(cfg: ExperimentConfig, out: str | Path | None) -> Path:
    """The output directory (``--out`` or ``output.dir``), checked usable before any work."""
    from contrastlab._paths import check_output_dir

    if out is not None and str(out) != "":
        return check_output_dir(out, "--out")
    return check_output_dir(cfg.output.dir, "output.dir")


def cli_run(config_path: str | Path, sets: Sequence[str] = (), out: str | Path | None = None
            ) -> CommandOutput:
    """``contrastlab run CONFIG [--set a.b=v ...] [--out DIR]``: train one configuration into
    ``out`` (default ``output.dir`` of the config); the results table, and exit code 1 when the
    run failed or ended non-finite (its error printed last). A config with a ``sweep`` grid is
    refused (use ``cli_sweep``)."""
    from contrastlab.experiments.results import results_table as _table
    from contrastlab.experiments.runner import run_config as _run

    cfg = load_config(config_path, sets)
    out_dir = _out_dir(cfg, out)
    rid = _run(cfg, out_dir)
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if rank != 0:  # under torchrun: rank 0 reports
        return CommandOutput(f"run {rid}: rank {rank} done (results recorded by rank 0)", 0)
    failed = _failures(out_dir, [rid])
    lines = [_table(out_dir, filters={"run_id": rid}, group_by=["loss.name", "loss.k"]),
             f"results in {out_dir.resolve()}"]
    if failed:
        lines += ["run did not finish:", *failed]
    else:
        lines.insert(0, f"run {rid}: done")
    return CommandOutput("\n".join(lines), 1 if failed else 0)


def cli_sweep(config_path: str | Path, sets: Sequence[str] = (), out: str | Path | None = None,
              workers: int = 1, executor: str = "local", address: str | None = None,
              cpus_per_run: float | None = None, gpus_per_run: float | None = None,
              retries: int | None = None, summary: str | Path | None = None) -> CommandOutput:
    """``contrastlab sweep CONFIG [--set ...] [--out DIR] [--workers N] [--executor ray
    [--address ADDR] [--cpus-per-run C] [--gpus-per-run G] [--retries R]]``: run the grid
    (resumable; finished runs are skipped) and return the results table grouped by the swept
    keys (mean and std over seeds), with exit code 1 when a run failed or ended non-finite (the
    runs listed last). The options are checked (one-line ValueError naming the
    option) before the config is read. ``summary``: also write the table and those lines as a
    Markdown file there (``summary.md`` of ``contrastlab sweep --out``)."""
    from contrastlab.experiments.results import results_table as _table
    from contrastlab.experiments.sweep import EXECUTORS
    from contrastlab.experiments.sweep import run_sweep as _sweep

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("sweep under torchrun is not supported: run one config per torchrun "
                         "with `contrastlab run CONFIG --set ...` (data parallel)")
    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if executor == "ray":
        from contrastlab.experiments.ray_sweep import check_ray_options

        check_ray_options(cpus_per_run, gpus_per_run, retries, address, cli=True)
        if workers != 1:
            raise ValueError("--workers applies to --executor local; on Ray the cluster's CPUs "
                             "and --cpus-per-run set how many runs train at once")
    else:
        given = [f"--{k}" for k, v in (("address", address), ("cpus-per-run", cpus_per_run),
                                       ("gpus-per-run", gpus_per_run), ("retries", retries))
                 if v is not None]
        if given:
            raise ValueError(f"{given[0]} needs --executor ray")
    cfg = load_config(config_path, sets)
    out_dir = _out_dir(cfg, out)
    ids = _sweep(cfg, out_dir, workers=workers, executor=executor, address=address,
                 cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, retries=retries)
    group = [k for k in cfg.sweep if k not in ("seed", "data.seed")]
    table = _table(out_dir, filters=None, group_by=group or None, run_ids=ids)
    failed = _failures(out_dir, ids)
    lines = [f"sweep of {len(ids)} runs; results in {out_dir.resolve()}"]
    if failed:
        lines += [f"{len(failed)} of {len(ids)} runs did not finish:", *failed]
    if summary is not None:
        md = _table(out_dir, filters=None, group_by=group or None, run_ids=ids, style="markdown")
        *rows, footer = md.splitlines()
        bullets = [f"- {line.strip()}" for line in lines[1:]]
        Path(summary).write_text("\n".join(
            [f"# Sweep of {len(ids)} runs", "", f"Results in `{out_dir.resolve()}`.", "", *rows,
             "", footer, *(["", *bullets] if bullets else [])]) + "\n")
    return CommandOutput("\n".join([table, *lines]), 1 if failed else 0)


def _check_export(export: str | Path) -> None:
    """The ``--export`` path: its suffix, its directory and the packages it needs (parquet:
    pyarrow), each a one-line error before any work."""
    from contrastlab._paths import check_output_file
    from contrastlab.experiments.frames import check_tabular_export

    path = check_output_file(export, "--export", (".csv", ".json", ".parquet"))
    if path.suffix.lower() != ".json":
        check_tabular_export(path)


def cli_results(out_dir: str | Path, filters: Sequence[str] | None = None,
                group_by: Sequence[str] | str | None = None, export: str | Path | None = None,
                metrics: Sequence[str] | str | None = None, wide: bool = False) -> str:
    """``contrastlab results DIR [--filter k=v ...] [--group-by k,...] [--metrics m,...]
    [--export PATH] [--wide]``: the results table (mean and std over seeds; wrapped to fit the
    terminal, at most 100 columns, or one line per row with ``wide``) with the sample set of each
    metric (:mod:`~contrastlab.experiments.samples`), and an export to .csv/.json/.parquet when
    ``export`` is given (its path and packages checked before any work)."""
    from contrastlab.experiments.results import export_results as _export
    from contrastlab.experiments.results import results_table as _table

    if export is not None:
        _check_export(export)
    text = _table(out_dir, filters=filters, group_by=group_by, metrics=metrics, samples=True,
                  style="wide" if wide else "fit")
    if export is not None:
        path = _export(out_dir, export)
        text += f"\nexported to {path}"
    return text


def cli_embed(run_dir: str | Path, split: str = "train", out: str | Path | None = None) -> str:
    """``contrastlab embed RUN_DIR [--split train|test] [--out EMB.npz]``: embed every sample of
    the split with the run's final encoder into an ``.npz`` for ``contrastlab geometry``
    (:mod:`~contrastlab.experiments.embed`); returns what was written and which samples."""
    from contrastlab.experiments.embed import embed_run as _embed
    from contrastlab.experiments.samples import subset_text

    path, emb = _embed(run_dir, split=split, out=out)
    src = emb.provenance
    return "\n".join([
        f"embedded the {src['split']} split of run {src['run_id']}: {emb.H.shape[0]} samples, "
        f"d={emb.H.shape[1]} (features {src['features']}, epoch {src['epoch']})",
        f"samples: all {src['n']} of the {src['split']} split; {subset_text(src)}",
        f"written to {path}  (next: contrastlab geometry {path})",
    ])


def cli_geometry(path: str | Path, as_json: bool = False, num_classes: int | None = None) -> str:
    """``contrastlab geometry EMB.npz [--json] [--num-classes C]``: the geometry and downstream
    reports of saved embeddings, with the samples they are computed on stated
    (:func:`contrastlab.experiments.samples.geometry_output`)."""
    from contrastlab.experiments.samples import geometry_output

    return geometry_output(str(path), as_json, num_classes)

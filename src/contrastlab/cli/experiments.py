"""The experiment commands: ``datasets``, ``run``, ``sweep``, ``results``, ``embed``,
``geometry`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contrastlab.cli.app import OutOpt, SetOpt, app, emit


@app.command()
def datasets(
    wide: Annotated[bool, typer.Option("--wide", help="One line per data set, unwrapped.")] = False,
) -> None:
    """List the registered data sets with their sizes and what they need (wrapped to fit the
    terminal, at most 100 columns; --wide: one line each)."""
    from contrastlab.data.registry import datasets_table

    typer.echo(datasets_table(wide=wide))


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="A YAML config (see configs/).")],
    set_: SetOpt = None,
    out: OutOpt = None,
) -> None:
    """Train one configuration; results go to the output directory's database.

    Exit code 0 when the run is done, 1 when it failed or ended non-finite, 2 on bad input
    (before any work)."""
    from contrastlab.experiments import cli_run

    emit(lambda: cli_run(config, set_ or [], out))


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="A YAML config with a sweep: grid.")],
    set_: SetOpt = None,
    out: OutOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes (local).")] = 1,
    executor: Annotated[str, typer.Option(
        help="local (a process pool on this machine) or ray (one Ray task per run).")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: start a local Ray).")
    ] = None,
    cpus_per_run: Annotated[float | None, typer.Option(
        help="CPUs each run reserves on Ray (default 1; a run computes with "
             "train.threads).")] = None,
    gpus_per_run: Annotated[float | None, typer.Option(
        help="GPUs each run reserves on Ray (default 0).")] = None,
    retries: Annotated[int | None, typer.Option(
        help="Ray: resubmissions of a run whose worker died, before it is recorded failed "
             "(default 2).")] = None,
) -> None:
    """Run every point of the sweep grid (resumable: finished runs are never re-run).

    Exit code 0 when every run is done, 1 when any failed or ended non-finite (listed last), 2
    on bad input (before any work)."""
    from contrastlab.experiments import cli_sweep

    def body() -> tuple[str, int]:
        summary = None if out is None else out / "summary.md"
        text, code = cli_sweep(config, set_ or [], out, workers, executor, address,
                               cpus_per_run, gpus_per_run, retries, summary=summary)
        if summary is not None:
            # first, so that the failed runs (if any) stay the last lines
            text = f"summary written to {summary.resolve()}\n{text}"
        return text, code

    emit(body)


@app.command()
def results(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of run/sweep.")],
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", help="Keep runs with key=value (repeatable).")
    ] = None,
    group_by: Annotated[str | None, typer.Option(help="Comma-separated config keys.")] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metric names.")] = None,
    export: Annotated[
        Path | None, typer.Option(help="Also export to a .csv, .json or .parquet file.")
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", help="One line per row, unwrapped.")] = False,
) -> None:
    """Print the results table (mean and std over seeds) with the samples each metric was computed
    on, and optionally export it (.parquet needs: pip install 'contrastlab[parquet]')."""
    from contrastlab.experiments import cli_results

    emit(lambda: cli_results(out_dir, filter_, group_by, export, metrics, wide))


@app.command()
def embed(
    run_dir: Annotated[Path, typer.Argument(help="A run directory OUT/runs/<run_id>.")],
    split: Annotated[str, typer.Option(help="The split to embed: train or test.")] = "train",
    out: Annotated[Path | None, typer.Option(
        help="The .npz to write (default RUN_DIR/embeddings-<split>.npz).")] = None,
) -> None:
    """Embed every sample of a split with a finished run's final encoder, as the run's evaluation
    does, into an .npz that `contrastlab geometry` reads.

    Exit code 2 on bad input (a missing or non-run directory, an unknown split, an unfinished
    run), before any work."""
    from contrastlab.experiments import cli_embed

    emit(lambda: cli_embed(run_dir, split, out))


@app.command()
def geometry(
    embeddings: Annotated[
        Path, typer.Argument(help="An .npz with H_train, y_train[, H_test, y_test] "
                                  "(e.g. of contrastlab embed).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    num_classes: Annotated[int | None, typer.Option(
        "--num-classes", help="C, with labels in 0..C-1 (default: the number of distinct "
                              "labels, numbered in increasing order).")] = None,
) -> None:
    """Geometry (neural / dimensional collapse) and downstream reports of saved embeddings, with
    the samples they are computed on."""
    from contrastlab.experiments import cli_geometry

    emit(lambda: cli_geometry(str(embeddings), as_json, num_classes))


@app.command()
def report(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of run/sweep.")],
    path: Annotated[
        Path | None, typer.Option(help="HTML file (default OUT_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML report (figures, summary table, configs, versions)."""
    from contrastlab._paths import check_output_file
    from contrastlab.report import write_report

    def body() -> str:
        if path is not None:
            check_output_file(path, "--path", (".html", ".htm"))
        return f"report written to {write_report(out_dir, path).resolve()}"

    emit(body)

"""The ``contrastlab`` command. It only parses arguments and calls the library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

import contrastlab

app = typer.Typer(add_completion=False, help="contrastlab: a laboratory for contrastive learning.")

# Options shared by several commands, declared once.
ClassesOpt = Annotated[int, typer.Option("--classes", help="Number of classes C >= 2.")]
KListOpt = Annotated[str, typer.Option("--k", help="Comma-separated numbers of negatives.")]
LossOpt = Annotated[str, typer.Option(help="logistic, infonce, infonce-mean or hinge.")]
TemperatureOpt = Annotated[float, typer.Option(help="Temperature t > 0.")]
NegativesOpt = Annotated[str, typer.Option(help="marginal (UCL) or other-class (SCL).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set a.b=v")]
OutOpt = Annotated[Path | None, typer.Option(help="Output directory (default output.dir).")]


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/demo"),
    steps: Annotated[int, typer.Option(min=1, help="Training steps per configuration.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Run the demo job (exact ETF losses vs k; SCL/HSCL/UCL/HUCL training) and write a report."""
    from contrastlab._paths import check_output_dir
    from contrastlab.demo import run_demo

    try:
        check_output_dir(out, "--out")
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    path = run_demo(out, steps=steps, seed=seed)
    typer.echo(path.read_text())
    typer.echo(f"report written to {path.resolve()}")


@app.command()
def version() -> None:
    """Print the contrastlab version."""
    typer.echo(contrastlab.__version__)


@app.command()
def bounds(
    classes: Annotated[int, typer.Option("--classes", help="Number of classes C >= 2 (uniform).")],
    k: Annotated[
        str, typer.Option("--k", help="Comma-separated numbers of negatives K, e.g. 1,4,16,64.")
    ] = "1,4,16,64",
    b: Annotated[
        float, typer.Option("--b", help="Bound b on feature norms (1 for unit-norm features).")
    ] = 1.0,
    harmonic: Annotated[
        str,
        typer.Option(
            "--harmonic", help="H_{C-1} in Ash's bound: exact, or approx = ln(C-1)+0.577 (Bao)."
        ),
    ] = "exact",
    as_json: JsonOpt = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also plot to a .png/.svg/.pdf (matplotlib).")
    ] = None,
) -> None:
    """Print every bound on the mean-classifier loss at the idealized R*_cont(K) (SPEC A6)."""
    from typing import NoReturn

    from contrastlab.theory.bounds import idealized_bounds, plot_bounds

    def fail(message: str) -> NoReturn:
        typer.echo(f"Error: {message}", err=True)
        raise typer.Exit(code=2)

    ks: list[int] = []
    for part in k.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            value = 0
        if value < 1:
            fail(f"--k must be comma-separated integers >= 1, e.g. 1,4,16,64; got {k!r}")
        ks.append(value)
    if classes < 2:
        fail(f"--classes must be an integer >= 2; got {classes}")
    if not (0.0 < b < float("inf")):
        fail(f"--b must be a finite number > 0; got {b}")
    if harmonic not in ("exact", "approx"):
        fail(f"--harmonic must be 'exact' or 'approx'; got {harmonic!r}")
    if plot is not None:
        from contrastlab._paths import check_output_file

        if plot.suffix.lower() not in (".png", ".svg", ".pdf"):
            fail(f"--plot must name a .png, .svg or .pdf file; got {str(plot)!r}")
        try:
            check_output_file(plot, "--plot")
        except ValueError as exc:
            fail(str(exc))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib, which is not installed: pip install matplotlib")
    table = idealized_bounds(classes, ks, b, harmonic=harmonic)
    typer.echo(table.to_json() if as_json else table.to_text())
    if plot is not None:
        path = plot_bounds(table, plot)
        typer.echo(f"plot written to {path.resolve()}", err=True)


def _fail_on_value_error(call: Callable[[], object]) -> None:
    """Run a command body and print what it returns. Bad input (ValueError, a missing package
    or file) becomes a one-line error and exit code 2; an OS error during the work (e.g. a full
    disk) a one-line error and exit code 1. A body may return ``(text, exit_code)`` (e.g. 1
    when a run failed: its failures are the last lines of the text)."""
    try:
        out = call()
    except (ValueError, ImportError, FileNotFoundError) as err:
        typer.echo(f"Error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                   err=True)
        raise typer.Exit(code=2) from None
    except OSError as err:
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        typer.echo(f"Error: {err.strerror or err}{where}", err=True)
        raise typer.Exit(code=1) from None
    text, code = out if isinstance(out, tuple) else (out, 0)
    typer.echo(text)
    if code:
        raise typer.Exit(code=int(code))


@app.command()
def optimum(
    classes: ClassesOpt,
    prior: Annotated[
        str,
        typer.Option(
            help="balanced, zipf:S, dirichlet:ALPHA[:SEED], two-level:HEAVY:RATIO or "
            "C comma-separated weights."
        ),
    ] = "balanced",
    k: KListOpt = "1,16,256",
    loss: LossOpt = "infonce",
    temperature: TemperatureOpt = 1.0,
    negatives: NegativesOpt = "marginal",
    beta: Annotated[float, typer.Option(help="Hardness beta >= 0 (HUCL / HSCL).")] = 0.0,
    dim: Annotated[int | None, typer.Option(help="Dimension d (default C - 1).")] = None,
    constraint: Annotated[str, typer.Option(help="sphere or ball.")] = "sphere",
    restarts: Annotated[int, typer.Option(help="Random restarts per k.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the restarts.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """The optimal class geometry of the exact population loss, one row per k."""
    from contrastlab.theory.commands import optimum_output, parse_ks

    _fail_on_value_error(
        lambda: optimum_output(
            classes,
            prior,
            parse_ks(k),
            loss,
            temperature,
            negatives,
            beta,
            dim,
            constraint,
            restarts,
            seed,
            as_json,
        )
    )


@app.command()
def conjecture(
    classes: ClassesOpt = 5,
    k: KListOpt = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096",
    prior: Annotated[
        list[str] | None,
        typer.Option(
            help="A prior to study (repeatable); default: the Zipf / Dirichlet / two-level family."
        ),
    ] = None,
    loss: LossOpt = "infonce",
    temperature: TemperatureOpt = 1.0,
    negatives: NegativesOpt = "marginal",
    restarts: Annotated[int, typer.Option(help="Random restarts per (prior, k).")] = 3,
    recheck_restarts: Annotated[int, typer.Option(help="Restarts to re-solve a violation.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Unbalanced priors: is the downstream loss of the optimum monotone in k? (Awasthi et al.)"""
    from contrastlab.theory.commands import conjecture_output, parse_ks

    _fail_on_value_error(
        lambda: conjecture_output(
            classes,
            parse_ks(k),
            prior,
            loss,
            temperature,
            negatives,
            restarts,
            recheck_restarts,
            seed,
            as_json,
        )
    )


@app.command()
def datasets() -> None:
    """List the registered data sets with their sizes and what they need."""
    from contrastlab.data.registry import datasets_table

    typer.echo(datasets_table())


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="A YAML config (see configs/).")],
    set_: SetOpt = None,
    out: OutOpt = None,
) -> None:
    """Train one configuration; results go to the output directory's database. Exit code 0 when
    the run is done, 1 when it failed or ended non-finite, 2 on bad input (before any work)."""
    from contrastlab.experiments import cli_run

    _fail_on_value_error(lambda: cli_run(config, set_ or [], out))


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
    """Run every point of the sweep grid (resumable: finished runs are never re-run). Exit code
    0 when every run is done, 1 when any failed or ended non-finite (listed last), 2 on bad
    input (before any work)."""
    from contrastlab.experiments import cli_sweep

    def body() -> tuple[str, int]:
        text, code = cli_sweep(config, set_ or [], out, workers, executor, address,
                               cpus_per_run, gpus_per_run, retries)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.md").write_text(text + "\n")
            # first, so that the failed runs (if any) stay the last lines
            text = f"summary written to {(out / 'summary.md').resolve()}\n{text}"
        return text, code

    _fail_on_value_error(body)


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
) -> None:
    """Print the results table (mean and std over seeds) and optionally export it."""
    from contrastlab.experiments import cli_results

    _fail_on_value_error(lambda: cli_results(out_dir, filter_, group_by, export, metrics))


@app.command()
def geometry(
    embeddings: Annotated[
        Path, typer.Argument(help="An .npz with H_train, y_train[, H_test, y_test].")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    num_classes: Annotated[int | None, typer.Option(
        "--num-classes", help="C, with labels in 0..C-1 (default: the number of distinct "
                              "labels, numbered in increasing order).")] = None,
) -> None:
    """Geometry (neural / dimensional collapse) and downstream reports of saved embeddings."""
    from contrastlab.evaluation import geometry_command_output

    _fail_on_value_error(lambda: geometry_command_output(str(embeddings), as_json, num_classes))


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

    _fail_on_value_error(body)


@app.command()
def repro(
    name: Annotated[str | None, typer.Argument(help="A recipe name (see --list) or YAML file.")
                    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    profile: Annotated[str, typer.Option(help="quick (2 CPU cores, < 3 min) or full.")
                       ] = "quick",
    out: Annotated[Path, typer.Option(help="Directory for the evidence.")] = Path("runs/repro"),
    corrupt: Annotated[
        bool, typer.Option("--corrupt", help="Run the recipe's deliberately wrong variant "
                           "(e.g. shuffled labels): it must FAIL.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Parallel training processes.")] = 1,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Replace a profile parameter: --param ks=[1,16]; "
                        "--param set.train.epochs=5 adds a config override.")] = None,
    summary: Annotated[bool, typer.Option(
        "--summary", help="Summarize every result under --out as Markdown (no run).")] = False,
    to: Annotated[Path | None, typer.Option(
        help="With --summary: write the Markdown here (e.g. recipes/RESULTS.md).")] = None,
) -> None:
    """Run a recipe (one claim of the seed papers) and print PASS or FAIL with its figures.
    Exit code 0 on PASS, 1 on FAIL, 2 on bad input."""
    from contrastlab.recipes import list_recipes, parse_params, run_recipe

    if summary:
        from contrastlab._paths import check_output_file
        from contrastlab.recipes.summary import results_markdown

        def write() -> str:
            if to is not None:
                check_output_file(to, "--to", (".md",))
            text = results_markdown(out, _git_commit())
            if to is None:
                return text
            to.write_text(text)
            return f"summary written to {to}"

        _fail_on_value_error(write)
        return

    if list_:
        _fail_on_value_error(lambda: "\n".join(
            f"{r.name:<22} {r.title}\n{'':<22} quick: {r.profiles['quick'].get('about', '')}"
            for r in list_recipes()))
        return
    if name is None:
        typer.echo("Error: name is required (a recipe name or YAML file; see --list)", err=True)
        raise typer.Exit(code=2)
    result = None

    def body() -> str:
        nonlocal result
        from contrastlab._paths import check_output_dir

        check_output_dir(out, "--out")
        result = run_recipe(name, profile, out, corrupt, workers,
                            log=lambda m: typer.echo(m, err=True),
                            params=parse_params(param or []) if param else None)
        return result.summary() + f"\nreport: {(result.out_dir / 'report.html').resolve()}"

    _fail_on_value_error(body)
    if result is not None and not result.passed:
        raise typer.Exit(code=1)


def _git_commit() -> str | None:
    """The checked-out commit of the working directory's repository, when there is one."""
    import subprocess

    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: exit code 0 on success, 1 when work failed (a run, a
    recipe's claim), 2 on bad input. A usage error (an unknown option, a value out of an
    option's range) is one line on stderr, as every other bad input."""
    import sys

    try:  # typer >= 0.20 vendors click as typer._click; earlier versions use click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc  # type: ignore[no-redef]

    try:
        code = app(args=argv, prog_name="contrastlab", standalone_mode=False)
    except click_exc.UsageError as err:
        hint = f" (see: contrastlab {err.ctx.info_name} --help)" if (
            err.ctx is not None and err.ctx.info_name not in (None, "contrastlab")) else ""
        print(f"Error: {err.format_message().splitlines()[0]}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(130)
    except click_exc.ClickException as err:
        print(f"Error: {err.format_message().splitlines()[0]}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)

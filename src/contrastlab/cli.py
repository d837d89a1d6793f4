"""The ``contrastlab`` command. It only parses arguments and calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import contrastlab

app = typer.Typer(add_completion=False, help="contrastlab: a laboratory for contrastive learning.")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/demo"),
    steps: Annotated[int, typer.Option(min=1, help="Training steps per configuration.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Run the demo job (exact ETF losses vs k; SCL/HSCL/UCL/HUCL training) and write a report."""
    from contrastlab.demo import run_demo

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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
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
        if plot.suffix.lower() not in (".png", ".svg", ".pdf"):
            fail(f"--plot must name a .png, .svg or .pdf file; got {str(plot)!r}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib, which is not installed: pip install matplotlib")
    table = idealized_bounds(classes, ks, b, harmonic=harmonic)
    typer.echo(table.to_json() if as_json else table.to_text())
    if plot is not None:
        path = plot_bounds(table, plot)
        typer.echo(f"plot written to {path.resolve()}", err=True)

def main() -> None:
    """Entry point of the console script."""
    app()

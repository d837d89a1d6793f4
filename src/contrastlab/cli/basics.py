"""``contrastlab demo`` and ``contrastlab version``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import contrastlab
from contrastlab.cli.app import app


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/demo"),
    steps: Annotated[int, typer.Option(min=1, help="Training steps per run (one epoch).")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Run the quick tour (about a minute): exact ETF losses vs k, then SCL/HSCL/UCL/HUCL
    trained by the library's trainer on a small Gaussian mixture; writes a Markdown report.
    The main job is `make demo` (contrastlab sweep configs/demo.yaml)."""
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

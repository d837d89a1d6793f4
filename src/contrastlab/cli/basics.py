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

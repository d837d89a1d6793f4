"""The ``contrastlab`` command. It only parses arguments and calls the library."""

from __future__ import annotations

from pathlib import Path

import typer

import contrastlab

app = typer.Typer(add_completion=False, help="contrastlab: a laboratory for contrastive learning.")


@app.command()
def demo(
    out: Path = typer.Option(Path("reports/demo"), help="Directory for the report."),
    steps: int = typer.Option(300, min=1, help="Training steps per configuration."),
    seed: int = typer.Option(0, help="Random seed."),
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


def main() -> None:
    """Entry point of the console script."""
    app()

"""The ``contrastlab`` Typer app, the options shared by several commands, and :func:`emit`, the
one place where a command's output and exit code are produced (every command module uses it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "emit"]

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


def emit(call: Callable[[], object]) -> None:
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

"""The ``contrastlab`` command. It only parses arguments and calls the library.

:mod:`~contrastlab.cli.app` holds the Typer app, the shared options and :func:`~contrastlab.cli.
app.emit` (output and exit codes); one module per command group registers its commands on it:
:mod:`~contrastlab.cli.basics` (demo, version), :mod:`~contrastlab.cli.theory` (bounds,
optimum, conjecture), :mod:`~contrastlab.cli.experiments` (datasets, run, sweep, results,
geometry, report), :mod:`~contrastlab.cli.recipes` (repro). :func:`main` is the console script.
"""

from __future__ import annotations

import typer

# the command modules register their commands on `app` when imported, in the order of --help
from contrastlab.cli import basics, experiments, recipes, theory  # noqa: F401
from contrastlab.cli.app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: exit code 0 on success, 1 when work failed (a run, a
    recipe's claim), 2 on bad input. A usage error (an unknown option, a value out of an
    option's range) is one line on stderr, as every other bad input."""
    import sys

    try:  # typer >= 0.20 vendors click as typer._click; earlier versions use click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc  # type: ignore[no-redef]

    from contrastlab.losses.registry import load_plugins

    try:  # the loss plugins ($CONTRASTLAB_PLUGINS, entry points) before any input is read
        load_plugins()
    except ValueError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
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

"""The ``contrastlab`` command. It only parses arguments and calls the library.

:mod:`~contrastlab.cli.app` holds the Typer app, the shared options and :func:`~contrastlab.cli.
app.emit` (output and exit codes); one module per command group registers its commands on it:
:mod:`~contrastlab.cli.basics` (demo, version), :mod:`~contrastlab.cli.theory` (bounds,
optimum, conjecture), :mod:`~contrastlab.cli.experiments` (datasets, run, sweep, results,
geometry, report), :mod:`~contrastlab.cli.recipes` (repro). :func:`main` is the console script.
"""

from __future__ import annotations

from typing import Any

import typer

# the command modules register their commands on `app` when imported, in the order of --help
from contrastlab.cli import basics, experiments, recipes, theory  # noqa: F401
from contrastlab.cli.app import app

__all__ = ["LONG_COMMANDS", "announce", "app", "main"]


#: the commands that import torch and work for seconds or more: at a terminal they say they have
#: started before those imports (a few seconds) instead of staying silent
LONG_COMMANDS = ("bounds", "conjecture", "demo", "embed", "geometry", "optimum", "repro",
                 "report", "run", "sweep")


def announce(argv: list[str], stream: Any = None) -> bool:
    """At a terminal, one line on ``stream`` (stderr) naming the command of ``argv`` as started,
    before any slow import, when it is one of :data:`LONG_COMMANDS` (not for ``--help``). Not
    written to a pipe, a file or a test's capture: scripts and logs see only the command's own
    output. Whether the line was written."""
    import sys

    stream = sys.stderr if stream is None else stream
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in LONG_COMMANDS or "--help" in argv or not stream.isatty():
        return False
    print(f"contrastlab {command}: starting (loading torch)", file=stream, flush=True)
    return True


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: exit code 0 on success, 1 when work failed (a run, a
    recipe's claim), 2 on bad input. A usage error (an unknown option, a value out of an
    option's range) is one line on stderr, as every other bad input."""
    import sys

    try:  # typer >= 0.20 vendors click as typer._click; earlier versions use click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc  # type: ignore[no-redef]

    from contrastlab._plugins import plugins_configured

    announce(sys.argv[1:] if argv is None else list(argv))

    try:  # the loss plugins ($CONTRASTLAB_PLUGINS, entry points) before any input is read; the
        # registry (and torch) is imported here only when there are plugins: a command starts
        # and says what it does without waiting for torch when it can
        if plugins_configured():
            from contrastlab.losses.registry import load_plugins

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

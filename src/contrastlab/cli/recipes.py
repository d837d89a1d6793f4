"""``contrastlab repro``: run a recipe, or summarize recipe results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contrastlab.cli.app import app, emit


@app.command()
def repro(
    name: Annotated[str | None, typer.Argument(help="A recipe name (see --list) or YAML file.")
                    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    profile: Annotated[str, typer.Option(
        help="quick (2 CPU cores, < 3 min), full, or gpu (the paper's own experiment, on a GPU, "
             "where the recipe has it).")] = "quick",
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
            text = results_markdown(out, git_commit())
            if to is None:
                return text
            to.write_text(text)
            return f"summary written to {to}"

        emit(write)
        return

    if list_:
        emit(lambda: "\n".join(
            f"{r.name:<22} {r.title}\n{'':<22} quick: {r.profiles['quick'].get('about', '')}"
            + (f"\n{'':<22} gpu: {' '.join(str(r.profiles['gpu'].get('about', '')).split())}"
               if "gpu" in r.profiles else "")
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

    emit(body)
    if result is not None and not result.passed:
        raise typer.Exit(code=1)


def git_commit() -> str | None:
    """The checked-out commit of the working directory's repository, when there is one."""
    import subprocess

    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None

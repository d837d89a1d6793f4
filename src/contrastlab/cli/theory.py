"""The theory commands: ``bounds``, ``optimum``, ``conjecture``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contrastlab._tables import fit_width
from contrastlab.cli.app import (
    ClassesOpt,
    JsonOpt,
    KListOpt,
    LossOpt,
    NegativesOpt,
    TemperatureOpt,
    app,
    emit,
)

#: ``--wide``: the tables one line per row instead of fitting the terminal (at most 100 columns)
WideOpt = Annotated[bool, typer.Option("--wide", help="One line per row (default: the table "
                                       "fits the terminal, at most 100 columns).")]


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
    wide: WideOpt = False,
) -> None:
    """Print every bound on the mean-classifier loss at the idealized R*_cont(K): Arora et al.
    2019, Nozawa & Sato 2021, Ash et al. 2022 and Bao et al. 2022, as evaluated in Bao et al.'s
    code."""
    from typing import NoReturn

    from contrastlab.theory.bounds import MAX_K, idealized_bounds
    from contrastlab.theory.bounds_plot import plot_bounds

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
        if value > MAX_K:
            fail(f"--k must be at most {MAX_K} (2^26: the exact bounds take O(K) memory and "
                 f"time per K); got {value}")
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
    # a bar over the K (stderr, at a terminal only: not in pipes, files or --json's stdout)
    table = idealized_bounds(classes, ks, b, harmonic=harmonic, progress=None)
    typer.echo(table.to_json() if as_json else table.to_text(None if wide else fit_width()))
    if plot is not None:
        path = plot_bounds(table, plot)
        typer.echo(f"plot written to {path.resolve()}", err=True)


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
    restarts: Annotated[
        int,
        typer.Option(
            help="Random starts per k, at most: they stop at the first certified global "
            "optimum (duality gap <= 1e-6)."
        ),
    ] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the restarts.")] = 0,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """The optimal class geometry of the exact population loss, one row per k. Every --json row
    has duality_gap, a certified bound on the loss above the global optimum (the convex
    Gram-matrix program of Awasthi et al. 2022), or null with duality_gap_reason where the loss
    is not convex and smooth in the Gram matrix (hinge, beta > 0)."""
    from contrastlab.theory.commands import optimum_output, parse_ks

    emit(
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
            width=None if wide else fit_width(),
            progress=None,  # a bar when stderr is a terminal
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
    wide: WideOpt = False,
) -> None:
    """Unbalanced priors: is the downstream loss of the optimum monotone in k? (Awasthi et al.)"""
    from contrastlab.theory.commands import conjecture_output, parse_ks

    emit(
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
            progress=None,  # a bar when stderr is a terminal
            width=None if wide else fit_width(),
        )
    )

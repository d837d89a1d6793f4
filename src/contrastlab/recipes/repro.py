"""Run a recipe: measure, check, write the evidence, and say PASS or FAIL.

:func:`run_recipe` resolves the recipe and profile, calls its runner (:mod:`.catalog`), evaluates
the recipe's checks on the measured metrics and writes, under ``out/<recipe>/<profile>`` (with a
``-corrupt`` suffix for the deliberately wrong run):

- ``result.json``: the claim, the checks with their observed values, the metrics, the tables,
  the notes, the parameters and the wall time;
- ``figures/*.png`` and ``*.svg``;
- ``report.html``: one self-contained page with all of it.

Training recipes keep their runs in ``runs/`` there (the experiment engine's results database),
so a recipe interrupted at any moment resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastlab._paths import check_output_dir, confined
from contrastlab.recipes.catalog import all_runners
from contrastlab.recipes.checks import CheckResult, evaluate_checks
from contrastlab.recipes.runners import Outcome, RunContext
from contrastlab.recipes.spec import Recipe, load_recipe, unmet_requirement

__all__ = ["RecipeResult", "run_recipe"]


@dataclass
class RecipeResult:
    """The outcome of :func:`run_recipe`."""

    recipe: Recipe
    profile: str
    corrupt: bool
    checks: list[CheckResult]
    outcome: Outcome
    seconds: float
    out_dir: Path
    params: dict[str, Any] = field(default_factory=dict)
    figure_paths: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every check passed, and there was at least one claim check."""
        return any(c.check.kind == "claim" for c in self.checks) and all(
            c.passed for c in self.checks)

    @property
    def failed_claims(self) -> list[str]:
        """The names of the claim checks that failed."""
        return [c.check.name for c in self.checks if c.check.kind == "claim" and not c.passed]

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def summary(self) -> str:
        """The lines printed at the end of ``contrastlab repro``."""
        tag = " (corrupted: " + self.recipe.corruption + ")" if self.corrupt else ""
        lines = [f"{self.recipe.name} [{self.profile}{tag}]: {self.recipe.claim}",
                 f"source: {self.recipe.source}"]
        for c in self.checks:
            obs = "missing" if c.observed is None else f"{c.observed:.6g}"
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.check.kind} {c.check.name}: "
                         f"{c.check.text()} (observed {obs})")
        for n in self.outcome.notes:
            lines.append(f"  note: {n}")
        lines.append(f"  wall time {self.seconds:.1f} s; evidence in {self.out_dir}")
        lines.append(f"{self.verdict} {self.recipe.name}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name, "title": self.recipe.title, "claim": self.recipe.claim,
            "source": self.recipe.source, "profile": self.profile, "corrupt": self.corrupt,
            "corruption": self.recipe.corruption, "verdict": self.verdict,
            "checks": [c.to_dict() for c in self.checks],
            "metrics": {k: _json(v) for k, v in self.outcome.metrics.items()},
            "notes": self.outcome.notes, "seconds": self.seconds,
            "params": self.params,
            "tables": {k: [{c: _json(v) for c, v in row.items()} for row in rows]
                       for k, rows in self.outcome.tables.items()},
        }


def _json(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, list | tuple):
        return [_json(x) for x in v]
    return str(v)


def run_recipe(
    name: str | Path,
    profile: str = "quick",
    out: str | Path = "runs/repro",
    corrupt: bool = False,
    workers: int = 1,
    log: Callable[[str], None] | None = None,
    params: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> RecipeResult:
    """Run recipe ``name`` (a name of :func:`contrastlab.recipes.list_recipes` or a YAML path)
    with ``profile`` and return its :class:`RecipeResult`; ``corrupt`` runs the recipe's
    deliberately wrong variant (which must FAIL). ``params`` replace the profile's parameters
    of the same name (a ``set`` mapping is merged into the profile's ``set``); the result records
    the parameters used. ``progress``: progress bars with the time left on stderr while it
    measures (a training recipe's: one over its runs; None: only when stderr is a terminal).
    Raises ValueError (one line) on bad input."""
    from contrastlab._validation import check_positive_int

    recipe = load_recipe(name)
    used = recipe.params(profile)  # ValueError naming the profile
    if params is not None:
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a mapping of parameter names; got {params!r}")
        for key, value in params.items():
            if key == "set" and isinstance(value, Mapping):
                used["set"] = {**(used.get("set") or {}), **value}
            else:
                used[key] = value
    check_positive_int("workers", workers)
    if not isinstance(corrupt, bool):
        raise ValueError(f"corrupt must be True or False; got {corrupt!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be True, False or None; got {progress!r}")
    missing = unmet_requirement(recipe, profile, used)  # a CUDA device, the data's files
    if missing:
        raise ValueError(missing)
    runner = all_runners()[recipe.runner]
    check_output_dir(out, "out")
    # confined under out (the name is checked by load_recipe; this holds for any Recipe)
    out_dir = confined(out, recipe.name, profile + ("-corrupt" if corrupt else ""))
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: {str(out_dir)!r} must be a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    say(f"{recipe.name}, {profile} profile{' (corrupted)' if corrupt else ''}: running "
        f"({recipe.runner}; results in {out_dir})")
    t0 = time.perf_counter()
    outcome = runner(used, RunContext(out_dir, corrupt, workers, say, progress))
    seconds = time.perf_counter() - t0
    say(f"{recipe.name}: measured in {seconds:.1f} s; checking the claims and writing the report")
    checks = evaluate_checks(recipe.checks_for(profile), outcome.metrics)
    result = RecipeResult(recipe, profile, corrupt, checks, outcome, seconds, out_dir, used)
    _write(result)
    return result


def _write(result: RecipeResult) -> None:
    """The evidence: the figures (each figure's PNG and SVG written in its own process where
    the cores allow, :mod:`contrastlab._fork`: the files are the same), ``result.json`` and
    ``report.html``."""
    from contrastlab._fork import fork_map, usable_cores
    from contrastlab.report.figures import save
    from contrastlab.report.recipe_html import write_recipe_report

    figures = list(result.outcome.figures.items())
    paths = fork_map(lambda item: save(item[1], result.out_dir / "figures" / item[0]), figures,
                     usable_cores())
    result.figure_paths.update({name: p for (name, _), p in zip(figures, paths, strict=True)})
    tmp = result.out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=1))
    tmp.replace(result.out_dir / "result.json")
    write_recipe_report(result, result.out_dir / "report.html")

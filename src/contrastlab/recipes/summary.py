"""The published evidence: one Markdown table of every recipe result under a directory.

``contrastlab repro --summary OUT`` reads every ``result.json`` that :func:`contrastlab.recipes.
run_recipe` wrote under ``OUT`` (``OUT/<recipe>/<profile>[-corrupt]/result.json``) and prints
(or writes, ``--to recipes/RESULTS.md``) one section per result: recipe, profile, verdict, wall
time, the commit it was run at, and each check with its kind, condition and observed value. The
one-sided 95 % bounds that the trained recipes' trend checks read are in the observed values;
the per-comparison intervals are listed under each result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from contrastlab._tables import markdown_table

__all__ = ["results_markdown"]


def _fmt(v: Any) -> str:
    if v is None:
        return "missing"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def results_markdown(out: str | Path, commit: str | None = None) -> str:
    """The Markdown summary of every ``result.json`` under ``out`` (module docstring). Raises
    ValueError (one line) when there is none or one cannot be read."""
    root = Path(out)
    paths = sorted(root.glob("*/*/result.json"))
    if not paths:
        raise ValueError(f"no recipe results (*/*/result.json) under {str(root)!r}")
    lines = ["# Recipe results", ""]
    if commit:
        lines += [f"Commit: `{commit}`.", ""]
    data = []
    for p in paths:
        try:
            d = json.loads(p.read_text())
            data.append((p, d))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p}: not a readable result.json ({exc})") from None

    def profile(d: dict[str, Any]) -> str:
        return str(d["profile"]) + (" (corrupted)" if d.get("corrupt") else "")

    lines.append(markdown_table(
        ("recipe", "profile", "verdict", "failed checks", "wall time (s)"),
        [(d["recipe"], profile(d), f"**{d['verdict']}**",
          ", ".join(c["name"] for c in d["checks"] if not c["passed"]) or "-",
          f"{d['seconds']:.0f}") for _p, d in data]))
    for _p, d in data:
        lines += ["", f"## {d['recipe']} [{profile(d)}]: {d['verdict']}", "", d["claim"].strip(),
                  "", markdown_table(
                      ("check", "kind", "condition", "observed", "result"),
                      [(c["name"], c.get("kind", "-"), f"`{c['condition']}`", _fmt(c["observed"]),
                        "ok" if c["passed"] else "FAIL") for c in d["checks"]])]
        notes = d.get("notes") or []
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"

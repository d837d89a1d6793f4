"""Plain-text tables: the one renderer of the tables the commands print (``contrastlab
optimum``/``conjecture`` columns, the ``geometry`` measure lists)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["columns_table", "format_cell", "measure_table"]


def format_cell(v: Any) -> str:
    """A cell: booleans as yes/no, floats with 6 significant digits, the rest as ``str``."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def columns_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """Right-aligned columns ``cols`` of the dict rows, a header and a rule."""
    cells = [[format_cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def measure_table(title: str, rows: list[tuple[str, str]]) -> str:
    """``title:`` then a two-column list of (measure, value) pairs, left-aligned."""
    width = max(len(r[0]) for r in rows)
    lines = [f"{title}:", f"  {'measure'.ljust(width)}  value", f"  {'-' * width}  -----"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)

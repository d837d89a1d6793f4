"""Tables: the one renderer of the tables the package prints or writes: plain text (the
``optimum``/``conjecture``/``bounds`` columns, the ``geometry`` measure lists), tables of text
that fit the terminal (:func:`fit_table`: ``datasets``, ``results``; at most :data:`MAX_WIDTH`
columns unless ``wide``: numbers split into blocks of columns, text wrapped by ``rich``) and
Markdown (the recipe summaries, the demo report, the study and bounds tables)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "MAX_WIDTH",
    "cell",
    "columns_table",
    "fit_table",
    "fit_width",
    "format_cell",
    "markdown_table",
    "measure_table",
    "text_table",
]

#: the widest a :func:`fit_table` gets by default (a narrower terminal narrows it)
MAX_WIDTH = 100


def cell(value: Any) -> str:
    """The text of a results cell: ``-`` for None, 4 significant digits for a float (the tables
    of :func:`contrastlab.experiments.results.results_table` and of the HTML pages,
    :mod:`contrastlab.report.style`)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_cell(v: Any) -> str:
    """A cell: booleans as yes/no, floats with 6 significant digits, the rest as ``str``."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _widths(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(header)]


def fit_width() -> int:
    """The width a table may take: the terminal's, at most :data:`MAX_WIDTH` (100 when the
    output is not a terminal)."""
    return min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]], rule: bool = True,
               width: int | None = None, keep: int = 1) -> str:
    """Right-aligned columns separated by two spaces: the header, a rule of dashes (unless
    ``rule`` is false), the rows of formatted cells. With ``width``, a table wider than that is
    split into blocks of columns, one under the other, each repeating the first ``keep``
    columns (every number stays whole)."""
    widths = _widths(header, body)

    def block(cols: Sequence[int]) -> str:
        def line(cells: Sequence[str]) -> str:
            return "  ".join(cells[i].rjust(widths[i]) for i in cols)

        lines = [line(header)] + (["  ".join("-" * widths[i] for i in cols)] if rule else [])
        return "\n".join(lines + [line(row) for row in body])

    if width is None or sum(widths) + 2 * (len(widths) - 1) <= width:
        return block(range(len(header)))
    return "\n\n".join(block(cols) for cols in _column_blocks(widths, keep, width))


def columns_table(rows: Sequence[dict[str, Any]], cols: Sequence[str], width: int | None = None,
                  keep: int = 1) -> str:
    """Right-aligned columns ``cols`` of the dict rows, a header and a rule (``width``, ``keep``:
    as :func:`text_table`)."""
    return text_table(cols, [[format_cell(r.get(c, "")) for c in cols] for r in rows],
                      width=width, keep=keep)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]],
                   aligned: bool = False) -> str:
    """A GitHub-flavoured Markdown table of formatted cells: compact (``|---|`` rules), or with
    ``aligned`` the columns padded and right-aligned (``---:``)."""
    if not aligned:
        rows = [header, *body]
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]])
    widths = _widths(header, body)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def measure_table(title: str, rows: list[tuple[str, str]]) -> str:
    """``title:`` then a two-column list of (measure, value) pairs, left-aligned."""
    width = max(len(r[0]) for r in rows)
    lines = [f"{title}:", f"  {'measure'.ljust(width)}  value", f"  {'-' * width}  -----"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def fit_table(header: Sequence[str], body: Sequence[Sequence[str]], wide: bool = False,
              width: int | None = None, keep: int | None = None) -> str:
    """Left-aligned columns of text under a rule of dashes that fit in ``width`` columns
    (default: the terminal's width, at most :data:`MAX_WIDTH`); ``wide``: one line per row
    whatever its length. Too wide a table is split in one of two ways:

    - ``keep`` given (numbers: cells that must stay whole): into blocks of columns, one under
      the other, each repeating the first ``keep`` columns (the row's keys), as a pandas frame
      wraps;
    - otherwise (text): the long cells are wrapped within their column (rendered by ``rich``).

    Trailing spaces are stripped."""
    if width is None:
        width = fit_width()
    widths = _widths(header, body)
    if wide or sum(widths) + 2 * (len(widths) - 1) <= width:
        return _left_table(header, body, range(len(header)), widths)
    if keep is not None:
        return "\n\n".join(_left_table(header, body, cols, widths)
                            for cols in _column_blocks(widths, keep, width))
    return _wrapped_table(header, body, width)


def _left_table(header: Sequence[str], body: Sequence[Sequence[str]], cols: Iterable[int],
                widths: Sequence[int]) -> str:
    cols = list(cols)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cells[i].ljust(widths[i]) for i in cols).rstrip()

    rule = "  ".join("-" * widths[i] for i in cols)
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def _column_blocks(widths: Sequence[int], keep: int, width: int) -> list[list[int]]:
    """The columns of each block: the first ``keep`` in every block, then as many of the rest,
    in order, as fit (at least one per block)."""
    base = list(range(min(keep, len(widths))))
    used = sum(widths[i] + 2 for i in base)
    blocks: list[list[int]] = []
    current: list[int] = []
    for i in range(len(base), len(widths)):
        need = sum(widths[j] + 2 for j in current) + widths[i]
        if current and used + need > width:
            blocks.append(base + current)
            current = []
        current.append(i)
    blocks.append(base + current)
    return blocks


def _wrapped_table(header: Sequence[str], body: Sequence[Sequence[str]], width: int) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rule = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)
    table = Table(box=rule, show_edge=False, pad_edge=False, header_style=None)
    for h in header:
        table.add_column(h, overflow="fold")
    for row in body:
        table.add_row(*row)
    out = io.StringIO()
    Console(width=width, file=out, color_system=None, highlight=False, markup=False,
            emoji=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())

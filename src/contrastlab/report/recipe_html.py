"""The self-contained HTML page of a recipe run (:func:`contrastlab.recipes.run_recipe`): the
claim and its source, the verdict, every check with its observed value, the notes, the figures
(embedded PNG), the metrics, the tables, the parameters, the software versions and the wall time.
Same style and image-load check as :func:`contrastlab.report.html.write_report`
(:mod:`contrastlab.report.style`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from contrastlab.report import style
from contrastlab.report.style import cell, escape

__all__ = ["write_recipe_report"]

_EXTRA_CSS = """
.verdict { font-size: 1.6em; font-weight: bold; padding: 0.2em 0.6em; display: inline-block; }
.PASS { background: #cde8d8; } .FAIL { background: #f6d5c8; }
td.ok { background: #cde8d8; } td.bad { background: #f6d5c8; }
td.left, th.left { text-align: left; }
"""


def write_recipe_report(result: Any, path: str | Path) -> Path:
    """Write the page of ``result`` (a :class:`contrastlab.recipes.RecipeResult`) to ``path``."""
    r = result.recipe
    tag = f" (deliberately corrupted: {escape(r.corruption)})" if result.corrupt else ""
    parts = [
        *style.page_head(f"contrastlab recipe {escape(r.name)}: {result.verdict}", _EXTRA_CSS),
        f"<h1>{escape(r.name)}: {escape(r.title)}</h1>",
        f"<p class='verdict {result.verdict}'>{result.verdict}</p>",
        f"<p>Profile <b>{escape(result.profile)}</b>{tag}; generated "
        f"{escape(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}; wall time "
        f"{result.seconds:.1f} s.</p>",
        f"<h2>Claim</h2><p>{escape(r.claim)}</p><p><i>Source:</i> {escape(r.source)}</p>",
    ]
    if r.notes:
        parts.append(f"<p><i>About this recipe:</i> {escape(r.notes)}</p>")
    parts.append("<h2>Checks</h2><table class='checks'><tr><th class='left'>check</th>"
                 "<th class='left'>kind</th><th class='left'>condition</th><th>observed</th>"
                 "<th>result</th>"
                 "<th class='left'>why this threshold</th></tr>")
    for c in result.checks:
        cls = "ok" if c.passed else "bad"
        parts.append(f"<tr><td class='left'>{escape(c.check.name)}</td><td class='left'>"
                     f"{escape(c.check.kind)}</td><td class='left'>"
                     f"<code>{escape(c.check.text())}</code>"
                     f"</td><td>{escape(cell(c.observed))}</td>"
                     f"<td class='{cls}'>{'ok' if c.passed else 'FAIL'}</td>"
                     f"<td class='left'>{escape(c.check.why)}</td></tr>")
    parts.append("</table>")
    if result.outcome.notes:
        parts.append("<h2>Observations (reported, not checked)</h2><ul>")
        parts += [f"<li>{escape(n)}</li>" for n in result.outcome.notes]
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    parts += [style.figure_html(name, fig, _saved_png(result.figure_paths.get(name, [])))
              for name, fig in result.outcome.figures.items()]
    if not result.outcome.figures:
        parts.append("<p>No figures: nothing was measured.</p>")
    parts.append("<h2>Metrics</h2><table class='metrics'>")
    parts += [f"<tr><th class='left'>{escape(k)}</th><td>{escape(cell(v))}</td></tr>"
              for k, v in result.outcome.metrics.items()]
    parts.append("</table>")
    for tname, rows in result.outcome.tables.items():
        if not rows:
            continue
        cols = list(dict.fromkeys(c for row in rows for c in row))
        parts.append(f"<details><summary>table <code>{escape(tname)}</code> ({len(rows)} rows)"
                     "</summary><table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in cols)
                     + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{escape(cell(row.get(c)))}</td>" for c in cols)
                         + "</tr>")
        parts.append("</table></details>")
    parts.append("<h2>Parameters</h2><pre>"
                 + escape(json.dumps(result.params, indent=1, sort_keys=True, default=str))
                 + "</pre>")
    parts += style.versions_table()
    parts.append(f"<script>{style.IMAGE_CHECK_JS}</script></body></html>")
    return style.write_page(path, parts)


def _saved_png(paths: list[Path]) -> bytes | None:
    """The PNG that the recipe saved for a figure (embedded as is: no second rendering)."""
    png = [p for p in paths if p.suffix == ".png" and p.is_file()]
    return png[0].read_bytes() if png else None

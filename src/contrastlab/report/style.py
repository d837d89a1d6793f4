"""What the HTML pages of :mod:`contrastlab.report` share: the style sheet, the image-load
check, escaping, table cells (those of ``contrastlab results``:
:func:`contrastlab._tables.cell`), embedded figures and the software versions.

Used by the report of an output directory (:func:`contrastlab.report.html.write_report`) and the
page of a recipe run (:func:`contrastlab.report.recipe_html.write_recipe_report`), so both look
alike and both mark a figure that fails to load.
"""

from __future__ import annotations

import base64
import html
import io
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from contrastlab._tables import cell  # the results table's cells, on every page

__all__ = ["CSS", "IMAGE_CHECK_JS", "cell", "escape", "figure_html", "page_head", "png_base64",
           "software_versions", "versions_table", "write_page"]

#: the style sheet of every page
CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: right; }
th { background: #eee; }
td.s-failed, td.s-nan { background: #f6d5c8; }
td.s-pending, td.s-running { background: #fff3c4; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.answer { background: #eef5fb; border-left: 4px solid #0072B2; padding: 0.4em 0.8em; }
.answer li { margin: 0.2em 0; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.img-failed { color: #c00; font-weight: bold; margin-left: 0.5em; }
"""

#: After load, mark every figure data-loaded="1" (decoded) or "0" (with a visible red note),
#: and set body data-figures="<ok>/<total>": a browser check (and a reader) sees broken figures.
IMAGE_CHECK_JS = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var img = imgs[i];
    if (img.complete && img.naturalWidth > 0) {
      img.setAttribute("data-loaded", "1");
      ok++;
    } else {
      img.setAttribute("data-loaded", "0");
      var note = document.createElement("span");
      note.className = "img-failed";
      note.textContent = "figure failed to load: " + (img.getAttribute("alt") || "?");
      img.insertAdjacentElement("afterend", note);
    }
  }
  document.body.dataset.figures = ok + "/" + imgs.length;
});
"""


def escape(text: Any) -> str:
    """``str(text)`` escaped for HTML text and attribute values (quotes included)."""
    return html.escape(str(text), quote=True)


def png_base64(fig: Any) -> str:
    """The figure as a base64 PNG (100 dpi, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(name: str, fig: Any, png: bytes | None = None) -> str:
    """A figure's heading and its embedded image (alt text: its name); ``png``: the figure
    already rendered (e.g. the file :func:`contrastlab.report.figures.save` wrote), embedded as
    is instead of rendering it again."""
    data = base64.b64encode(png).decode("ascii") if png is not None else png_base64(fig)
    return (f"<h3>{escape(name)}</h3><img alt='{escape(name)}' "
            f"src='data:image/png;base64,{data}'>")


def software_versions() -> dict[str, str]:
    """Python, the platform and the versions of the main packages (``-`` if not installed)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("contrastlab", "torch", "numpy", "scipy", "matplotlib", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def versions_table() -> list[str]:
    """The "Software" section: a heading and one table row per :func:`software_versions`."""
    parts = ["<h2>Software</h2><table class='versions'>"]
    parts += [f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
              for k, v in software_versions().items()]
    parts.append("</table>")
    return parts


def page_head(title: str, extra_css: str = "") -> list[str]:
    """The opening lines of a page: the doctype, the head with its ``title`` (HTML: escaped by
    the caller) and the style sheet :data:`CSS` (then ``extra_css``), and the body's start."""
    return [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{title}</title>",
        f"<style>{CSS}{extra_css}</style></head><body>",
    ]


def write_page(path: str | Path, parts: list[str]) -> Path:
    """Write the page's ``parts``, one per line, to ``path`` (UTF-8; its directory created) and
    return its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(parts), encoding="utf-8")
    return target

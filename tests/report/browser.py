"""Headless Chromium for the report tests: a screenshot, the DOM after load, figure states.

Chromium runs as a subprocess with flags for a root, offline, GPU-less CI container. Every call
uses a fresh temporary profile and is killed (with its child processes) after ``TIMEOUT_S``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["TIMEOUT_S", "BrowserError", "broken_figures", "dump_dom", "figure_boxes",
           "figure_states", "find_chromium", "screenshot"]

TIMEOUT_S = 60
_NAMES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: the setuid/namespace sandbox is unavailable
    "--disable-gpu",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--disable-background-networking",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",  # one CSS pixel = one screenshot pixel
)


class BrowserError(RuntimeError):
    """Chromium is missing, failed, timed out or wrote nothing."""


def find_chromium() -> str | None:
    """Path of the first of chromium, chromium-browser, google-chrome on PATH (or None)."""
    for name in _NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _tail(text: str, lines: int = 15) -> str:
    # Chromium logs D-Bus errors in containers without a bus; they are noise, drop them
    kept = [ln for ln in text.splitlines() if "dbus" not in ln.lower()]
    return "\n".join(kept[-lines:])


def _run(html_path: str | Path, args: list[str], width: int, height: int,
         budget_ms: int) -> tuple[str, str]:
    """Run Chromium on ``html_path`` with ``args``; (stdout, stderr)."""
    binary = find_chromium()
    if binary is None:
        raise BrowserError(f"no Chromium found on PATH (tried {', '.join(_NAMES)})")
    html_file = Path(html_path).resolve()
    if not html_file.is_file():
        raise BrowserError(f"no such HTML file: {html_file}")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [binary, *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={budget_ms}", *args, html_file.as_uri()]
        # own process group: on a timeout the renderer and helper processes are killed too
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise BrowserError(f"Chromium timed out after {TIMEOUT_S} s: {' '.join(cmd)}\n"
                               f"{_tail(err)}") from None
    if proc.returncode != 0:
        raise BrowserError(f"Chromium exited with status {proc.returncode}: {' '.join(cmd)}\n"
                           f"{_tail(err)}")
    return out, err


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1400,
               height: int = 6000, budget_ms: int = 5000) -> Path:
    """Render ``html_path`` in a ``width`` x ``height`` window and save it as PNG at
    ``png_path``; return that path. Raises BrowserError if Chromium fails or writes nothing."""
    target = Path(png_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    _, err = _run(html_path, [f"--screenshot={target}"], width, height, budget_ms)
    if not target.is_file() or target.stat().st_size == 0:
        raise BrowserError(f"Chromium wrote no screenshot to {target}\n{_tail(err)}")
    return target


def dump_dom(html_path: str | Path, width: int = 1400, height: int = 6000,
             budget_ms: int = 5000) -> str:
    """The serialized DOM of ``html_path`` after load (scripts run) in a ``width`` x ``height``
    window. Raises BrowserError if Chromium fails or prints no document."""
    out, err = _run(html_path, ["--dump-dom"], width, height, budget_ms)
    if "<html" not in out.lower():
        raise BrowserError(f"Chromium printed no DOM for {html_path}\n{_tail(err)}")
    return out


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.imgs.append(d)
        elif tag == "body":
            self.body = d


def _tags(dom: str) -> _Tags:
    parser = _Tags()
    parser.feed(dom)
    parser.close()
    return parser


def figure_states(dom: str) -> tuple[dict[str, str], str | None]:
    """From a dumped DOM: ({figure name (alt): data-loaded, "" if unset}, body data-figures)."""
    tags = _tags(dom)
    return ({img.get("alt", "?"): img.get("data-loaded", "") for img in tags.imgs},
            tags.body.get("data-figures"))


def broken_figures(dom: str) -> list[str]:
    """Names of the figures the browser did not decode (data-loaded other than "1"), and
    ``"<body data-figures>"`` if that count is absent or not "n/n" (the script did not run)."""
    states, count = figure_states(dom)
    broken = [name for name, loaded in states.items() if loaded != "1"]
    if count != f"{len(states)}/{len(states)}":
        broken.append("<body data-figures>")
    return broken


# Appended to a copy of a page: writes each image's content box (CSS px, page coordinates) and
# the page height as attributes, for a later --dump-dom. Runs after the page's own scripts.
_PROBE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var imgs = document.querySelectorAll("img");
    for (var i = 0; i < imgs.length; i++) {
      var r = imgs[i].getBoundingClientRect();
      imgs[i].setAttribute("data-box", [Math.round(r.left + window.scrollX + imgs[i].clientLeft),
        Math.round(r.top + window.scrollY + imgs[i].clientTop),
        imgs[i].clientWidth, imgs[i].clientHeight].join(","));
    }
    document.body.setAttribute("data-page-height",
                               String(document.documentElement.scrollHeight));
  }, 0);
});
</script>"""


def figure_boxes(html_path: str | Path, width: int = 1400, height: int = 6000
                 ) -> tuple[dict[str, tuple[int, int, int, int]], int]:
    """({figure name: (x, y, w, h) of its drawn pixels in page coordinates}, page height) of
    ``html_path`` laid out in a ``width``-wide window (the page itself is not modified: a copy
    with a probe script is rendered)."""
    head, sep, tail = Path(html_path).read_text(encoding="utf-8").rpartition("</body>")
    if not sep:
        raise BrowserError(f"{html_path} has no </body>")
    with tempfile.TemporaryDirectory(prefix="probe-") as d:
        probe = Path(d) / "probe.html"
        probe.write_text(head + _PROBE + sep + tail, encoding="utf-8")
        tags = _tags(dump_dom(probe, width, height))
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for img in tags.imgs:
        x, y, w, h = (int(v) for v in img["data-box"].split(","))
        boxes[img.get("alt", "?")] = (x, y, w, h)
    return boxes, int(tags.body["data-page-height"])

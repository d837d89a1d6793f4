"""One self-contained HTML report of an output directory.

:func:`write_report` writes a single file that opens with the answer the runs give (accuracy
vs k per group of runs, :func:`contrastlab.report.answer.answer_lines`), then the figures
embedded as base64 PNG, a summary over the seeds (one row per setting: every swept key), a
table with one row per run (its swept columns included), the runs that failed or did not
finish, the resolved configs, the software versions and the wall time. It references nothing
outside itself, so it reads offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["software_versions", "write_report"]

# the per-run table: these, with the swept keys after "status"
_TABLE_COLUMNS = ("run_id", "status", "loss.name", "loss.normalize", "loss.k",
                  "distinct_negatives", "seed", "mc_acc", "mc_ce", "probe_acc", "knn_acc",
                  "heldout_loss", "etf_distance", "nc1", "effective_rank", "seconds")
_CONTEXT = ("loss.name", "loss.normalize", "loss.k", "seed")
# the summary over seeds: metric columns (those the runs stored)
_GROUP_METRICS = ("mc_acc", "probe_acc", "knn_acc", "mc_ce", "heldout_loss", "etf_distance",
                  "nc1", "effective_rank")

_CSS = """
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

# After load, mark every figure data-loaded="1" (decoded) or "0" (with a visible red note),
# and set body data-figures="<ok>/<total>": a browser check (and a reader) sees broken figures.
_JS = """
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


def software_versions() -> dict[str, str]:
    """Python, the platform and the versions of the main packages (``-`` if not installed)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("contrastlab", "torch", "numpy", "scipy", "matplotlib", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def _png_base64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _answer_html(lines: list[str]) -> list[str]:
    head, rest = lines[0], lines[1:]
    out = [f"<div class='answer'><p><b>Answer:</b> {_e(head)}</p>"]
    if rest:
        out.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in rest) + "</ul>")
    out.append("</div>")
    return out


def _group_table(done: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """One row per setting (the swept keys, the seeds merged): n and mean [95 % interval]."""
    from contrastlab.report.grouping import finite, group_records, mean_interval

    metrics = [m for m in _GROUP_METRICS if any(finite(r.get(m)) is not None for r in done)]
    if not done or not metrics:
        return []
    out = ["<h2>Summary over seeds</h2><p>One row per setting (every swept key; the seeds "
           "merged): the mean over the seeds and its 95 % interval (Student t; none with one "
           "seed).</p><table class='groups'><thead><tr>"]
    out += [f"<th>{_e(c)}</th>" for c in [*keys, "n"]]
    out += [f"<th>{_e(m)}</th>" for m in metrics]
    out.append("</tr></thead><tbody>")
    for g in group_records(done, keys):
        out.append("<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in g.values)
                   + f"<td>{len(g.records)}</td>")
        for m in metrics:
            xs = [v for r in g.records if (v := finite(r.get(m))) is not None]
            if not xs:
                out.append("<td>-</td>")
                continue
            iv = mean_interval(xs)
            ci = (f" [{iv.low:.4g}, {iv.high:.4g}]" if iv.low is not None
                  and iv.high is not None else "")
            out.append(f"<td>{_e(f'{iv.mean:.4g}{ci}')}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return out


def write_report(out_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write the HTML report of ``out_dir`` to ``path`` (default ``out_dir/report.html``) and
    return its path. Its first line answers "how does downstream accuracy depend on k?" from
    the finished runs (:func:`contrastlab.report.answer.answer_lines`). Runs are merged as
    ``contrastlab results`` does: by every swept key except the seed
    (:mod:`contrastlab.report.grouping`). Failed, NaN and unfinished runs are listed (and
    excluded from the figures and the answer); a figure that cannot be built is listed as
    missing rather than failing the report.
    Raises ValueError (naming ``out_dir``) if it is not a results directory."""
    from contrastlab.experiments.results import load_records
    from contrastlab.report.answer import answer_lines
    from contrastlab.report.figures import figures_from_store, open_store
    from contrastlab.report.grouping import sort_key, swept_keys

    t0 = time.perf_counter()
    store = open_store(out_dir)  # ValueError naming out_dir
    try:
        runs = store.runs()
    finally:
        store.close()
    all_records = load_records(out_dir)
    records = {r["run_id"]: r for r in all_records}
    done = [r for r in all_records if r["status"] == "done"]
    target = Path(out_dir) / "report.html" if path is None else Path(path)
    if target.exists() and target.is_dir():
        raise ValueError(f"path {str(target)!r} is a directory; give a file name")

    problems: list[str] = []
    try:
        figs = figures_from_store(out_dir)
    except Exception as exc:  # a report must still render
        figs = {}
        problems.append(f"figures could not be built: {type(exc).__name__}: {exc}")
    try:
        answer = answer_lines(done)
    except Exception as exc:  # a report must still render
        answer = [f"the answer could not be computed: {type(exc).__name__}: {exc}"]
        problems.append(answer[0])
    expected = ("downstream_vs_k", "contrastive_loss_vs_k", "cosine_heatmaps", "spectra",
                "class_mean_spectra", "epoch_metrics")
    missing_figs = [name for name in expected if name not in figs]

    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    bad = [r for r in runs if r["status"] != "done"]
    run_seconds = sum(float(r["seconds"]) for r in runs
                      if isinstance(r.get("seconds"), float | int))

    parts: list[str] = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>contrastlab report: {_e(Path(out_dir).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>contrastlab report</h1>",
        *_answer_html(answer),
        f"<p>Results directory: <code>{_e(out_dir)}</code><br>",
        f"Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}; "
        f"{len(runs)} runs: "
        + (", ".join(f"{c} {_e(s)}" for s, c in sorted(counts.items())) or "none") + "</p>",
    ]

    parts.append("<h2 id='problems'>Missing and failed</h2>")
    if not bad and not missing_figs and not problems:
        parts.append("<p>Nothing missing: every run finished.</p>")
    else:
        parts.append("<ul class='problems'>")
        for r in bad:
            err = f": {_e(r['error'])}" if r.get("error") else ""
            parts.append(f"<li>run <code>{_e(r['run_id'])}</code> is <b>{_e(r['status'])}</b>"
                         f"{err}</li>")
        for name in missing_figs:
            parts.append(f"<li>figure <code>{_e(name)}</code> missing (no data in the "
                         "finished runs)</li>")
        for p in problems:
            parts.append(f"<li>{_e(p)}</li>")
        parts.append("</ul>")

    parts += _group_table(done, swept_keys(done))

    swept = swept_keys(all_records)
    columns = ["run_id", "status", *swept,
               *(c for c in _TABLE_COLUMNS[2:] if c not in swept)]
    parts.append("<h2>Summary</h2><p>One row per run")
    parts.append(f"; swept: {_e(', '.join(swept))}" if swept else "")
    parts.append(".</p><table class='summary'><thead><tr>")
    parts += [f"<th>{_e(c)}</th>" for c in columns]
    parts.append("</tr></thead><tbody>")
    order = sorted(runs, key=lambda r: sort_key(
        records.get(r["run_id"], {}).get(c) for c in [*swept, *_CONTEXT]))
    for r in order:
        rec = records.get(r["run_id"], {})
        parts.append("<tr>")
        for col in columns:
            val = rec.get(col, r.get(col))
            cls = f" class='s-{_e(val)}'" if col == "status" else ""
            parts.append(f"<td{cls}>{_e(_cell(val))}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")

    parts.append("<h2>Figures</h2>")
    for name, fig in figs.items():
        parts.append(f"<h3>{_e(name)}</h3><img alt='{_e(name)}' "
                     f"src='data:image/png;base64,{_png_base64(fig)}'>")
    if not figs:
        parts.append("<p>No figures: no finished run has the data they need.</p>")

    parts.append("<h2>Resolved configs</h2>")
    for r in runs:
        parts.append(f"<details><summary><code>{_e(r['run_id'])}</code> ({_e(r['status'])})"
                     f"</summary><pre>{_e(json.dumps(r['config'], indent=1, sort_keys=True))}"
                     "</pre></details>")

    parts.append("<h2>Software</h2><table class='versions'>")
    parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
              for k, v in software_versions().items()]
    parts.append("</table>")
    report_s = time.perf_counter() - t0
    parts.append(f"<h2>Wall time</h2><p>Runs: {run_seconds:.1f} s in total "
                 f"(sum over runs); this report: {report_s:.1f} s.</p>")
    parts.append(f"<script>{_JS}</script>")
    parts.append("</body></html>")

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(parts), encoding="utf-8")
    return target

"""One self-contained HTML report of an output directory.

:func:`write_report` writes a single file that opens with the answer the runs give (accuracy
vs k per group of runs, :func:`contrastlab.report.answer.answer_lines`), then the figures
embedded as base64 PNG, a summary over the seeds (one row per setting: every swept key), a
table with one row per run (its swept columns included), the runs that failed or did not
finish, the resolved configs, the software versions and the wall time. It references nothing
outside itself, so it reads offline. Its style and image-load check are
:mod:`contrastlab.report.style`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contrastlab.report import style
from contrastlab.report.style import cell, escape

__all__ = ["write_report"]

# the per-run table: these, with the swept keys after "status"
_TABLE_COLUMNS = ("run_id", "status", "loss.name", "loss.normalize", "loss.k",
                  "distinct_negatives", "seed", "mc_acc", "mc_ce", "probe_acc", "knn_acc",
                  "heldout_loss", "etf_distance", "nc1", "effective_rank", "seconds")
_CONTEXT = ("loss.name", "loss.normalize", "loss.k", "seed")
# the summary over seeds: metric columns (those the runs stored)
_GROUP_METRICS = ("mc_acc", "probe_acc", "knn_acc", "mc_ce", "heldout_loss", "etf_distance",
                  "nc1", "effective_rank")
# the figures a complete results directory has (a missing one is listed)
_EXPECTED_FIGURES = ("downstream_vs_k", "contrastive_loss_vs_k", "cosine_heatmaps", "spectra",
                     "class_mean_spectra", "epoch_metrics")


def _answer_html(lines: list[str]) -> list[str]:
    head, rest = lines[0], lines[1:]
    out = [f"<div class='answer'><p><b>Answer:</b> {escape(head)}</p>"]
    if rest:
        out.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in rest) + "</ul>")
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
    out += [f"<th>{escape(c)}</th>" for c in [*keys, "n"]]
    out += [f"<th>{escape(m)}</th>" for m in metrics]
    out.append("</tr></thead><tbody>")
    for g in group_records(done, keys):
        out.append("<tr>" + "".join(f"<td>{escape(cell(v))}</td>" for v in g.values)
                   + f"<td>{len(g.records)}</td>")
        for m in metrics:
            xs = [v for r in g.records if (v := finite(r.get(m))) is not None]
            if not xs:
                out.append("<td>-</td>")
                continue
            iv = mean_interval(xs)
            ci = (f" [{iv.low:.4g}, {iv.high:.4g}]" if iv.low is not None
                  and iv.high is not None else "")
            out.append(f"<td>{escape(f'{iv.mean:.4g}{ci}')}</td>")
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
    from contrastlab.report.figures import open_store
    from contrastlab.report.grouping import swept_keys

    t0 = time.perf_counter()
    store = open_store(out_dir)  # ValueError naming out_dir
    try:
        runs = store.runs()
    finally:
        store.close()
    all_records = load_records(out_dir)
    done = [r for r in all_records if r["status"] == "done"]
    target = Path(out_dir) / "report.html" if path is None else Path(path)
    if target.exists() and target.is_dir():
        raise ValueError(f"path {str(target)!r} is a directory; give a file name")

    figs, answer, problems = _figures_and_answer(out_dir, done)
    parts = _head(out_dir, runs, answer)
    parts += _problems_section(runs, [n for n in _EXPECTED_FIGURES if n not in figs], problems)
    parts += _group_table(done, swept_keys(done))
    parts += _runs_table(runs, all_records)
    parts += _figures_section(figs)
    parts += _configs_section(runs)
    parts += style.versions_table()
    run_seconds = sum(float(r["seconds"]) for r in runs
                      if isinstance(r.get("seconds"), float | int))
    report_s = time.perf_counter() - t0
    parts.append(f"<h2>Wall time</h2><p>Runs: {run_seconds:.1f} s in total "
                 f"(sum over runs); this report: {report_s:.1f} s.</p>")
    parts.append(f"<script>{style.IMAGE_CHECK_JS}</script>")
    parts.append("</body></html>")
    return style.write_page(target, parts)


def _figures_and_answer(out_dir: str | Path, done: list[dict[str, Any]]
                        ) -> tuple[dict[str, Any], list[str], list[str]]:
    """The figures the runs support and the answer; what could not be built is listed in the
    third item instead of failing the report."""
    from contrastlab.report.answer import answer_lines
    from contrastlab.report.figures import figures_from_store

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
    return figs, answer, problems


def _head(out_dir: str | Path, runs: Sequence[Mapping[str, Any]], answer: list[str]
          ) -> list[str]:
    """The page's head, the answer and the count of runs by status."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return [
        *style.page_head(f"contrastlab report: {escape(Path(out_dir).name)}"),
        "<h1>contrastlab report</h1>",
        *_answer_html(answer),
        f"<p>Results directory: <code>{escape(out_dir)}</code><br>",
        f"Generated {escape(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}; "
        f"{len(runs)} runs: "
        + (", ".join(f"{c} {escape(s)}" for s, c in sorted(counts.items())) or "none") + "</p>",
    ]


def _problems_section(runs: Sequence[Mapping[str, Any]], missing_figs: list[str],
                      problems: list[str]) -> list[str]:
    """"Missing and failed": the runs not done, the figures missing, what could not be built."""
    bad = [r for r in runs if r["status"] != "done"]
    parts = ["<h2 id='problems'>Missing and failed</h2>"]
    if not bad and not missing_figs and not problems:
        parts.append("<p>Nothing missing: every run finished.</p>")
        return parts
    parts.append("<ul class='problems'>")
    for r in bad:
        err = f": {escape(r['error'])}" if r.get("error") else ""
        parts.append(f"<li>run <code>{escape(r['run_id'])}</code> is "
                     f"<b>{escape(r['status'])}</b>{err}</li>")
    for name in missing_figs:
        parts.append(f"<li>figure <code>{escape(name)}</code> missing (no data in the "
                     "finished runs)</li>")
    for p in problems:
        parts.append(f"<li>{escape(p)}</li>")
    parts.append("</ul>")
    return parts


def _runs_table(runs: Sequence[Mapping[str, Any]], all_records: list[dict[str, Any]]
                ) -> list[str]:
    """One row per run: its swept keys after the status, then the usual columns."""
    from contrastlab.report.grouping import sort_key, swept_keys

    records = {r["run_id"]: r for r in all_records}
    swept = swept_keys(all_records)
    columns = ["run_id", "status", *swept,
               *(c for c in _TABLE_COLUMNS[2:] if c not in swept)]
    parts = ["<h2>Summary</h2><p>One row per run"]
    parts.append(f"; swept: {escape(', '.join(swept))}" if swept else "")
    parts.append(".</p><table class='summary'><thead><tr>")
    parts += [f"<th>{escape(c)}</th>" for c in columns]
    parts.append("</tr></thead><tbody>")
    order = sorted(runs, key=lambda r: sort_key(
        records.get(r["run_id"], {}).get(c) for c in [*swept, *_CONTEXT]))
    for r in order:
        rec = records.get(r["run_id"], {})
        parts.append("<tr>")
        for col in columns:
            val = rec.get(col, r.get(col))
            cls = f" class='s-{escape(val)}'" if col == "status" else ""
            parts.append(f"<td{cls}>{escape(cell(val))}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return parts


def _figures_section(figs: Mapping[str, Any]) -> list[str]:
    parts = ["<h2>Figures</h2>"]
    parts += [style.figure_html(name, fig) for name, fig in figs.items()]
    if not figs:
        parts.append("<p>No figures: no finished run has the data they need.</p>")
    return parts


def _configs_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    parts = ["<h2>Resolved configs</h2>"]
    for r in runs:
        parts.append(f"<details><summary><code>{escape(r['run_id'])}</code> "
                     f"({escape(r['status'])})</summary>"
                     f"<pre>{escape(json.dumps(r['config'], indent=1, sort_keys=True))}"
                     "</pre></details>")
    return parts

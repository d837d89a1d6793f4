"""Every figure function renders (not blank) from a tiny sweep and from a tiny study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contrastlab.experiments.results import load_records
from contrastlab.experiments.store import ResultStore
from contrastlab.report import figures as F
from tests.report import fig_png, png_stats, tiny_sweep


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("sweep"))


def _assert_drawn(fig: Any, colours: int = 20) -> None:
    n, frac = png_stats(fig_png(fig))
    assert n > colours, n
    assert frac > 0.02, frac


def test_downstream_and_contrastive_vs_k(out: Path) -> None:
    rows = load_records(out)
    fig = F.downstream_vs_k(rows, num_classes=3)
    _assert_drawn(fig)
    ax_acc, ax_loss = fig.axes
    assert ax_acc.get_xscale() == "log" and "k" in ax_acc.get_xlabel()
    assert "accuracy" in ax_acc.get_ylabel() and "nats" in ax_loss.get_ylabel()
    assert len(ax_acc.lines) == 1  # one loss/normalization
    from contrastlab.theory.bounds import bounds_from_measurement

    bounds = bounds_from_measurement([1.2, 2.0], [1, 4], 1.0, C=3).rows
    fig = F.downstream_vs_k(rows, num_classes=3, bounds=bounds)
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert any("bao_upper" in lab for lab in labels)
    assert any("bao_lower" in lab for lab in labels)
    _assert_drawn(fig)
    fig2 = F.contrastive_loss_vs_k(rows)
    _assert_drawn(fig2)
    labels = fig2.axes[0].get_legend_handles_labels()[1]
    assert any("ETF closed form" in lab for lab in labels)
    with pytest.raises(ValueError, match="rows"):
        F.downstream_vs_k("nope")  # type: ignore[arg-type]


def test_heatmaps_spectra_and_epochs(out: Path, tmp_path: Path) -> None:
    with ResultStore(out, create=False) as store:
        runs = store.runs("done")
        reports = {r["run_id"]: store.reports(r["run_id"]) for r in runs}
        hist = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
    mats = {r["config"]["loss"]["k"]: reports[r["run_id"]]["geometry"]["cosine"] for r in runs}
    fig = F.cosine_heatmaps(mats)
    _assert_drawn(fig)
    cbar_labels = [t.get_text() for t in fig.axes[-1].get_yticklabels()]
    assert any("-1/(C-1)" in t and "-0.50" in t for t in cbar_labels)
    spec = {rid: rep["geometry"]["covariance_spectrum"] for rid, rep in reports.items()}
    spec["collapsed"] = [1.0, 0.5, 0.0]
    fig = F.spectra(spec)
    _assert_drawn(fig)
    assert len(fig.axes[0].lines) == 5
    fig = F.epoch_metrics(hist)
    _assert_drawn(fig)
    assert [ax.get_ylabel().split()[0] for ax in fig.axes] == [
        "nc1", "etf_distance", "effective_rank"]
    paths = F.save(fig, tmp_path / "epochs.png")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="matrices"):
        F.cosine_heatmaps({})


def test_figures_from_store(out: Path, tmp_path: Path) -> None:
    figs = F.figures_from_store(out)
    assert set(figs) == {"downstream_vs_k", "contrastive_loss_vs_k", "cosine_heatmaps",
                         "spectra", "class_mean_spectra", "epoch_metrics"}
    for fig in figs.values():
        _assert_drawn(fig)
    with pytest.raises(ValueError, match="out_dir"):
        F.figures_from_store(tmp_path / "nothing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        F.figures_from_store(tmp_path / "file.txt")


def test_study_figure_highlights_violations() -> None:
    from contrastlab.theory.study import default_priors, monotonicity_study

    priors = {k: v for k, v in default_priors(3).items() if k in ("balanced", "zipf(2)")}
    res = monotonicity_study(num_classes=3, priors=priors, ks=[1, 4], restarts=1,
                             recheck_restarts=1)
    fig = F.study_losses_vs_k(res.rows, violations=res.violations)
    _assert_drawn(fig)
    assert len(fig.axes[0].lines) >= len(priors)
    # a synthetic increase is detected and drawn as a violation
    rows = [{"prior": "a", "k": 1, "mean_classifier_loss": 1.0, "supervised_loss": 1.0},
            {"prior": "a", "k": 4, "mean_classifier_loss": 1.5, "supervised_loss": 0.9}]
    assert F.study_violations(rows, "mean_classifier_loss") == [("a", 1, 4)]
    fig = F.study_losses_vs_k(rows)
    assert "1 violation" in fig.axes[0].get_title()
    assert "0 violation" in fig.axes[1].get_title()
    _assert_drawn(fig)


def test_measured_bounds_only_for_bao_loss() -> None:
    rec = {"loss.name": "ucl", "loss.score": "infonce", "loss.negatives_reduction": "sum",
           "loss.normalize": "sphere", "loss.temperature": 1.0, "status": "done"}
    rows = [dict(rec, **{"loss.k": k, "heldout_loss": v}) for k, v in ((1, 1.0), (4, 2.0))]
    bounds = F._measured_bounds(rows, 3)
    assert bounds is not None and [b["K"] for b in bounds] == [1, 4]
    assert all(b["bao_lower"] <= b["bao_upper"] for b in bounds)
    mean_rows = [dict(r, **{"loss.negatives_reduction": "mean"}) for r in rows]
    assert F._measured_bounds(mean_rows, 3) is None
    nce = [dict(r, **{"loss.name": "nce", "loss.sampler": "uniform",
                      "loss.negatives_reduction": "mean"}) for r in rows]
    assert F._measured_bounds(nce, 3) is not None
    assert F._measured_bounds([dict(r, **{"loss.score": "infonce-mean"}) for r in nce], 3) is None
    assert F._measured_bounds([dict(r, **{"loss.temperature": 0.5}) for r in nce], 3) is None


def test_etf_reference_follows_the_run_loss_convention() -> None:
    from contrastlab.theory.etf import etf_loss

    nce = {"loss.name": "nce", "loss.score": "infonce", "loss.sampler": "uniform",
           "loss.negatives_reduction": "mean", "loss.temperature": 0.5, "loss.beta": 0.0}
    # nce's reduction is its score's: the sum form, SPEC A7 UCL at t = 0.5, k = 16
    assert F._etf_loss_for(nce, 10, 16) == pytest.approx(1.3935, abs=1e-4)
    other = dict(nce, **{"loss.sampler": "other-class", "loss.temperature": 1.0})
    assert F._etf_loss_for(other, 10, 16) == pytest.approx(
        etf_loss(10, 16, negatives="other-class"))
    ucl = {"loss.name": "ucl", "loss.negatives_reduction": "mean", "loss.temperature": 1.0}
    assert F._etf_loss_for(ucl, 10, 16) == pytest.approx(etf_loss(10, 16, loss="infonce-mean"))
    hucl = dict(ucl, **{"loss.name": "hucl", "loss.negatives_reduction": "sum", "loss.beta": 1.0})
    assert F._etf_loss_for(hucl, 10, 16) == pytest.approx(2.1861, abs=1e-4)
    assert F._etf_loss_for({"loss.name": "supcon"}, 10, 16) is None

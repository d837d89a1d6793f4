"""Every figure function renders (not blank) from a tiny sweep and from a tiny study."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from contrastlab.experiments.results import load_records
from contrastlab.experiments.store import ResultStore
from contrastlab.report import figures as F
from tests.report import fig_png, png_stats, synthetic_sweep, tiny_sweep


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def beta_k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stored hucl sweep: beta in {0, 5} x k in {1, 4, 16, 64} x 3 seeds."""
    return synthetic_sweep(tmp_path_factory.mktemp("beta_k"))


def _assert_drawn(fig: Any, colours: int = 20) -> None:
    n, frac = png_stats(fig_png(fig))
    assert n > colours, n
    assert frac > 0.02, frac


def test_downstream_and_contrastive_vs_k(out: Path) -> None:
    rows = load_records(out)
    fig = F.downstream_vs_k(rows, num_classes=3)
    _assert_drawn(fig)
    # mean classifier, linear probe and kNN side by side (the tiny sweep stores all three)
    assert [ax.get_title() for ax in fig.axes] == [
        "mean classifier [mc_acc]", "linear probe [probe_acc]", "kNN [knn_acc]",
        "downstream loss [mc_ce]"]
    ax_acc, ax_loss = fig.axes[0], fig.axes[-1]
    assert ax_acc.get_xscale() == "log" and "k" in ax_acc.get_xlabel()
    assert "accuracy" in ax_acc.get_ylabel() and "nats" in ax_loss.get_ylabel()
    # one group (only k and the seed are swept) and chance 1/C
    assert ax_acc.get_legend_handles_labels()[1] == ["ucl sphere", "chance 1/C (C=3)"]
    from contrastlab.theory.bounds import bounds_from_measurement

    bounds = bounds_from_measurement([1.2, 2.0], [1, 4], 1.0, C=3).rows
    fig = F.downstream_vs_k(rows, num_classes=3, bounds=bounds)
    labels = fig.axes[-1].get_legend_handles_labels()[1]
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


def _labels(fig: Any) -> list[str]:
    return [lab for ax in fig.axes for lab in ax.get_legend_handles_labels()[1]]


def _nothing_clipped(fig: Any) -> None:
    """Everything drawn (labels, titles, legends) lies inside the figure, and every legend sits
    outside the axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # inches -> pixels
    box = fig.bbox
    assert drawn.x0 >= box.x0 - 1 and drawn.x1 <= box.x1 + 1, (drawn, box)
    assert drawn.y0 >= box.y0 - 1 and drawn.y1 <= box.y1 + 1, (drawn, box)
    axes_right = max(ax.get_window_extent(renderer).x1 for ax in fig.axes
                     if ax.get_label() != "<colorbar>")
    titles = [t for t in (*fig.texts, *(ax.title for ax in fig.axes))
              if t is not None and t.get_text()]
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        assert box.x0 >= axes_right - 1
        for t in titles:  # nor over a title
            assert not box.overlaps(t.get_window_extent(renderer)), t.get_text()
    assert all(ax.get_legend() is None for ax in fig.axes)


def test_a_beta_sweep_is_not_merged(beta_k: Path) -> None:
    figs = F.figures_from_store(beta_k)
    assert set(figs) == {"downstream_vs_k", "contrastive_loss_vs_k", "cosine_heatmaps",
                         "spectra", "class_mean_spectra", "epoch_metrics"}
    groups = ["hucl beta=0 sphere", "hucl beta=5 sphere"]
    down = figs["downstream_vs_k"]
    assert [ax.get_title() for ax in down.axes] == [
        "mean classifier [mc_acc]", "linear probe [probe_acc]", "kNN [knn_acc]",
        "downstream loss [mc_ce]"]
    for ax in down.axes[:3]:  # one curve per beta, plus chance 1/C
        assert ax.get_legend_handles_labels()[1] == [*groups, "chance 1/C (C=3)"]
        curve = {line.get_label(): line.get_ydata() for line in ax.lines}
        assert len(set(map(tuple, curve.values()))) == 3  # beta = 0 and 5 differ
    acc = {line.get_label(): list(line.get_ydata()) for line in down.axes[0].lines}
    assert acc["hucl beta=0 sphere"] == pytest.approx([0.9, 0.85, 0.8, 0.75])
    assert acc["hucl beta=5 sphere"] == pytest.approx([0.9] * 4)
    assert list(down.axes[0].lines[0].get_xdata()) == [1, 4, 16, 64]
    assert down.axes[-1].get_legend_handles_labels()[1][:2] == groups
    assert any("idealized optimum" in lab for lab in _labels(down))
    assert "95 %" in down.get_suptitle()
    loss = figs["contrastive_loss_vs_k"]
    assert loss.axes[0].get_legend_handles_labels()[1] == [
        "hucl beta=0 sphere", "hucl beta=0 sphere: ETF closed form (C=3)",
        "hucl beta=5 sphere", "hucl beta=5 sphere: ETF closed form (C=3)"]
    # the ETF closed form follows each group's beta
    etf = [line.get_ydata() for line in loss.axes[0].lines if "ETF" in str(line.get_label())]
    assert list(etf[0]) != list(etf[1])
    for name in ("spectra", "class_mean_spectra"):
        fig = figs[name]
        labels = [line.get_label() for line in fig.axes[0].lines
                  if not str(line.get_label()).startswith("simplex ETF")]
        assert len(labels) == 8 and len(set(labels)) == 8  # no label clash
        assert "hucl beta=5 k=64 sphere" in labels
        assert any("C-1 = 2" in lab for lab in _labels(fig))
    epochs = figs["epoch_metrics"]
    labels = [line.get_label() for line in epochs.axes[0].lines]
    assert labels[-1] == "simplex ETF value (C=3)"
    assert len(labels[:-1]) == len(set(labels[:-1])) == 8
    heat = figs["cosine_heatmaps"]
    titles = [ax.get_title() for ax in heat.axes if ax.images]
    assert len(titles) == 8
    assert titles[0] == "hucl beta=0 k=1 sphere\n(seed=0)"
    assert titles[4].startswith("hucl beta=5 k=1 sphere")
    for fig in figs.values():
        _assert_drawn(fig)
        _nothing_clipped(fig)


def test_k_as_the_series_variable_is_coloured_by_k(beta_k: Path) -> None:
    fig = F.figures_from_store(beta_k)["spectra"]
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    same_k = lines["hucl beta=0 k=4 sphere"], lines["hucl beta=5 k=4 sphere"]
    assert same_k[0].get_color() == same_k[1].get_color()  # colour is k ...
    assert same_k[0].get_linestyle() != same_k[1].get_linestyle()  # ... style the rest
    colours = [lines[f"hucl beta=0 k={k} sphere"].get_color() for k in (1, 4, 16, 64)]
    assert len({tuple(c) for c in colours}) == 4
    # sequential: lightness grows with k (viridis)
    lum = [0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] for c in colours]
    assert lum == sorted(lum)
    cbar = [ax for ax in fig.axes if "negatives k" in ax.get_ylabel()]
    assert len(cbar) == 1
    assert [t.get_text() for t in cbar[0].get_yticklabels()] == ["1", "4", "16", "64"]


def test_measured_bounds_need_one_group(beta_k: Path) -> None:
    rec = {"loss.name": "ucl", "loss.score": "infonce", "loss.negatives_reduction": "sum",
           "loss.normalize": "sphere", "loss.temperature": 1.0, "status": "done"}
    rows = [dict(rec, **{"loss.k": k, "heldout_loss": v, "model.out_dim": d})
            for k, v in ((1, 1.0), (4, 2.0)) for d in (2, 8)]
    assert F._measured_bounds(rows, 3) is None  # two out_dims: no single measured loss
    assert F._measured_bounds([r for r in rows if r["model.out_dim"] == 2], 3) is not None


def test_num_classes_of() -> None:
    assert F.num_classes_of([{"data.options.classes": 4}]) == 4
    assert F.num_classes_of([{}], [{"geometry": {"num_classes": 10}}]) == 10
    assert F.num_classes_of([{"data.options.classes": 4}, {"data.options.classes": 5}]) is None
    assert F.num_classes_of([{}]) is None


def test_idealized_supervised_optimum_is_drawn_at_the_runs_temperature() -> None:
    # R_mu-supv is stored at the loss's t (theory/downstream.py), so the ETF reference uses
    # Bao's b^2 = 1/t; runs at several temperatures get no single reference line
    from contrastlab.theory.bounds import idealized_supervised_minimum

    def rows(temps: list[float]) -> list[dict[str, object]]:
        return [{"loss.name": "ucl", "loss.k": k, "seed": 0, "loss.temperature": t,
                 "loss.score": "infonce", "mc_acc": 0.9, "mc_ce": 0.3, "status": "done"}
                for k in (1, 4) for t in temps]

    def dashed(fig) -> list[float]:
        ax = fig.axes[-1]
        return [float(line.get_ydata()[0]) for line in ax.lines if line.get_linestyle() == "--"]

    assert dashed(F.downstream_vs_k(rows([0.2]), num_classes=10)) == pytest.approx(
        [idealized_supervised_minimum(10, b=1.0 / math.sqrt(0.2))])
    assert dashed(F.downstream_vs_k(rows([1.0]), num_classes=10)) == pytest.approx([0.7966],
                                                                                   abs=1e-4)
    assert dashed(F.downstream_vs_k(rows([0.2, 1.0]), num_classes=10)) == []


def test_every_report_figure_has_nothing_clipped_and_no_legend_on_data(out: Path,
                                                                     beta_k: Path) -> None:
    from tests.figure_layout import layout_problems

    for store in (out, beta_k):
        for name, fig in F.figures_from_store(store).items():
            assert layout_problems(fig) == [], name


def test_save_lays_out_once_and_crops_as_savefig_tight(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from tests.figure_layout import layout_problems

    etf = [[1.0 if i == j else -0.5 for j in range(3)] for i in range(3)]
    fig = F.cosine_heatmaps({1: etf, 64: etf, 4096: etf})
    engine = fig.get_layout_engine()
    assert engine is not None
    runs = []
    execute = type(engine).execute
    monkeypatch.setattr(type(engine), "execute", lambda self, f: runs.append(1) or execute(self, f))
    png, svg = F.save(fig, tmp_path / "sub" / "heat.pdf")
    assert (png.name, svg.name) == ("heat.png", "heat.svg")
    assert len(runs) == 1  # one constrained layout for both files (matplotlib's: one per file)
    assert fig.get_layout_engine() is engine  # and the figure is left as it was
    assert svg.read_text().rstrip().endswith("</svg>") and png_stats(png.read_bytes())[0] > 20
    monkeypatch.undo()
    tight = tmp_path / "tight.png"  # matplotlib's own: lay out a fresh figure, crop, draw
    F.cosine_heatmaps({1: etf, 64: etf, 4096: etf}).savefig(tight, dpi=110, bbox_inches="tight")
    ours, theirs = Image.open(png), Image.open(tight)
    assert ours.size == theirs.size and ours.tobytes() == theirs.tobytes()  # the same pixels
    assert layout_problems(fig) == []

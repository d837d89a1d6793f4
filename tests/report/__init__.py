"""Tests of contrastlab.report: shared helpers (a tiny sweep, a blank-image check)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

TINY_SWEEP: dict[str, Any] = {
    "data": {"name": "synthetic", "seed": 0,
             "options": {"classes": 3, "dim": 6, "n_train": 240, "n_test": 120}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 16}},
    "loss": {"name": "ucl", "k": 4},
    "train": {"epochs": 2, "batch_size": 60, "threads": 1, "progress": False},
    "eval": {"final_lsup": False},
    "sweep": {"loss.k": [1, 4], "seed": [0, 1]},
}


def tiny_sweep(path: Path) -> Path:
    """Run the 4-run tiny sweep (about 3 s) into ``path``."""
    from contrastlab.experiments.sweep import run_sweep
    from contrastlab.train.config import parse_config

    run_sweep(parse_config(TINY_SWEEP), path, workers=1, log=None)
    return path


def png_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, fraction of non-white pixels) of a PNG image."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")
    rgb = (np.asarray(img)[..., :3] * 255).round().astype(np.int64)
    flat = rgb.reshape(-1, 3)
    colours = len(np.unique(flat[:, 0] * 65536 + flat[:, 1] * 256 + flat[:, 2]))
    non_white = float((flat.min(axis=1) < 250).mean())
    return colours, non_white


def fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


def synthetic_sweep(path: Path, betas: tuple[float, ...] = (0.0, 5.0),
                    ks: tuple[int, ...] = (1, 4, 16, 64), seeds: tuple[int, ...] = (0, 1, 2),
                    classes: int = 3) -> Path:
    """A results directory with a stored (not trained) hucl beta x k x seed sweep, in a second:
    mean-classifier accuracy 0.9 - 0.05 log2(k) / 2 for beta = 0 and 0.9 for beta > 0, plus a
    seed offset of 0.01 (seed - 1); probe and kNN accuracies, losses, geometry and two epochs."""
    from contrastlab.experiments.store import ResultStore

    rng = np.random.default_rng(0)
    with ResultStore(path) as store:
        for beta in betas:
            for k in ks:
                for seed in seeds:
                    rid = f"b{beta:g}k{k}s{seed}".replace(".", "p").ljust(16, "0")[:16]
                    cfg = {"seed": seed,
                           "data": {"name": "synthetic", "seed": 0,
                                    "options": {"classes": classes, "dim": 6}},
                           "loss": {"name": "hucl", "k": k, "beta": beta, "normalize": "sphere",
                                    "temperature": 1.0, "negatives_reduction": "sum"},
                           "train": {"epochs": 2}}
                    acc = 0.9 - (0.025 * np.log2(k) if beta == 0 else 0.0) + 0.01 * (seed - 1)
                    a = rng.uniform(-0.2, 0.2, size=(classes, classes))
                    cos = np.clip((a + a.T) / 2 - 0.4, -1, 1)
                    np.fill_diagonal(cos, 1.0)
                    spectrum = sorted(rng.uniform(0.01, 1.0, size=6).tolist(), reverse=True)
                    reports = {
                        "geometry": {"num_classes": classes, "cosine": cos.tolist(),
                                     "covariance_spectrum": spectrum,
                                     "class_mean_spectrum": [*spectrum[:2], 0, 0, 0, 0],
                                     "nc1": 0.5, "etf_distance": 0.3, "effective_rank": 2.5},
                        "downstream": {
                            "mean_classifier": {"raw": {"accuracy": acc,
                                                        "cross_entropy": 1.5 - acc}},
                            "linear_probe": {"bias-free": {"accuracy": acc + 0.02,
                                                           "cross_entropy": 1.4 - acc}},
                            "knn": {"accuracy": acc - 0.05}},
                    }
                    epochs = [{"epoch": e, "nc1": 1.0 / e, "etf_distance": 0.5 / e,
                               "effective_rank": 2.0 + e / 4, "mc_acc": acc - 0.1 / e,
                               "heldout_loss": 1.0 + np.log(k + 1) - 0.1 * e}
                              for e in (1, 2)]
                    store.add_runs([(rid, cfg)])
                    store.mark_running(rid)
                    store.finish(rid, "done", epochs=epochs, reports=reports, seconds=0.1)
    return path

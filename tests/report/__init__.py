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
    from contrastlab.experiments.config import parse_config
    from contrastlab.experiments.sweep import run_sweep

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

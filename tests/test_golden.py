"""Golden runs: the metrics of small fixed-config runs of every loss, stored once and compared
bitwise, so that a refactoring (issue 15: the loss registry, the train package, the kernel
engine) provably changes no number.

``python tests/test_golden.py --write`` records ``tests/golden/runs.json`` (only on purpose:
after a change that is *meant* to change the numbers, said so in the commit). Every run uses one
thread (a run's default), so the values are a function of the config on any machine of this
kind (x86-64, the pinned torch build).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).parent / "golden" / "runs.json"

BASE: dict[str, Any] = {
    "seed": 3,
    "data": {"name": "synthetic", "options": {"classes": 4, "dim": 6, "n_train": 96,
                                              "n_test": 48}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 16}},
    "optim": {"lr": 0.01},
    "train": {"epochs": 2, "batch_size": 32, "progress": False},
    "eval": {"every": 1, "max_train": 96, "max_test": 48, "final_lsup": True,
             "final_knn": True},
}

# one run per loss (and per estimator of the Jiang et al. losses), the pool and k explicit
LOSSES: dict[str, dict[str, Any]] = {
    "infonce": {"name": "infonce"},
    "supcon": {"name": "supcon"},
    "debiased-hard": {"name": "debiased-hard", "beta": 2.0, "tau_plus": 0.2},
    "nce-uniform": {"name": "nce", "k": 8, "score": "infonce"},
    "nce-tilted-logistic": {"name": "nce", "k": 8, "sampler": "tilted", "beta": 1.0,
                            "score": "logistic"},
    "nce-replacement": {"name": "nce", "k": 8, "replacement": True},
    "scl": {"name": "scl", "k": 8},
    "hscl": {"name": "hscl", "k": 8, "beta": 2.0},
    "ucl-ball": {"name": "ucl", "k": 8, "normalize": "ball"},
    "hucl": {"name": "hucl", "k": 8, "beta": 1.0},
    "hucl-exact": {"name": "hucl", "k": 8, "beta": 1.0, "exact": True},
    "hscl-mean-sum": {"name": "hscl", "k": 8, "beta": 1.0, "exact": "mean",
                      "negatives_reduction": "sum"},
}


def _run(loss: dict[str, Any]) -> dict[str, Any]:
    from contrastlab.train import load_data, train
    from contrastlab.train.config import parse_config

    cfg = parse_config({**BASE, "loss": loss})
    result = train(cfg, load_data(cfg))
    assert result.status == "done", result.error
    return {"epochs": result.epochs, "reports": result.reports}


def _canonical(obj: Any) -> Any:
    """JSON-ready, floats as their repr (bitwise: 17 significant digits round-trip); wall
    times (``seconds``) left out."""
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    return obj


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_run_matches_its_golden_metrics(name: str) -> None:
    want = json.loads(GOLDEN.read_text())[name]
    got = json.loads(json.dumps(_canonical(_run(LOSSES[name]))))
    assert got["epochs"] == want["epochs"]
    assert got["reports"] == want["reports"]


if __name__ == "__main__":  # pragma: no cover - the recording command
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/test_golden.py --write")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({n: _canonical(_run(loss)) for n, loss in LOSSES.items()},
                                 indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")

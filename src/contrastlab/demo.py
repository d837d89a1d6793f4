"""``contrastlab demo``: the quick tour (about a minute on 2 CPU cores), a Markdown report.

How it relates to ``make demo``: ``make demo`` is the main job, ``contrastlab sweep
configs/demo.yaml`` (an MNIST-1D k-sweep of UCL vs HUCL, 18 runs, about 7.5 minutes with 2
workers, with the results store, resumable runs and the HTML report). This quick tour shows the
same ideas in one command and a minute: it trains with the same trainer
(:func:`contrastlab.train.train`, configs built by :func:`demo_config` and validated by
:func:`contrastlab.train.parse_config`), on a small Gaussian mixture instead of MNIST-1D, and
writes no results store.

What it runs (all real and seeded):

1. **Theory at the simplex ETF.** The exact batch losses (``exact=True``, no sampling noise) of
   SCL, UCL and HUCL at a unit-norm simplex ETF for k = 1..1024, next to their closed forms
   (:func:`contrastlab.theory.etf_loss`). Shows the contrastive loss growing with k while the
   geometry (and so the downstream loss of the mean classifier) does not depend on k
   (Awasthi et al. 2022).
2. **Training.** An MLP encoder (input -> 64 -> C - 1, unit-ball output as in Jiang et al. 2023)
   trained by the library's trainer on the ``synthetic`` data set (a C-class Gaussian mixture,
   2,000 training and 2,000 test samples) with SCL, HSCL, UCL and HUCL at two values of k:
   latent-class positives, k negatives per anchor drawn i.i.d. from a pool of the training set
   (with replacement, the mean over the negatives and t = 1, as in Jiang et al.'s code), Adam
   at a constant learning rate, ``steps`` steps in one epoch. For each run: the class-mean
   geometry of the training embeddings (the trainer's final geometry report: mean and max
   |cos + 1/(C-1)| off the diagonal, unit-norm error, zero-sum norm, within-class distance,
   distance to the ETF), the mean-classifier test accuracy (class means of the training
   embeddings) and the exact loss of the trained encoder on a held-out batch.

The report (``report.md`` and ``results.json``) lands in the output directory.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import contrastlab
import contrastlab.losses as L
from contrastlab._tables import markdown_table
from contrastlab.data.base import Dataset
from contrastlab.models import Encoder
from contrastlab.theory import etf_cosine, etf_loss, simplex_etf
from contrastlab.train import ExperimentConfig, embed, load_data, parse_config, train

__all__ = ["DemoRun", "demo_config", "etf_loss_table", "run_demo", "train_one"]

#: the input dimension of the demo's Gaussian mixture, and its training / test sizes
INPUT_DIM = 20
N_TRAIN = 2000
N_TEST = 2000
#: the size of the held-out batch of the exact loss
EXACT_BATCH = 256


@dataclass(frozen=True)
class DemoRun:
    """One training configuration of the demo."""

    name: str
    negatives: str  # "other-class" or "marginal"
    beta: float
    k: int

    @property
    def loss(self) -> str:
        """The trainer's loss name: ``scl``/``hscl`` (other-class negatives, beta = 0 / > 0) or
        ``ucl``/``hucl`` (negatives from the marginal)."""
        hard = "h" if self.beta > 0 else ""
        return hard + ("scl" if self.negatives == "other-class" else "ucl")


def _exact(
    z: torch.Tensor, labels: torch.Tensor, negatives: str, beta: float, k: int, t: float
) -> float:
    """Exact batch loss of the Jiang family with the paper's sum over the k negatives."""
    loss = L.hard_contrastive(
        z, labels, negatives, beta=beta, k=k, temperature=t, exact=True, negatives_reduction="sum"
    )
    return float(loss)


def etf_loss_table(num_classes: int, ks: list[int], temperature: float = 1.0) -> list[dict]:
    """Exact SCL / UCL / HUCL(beta=1) batch losses at a unit simplex ETF vs their closed forms
    (:func:`contrastlab.theory.etf_loss`)."""
    c = num_classes
    labels = torch.arange(c).repeat(2)
    z = simplex_etf(c)[labels]
    rows = []
    for k in ks:
        rows.append(
            {
                "k": k,
                "scl": _exact(z, labels, "other-class", 0.0, k, temperature),
                "scl_closed_form": etf_loss(c, k, "infonce", temperature, "other-class"),
                "ucl": _exact(z, labels, "marginal", 0.0, k, temperature),
                "ucl_closed_form": etf_loss(c, k, "infonce", temperature, "marginal"),
                "hucl_beta1": _exact(z, labels, "marginal", 1.0, k, temperature),
            }
        )
    return rows


def demo_config(
    run: DemoRun,
    num_classes: int = 5,
    input_dim: int = INPUT_DIM,
    steps: int = 300,
    batch: int = 128,
    seed: int = 0,
) -> ExperimentConfig:
    """The trainer's config (:class:`contrastlab.train.ExperimentConfig`) of one demo run:
    ``steps`` steps of ``batch`` anchors in one epoch, evaluated once at the end (mean
    classifier and geometry; no linear probe, k-NN or L_sup, which the report does not show)."""
    return parse_config({
        "seed": seed,
        "data": {"name": "synthetic", "seed": seed,
                 "options": {"classes": num_classes, "dim": input_dim, "n_train": N_TRAIN,
                             "n_test": N_TEST}},
        "model": {"encoder": "mlp", "out_dim": num_classes - 1,
                  "options": {"hidden": 64, "depth": 1}},
        "loss": {"name": run.loss, "k": run.k, "beta": run.beta, "temperature": 1.0,
                 "normalize": "ball", "negatives_reduction": "mean", "replacement": True},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "constant"},
        "train": {"epochs": 1, "batch_size": batch, "steps_per_epoch": steps,
                  "progress": False, "loggers": []},
        "eval": {"every": 0, "linear_probe": False, "final_probes": [], "final_knn": False,
                 "final_lsup": False, "max_train": N_TRAIN, "max_test": N_TEST},
    })


def _heldout_exact(model: Encoder, data: Dataset, run: DemoRun) -> float:
    """The exact loss (expectation over the negatives' law, the Jiang family's in-batch form)
    of the trained encoder on the first ``EXACT_BATCH`` test samples."""
    x, y = data.x_test[:EXACT_BATCH], data.y_test[:EXACT_BATCH]
    z = embed(model, x).double()
    return float(L.hard_contrastive(z, y, run.negatives, beta=run.beta, k=run.k, exact=True))


def train_one(
    run: DemoRun,
    num_classes: int = 5,
    input_dim: int = INPUT_DIM,
    steps: int = 300,
    batch: int = 128,
    seed: int = 0,
    data: Dataset | None = None,
) -> dict:
    """Train one encoder with :func:`contrastlab.train.train` and the family member of ``run``;
    ``data``: the loaded data set of the config (default: loaded here)."""
    cfg = demo_config(run, num_classes, input_dim, steps, batch, seed)
    data = load_data(cfg) if data is None else data
    result = train(cfg, data, progress=False)
    if result.status != "done":
        raise RuntimeError(f"demo run {run.name} (k = {run.k}) stopped: {result.error}")
    last, geo = result.epochs[-1], result.reports["geometry"]
    return {
        **asdict(run),
        "loss": run.loss,
        "run_id": result.run_id,
        "steps": steps,
        "train_seconds": result.seconds,
        "train_loss": last["train_loss"],
        "heldout_loss": last.get("heldout_loss"),
        "heldout_exact_loss": _heldout_exact(result.model, data, run),
        "equiangular_error": geo["equiangularity_mean"],
        "max_equiangular_error": geo["equiangularity_max"],
        "unit_norm_error": geo["unit_norm_error"],
        "zero_sum_norm": geo["zero_sum_norm"],
        "within_class_rms": geo["within_class_rms"],
        "etf_distance": geo["etf_distance"],
        "mean_classifier_accuracy": last["mc_acc"],
        "config": cfg.model_dump(mode="json"),
    }


def run_demo(out_dir: str | Path = "reports/demo", steps: int = 300, seed: int = 0) -> Path:
    """Run the quick tour and write ``report.md`` and ``results.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    c = 5
    table = etf_loss_table(10, [1, 4, 16, 64, 256, 1024])
    runs = [
        DemoRun(name, neg, beta, k)
        for k in (16, 256)
        for name, neg, beta in (
            ("SCL", "other-class", 0.0),
            ("HSCL(beta=5)", "other-class", 5.0),
            ("UCL", "marginal", 0.0),
            ("HUCL(beta=5)", "marginal", 5.0),
        )
    ]
    data = load_data(demo_config(runs[0], num_classes=c, steps=steps, seed=seed))
    results = [train_one(r, num_classes=c, steps=steps, seed=seed, data=data) for r in runs]
    wall = time.perf_counter() - t0
    payload = {
        "contrastlab": contrastlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "wall_seconds": wall,
        "etf_table_C10": table,
        "training": results,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    (out / "report.md").write_text(_markdown(payload, c))
    return out / "report.md"


def _markdown(p: dict, c: int) -> str:
    """The Markdown report of a :func:`run_demo` payload."""
    train_cfg = p["training"][0]["config"]["train"] if p["training"] else {}
    steps, batch = train_cfg.get("steps_per_epoch"), train_cfg.get("batch_size")
    lines = [
        "# contrastlab demo report",
        "",
        f"contrastlab {p['contrastlab']}, torch {p['torch']}, Python {p['python']}; "
        f"wall time {p['wall_seconds']:.1f} s. The quick tour; `make demo` runs the main job "
        "(the MNIST-1D k-sweep of configs/demo.yaml).",
        "",
        "## Exact losses at the simplex ETF (C = 10, t = 1, sum over k negatives)",
        "",
        "The contrastive loss grows with k although the optimal geometry does not change "
        "(Awasthi et al. 2022). `exact=True` batch losses vs the closed forms at the ETF "
        "(`contrastlab.theory.etf_loss`).",
        "",
        markdown_table(
            ("k", "SCL", "closed form", "UCL", "closed form", "HUCL beta=1"),
            [(str(r["k"]), *(f"{r[col]:.6f}" for col in ("scl", "scl_closed_form", "ucl",
                                                     "ucl_closed_form", "hucl_beta1")))
             for r in p["etf_table_C10"]]),
        "",
        f"## Training on a {c}-class Gaussian mixture (MLP -> R^{c - 1}, unit ball, Adam)",
        "",
        f"Trained by `contrastlab.train.train`: {steps} steps of {batch} anchors, k negatives "
        "drawn i.i.d. from a pool of the training set (mean over them, t = 1). Geometry of the "
        "training embeddings; mean-classifier accuracy on the test set; exact loss: the "
        f"expectation over the negatives' draws (mean form) on {EXACT_BATCH} test samples.",
        "",
        f"Neural collapse means every error column at 0; the ETF cosine is {etf_cosine(c):.3f}.",
        "",
        markdown_table(
            ("loss", "k", "equiangular err", "unit-norm err", "zero-sum", "within-class RMS",
             "mean-clf acc", "exact loss"),
            [(str(r["name"]), str(r["k"]),
              *(f"{r[col]:.3f}" for col in ("equiangular_error", "unit_norm_error", "zero_sum_norm",
                                        "within_class_rms", "mean_classifier_accuracy")),
              f"{r['heldout_exact_loss']:.4f}") for r in p["training"]]),
    ]
    return "\n".join(lines) + "\n"

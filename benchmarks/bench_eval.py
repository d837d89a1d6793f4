"""Evaluation benchmarks: geometry report, linear probe, kNN, L_sup (contrastlab.geometry and
contrastlab.evaluation), with scikit-learn's LogisticRegression timed side by side as the peer.

The issue's targets, for N = 60,000 training embeddings, d = 128, C = 10 on 2 CPU cores:
geometry report < 1 s, linear probe < 10 s, kNN < 10 s (10,000 test queries). The data are a noisy
simplex ETF (a linear probe reaches about 90%). Each case runs ``--repeats`` times, interleaved
round-robin with the others (the machine is shared and noisy), and the table reports the median
wall time.

- ``probe (lambda search)``: the full :func:`contrastlab.evaluation.linear_probe`: the weight-decay
  walk on a validation split, then the refit on the whole training set;
- ``probe (one fit)`` vs ``sklearn LogisticRegression``: a single fit at the same regularization
  (lambda = 1 / (C_sklearn N)), with bias, each to its default tolerance (contrastlab: scaled
  max |grad| <= 1e-6 in float64; scikit-learn lbfgs: 1e-4, max_iter 1000);
- ``anisotropic``: the same embeddings through a fixed linear map whose covariance has condition
  number 1e4 (real SSL embeddings have decaying spectra), lambda scaled to match; the
  preconditioned L-BFGS of contrastlab barely notices, plain L-BFGS (scikit-learn) does.

Usage: ``python benchmarks/bench_eval.py [--quick] [--repeats N] [--n N] [--out FILE]
[--no-sklearn]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from contrastlab.evaluation import (
    downstream_report,
    knn_classifier,
    linear_probe,
    mean_classifier,
    unit_norm_supervised_loss,
)
from contrastlab.geometry import geometry_report
from contrastlab.theory.etf import simplex_etf


def make_data(
    n_train: int, n_test: int, d: int = 128, c: int = 10, noise: float = 0.35, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy simplex ETF in general position, float32 embeddings."""
    g = torch.Generator().manual_seed(seed)
    V = simplex_etf(c, d, rotation_seed=seed + 1)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (n,), generator=g)
        H = V[y] + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
        return H.to(torch.float32), y

    Htr, ytr = draw(n_train)
    Hte, yte = draw(n_test)
    return Htr, ytr, Hte, yte


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 6,000 and 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="runs per case (default 5; quick 3)")
    ap.add_argument("--n", type=int, default=None, help="training-set size (default 60,000)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    ap.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn peer")
    args = ap.parse_args(argv)
    n_train = args.n or (6_000 if args.quick else 60_000)
    n_test = max(n_train // 6, 10)
    repeats = args.repeats or (3 if args.quick else 5)
    d, c = 128, 10
    Htr, ytr, Hte, yte = make_data(n_train, n_test, d, c)
    lam = 1e-4  # the one-fit comparison's regularization
    # the same embeddings through an anisotropic linear map (covariance condition number 1e4,
    # like the decaying spectra of real SSL embeddings): hard for plain L-BFGS
    g = torch.Generator().manual_seed(99)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    A = Q * torch.logspace(0, -2, d)
    Atr, Ate = (Htr @ A).contiguous(), (Hte @ A).contiguous()
    lam_a = lam * float((Atr.double() ** 2).sum(1).mean() / (Htr.double() ** 2).sum(1).mean())

    cases: list[tuple[str, str, float | None, Callable[[], Any]]] = [
        ("geometry report", "contrastlab", 1.0, lambda: geometry_report(Htr, ytr)),
        ("geometry report + NC3/NC4", "contrastlab", 1.0,
         lambda: geometry_report(Htr, ytr, classifier=(probe_w, probe_b))),
        ("mean classifier (raw)", "contrastlab", None,
         lambda: mean_classifier(Htr, ytr, Hte, yte)),
        ("linear probe, bias-free (lambda search)", "contrastlab", 10.0,
         lambda: linear_probe(Htr, ytr, Hte, yte, bias=False)),
        ("linear probe, bias (lambda search)", "contrastlab", 10.0,
         lambda: linear_probe(Htr, ytr, Hte, yte, bias=True)),
        (f"linear probe, bias, one fit (lambda={lam:g})", "contrastlab", 10.0,
         lambda: linear_probe(Htr, ytr, Hte, yte, bias=True, weight_decay=lam)),
    ]
    try:
        if args.no_sklearn:
            raise ImportError("--no-sklearn")
        from sklearn.linear_model import LogisticRegression

        Xtr_np, ytr_np, Xte_np, yte_np = Htr.numpy(), ytr.numpy(), Hte.numpy(), yte.numpy()

        def sklearn_fit() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=1.0 / (lam * n_train), max_iter=1000)
                m.fit(Xtr_np, ytr_np)
            return float(m.score(Xte_np, yte_np))

        def sklearn_fit_aniso() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=1.0 / (lam_a * n_train), max_iter=1000)
                m.fit(Atr.numpy(), ytr.numpy())
            return float(m.score(Ate.numpy(), yte.numpy()))

        cases.append((f"linear probe, bias, one fit (lambda={lam:g})",
                      "sklearn LogisticRegression", 10.0, sklearn_fit))
        cases.append(("anisotropic: linear probe, bias, one fit",
                      "sklearn LogisticRegression", 10.0, sklearn_fit_aniso))
    except ImportError as exc:
        print(f"scikit-learn peer skipped ({exc})", file=sys.stderr)
    cases += [
        ("anisotropic: linear probe, bias, one fit", "contrastlab", 10.0,
         lambda: linear_probe(Atr, ytr, Ate, yte, bias=True, weight_decay=lam_a)),
        ("anisotropic: linear probe, bias (lambda search)", "contrastlab", 10.0,
         lambda: linear_probe(Atr, ytr, Ate, yte, bias=True)),
        ("weighted kNN (k=200, t=0.07)", "contrastlab", 10.0,
         lambda: knn_classifier(Htr, ytr, Hte, yte, k=200, temperature=0.07)),
        ("L_sup, unit-norm W (infonce, t=1)", "contrastlab", None,
         lambda: unit_norm_supervised_loss(Htr, ytr)),
        ("downstream report (all of the above)", "contrastlab", None,
         lambda: downstream_report(Htr, ytr, Hte, yte)),
    ]

    first = linear_probe(Htr, ytr, Hte, yte, bias=True, weight_decay=lam)
    probe_w, probe_b = first.weight, first.bias_vector
    times: list[list[float]] = [[] for _ in cases]
    results: list[Any] = [None] * len(cases)
    for _ in range(repeats):
        for i, (_, _, _, fn) in enumerate(cases):
            t0 = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - t0)

    def summary(res: Any) -> str:
        if isinstance(res, float):
            return f"acc {res:.4f}"
        name = type(res).__name__
        if name == "GeometryReport":
            nc4 = "" if res.nc4 is None else f", NC4 {res.nc4:.4f}"
            return f"NC1 {res.nc1:.4f}, erank {res.effective_rank:.1f}{nc4}"
        if name == "LinearProbeResult":
            text = (f"acc {res.accuracy:.4f}, CE {res.cross_entropy:.4f}, "
                    f"lambda {res.weight_decay:.3g}")
            o = res.other_selection
            if o is not None and o["weight_decay"] != res.weight_decay:
                text += (f"; by {o['select']}: acc {o['accuracy']:.4f}, "
                         f"CE {o['cross_entropy']:.4f}")
            return text
        if name in ("MeanClassifierResult", "KNNResult"):
            return f"acc {res.accuracy:.4f}"
        if name == "LsupResult":
            return f"L_sup {res.value:.4f} ({'tight' if res.tight else 'not tight'})"
        if name == "DownstreamReport":
            return f"probe acc {res.linear_probe['bias'].accuracy:.4f}"
        return ""

    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; N_train={n_train}, "
        f"N_test={n_test}, d={d}, C={c}; median of {repeats} interleaved runs (seconds)",
        "",
        "| task | implementation | median s | min s | target s | meets | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, impl, target, _), ts, res in zip(cases, times, results, strict=True):
        med = statistics.median(ts)
        meets = "-" if target is None else ("yes" if med < target else "NO")
        tgt = "-" if target is None else f"{target:g}"
        lines.append(f"| {task} | {impl} | {med:.3f} | {min(ts):.3f} | {tgt} | {meets} | "
                     f"{summary(res)} |")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

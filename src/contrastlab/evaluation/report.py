"""The downstream report: every evaluation of a representation in one call
(:func:`downstream_report`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from contrastlab._tables import measure_table
from contrastlab._validation import (
    check_choice,
    check_positive,
    check_positive_int,
)
from contrastlab.evaluation.checks import F64, PlainResult, Split, check_split
from contrastlab.evaluation.knn import KNNResult, knn_unchecked
from contrastlab.evaluation.lsup import (
    LSUP_LOSSES,
    LsupResult,
    lsup_unchecked,
)
from contrastlab.evaluation.mean_classifier import (
    MEAN_CLASSIFIERS,
    MeanClassifierResult,
    mean_classifier_unchecked,
)
from contrastlab.evaluation.probe import (
    DEFAULT_WEIGHT_DECAYS,
    PROBE_SELECTION,
    PROBES,
    LinearProbeResult,
    check_grid,
    linear_probe,
)
from contrastlab.geometry import (
    serial_when_small,
)


@dataclass
class DownstreamReport(PlainResult):
    """Downstream quality of a representation (see the module docstring).

    ``mean_classifier`` maps a convention name of :data:`MEAN_CLASSIFIERS` to its result,
    ``linear_probe`` a name of :data:`PROBES` to its result; ``lsup`` and ``knn`` may be None
    (not requested). ``seconds`` holds the wall time of each part. ``to_dict()`` is
    JSON-serializable (tensors are left out).
    """

    num_classes: int
    n_train: int
    n_test: int
    dim: int
    mean_classifier: dict[str, MeanClassifierResult]
    linear_probe: dict[str, LinearProbeResult]
    lsup: LsupResult | None
    knn: KNNResult | None
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        rows: list[tuple[str, str]] = [
            ("train / test / classes / dim",
             f"{self.n_train} / {self.n_test} / {self.num_classes} / {self.dim}"),
        ]
        for name, mc in self.mean_classifier.items():
            rows.append((f"mean classifier [{name}] acc / CE (t={mc.temperature:g})",
                         f"{mc.accuracy:.4f} / {mc.cross_entropy:.4f}"))
        for name, lp in self.linear_probe.items():
            conv = "" if lp.converged else " (NOT converged)"
            rows.append((f"linear probe [{name}] acc / CE",
                         f"{lp.accuracy:.4f} / {lp.cross_entropy:.4f}  (by {lp.selected_by}, "
                         f"lambda={lp.weight_decay:.3g}, train acc {lp.train_accuracy:.4f}){conv}"))
            o = lp.other_selection
            if o is not None:
                rows.append((f"linear probe [{name}] by {o['select']}",
                             f"{o['accuracy']:.4f} / {o['cross_entropy']:.4f}  "
                             f"(lambda={o['weight_decay']:.3g})"))
        if self.lsup is not None:
            ls = self.lsup
            kind = "tight" if ls.tight else f"local; relaxed lower bound {ls.relaxed_value:.4f}"
            rows.append((f"L_sup unit-norm W [{ls.loss}, t={ls.temperature:g}]",
                         f"{ls.value:.4f}  ({kind}, gap {ls.gap:.1e})"))
        if self.knn is not None:
            rows.append((f"kNN k={self.knn.k} t={self.knn.temperature:g} acc",
                         f"{self.knn.accuracy:.4f}"))
        rows.append(("seconds", ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items())))
        text = measure_table("downstream", rows)
        if self.notes:
            text += "\n" + "\n".join(f"note: {n}" for n in self.notes)
        return text


def _check_report_options(
    mean_classifiers: Sequence[str], probes: Sequence[str], temperature: float,
    mean_temperature: float | None, lsup_temperature: float | None, lsup: bool,
    lsup_loss: str, knn: bool, knn_k: int, knn_temperature: float,
    weight_decays: Sequence[float], probe_select: str,
) -> tuple[float, float]:
    """The option checks of :func:`downstream_report`: (mean temperature, L_sup temperature)."""
    if isinstance(mean_classifiers, str) or isinstance(probes, str):
        raise ValueError("mean_classifiers and probes must be sequences of names, not a string")
    for name in mean_classifiers:
        check_choice("mean_classifiers", name, MEAN_CLASSIFIERS)
    for name in probes:
        check_choice("probes", name, PROBES)
    t = check_positive("temperature", temperature)
    t_mean = t if mean_temperature is None else check_positive("mean_temperature",
                                                               mean_temperature)
    t_lsup = t if lsup_temperature is None else check_positive("lsup_temperature",
                                                               lsup_temperature)
    if lsup:
        check_choice("lsup_loss", lsup_loss, LSUP_LOSSES)
    if knn:
        check_positive_int("knn_k", knn_k)
        check_positive("knn_temperature", knn_temperature)
    check_grid(weight_decays)
    check_choice("probe_select", probe_select, PROBE_SELECTION)
    return t_mean, t_lsup


def _report_means(
    split: Split,
    mean_classifiers: Sequence[str], t_mean: float, seconds: dict[str, float],
) -> dict[str, MeanClassifierResult]:
    """The mean classifiers of :func:`downstream_report`, timed together in ``seconds``."""
    t0 = time.perf_counter()
    means = {
        name: mean_classifier_unchecked(split, *MEAN_CLASSIFIERS[name], t_mean)
        for name in mean_classifiers
    }
    seconds["mean_classifier"] = time.perf_counter() - t0
    return means


def _report_probes(
    split: Split,
    probes: Sequence[str], options: dict[str, Any], seconds: dict[str, float],
    notes: list[str],
) -> dict[str, LinearProbeResult]:
    """The linear probes of :func:`downstream_report` (``options``: keyword arguments of
    :func:`linear_probe`), each timed in ``seconds``; a note for each one not converged."""
    probe_results: dict[str, LinearProbeResult] = {}
    for name in probes:
        t0 = time.perf_counter()
        probe_results[name] = linear_probe(*split, bias=name == "bias", **options)
        seconds[f"probe_{name}"] = time.perf_counter() - t0
        if not probe_results[name].converged:
            notes.append(f"linear probe [{name}] did not reach its gradient tolerance")
    return probe_results


def _report_lsup(
    Htr: torch.Tensor, ytr: torch.Tensor, c: int, loss: str, t_lsup: float,
    seconds: dict[str, float], notes: list[str],
) -> LsupResult:
    """L_sup of :func:`downstream_report` on the training set, timed in ``seconds``; a note
    when the ball relaxation is not tight."""
    t0 = time.perf_counter()
    ls = lsup_unchecked(Htr.detach().to(F64).contiguous(), ytr, c, loss, t_lsup, 1e-6, 3000)
    seconds["lsup"] = time.perf_counter() - t0
    if not ls.tight:
        notes.append("L_sup: the ball relaxation is not tight; value is a local optimum on "
                     "the spheres, relaxed_value a lower bound")
    return ls


def _report_knn(
    split: Split, knn_k: int,
    knn_temperature: float, seconds: dict[str, float], notes: list[str],
) -> KNNResult:
    """The kNN classifier of :func:`downstream_report`, timed in ``seconds``; a note when k
    exceeds the training-set size."""
    t0 = time.perf_counter()
    kn = knn_unchecked(split, int(knn_k), float(knn_temperature), None)
    seconds["knn"] = time.perf_counter() - t0
    if kn.k < knn_k:
        notes.append(f"kNN: k reduced from {knn_k} to the training-set size {kn.k}")
    return kn


@serial_when_small
def downstream_report(
    H_train: torch.Tensor,
    y_train: torch.Tensor,
    H_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int | None = None,
    *,
    mean_classifiers: Sequence[str] = tuple(MEAN_CLASSIFIERS),
    temperature: float = 1.0,
    mean_temperature: float | None = None,
    probes: Sequence[str] = PROBES,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    seed: int = 0,
    probe_dtype: torch.dtype = torch.float64,
    probe_select: str = "accuracy",
    lsup: bool = True,
    lsup_loss: str = "infonce",
    lsup_temperature: float | None = None,
    knn: bool = True,
    knn_k: int = 200,
    knn_temperature: float = 0.07,
) -> DownstreamReport:
    """Mean classifiers, linear probes, L_sup (on the training set) and kNN in one report.

    In phases: every check first (:func:`_check_report_options`), then the measures in that
    order, each timed (:func:`_report_means`, :func:`_report_probes`, :func:`_report_lsup`,
    :func:`_report_knn`), then the report.

    Args:
        H_train, y_train, H_test, y_test: embeddings and integer labels; every class must occur
            in the training set.
        num_classes: C (default: 1 + the largest label).
        mean_classifiers: conventions from :data:`MEAN_CLASSIFIERS` (``raw``, ``normalized``,
            ``cosine``).
        temperature: t > 0 of both the mean classifiers' logits (R_mu-supv) and L_sup: the
            temperature of the contrastive loss (module docstring, "Temperature"; Bao et al.:
            1). Default 1.
        mean_temperature: overrides ``temperature`` for the mean classifiers (None: use it).
        probes: any of ``bias-free`` and ``bias`` (empty: no probe).
        weight_decays, val_fraction, seed, probe_dtype, probe_select: see :func:`linear_probe`
            (``dtype`` and ``select`` there).
        lsup, lsup_loss, lsup_temperature: see :func:`unit_norm_supervised_loss`
            (``lsup_temperature`` None: ``temperature``).
        knn, knn_k, knn_temperature: see :func:`knn_classifier`.
    """
    split = check_split(H_train, y_train, H_test, y_test, num_classes)
    Htr, ytr, Hte, _, c = split
    t_mean, t_lsup = _check_report_options(
        mean_classifiers, probes, temperature, mean_temperature, lsup_temperature, lsup,
        lsup_loss, knn, knn_k, knn_temperature, weight_decays, probe_select,
    )
    seconds: dict[str, float] = {}
    notes: list[str] = []
    means = _report_means(split, mean_classifiers, t_mean, seconds)
    probe_options = {"weight_decays": weight_decays, "val_fraction": val_fraction, "seed": seed,
                     "dtype": probe_dtype, "select": probe_select}
    probe_results = _report_probes(split, probes, probe_options, seconds, notes)
    ls = _report_lsup(Htr, ytr, c, lsup_loss, t_lsup, seconds, notes) if lsup else None
    kn = _report_knn(split, knn_k, knn_temperature, seconds, notes) if knn else None
    return DownstreamReport(
        num_classes=c,
        n_train=int(Htr.shape[0]),
        n_test=int(Hte.shape[0]),
        dim=int(Htr.shape[1]),
        mean_classifier=means,
        linear_probe=probe_results,
        lsup=ls,
        knn=kn,
        seconds=seconds,
        notes=notes,
    )

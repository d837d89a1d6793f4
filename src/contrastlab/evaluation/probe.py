"""The linear probe: the weight-decay walk on a stratified validation split, the refit and the
result (method and conventions: :mod:`contrastlab.evaluation`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from contrastlab._validation import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)
from contrastlab.evaluation.checks import (
    PlainResult,
    check_dtype,
    check_split,
    cross_entropy_accuracy,
    holdout_split,
)
from contrastlab.evaluation.logreg import Preconditioner, Softmax, fit_logreg
from contrastlab.geometry import (
    serial_when_small,
)

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
PROBES = ("bias-free", "bias")
PROBE_SELECTION = ("accuracy", "cross_entropy")


@dataclass
class LinearProbeResult(PlainResult):
    """A multinomial logistic-regression probe (see the module docstring).

    Attributes:
        bias: whether the probe has a bias.
        weight_decay: the chosen (absolute) lambda of mean CE + lambda/2 ||W||^2.
        selected_by: ``accuracy``, ``cross_entropy`` or ``fixed`` (``weight_decay=`` given).
        accuracy, cross_entropy: on the test set.
        train_accuracy, train_cross_entropy: on the whole training set (data term only).
        validation: per lambda tried: relative_weight_decay, weight_decay (absolute),
            val_accuracy, val_cross_entropy, iterations.
        other_selection: the probe the *other* selection rule picks on the same walk, refit on
            the whole training set: select, weight_decay, accuracy, cross_entropy (test). With
            the default ``select="accuracy"`` this is the cross-entropy-selected probe, whose
            test cross-entropy is the calibrated one. None when ``weight_decay`` was fixed.
        iterations: L-BFGS iterations of the final fit; converged: the gradient test passed
        there; grad_max: max(max |dF/dW| / sqrt(E||h||^2), max |dF/db|); tol: the tolerance.
        weight, bias_vector: the fitted (C, d) W and (C,) b (None when bias-free); not in
            ``to_dict``.
    """

    bias: bool
    weight_decay: float
    selected_by: str
    accuracy: float
    cross_entropy: float
    train_accuracy: float
    train_cross_entropy: float
    validation: list[dict[str, float]]
    other_selection: dict[str, Any] | None
    iterations: int
    converged: bool
    grad_max: float
    tol: float
    weight: torch.Tensor = field(repr=False)
    bias_vector: torch.Tensor | None = field(default=None, repr=False)




def _check_probe_options(
    bias: Any, max_iter: Any, tol: Any, patience: Any, select: Any, dtype: Any
) -> tuple[int, float, int, torch.dtype]:
    """The option checks of :func:`linear_probe`: (max_iter, tol, patience, dtype)."""
    if not isinstance(bias, bool):
        raise ValueError(f"bias must be True or False; got {bias!r}")
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive("tol", tol)
    patience = check_positive_int("patience", patience)
    check_choice("select", select, PROBE_SELECTION)
    return max_iter, tol, patience, check_dtype(dtype)


_Fit = Callable[[Softmax, float, torch.Tensor], tuple[torch.Tensor, int, float]]


@dataclass
class _Walk:
    """The outcome of the weight-decay walk of :func:`linear_probe`: the lambda and warm start
    selected by the rule, those of the other rule, and the per-lambda validation rows."""

    wd: float
    theta: torch.Tensor
    other_wd: float
    other_theta: torch.Tensor
    validation: list[dict[str, float]]


def _validation_split(
    Xtr: torch.Tensor, ytr: torch.Tensor, c: int, bias: bool, val_fraction: Any, seed: int
) -> tuple[Softmax, Softmax]:
    """The fit and validation objectives of the stratified split of the training set."""
    frac = check_unit_interval("val_fraction", val_fraction)
    if frac == 0.0:
        raise ValueError("val_fraction must lie in (0, 1) to choose the weight decay")
    kept, held = holdout_split(ytr, frac, seed)
    if held.numel() == 0:
        raise ValueError(
            "val_fraction: the validation split is empty (too few samples per class); "
            "pass weight_decay= instead"
        )
    part = Softmax(Xtr[kept].contiguous(), ytr[kept], c, bias)
    val = Softmax(Xtr[held].contiguous(), ytr[held], c, bias)
    return part, val


def _walk_weight_decays(
    fit: _Fit, part: Softmax, val: Softmax, grid: list[float], scale: float,
    theta: torch.Tensor, patience: int, select: str,
) -> _Walk:
    """Fit ``part`` at lambda = w * ``scale`` for w in ``grid`` (decreasing), warm started,
    scoring each fit on ``val``, until ``patience`` lambdas in a row improve neither the best
    validation accuracy nor the best validation cross-entropy (:func:`linear_probe`)."""
    validation: list[dict[str, float]] = []
    best: tuple[float, float] | None = None
    best_theta, wd = theta, grid[0] * scale
    other: tuple[float, float] | None = None  # the same walk under the other rule
    other_theta, other_wd = theta, wd
    stale, top_acc, low_ce = 0, -math.inf, math.inf
    for rel in grid:
        lam = rel * scale
        theta, its, _ = fit(part, lam, theta)
        acc, ce = cross_entropy_accuracy(val.logits(theta), val.y)
        validation.append(
            {"relative_weight_decay": rel, "weight_decay": lam, "val_accuracy": acc,
             "val_cross_entropy": ce, "iterations": float(its)}
        )
        key = (acc, -ce) if select == "accuracy" else (-ce, acc)
        if best is None or key > best:
            best, best_theta, wd = key, theta, lam
        key_other = (-ce, acc) if select == "accuracy" else (acc, -ce)
        if other is None or key_other > other:
            other, other_theta, other_wd = key_other, theta, lam
        stale = 0 if (acc > top_acc or ce < low_ce) else stale + 1
        top_acc, low_ce = max(top_acc, acc), min(low_ce, ce)
        if stale >= patience:
            break
    return _Walk(wd, best_theta, other_wd, other_theta, validation)


def _other_selection(
    fit: _Fit, full: Softmax, test: Softmax, walk: _Walk, wd: float, acc: float, ce: float,
    select: str,
) -> dict[str, Any]:
    """The probe of the other selection rule on the same walk, refit on the whole training
    set (unless it chose the same lambda) and scored on the test set."""
    rule = "cross_entropy" if select == "accuracy" else "accuracy"
    if walk.other_wd == wd:
        o_acc, o_ce = acc, ce
    else:
        o_theta, _, _ = fit(full, walk.other_wd, walk.other_theta)
        o_acc, o_ce = cross_entropy_accuracy(test.logits(o_theta), test.y)
    return {"select": rule, "weight_decay": walk.other_wd, "accuracy": o_acc,
            "cross_entropy": o_ce}


@serial_when_small
def linear_probe(
    H_train: torch.Tensor,
    y_train: torch.Tensor,
    H_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int | None = None,
    bias: bool = False,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    weight_decay: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-6,
    patience: int = 2,
    select: str = "accuracy",
    dtype: torch.dtype = torch.float64,
) -> LinearProbeResult:
    """Multinomial logistic-regression probe fit by full-batch L-BFGS (module docstring).

    In phases: the checks; the setup of the objectives; the choice of lambda
    (:func:`_validation_split`, :func:`_walk_weight_decays`) unless ``weight_decay`` is given;
    the refit on the whole training set and the report (:func:`_probe_result`).

    Args:
        H_train, y_train, H_test, y_test: embeddings (N, d) / (M, d) and integer labels.
        num_classes: C (default: 1 + the largest label).
        bias: add an (unpenalized) bias.
        weight_decays: the grid searched on the validation split, relative to the feature
            scale: lambda = w E||h||^2 (E over the training set) for each w > 0.
        weight_decay: a fixed, absolute lambda >= 0 instead (no validation split; lambda = 0 is
            allowed but diverges on separable data, then ``converged`` is False).
        val_fraction: held-out fraction of each class for the selection, in (0, 1).
        seed: seed of the split.
        max_iter: L-BFGS iterations per fit.
        tol: convergence when max |dF/dW| <= tol * sqrt(E||h||^2) and max |dF/db| <= tol
            (F the mean objective).
        patience: stop the lambda walk after this many consecutive lambdas that improve
            neither the best validation accuracy nor the best validation cross-entropy.
        select: ``accuracy`` (highest validation accuracy, ties to the lower validation
            cross-entropy; the usual linear-evaluation protocol) or ``cross_entropy`` (lowest
            validation cross-entropy, ties to the higher accuracy).
        dtype: float64 (default) or float32 for the fit. float32 is faster but its gradients are
            only accurate to about 1e-5 on large N: a smaller ``tol`` then stops at the rounding
            floor (5 steps in a row without a resolvable decrease) with ``converged`` False.
    """
    Htr, ytr, Hte, yte, c = check_split(H_train, y_train, H_test, y_test, num_classes)
    max_iter, tol, patience, dt = _check_probe_options(bias, max_iter, tol, patience, select,
                                                       dtype)
    Xtr = Htr.detach().to(dt).contiguous()
    Xte = Hte.detach().to(dt)
    full = Softmax(Xtr, ytr, c, bias)
    pre = Preconditioner(Xtr, c, bias)
    theta = torch.zeros(full.size(), dtype=dt, device=Xtr.device)
    fit: _Fit = functools.partial(fit_logreg, max_iter=max_iter, tol=tol, pre=pre)
    walk: _Walk | None = None
    if weight_decay is not None:
        wd = check_nonnegative("weight_decay", weight_decay)
    else:
        grid = check_grid(weight_decays)
        part, val = _validation_split(Xtr, ytr, c, bias, val_fraction, seed)
        walk = _walk_weight_decays(fit, part, val, grid, pre.scale, theta, patience, select)
        wd, theta = walk.wd, walk.theta
    test = Softmax(Xte.contiguous(), yte, c, bias)
    return _probe_result(fit, full, test, theta, wd, walk, select, tol)


def _probe_result(
    fit: _Fit, full: Softmax, test: Softmax, theta: torch.Tensor, wd: float,
    walk: _Walk | None, select: str, tol: float,
) -> LinearProbeResult:
    """The last phase of :func:`linear_probe`: the refit on the whole training set at ``wd``
    from ``theta``, its test and training scores, the other rule's probe (after a walk) and
    the :class:`LinearProbeResult`."""
    theta, its, gmax = fit(full, wd, theta)
    acc, ce = cross_entropy_accuracy(test.logits(theta), test.y)
    other_selection: dict[str, Any] | None = None
    if walk is not None:
        other_selection = _other_selection(fit, full, test, walk, wd, acc, ce, select)
    tr_acc, tr_ce = cross_entropy_accuracy(full.logits(theta), full.y)
    W, b = full.split(theta)
    return LinearProbeResult(
        bias=full.bias,
        weight_decay=wd,
        selected_by="fixed" if walk is None else select,
        accuracy=acc,
        cross_entropy=ce,
        train_accuracy=tr_acc,
        train_cross_entropy=tr_ce,
        validation=[] if walk is None else walk.validation,
        other_selection=other_selection,
        iterations=its,
        converged=gmax <= tol,
        grad_max=gmax,
        tol=tol,
        weight=W.clone(),
        bias_vector=None if b is None else b.clone(),
    )


def check_grid(weight_decays: Any) -> list[float]:
    try:
        grid = [float(v) for v in weight_decays]
    except (TypeError, ValueError):
        raise ValueError(
            f"weight_decays must be a non-empty sequence of numbers > 0; got {weight_decays!r}"
        ) from None
    if not grid or not all(math.isfinite(v) and v > 0 for v in grid):
        raise ValueError(
            f"weight_decays must be a non-empty sequence of numbers > 0; got {weight_decays!r}"
        )
    return sorted(set(grid), reverse=True)

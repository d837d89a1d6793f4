"""Downstream evaluation of a representation from train/test embeddings and labels (SPEC A5).

What a representation is worth to a classifier on top of it, measured four ways:

- :func:`mean_classifier`: the mean classifier of Arora et al. (2019): class means mu_c of the
  *training* features, logits f(x)^T mu_c / t on the test features, top-1 accuracy of the argmax
  and the mean cross-entropy -log softmax, which is Bao et al. (2022)'s R_mu-supv (at t = 1 it is
  exactly their convention; see "Temperature" below). Conventions (``normalize_features`` /
  ``normalize_means``):

  * ``raw`` (False / False): features as given, means not normalized. Arora et al.; Bao et al.
    with ``normalize=False``; the Jiang et al. accuracy (on unit-ball outputs as given).
  * ``normalized`` (True / False): features L2-normalized (train and test), mu_c the mean of the
    normalized training features, not renormalized: Bao et al.'s ``normalize=True``.
  * ``cosine`` (True / True): the same with unit-norm means, i.e. logits cos(f(x), mu_c) / t.

- :func:`linear_probe`: multinomial logistic regression on the features as given, bias-free or with
  a bias, minimizing mean cross-entropy + (lambda / 2) ||W||_F^2 (the bias is not penalized), fit
  to convergence by full-batch L-BFGS, preconditioned by (kappa Sigma_2 + lambda I)^{-1} (Sigma_2 =
  E[h h^T], kappa = 1/C; the iteration count then barely depends on the conditioning of the
  features), until the gradient is below ``tol``: max |dF/dW| <= tol * r and max |dF/db| <= tol,
  with r = sqrt(E||h||^2) (a scale-free test; r = 1 for unit-norm features; default 1e-6, in
  float64; scikit-learn's lbfgs stops at 1e-4). A tight tolerance matters on (nearly) separable
  data, where the objective is flat and a loose one stops far from the minimizer (visible in NC3).
  lambda is chosen on a stratified validation split of the training set (``val_fraction``, fixed
  ``seed``) over a grid *relative to the feature scale*, lambda = w E||h||^2 for w in
  ``weight_decays`` (features scaled by a scale the optimal W by 1/a, so lambda must scale by a^2:
  then the selected probe, its accuracy and its cross-entropy do not change when the embeddings are
  rescaled), walked from large to small lambda with warm starts; the walk stops after ``patience``
  lambdas in a row that improve neither the best validation accuracy nor the best validation
  cross-entropy. ``select="accuracy"`` (default; the usual linear-evaluation protocol) takes the
  highest validation accuracy, ties to the lower validation cross-entropy;
  ``select="cross_entropy"`` the lowest validation cross-entropy (a proper, smooth score; it can
  prefer weakly regularized probes that are slightly less accurate, while the accuracy rule can pick
  heavily regularized, badly calibrated ones). The probe is then refit on the whole training set at
  that lambda, warm started, and reports test accuracy and test cross-entropy; the probe of the
  other rule on the same walk is refit and reported too (``other_selection``).

- :func:`unit_norm_supervised_loss`: the L_sup of the seed slides on the data itself,
  ``inf_{||w_c|| = 1} mean_i l({h_i^T (w_{y_i} - w_c')}_{c' != y_i})`` with l from
  :func:`contrastlab.losses.family.score_loss` (logistic, infonce, infonce-mean; the empirical
  class frequencies play the role of the prior). The convex relaxation ||w_c|| <= 1 is solved by
  spectral projected gradient (Birgin, Martinez & Raydan 2000: Barzilai-Borwein steps, non-monotone
  Armijo search, projection onto the product of unit balls) to a Frank-Wolfe duality gap ``sum_c
  (g_c^T w_c + ||g_c||) <= tol``, which certifies the relaxed value to ``tol``. The relaxation is
  *tight* (equal to the unit-norm infimum) when every ||w_c|| = 1 at the optimum, or when the
  embeddings span a proper subspace of R^d (dimensional collapse: the short w_c are lifted along a
  null direction without changing any score), or when a local solve on the product of spheres from
  the renormalized relaxed optimum reaches the relaxed value (within ``max(10 tol, gap)``).
  Otherwise that local solve gives the reported value (an upper bound on the unit-norm infimum) and
  ``relaxed_value`` is a lower bound. The same quantity for class-collapsed representations is
  :func:`contrastlab.theory.downstream.supervised_loss`.

- :func:`knn_classifier`: weighted k-nearest neighbours as in SSL papers (Wu et al. 2018, DINO):
  cosine similarity s between L2-normalized test and training features, the k most similar
  training points vote for their class with weight exp(s / t) (default k = 200, t = 0.07);
  prediction = argmax of the summed votes. Chunked matrix products and ``topk``.

Temperature. R_mu-supv (:func:`mean_classifier`) and L_sup (:func:`unit_norm_supervised_loss`)
both take an explicit ``temperature`` t dividing their scores (the logits f(x)^T mu_c / t, and
the margins f(x)^T (w_y - w_c) / t of the loss family), both defaulting to t = 1, and
:func:`downstream_report` takes one ``temperature`` for both (``mean_temperature`` /
``lsup_temperature`` override it). The convention, shared with
:mod:`contrastlab.theory.downstream` (SPEC A5, A6): evaluate them at the temperature of the
contrastive loss that trained the representation, so that R_cont, R_mu-supv and L_sup are on one
score scale; for a loss given by its score function and t that is
:func:`contrastlab.theory.downstream.downstream_temperature` (t for the InfoNCE forms, 1 for
``logistic`` and ``hinge``). Bao et al.'s bounds relate R_cont and R_mu-supv at t = 1 on
unit-sphere features (b = 1), which is what the Bao recipes train and evaluate; Nozawa & Sato
use t = 0.5 for both. ``logistic`` L_sup ignores t (it is InfoNCE at t = 1).

:func:`downstream_report` runs them all and returns a :class:`DownstreamReport`;
:func:`geometry_command_output` prints both reports of a saved ``.npz`` of embeddings (the
``contrastlab geometry`` command). Natural logarithms throughout. Bad input raises a one-line
``ValueError`` naming the argument.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from contrastlab._tables import measure_table
from contrastlab._validation import (
    check_choice,
    check_labels,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)
from contrastlab.geometry import (
    GeometryReport,
    check_embeddings,
    check_label_range,
    geometry_report,
    infer_num_classes,
    serial_when_small,
)

__all__ = [
    "DEFAULT_WEIGHT_DECAYS",
    "LSUP_LOSSES",
    "MEAN_CLASSIFIERS",
    "PROBES",
    "PROBE_SELECTION",
    "DownstreamReport",
    "KNNResult",
    "LinearProbeResult",
    "LsupResult",
    "MeanClassifierResult",
    "downstream_report",
    "geometry_command_output",
    "knn_classifier",
    "linear_probe",
    "mean_classifier",
    "stratified_split",
    "unit_norm_supervised_loss",
]

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
MEAN_CLASSIFIERS: dict[str, tuple[bool, bool]] = {
    "raw": (False, False),
    "normalized": (True, False),
    "cosine": (True, True),
}
PROBES = ("bias-free", "bias")
PROBE_SELECTION = ("accuracy", "cross_entropy")
LSUP_LOSSES = ("logistic", "infonce", "infonce-mean")

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# input checks and helpers
# --------------------------------------------------------------------------------------------


def _check_split(
    H_train: Any, y_train: Any, H_test: Any, y_test: Any, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    Htr = check_embeddings("H_train", H_train)
    ytr = check_labels("y_train", y_train, Htr.shape[0])
    Hte = check_embeddings("H_test", H_test)
    yte = check_labels("y_test", y_test, Hte.shape[0])
    if Hte.shape[1] != Htr.shape[1]:
        raise ValueError(
            f"H_test must have the dimension of H_train ({Htr.shape[1]}); got {Hte.shape[1]}"
        )
    if num_classes is None and yte.numel() and ytr.numel() and int(yte.max()) > int(ytr.max()):
        raise ValueError(
            f"y_test: label {int(yte.max())} exceeds every training label (max "
            f"{int(ytr.max())}); fix the labels or pass num_classes"
        )
    c = infer_num_classes(num_classes, ytr, yte)
    check_label_range("y_train", ytr, c)
    check_label_range("y_test", yte, c)
    _check_coverage(ytr, c)
    yte = yte.to(device=Htr.device, dtype=torch.int64)
    return Htr, ytr.to(device=Htr.device, dtype=torch.int64), Hte.to(Htr.device), yte, c


def _check_coverage(y: torch.Tensor, c: int, name: str = "y_train") -> None:
    n = y.shape[0]
    if n < c:
        raise ValueError(f"{name}: need at least num_classes={c} training samples; got {n}")
    counts = torch.bincount(y.to(torch.int64), minlength=c)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        shown = ", ".join(str(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{name}: every class 0..{c - 1} needs at least one training sample (labels must "
            f"cover the classes); missing: {shown}"
        )


def _check_dtype(dtype: Any) -> torch.dtype:
    return check_choice("dtype", dtype, (torch.float32, torch.float64))


def _to_plain(value: Any) -> Any:
    """Dataclasses / dicts / lists to JSON-ready Python values, dropping tensor fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not isinstance(getattr(value, f.name), torch.Tensor) and f.name != "stats"
        }
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def stratified_split(
    y: torch.Tensor, fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held_out) holding out ``round(fraction * n_c)`` samples of each class c.

    At least one sample of every class stays in ``kept`` (so a class with one sample is never
    held out). Reproducible: a ``torch.Generator`` seeded with ``seed``. Both index tensors are
    sorted.
    """
    if not isinstance(y, torch.Tensor) or y.ndim != 1:
        raise ValueError("y must be a 1-D torch.Tensor of integer class labels")
    y = check_labels("y", y, y.shape[0])
    frac = check_unit_interval("fraction", fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    yc = y.detach().cpu().to(torch.int64)
    perm = torch.randperm(yc.shape[0], generator=g)
    order = perm[torch.argsort(yc[perm], stable=True)]  # grouped by class, shuffled within
    counts = torch.bincount(yc - int(yc.min()) if yc.numel() else yc)
    held: list[torch.Tensor] = []
    start = 0
    for n_c in counts.tolist():
        n_hold = min(round(frac * n_c), max(n_c - 1, 0))
        held.append(order[start : start + n_hold])
        start += n_c
    held_idx = torch.sort(torch.cat(held)).values if held else torch.empty(0, dtype=torch.int64)
    mask = torch.ones(yc.shape[0], dtype=torch.bool)
    mask[held_idx] = False
    kept = mask.nonzero().flatten()
    return kept.to(y.device), held_idx.to(y.device)


def _cross_entropy_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logp = torch.log_softmax(logits.to(_F64), dim=1)
    ce = float(-logp.gather(1, y[:, None]).mean())
    acc = float((logits.argmax(dim=1) == y).to(_F64).mean())
    return acc, ce


# --------------------------------------------------------------------------------------------
# mean classifier
# --------------------------------------------------------------------------------------------


@dataclass
class MeanClassifierResult:
    """The mean classifier (see the module docstring for the conventions).

    Attributes:
        accuracy: top-1 test accuracy of argmax_c f(x)^T mu_c.
        cross_entropy: mean test -log softmax_y(f(x)^T mu / t): Bao et al.'s R_mu-supv at the
            temperature t (theirs when t = 1; module docstring, "Temperature").
        normalize_features, normalize_means, temperature: the convention used.
        means: (C, d) float64 class means used (not in ``to_dict``).
    """

    accuracy: float
    cross_entropy: float
    normalize_features: bool
    normalize_means: bool
    temperature: float
    means: torch.Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


@serial_when_small
def mean_classifier(
    H_train: torch.Tensor,
    y_train: torch.Tensor,
    H_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int | None = None,
    normalize_features: bool = False,
    normalize_means: bool = False,
    temperature: float = 1.0,
) -> MeanClassifierResult:
    """Mean classifier of Arora et al. (2019) / R_mu-supv of Bao et al. (2022), SPEC A5.

    mu_c = mean of the (optionally L2-normalized) training features of class c (optionally
    renormalized to unit norm); test logits f(x)^T mu_c / t with f(x) normalized when
    ``normalize_features``. A zero vector stays zero under normalization; a tie for the largest
    logit goes to the smallest class index. ``temperature`` t > 0 (default 1, Bao et al.): pass
    the contrastive loss's temperature, the same t as L_sup (module docstring, "Temperature");
    the accuracy does not depend on it.
    """
    Htr, ytr, Hte, yte, c = _check_split(H_train, y_train, H_test, y_test, num_classes)
    for name, flag in (("normalize_features", normalize_features),
                       ("normalize_means", normalize_means)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False; got {flag!r}")
    t = check_positive("temperature", temperature)
    return _mean_classifier(Htr, ytr, Hte, yte, c, normalize_features, normalize_means, t)


def _mean_classifier(
    Htr: torch.Tensor,
    ytr: torch.Tensor,
    Hte: torch.Tensor,
    yte: torch.Tensor,
    c: int,
    normalize_features: bool,
    normalize_means: bool,
    t: float,
) -> MeanClassifierResult:
    Xtr = Htr.detach().to(_F64)
    Xte = Hte.detach().to(_F64)
    if normalize_features:
        Xtr = F.normalize(Xtr, dim=1)
        Xte = F.normalize(Xte, dim=1)
    counts = torch.bincount(ytr, minlength=c).to(_F64)
    means = torch.zeros(c, Xtr.shape[1], dtype=_F64, device=Xtr.device).index_add_(0, ytr, Xtr)
    means /= counts[:, None]
    if normalize_means:
        means = F.normalize(means, dim=1)
    acc, ce = _cross_entropy_accuracy(Xte @ means.T / t, yte)
    return MeanClassifierResult(acc, ce, normalize_features, normalize_means, t, means)


# --------------------------------------------------------------------------------------------
# linear probe
# --------------------------------------------------------------------------------------------


@dataclass
class LinearProbeResult:
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

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


class _Softmax:
    """Mean cross-entropy of logits X W^T / tau (+ b, + offsets) and its gradient, no autograd."""

    def __init__(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        c: int,
        bias: bool,
        tau: float = 1.0,
        other_offset: float = 0.0,
    ) -> None:
        self.X, self.y, self.c, self.bias = X, y, c, bias
        self.n, self.d = X.shape
        self.tau = tau
        self.other_offset = other_offset  # added to every logit but the true class's
        self.flat_idx = torch.arange(self.n, device=X.device) * c + y

    def size(self) -> int:
        return self.c * self.d + (self.c if self.bias else 0)

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        W = theta[: self.c * self.d].view(self.c, self.d)
        b = theta[self.c * self.d :] if self.bias else None
        return W, b

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        W, b = self.split(theta)
        Z = self.X @ W.T if b is None else torch.addmm(b, self.X, W.T)
        if self.tau != 1.0:
            Z /= self.tau
        if self.other_offset != 0.0:
            Z += self.other_offset
            Z.view(-1)[self.flat_idx] -= self.other_offset
        return Z

    def value_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        Z = self.logits(theta)
        logp = torch.log_softmax(Z, dim=1)
        value = -float(logp.view(-1)[self.flat_idx].sum(dtype=_F64)) / self.n
        P = logp.exp_()
        P.view(-1)[self.flat_idx] -= 1.0
        P /= self.n * self.tau
        g = torch.empty_like(theta)
        gW, _ = self.split(g)
        torch.mm(P.T, self.X, out=gW)
        if self.bias:
            g[self.c * self.d :] = P.sum(dim=0)
        return value, g


class _Preconditioner:
    """Initial inverse Hessian of preconditioned L-BFGS for mean CE + lambda/2 ||W||^2.

    The Hessian in W is approximately kappa Sigma_2 (x) I_C + lambda I, with Sigma_2 = X^T X / N
    the feature second moment and kappa the curvature of the softmax (1/C at uniform logits), so
    H0 = (kappa Sigma_2 + lambda I)^{-1} acting on each row of the (C, d) gradient (and 1/kappa on
    the bias). It makes the iteration count nearly independent of the conditioning of the
    features (anisotropic or dimensionally collapsed embeddings); it changes neither the objective
    nor its minimizer.
    """

    def __init__(self, X: torch.Tensor, c: int, bias: bool) -> None:
        second = (X.T @ X).to(_F64) / X.shape[0]
        evals, evecs = torch.linalg.eigh(second)
        self.evals = evals.clamp(min=0.0)
        self.evecs = evecs
        self.c, self.d, self.bias = c, X.shape[1], bias
        self.kappa = 1.0 / c
        self.dtype = X.dtype
        self.scale = max(float(self.evals.sum()), 1e-300)  # E ||h||^2
        self.rms = math.sqrt(self.scale)

    def matrix(self, wd: float) -> torch.Tensor:
        inv = 1.0 / (self.kappa * self.evals + max(wd, 1e-12 * float(self.evals[-1])))
        return ((self.evecs * inv) @ self.evecs.T).to(self.dtype)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum(dtype=_F64))


class _Penalized:
    """The objective of :func:`_fit_logreg`: mean CE of ``obj`` + wd/2 ||W||^2 (the bias is not
    penalized), with the initial inverse Hessian H0 of :class:`_Preconditioner` at ``wd`` and
    the scale-free convergence measure."""

    def __init__(self, obj: _Softmax, wd: float, pre: _Preconditioner) -> None:
        self.obj, self.wd, self.pre = obj, wd, pre
        self.cd = obj.c * obj.d
        self.M = pre.matrix(wd)

    def fg(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(value, gradient) at ``theta``."""
        value, g = self.obj.value_grad(theta)
        W = theta[: self.cd]
        value += 0.5 * self.wd * float((W * W).sum(dtype=_F64))
        g[: self.cd] += self.wd * W
        return value, g

    def h0(self, q: torch.Tensor) -> torch.Tensor:
        """H0 q: (kappa Sigma_2 + wd I)^{-1} on each row of the weight part, 1/kappa on the
        bias."""
        cd, obj = self.cd, self.obj
        r = torch.empty_like(q)
        r[:cd] = (q[:cd].view(obj.c, obj.d) @ self.M).view(-1)
        if obj.bias:
            r[cd:] = q[cd:] / self.pre.kappa
        return r

    def gmax(self, g: torch.Tensor) -> float:
        """max |dF/dW| / sqrt(E||h||^2), and max |dF/db| with a bias: the larger."""
        top = float(g[: self.cd].abs().max()) / self.pre.rms
        return max(top, float(g[self.cd :].abs().max())) if self.obj.bias else top


_Pairs = list[tuple[torch.Tensor, torch.Tensor, float]]  # L-BFGS (s, y, 1 / s^T y), oldest first


def _lbfgs_direction(
    prob: _Penalized, g: torch.Tensor, pairs: _Pairs, gamma: float
) -> tuple[torch.Tensor, float]:
    """The two-loop recursion: (direction -H g, g^T direction). When that is not a descent
    direction, ``pairs`` is cleared and the preconditioned gradient -H0 g is used instead."""
    q = g.clone()
    alphas: list[float] = []
    for s_k, y_k, rho in reversed(pairs):
        a = rho * _dot(s_k, q)
        q -= a * y_k
        alphas.append(a)
    r = gamma * prob.h0(q)
    for (s_k, y_k, rho), a in zip(pairs, reversed(alphas), strict=True):
        r += (a - rho * _dot(y_k, r)) * s_k
    direction = -r
    gtd = _dot(g, direction)
    if not gtd < 0.0:  # safeguard: restart from the preconditioned gradient
        pairs.clear()
        direction = -prob.h0(g)
        gtd = _dot(g, direction)
    return direction, gtd


def _armijo(
    prob: _Penalized, theta: torch.Tensor, f: float, direction: torch.Tensor, gtd: float
) -> tuple[torch.Tensor, float, torch.Tensor] | None:
    """Backtracking from step 1 to the Armijo condition: (the accepted point, its value, its
    gradient), or None when the step falls below 1e-12 (no decrease possible: rounding)."""
    step = 1.0
    while True:
        trial = theta + step * direction
        f_new, g_new = prob.fg(trial)
        if f_new <= f + 1e-4 * step * gtd:
            return trial, f_new, g_new
        if step < 1e-12:
            return None
        # minimizer of the quadratic through f, gtd and f_new, kept in [0.1, 0.5] step
        denom = 2.0 * (f_new - f - gtd * step)
        t_q = -gtd * step * step / denom if denom > 0 else 0.5 * step
        step = min(max(t_q, 0.1 * step), 0.5 * step)


def _push_pair(
    prob: _Penalized, pairs: _Pairs, s_vec: torch.Tensor, y_vec: torch.Tensor, gamma: float,
    history: int,
) -> float:
    """Append the curvature pair (s, y) when s^T y is safely positive (dropping the oldest
    beyond ``history``) and return the new scaling gamma = s^T y / y^T H0 y (else the old)."""
    sy = _dot(s_vec, y_vec)
    if sy > 1e-12 * max(_dot(s_vec, s_vec), 1e-300):
        pairs.append((s_vec, y_vec, 1.0 / sy))
        if len(pairs) > history:
            pairs.pop(0)
        gamma = sy / _dot(y_vec, prob.h0(y_vec))
    return gamma


def _fit_logreg(
    obj: _Softmax,
    wd: float,
    theta0: torch.Tensor,
    max_iter: int,
    tol: float,
    pre: _Preconditioner,
    history: int = 10,
) -> tuple[torch.Tensor, int, float]:
    """Preconditioned full-batch L-BFGS (two-loop recursion, H0 from :class:`_Preconditioner`,
    Armijo backtracking; the objective is strictly convex for wd > 0, so every accepted step has
    s^T y > 0) on mean CE + wd/2 ||W||^2, until max |gradient| <= tol.

    Each iteration: the direction (:func:`_lbfgs_direction`), the line search
    (:func:`_armijo`; the fit stops when it finds no decrease), the curvature pair
    (:func:`_push_pair`); the fit also stops after 5 steps in a row whose decrease is at the
    rounding level of the dtype.

    Returns (theta, iterations, the scale-free gradient measure of :func:`linear_probe`).
    """
    prob = _Penalized(obj, wd, pre)
    theta = theta0.clone()
    f, g = prob.fg(theta)
    pairs: _Pairs = []
    gamma = 1.0
    it = 0
    stalled = 0  # consecutive steps whose decrease is at the rounding level of the dtype
    eps = torch.finfo(theta.dtype).eps
    while prob.gmax(g) > tol and it < max_iter:
        it += 1
        direction, gtd = _lbfgs_direction(prob, g, pairs, gamma)
        accepted = _armijo(prob, theta, f, direction, gtd)
        if accepted is None:
            return theta, it, prob.gmax(g)  # no decrease possible (rounding)
        trial, f_new, g_new = accepted
        gamma = _push_pair(prob, pairs, trial - theta, g_new - g, gamma, history)
        stalled = stalled + 1 if f - f_new <= 4.0 * eps * max(1.0, abs(f)) else 0
        theta, f, g = trial, f_new, g_new
        if stalled >= 5:  # the tolerance is below what this dtype can resolve
            break
    return theta, it, prob.gmax(g)


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
    return max_iter, tol, patience, _check_dtype(dtype)


_Fit = Callable[[_Softmax, float, torch.Tensor], tuple[torch.Tensor, int, float]]


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
) -> tuple[_Softmax, _Softmax]:
    """The fit and validation objectives of the stratified split of the training set."""
    frac = check_unit_interval("val_fraction", val_fraction)
    if frac == 0.0:
        raise ValueError("val_fraction must lie in (0, 1) to choose the weight decay")
    kept, held = stratified_split(ytr, frac, seed)
    if held.numel() == 0:
        raise ValueError(
            "val_fraction: the validation split is empty (too few samples per class); "
            "pass weight_decay= instead"
        )
    part = _Softmax(Xtr[kept].contiguous(), ytr[kept], c, bias)
    val = _Softmax(Xtr[held].contiguous(), ytr[held], c, bias)
    return part, val


def _walk_weight_decays(
    fit: _Fit, part: _Softmax, val: _Softmax, grid: list[float], scale: float,
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
        acc, ce = _cross_entropy_accuracy(val.logits(theta), val.y)
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
    fit: _Fit, full: _Softmax, test: _Softmax, walk: _Walk, wd: float, acc: float, ce: float,
    select: str,
) -> dict[str, Any]:
    """The probe of the other selection rule on the same walk, refit on the whole training
    set (unless it chose the same lambda) and scored on the test set."""
    rule = "cross_entropy" if select == "accuracy" else "accuracy"
    if walk.other_wd == wd:
        o_acc, o_ce = acc, ce
    else:
        o_theta, _, _ = fit(full, walk.other_wd, walk.other_theta)
        o_acc, o_ce = _cross_entropy_accuracy(test.logits(o_theta), test.y)
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
    Htr, ytr, Hte, yte, c = _check_split(H_train, y_train, H_test, y_test, num_classes)
    max_iter, tol, patience, dt = _check_probe_options(bias, max_iter, tol, patience, select,
                                                       dtype)
    Xtr = Htr.detach().to(dt).contiguous()
    Xte = Hte.detach().to(dt)
    full = _Softmax(Xtr, ytr, c, bias)
    pre = _Preconditioner(Xtr, c, bias)
    theta = torch.zeros(full.size(), dtype=dt, device=Xtr.device)
    fit: _Fit = functools.partial(_fit_logreg, max_iter=max_iter, tol=tol, pre=pre)
    walk: _Walk | None = None
    if weight_decay is not None:
        wd = check_nonnegative("weight_decay", weight_decay)
    else:
        grid = _check_grid(weight_decays)
        part, val = _validation_split(Xtr, ytr, c, bias, val_fraction, seed)
        walk = _walk_weight_decays(fit, part, val, grid, pre.scale, theta, patience, select)
        wd, theta = walk.wd, walk.theta
    test = _Softmax(Xte.contiguous(), yte, c, bias)
    return _probe_result(fit, full, test, theta, wd, walk, select, tol)


def _probe_result(
    fit: _Fit, full: _Softmax, test: _Softmax, theta: torch.Tensor, wd: float,
    walk: _Walk | None, select: str, tol: float,
) -> LinearProbeResult:
    """The last phase of :func:`linear_probe`: the refit on the whole training set at ``wd``
    from ``theta``, its test and training scores, the other rule's probe (after a walk) and
    the :class:`LinearProbeResult`."""
    theta, its, gmax = fit(full, wd, theta)
    acc, ce = _cross_entropy_accuracy(test.logits(theta), test.y)
    other_selection: dict[str, Any] | None = None
    if walk is not None:
        other_selection = _other_selection(fit, full, test, walk, wd, acc, ce, select)
    tr_acc, tr_ce = _cross_entropy_accuracy(full.logits(theta), full.y)
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


def _check_grid(weight_decays: Any) -> list[float]:
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


# --------------------------------------------------------------------------------------------
# L_sup with unit-norm class weights, on the data
# --------------------------------------------------------------------------------------------


@dataclass
class LsupResult:
    """L_sup with unit-norm class weights (see the module docstring).

    Attributes:
        value: the loss at the reported unit-norm W (the infimum when ``tight``).
        relaxed_value: the optimum of the relaxation ||w_c|| <= 1 (a lower bound), to ``gap``.
        tight: the relaxation equals the unit-norm infimum (``value`` is then global).
        gap: certified Frank-Wolfe duality gap of the relaxed solve.
        iterations: projected-gradient iterations; converged: ``gap <= tol``.
        loss, temperature: the member of the loss family.
        weight: the (C, d) unit-norm W (not in ``to_dict``).
    """

    value: float
    relaxed_value: float
    tight: bool
    gap: float
    iterations: int
    converged: bool
    loss: str
    temperature: float
    weight: torch.Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def _project_balls(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True).clamp(min=1.0)


def _spg_balls(
    fg: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    W0: torch.Tensor,
    tol: float,
    max_iter: int,
    memory: int = 10,
) -> tuple[torch.Tensor, float, torch.Tensor, int, float]:
    """Spectral projected gradient on the product of unit balls; returns W, f, g, its, gap."""
    W = _project_balls(W0)
    f, g = fg(W)
    history = [f]
    alpha = 1.0 / max(float(g.norm()), 1e-12)
    gap = math.inf
    it = 0
    while True:
        gap = float((g * W).sum(dtype=_F64)) + float(g.norm(dim=1).sum(dtype=_F64))
        if gap <= tol or it >= max_iter:
            break
        it += 1
        D = _project_balls(W - alpha * g) - W
        slope = float((g * D).sum(dtype=_F64))
        f_ref = max(history[-memory:])
        lam = 1.0
        while True:
            Wn = W + lam * D
            fn, gn = fg(Wn)
            if fn <= f_ref + 1e-4 * lam * slope or lam < 1e-10:
                break
            lam *= 0.5
        s, r = Wn - W, gn - g
        sr = float((s * r).sum(dtype=_F64))
        alpha = float((s * s).sum(dtype=_F64)) / sr if sr > 0 else 1e10
        alpha = min(max(alpha, 1e-10), 1e10)
        W, f, g = Wn, fn, gn
        history.append(f)
    return W, f, g, it, max(gap, 0.0)


@serial_when_small
def unit_norm_supervised_loss(
    H: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None = None,
    loss: str = "infonce",
    temperature: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 3000,
    dtype: torch.dtype = torch.float64,
) -> LsupResult:
    """L_sup of the seed slides on embeddings H with labels y (module docstring).

    L_sup = inf_{||w_1|| = .. = ||w_C|| = 1} (1/N) sum_i l({h_i^T (w_{y_i} - w_c')}_{c' != y_i})
    with l = :func:`contrastlab.losses.family.score_loss` (``loss`` in :data:`LSUP_LOSSES`;
    ``temperature`` for the InfoNCE forms, default 1: the same t as the mean classifier's
    R_mu-supv, module docstring "Temperature"). ``hinge`` is not supported here (not smooth; use
    :func:`contrastlab.theory.downstream.supervised_loss` for class-collapsed representations).
    """
    H = check_embeddings("H", H)
    y = check_labels("y", y, H.shape[0])
    c = infer_num_classes(num_classes, y)
    check_label_range("y", y, c)
    _check_coverage(y, c, "y")
    check_choice("loss", loss, LSUP_LOSSES)
    t = check_positive("temperature", temperature)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    dt = _check_dtype(dtype)
    return _lsup(H.detach().to(dt).contiguous(), y.to(H.device, torch.int64), c, loss, t, tol,
                 max_iter)


def _lsup(
    X: torch.Tensor, y: torch.Tensor, c: int, loss: str, t: float, tol: float, max_iter: int
) -> LsupResult:
    n, d = X.shape
    tau = 1.0 if loss == "logistic" else t
    offset = -math.log(c - 1) if loss == "infonce-mean" else 0.0
    obj = _Softmax(X, y, c, bias=False, tau=tau, other_offset=offset)

    def fg(W: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, g = obj.value_grad(W.reshape(-1))
        return value, g.view(c, d)

    # start from the unit-norm class means (the mean classifier's directions)
    counts = torch.bincount(y, minlength=c).to(X.dtype)
    means = torch.zeros(c, d, dtype=X.dtype, device=X.device).index_add_(0, y, X)
    W0 = F.normalize(means / counts[:, None], dim=1)
    W, f_relaxed, g, its, gap = _spg_balls(fg, W0, tol, max_iter)
    norms = W.norm(dim=1)
    tight = bool((norms >= 1.0 - 1e-6).all())
    value = f_relaxed
    if tight:
        W = F.normalize(W, dim=1)
        value, _ = fg(W)
    else:
        # a null direction of the data lifts the short rows to unit norm for free
        evals, evecs = torch.linalg.eigh((X.T @ X).to(_F64) / n)
        e = evecs[:, 0].to(X.dtype)
        if float(evals[0]) <= 1e-12 * max(float(evals[-1]), 1e-300):
            W = W + (1.0 - norms**2).clamp(min=0.0).sqrt()[:, None] * e
            tight = True
            value, _ = fg(W)
        else:
            W, value = _sphere_descent(fg, W, g, tol, max_iter)
            # a unit-norm W attaining the relaxed optimum (to the certified accuracy) proves
            # that the relaxation is tight
            tight = value <= f_relaxed + max(10.0 * tol, gap)
    return LsupResult(
        value=float(value),
        relaxed_value=float(f_relaxed),
        tight=tight,
        gap=gap,
        iterations=its,
        converged=gap <= tol,
        loss=loss,
        temperature=t,
        weight=W,
    )


def _sphere_descent(
    fg: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    W: torch.Tensor,
    g: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, float]:
    """Local minimization on the product of unit spheres (Riemannian gradient, BB + Armijo)."""
    small = W.norm(dim=1) < 1e-12
    if bool(small.any()):  # a zero row: start along its steepest descent direction
        W = W.clone()
        W[small] = -g[small] + 1e-12
    W = F.normalize(W, dim=1)
    f, g = fg(W)

    def rgrad(W: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g - (g * W).sum(dim=1, keepdim=True) * W

    r = rgrad(W, g)
    step = 1.0
    for _ in range(max_iter):
        if float(r.norm()) <= tol:
            break
        while True:
            Wn = F.normalize(W - step * r, dim=1)
            fn, gn = fg(Wn)
            if fn <= f - 1e-4 * step * float((r * r).sum(dtype=_F64)) or step < 1e-12:
                break
            step *= 0.5
        if fn > f:
            break
        rn = rgrad(Wn, gn)
        s, dr = Wn - W, rn - r
        sy = float((s * dr).sum(dtype=_F64))
        step = float((s * s).sum(dtype=_F64)) / sy if sy > 0 else 2.0 * step
        step = min(max(step, 1e-10), 1e10)
        W, f, r = Wn, fn, rn
    return W, f


# --------------------------------------------------------------------------------------------
# weighted kNN
# --------------------------------------------------------------------------------------------


@dataclass
class KNNResult:
    """Weighted kNN (cosine similarity, weights exp(s / t)): test accuracy with k and t used."""

    accuracy: float
    k: int
    temperature: float

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


@serial_when_small
def knn_classifier(
    H_train: torch.Tensor,
    y_train: torch.Tensor,
    H_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int | None = None,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> KNNResult:
    """Weighted kNN accuracy as in SSL papers (Wu et al. 2018; Caron et al. 2021, DINO).

    Features are L2-normalized; each test point's k most cosine-similar training points vote for
    their class with weight exp(s / t); the class with the largest vote wins (ties: the smallest
    class index). k larger than the training set is reduced to its size (``k`` in the result is
    the value used). Similarities in float32, ``chunk_size`` test rows at a time (default: about
    32M similarities per chunk).
    """
    Htr, ytr, Hte, yte, c = _check_split(H_train, y_train, H_test, y_test, num_classes)
    k = check_positive_int("k", k)
    t = check_positive("temperature", temperature)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    return _knn(Htr, ytr, Hte, yte, c, k, t, chunk_size)


def _knn(
    Htr: torch.Tensor,
    ytr: torch.Tensor,
    Hte: torch.Tensor,
    yte: torch.Tensor,
    c: int,
    k: int,
    t: float,
    chunk_size: int | None,
) -> KNNResult:
    n = Htr.shape[0]
    k = min(k, n)
    bank = F.normalize(Htr.detach().to(torch.float32), dim=1)
    queries = F.normalize(Hte.detach().to(torch.float32), dim=1)
    rows = chunk_size or max(1, (1 << 25) // n)
    correct = 0
    for start in range(0, queries.shape[0], rows):
        sims = queries[start : start + rows] @ bank.T
        top, idx = sims.topk(k, dim=1)
        weights = ((top - top[:, :1]) / t).exp_()  # rescaled per row: argmax unchanged
        votes = torch.zeros(top.shape[0], c, dtype=torch.float32, device=top.device)
        votes.scatter_add_(1, ytr[idx], weights)
        correct += int((votes.argmax(dim=1) == yte[start : start + rows]).sum())
    return KNNResult(accuracy=correct / queries.shape[0], k=k, temperature=t)


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class DownstreamReport:
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

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

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
    _check_grid(weight_decays)
    check_choice("probe_select", probe_select, PROBE_SELECTION)
    return t_mean, t_lsup


def _report_means(
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
    mean_classifiers: Sequence[str], t_mean: float, seconds: dict[str, float],
) -> dict[str, MeanClassifierResult]:
    """The mean classifiers of :func:`downstream_report`, timed together in ``seconds``."""
    t0 = time.perf_counter()
    means = {
        name: _mean_classifier(*split, *MEAN_CLASSIFIERS[name], t_mean)
        for name in mean_classifiers
    }
    seconds["mean_classifier"] = time.perf_counter() - t0
    return means


def _report_probes(
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
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
    ls = _lsup(Htr.detach().to(_F64).contiguous(), ytr, c, loss, t_lsup, 1e-6, 3000)
    seconds["lsup"] = time.perf_counter() - t0
    if not ls.tight:
        notes.append("L_sup: the ball relaxation is not tight; value is a local optimum on "
                     "the spheres, relaxed_value a lower bound")
    return ls


def _report_knn(
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], knn_k: int,
    knn_temperature: float, seconds: dict[str, float], notes: list[str],
) -> KNNResult:
    """The kNN classifier of :func:`downstream_report`, timed in ``seconds``; a note when k
    exceeds the training-set size."""
    t0 = time.perf_counter()
    kn = _knn(*split, int(knn_k), float(knn_temperature), None)
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
    split = _check_split(H_train, y_train, H_test, y_test, num_classes)
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


# --------------------------------------------------------------------------------------------
# `contrastlab geometry EMBEDDINGS.npz`
# --------------------------------------------------------------------------------------------


def _load_array(data: Any, key: str, path: str) -> np.ndarray:
    if key not in data.files:
        raise ValueError(f"path: {path} has no array {key!r} (keys: {', '.join(data.files)})")
    return np.asarray(data[key])


def _embeddings_from_numpy(arr: np.ndarray, key: str) -> torch.Tensor:
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating)
                             or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{key} must be a 2-D numeric array (N, d); got {arr.dtype} {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _labels_from_numpy(arr: np.ndarray, key: str) -> torch.Tensor:
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{key} must be a 1-D integer array (N,); got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


#: The most classes ``contrastlab geometry`` accepts (the C x C and C x d reports grow with C).
MAX_GEOMETRY_CLASSES = 100_000


def _class_labels(num_classes: int | None, n_train: int, labels: dict[str, np.ndarray]
                  ) -> tuple[int, dict[str, np.ndarray], str | None]:
    """``(C, labels in 0..C-1, note)``. With ``num_classes`` the labels must lie in
    ``0..C-1``; without, C is the number of distinct labels (train and test together), mapped
    in increasing order to ``0..C-1`` when they are not already (the note says so). Absurd
    sizes (C > :data:`MAX_GEOMETRY_CLASSES`, or more classes than half the training samples)
    are refused before anything of size C is allocated."""
    every = np.concatenate([v.reshape(-1) for v in labels.values()])
    if num_classes is not None:
        if isinstance(num_classes, bool) or not 2 <= num_classes <= MAX_GEOMETRY_CLASSES:
            raise ValueError(f"--num-classes must be an integer in [2, {MAX_GEOMETRY_CLASSES}]; "
                             f"got {num_classes!r}")
        for key, y in labels.items():
            if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise ValueError(f"{key} holds labels in [{int(y.min())}, {int(y.max())}], "
                                 f"outside 0..{num_classes - 1} (--num-classes {num_classes})")
        return num_classes, labels, None
    uniq = np.unique(every)
    c = int(uniq.size)
    if c < 2:
        raise ValueError(f"y_train: the labels hold a single class ({uniq.tolist()}); need at "
                         "least 2 classes")
    if c > MAX_GEOMETRY_CLASSES or c > n_train // 2:
        raise ValueError(f"y_train: {c} distinct labels for {n_train} training samples; at most "
                         f"min({MAX_GEOMETRY_CLASSES}, N/2) classes (each needs >= 2 samples); "
                         "are these labels?")
    if np.array_equal(uniq, np.arange(c)):
        return c, labels, None
    mapped = {k: np.searchsorted(uniq, y).astype(np.int64) for k, y in labels.items()}
    shown = ", ".join(str(int(u)) for u in uniq[:4]) + (", ..." if c > 4 else "")
    return c, mapped, (f"the {c} distinct labels ({shown}) are numbered 0..{c - 1} in "
                       "increasing order (pass --num-classes to use them as they are)")


def _open_npz(path: str) -> Any:
    """The open ``.npz`` archive at ``path``; one clear error for anything else."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"path: {path} is a directory; an .npz file is expected")
    if not p.is_file():
        raise ValueError(f"path: no such file: {path}")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # any unreadable file is one clear error
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"path: cannot read {path} as .npz ({first})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"path: {path} is a single .npy array, not an .npz archive; save one "
                         "with np.savez(path, H_train=..., y_train=...[, H_test=..., "
                         "y_test=...])")
    return data


def _read_npz(data: Any, path: str
              ) -> tuple[torch.Tensor, dict[str, np.ndarray], torch.Tensor | None]:
    """(H_train, the raw label arrays by key, H_test or None) of the archive, then closed."""
    H_test: torch.Tensor | None = None
    with data:
        H_all = _embeddings_from_numpy(_load_array(data, "H_train", path), "H_train")
        ys = {"y_train": _load_array(data, "y_train", path)}
        has_h, has_y = "H_test" in data.files, "y_test" in data.files
        if has_h != has_y:
            raise ValueError(f"path: {path} must hold both H_test and y_test, or neither")
        if has_h:
            H_test = _embeddings_from_numpy(_load_array(data, "H_test", path), "H_test")
            ys["y_test"] = _load_array(data, "y_test", path)
    return H_all, ys, H_test


def _npz_classes(H_all: torch.Tensor, ys: dict[str, np.ndarray], num_classes: int | None,
                 notes: list[str]) -> tuple[int, dict[str, np.ndarray]]:
    """The label checks and (C, labels in 0..C-1) of :func:`_class_labels`, its note added."""
    for key, arr in ys.items():
        _labels_from_numpy(arr, key)  # the type and shape checks
    if H_all.shape[0] != ys["y_train"].shape[0]:
        raise ValueError(
            f"y_train must have {H_all.shape[0]} labels like H_train; got {ys['y_train'].shape[0]}"
        )
    num_classes, ys, note = _class_labels(num_classes, int(H_all.shape[0]), ys)
    if note:
        notes.append(note)
    return num_classes, ys


def _hold_out_test(H_all: torch.Tensor, y_all: torch.Tensor, notes: list[str]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(checked y_all, H_train, y_train, H_test, y_test): 20% of each class held out as the
    test set (stratified, seed 0), with a note."""
    y_all = check_labels("y_train", y_all, H_all.shape[0])
    kept, held = stratified_split(y_all, 0.2, seed=0)
    if held.numel() == 0:
        raise ValueError(
            "path: no test split in the file and too few samples per class to hold out "
            "20%; add H_test and y_test"
        )
    notes.append(
        f"no test split in the file: held out 20% of each class of the training set "
        f"(stratified, seed 0) as the test set ({held.numel()} of {y_all.shape[0]})"
    )
    return y_all, H_all[kept], y_all[kept], H_all[held], y_all[held]


def geometry_command_output(path: str, as_json: bool, num_classes: int | None = None) -> str:
    """The printed output of ``contrastlab geometry EMBEDDINGS.npz``: both reports.

    The ``.npz`` holds ``H_train`` (N, d) and ``y_train`` (N,) and optionally ``H_test`` and
    ``y_test`` (both or neither). C is ``num_classes`` (labels in 0..C-1) or the number of
    distinct labels (:func:`_class_labels`). Without a test split, 20% of each class of the
    training set is held out as the test set (:func:`stratified_split`, seed 0), and the output
    says so. The geometry report is computed on all of ``H_train`` with the with-bias linear
    probe as the classifier of NC3/NC4; the downstream report on the split. Returns a readable
    text table, or JSON (``as_json``) with keys ``input``, ``geometry``, ``downstream`` and
    ``notes``.

    In phases: reading (:func:`_open_npz`, :func:`_read_npz`), the labels
    (:func:`_npz_classes`), the split (:func:`_hold_out_test` without a test split), both
    reports, the output (:func:`_geometry_output`).
    """
    data = _open_npz(path)
    notes: list[str] = []
    H_all, ys, H_file_test = _read_npz(data, path)
    num_classes, ys = _npz_classes(H_all, ys, num_classes, notes)
    y_all = _labels_from_numpy(ys["y_train"], "y_train")
    if H_file_test is not None:
        y_test = _labels_from_numpy(ys["y_test"], "y_test")
        H_train, y_train, H_test = H_all, y_all, H_file_test
    else:
        y_all, H_train, y_train, H_test, y_test = _hold_out_test(H_all, y_all, notes)
    down = downstream_report(H_train, y_train, H_test, y_test, num_classes)
    probe = down.linear_probe.get("bias") or down.linear_probe.get("bias-free")
    classifier = None if probe is None else (probe.weight, probe.bias_vector)
    geo: GeometryReport = geometry_report(H_all, y_all, num_classes, classifier=classifier)
    notes.append("geometry on all of H_train; NC3/NC4 use the with-bias linear probe")
    info = {
        "path": str(path),
        "n_train": int(H_train.shape[0]),
        "n_test": int(H_test.shape[0]),
        "dim": int(H_all.shape[1]),
        "num_classes": num_classes,
        "test_split": "file" if H_file_test is not None else "held-out 20% (stratified, seed 0)",
    }
    return _geometry_output(info, geo, down, notes, as_json)


def _geometry_output(info: dict[str, Any], geo: GeometryReport, down: DownstreamReport,
                     notes: list[str], as_json: bool) -> str:
    """The text (or JSON) of :func:`geometry_command_output`."""
    if as_json:
        return json.dumps(
            {"input": info, "geometry": geo.to_dict(), "downstream": down.to_dict(),
             "notes": notes},
            indent=2,
        )
    head = (f"{info['path']}: {info['n_train']} train / {info['n_test']} test embeddings, "
            f"d={info['dim']}, C={info['num_classes']}")
    parts = [head, *(f"note: {n}" for n in notes), "", geo.to_text(), "", down.to_text()]
    return "\n".join(parts)

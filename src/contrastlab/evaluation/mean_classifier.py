"""The mean classifier of Arora et al. (2019) and Bao et al. (2022)'s R_mu-supv
(conventions: :mod:`contrastlab.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from contrastlab._validation import (
    check_positive,
)
from contrastlab.evaluation.checks import (
    F64,
    PlainResult,
    Split,
    check_split,
    cross_entropy_accuracy,
)
from contrastlab.geometry import (
    serial_when_small,
)

MEAN_CLASSIFIERS: dict[str, tuple[bool, bool]] = {
    "raw": (False, False),
    "normalized": (True, False),
    "cosine": (True, True),
}


@dataclass
class MeanClassifierResult(PlainResult):
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
    """Mean classifier of Arora et al. (2019) / R_mu-supv of Bao et al. (2022).

    mu_c = mean of the (optionally L2-normalized) training features of class c (optionally
    renormalized to unit norm); test logits f(x)^T mu_c / t with f(x) normalized when
    ``normalize_features``. A zero vector stays zero under normalization; a tie for the largest
    logit goes to the smallest class index. ``temperature`` t > 0 (default 1, Bao et al.): pass
    the contrastive loss's temperature, the same t as L_sup (module docstring, "Temperature");
    the accuracy does not depend on it.
    """
    split = check_split(H_train, y_train, H_test, y_test, num_classes)
    for name, flag in (("normalize_features", normalize_features),
                       ("normalize_means", normalize_means)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False; got {flag!r}")
    t = check_positive("temperature", temperature)
    return mean_classifier_unchecked(split, normalize_features, normalize_means, t)


def mean_classifier_unchecked(
    split: Split, normalize_features: bool, normalize_means: bool, t: float
) -> MeanClassifierResult:
    """:func:`mean_classifier` on a checked split, with checked arguments."""
    Htr, ytr, Hte, yte, c = split
    Xtr = Htr.detach().to(F64)
    Xte = Hte.detach().to(F64)
    if normalize_features:
        Xtr = F.normalize(Xtr, dim=1)
        Xte = F.normalize(Xte, dim=1)
    counts = torch.bincount(ytr, minlength=c).to(F64)
    means = torch.zeros(c, Xtr.shape[1], dtype=F64, device=Xtr.device).index_add_(0, ytr, Xtr)
    means /= counts[:, None]
    if normalize_means:
        means = F.normalize(means, dim=1)
    acc, ce = cross_entropy_accuracy(Xte @ means.T / t, yte)
    return MeanClassifierResult(acc, ce, normalize_features, normalize_means, t, means)

"""The weighted k-nearest-neighbour classifier of SSL papers (Wu et al. 2018, DINO;
:mod:`contrastlab.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contrastlab._validation import (
    check_positive,
    check_positive_int,
)
from contrastlab.evaluation.checks import PlainResult, Split, check_split
from contrastlab.geometry import (
    serial_when_small,
)


@dataclass
class KNNResult(PlainResult):
    """Weighted kNN (cosine similarity, weights exp(s / t)): test accuracy with k and t used."""

    accuracy: float
    k: int
    temperature: float


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
    split = check_split(H_train, y_train, H_test, y_test, num_classes)
    k = check_positive_int("k", k)
    t = check_positive("temperature", temperature)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    return knn_unchecked(split, k, t, chunk_size)


def knn_unchecked(split: Split, k: int, t: float, chunk_size: int | None) -> KNNResult:
    """:func:`knn` on a checked split, with checked arguments."""
    Htr, ytr, Hte, yte, c = split
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

"""Nozawa & Sato's lower bound on the self-supervised InfoNCE loss, measured on embeddings.

Nozawa & Sato, "Understanding negative samples in instance discriminative self-supervised
representation learning" (NeurIPS 2021), Theorem 3 as their code evaluates it
(nzw0301/Understanding-Negative-Samples, ``code/bound.py``, ``eval_bound``). With K + 1 the
minibatch size, t the temperature, unit-norm features z = f(x)/||f(x)||:

    L_Info(f) >= 1/2 [ upsilon L^mu_sup(f) + (1 - upsilon) L^mu_sub(f) + Col ] + d(f)

- ``L_Info``: the InfoNCE loss whose negatives are the second views of the other K samples of
  the batch (their ``simclr_forward_with_single_view_negative``): for anchor i,
  ``-log softmax_j(z1_i . z2_j / t)[i]`` over the K + 1 samples j of its batch;
- the mean classifier: ``mu_c`` the mean over the training samples of class c of their
  augmentation-averaged unit features (not renormalized), logits ``z1_i . mu_c / t``;
- ``upsilon L^mu_sup``: the cross-entropy over all C classes, summed over the anchors of the
  batches that hold every class and divided by all anchors (their ``sup_loss``: upsilon is
  inside it);
- ``(1 - upsilon) L^mu_sub``: the same over the batches that miss a class, with the softmax
  restricted to the classes present in the batch (their ``partial_sup_loss``);
- ``Col``: ``sum_c n_c ln n_c`` over the classes with n_c >= 2 members in a batch, summed over
  batches and divided by all anchors (their conflict term);
- ``d(f)``: the mean of ``min(0, z1_i . (mu_{y_i} - zbar_i)) / t``, zbar_i the mean over
  augmentations of the unit features of x_i (their "assumption value"; <= 0).

The CURL (Arora et al. 2019) variant is computed on the same batches: the cross-entropy (full
or restricted, as above) of only the anchors whose class occurs once in their batch, plus Col
plus d(f). Their notebook's table (CIFAR-10, K + 1 = 32 ... 512: L_Info 2.02 ... 4.64,
proposed bound 0.39 ... 1.69, CURL 0.23 ... 2.75) includes d(f) in both bounds.

The batches are ``rounds`` random partitions of the samples into consecutive groups of K + 1
(the remainder of each partition dropped), drawn from ``generator``: their ``epochs`` passes
over a shuffled loader with ``drop_last``. All sums are in float64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["NozawaSatoReport", "nozawa_sato_report"]


@dataclass(frozen=True)
class NozawaSatoReport:
    """The terms of Nozawa & Sato's bound (module docstring); every loss in nats."""

    batch_size: int
    temperature: float
    info_loss: float
    upsilon: float
    sup_loss: float
    sub_loss: float
    collision: float
    d: float
    lower_bound: float
    curl_lower_bound: float
    mu_accuracy: float
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, t: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    if t.dim() != len(shape) or any(s is not None and s != n
                                    for s, n in zip(shape, t.shape, strict=True)):
        raise ValueError(f"{name} must have shape {tuple('*' if s is None else s for s in shape)}"
                         f"; got {tuple(t.shape)}")


def nozawa_sato_report(
    z1: torch.Tensor,
    z2: torch.Tensor,
    zbar: torch.Tensor,
    y: torch.Tensor,
    means: torch.Tensor,
    batch_size: int,
    temperature: float,
    generator: torch.Generator,
    rounds: int = 10,
) -> NozawaSatoReport:
    """The bound's terms on N held-out samples (module docstring).

    ``z1``, ``z2``: (N, d) two augmented views' features (normalized here); ``zbar``: (N, d) the
    mean over augmentations of the normalized features; ``y``: (N,) labels in [0, C);
    ``means``: (C, d) the training class means mu_c of augmentation-averaged unit features;
    ``batch_size`` = K + 1 (2 <= K + 1 <= N); ``temperature`` t > 0; ``rounds`` partitions.
    """
    n = int(y.shape[0])
    c = int(means.shape[0])
    _check("z1", z1, (n, None))
    _check("z2", z2, (n, z1.shape[1]))
    _check("zbar", zbar, (n, z1.shape[1]))
    _check("means", means, (c, z1.shape[1]))
    if not 2 <= int(batch_size) <= n:
        raise ValueError(f"batch_size (K + 1) must be in [2, {n}] (the samples); got {batch_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(f"y must hold labels in [0, {c}) (the rows of means)")
    b, t = int(batch_size), float(temperature)
    f64 = torch.float64
    z1 = torch.nn.functional.normalize(z1.to(f64), dim=1)
    z2 = torch.nn.functional.normalize(z2.to(f64), dim=1)
    zbar, means, y = zbar.to(f64), means.to(f64), y.to(torch.int64)
    logits = z1 @ means.T / t  # (N, C): the mean classifier's logits of the anchors' view 1
    # d(f): their "assumption value", per sample, independent of the batches
    d_each = torch.clamp((z1 * (means[y] - zbar)).sum(1), max=0.0) / t
    per = n // b
    tot = {"info": 0.0, "sup": 0.0, "sub": 0.0, "col": 0.0, "curl": 0.0, "cover": 0.0, "d": 0.0}
    anchors = 0
    for _ in range(int(rounds)):
        perm = torch.randperm(n, generator=generator)
        for j in range(per):
            idx = perm[j * b:(j + 1) * b]
            yb = y[idx]
            sim = z1[idx] @ z2[idx].T / t
            tot["info"] += float((torch.logsumexp(sim, 1) - sim.diagonal()).sum())
            classes, counts = torch.unique(yb, return_counts=True)
            lb = logits[idx]
            if classes.numel() == c:
                ce = torch.logsumexp(lb, 1) - lb.gather(1, yb[:, None])[:, 0]
                tot["sup"] += float(ce.sum())
                tot["cover"] += b
            else:
                sub = lb[:, classes]
                ce = torch.logsumexp(sub, 1) - lb.gather(1, yb[:, None])[:, 0]
                tot["sub"] += float(ce.sum())
            once = classes[counts == 1]
            tot["curl"] += float(ce[torch.isin(yb, once)].sum())
            many = counts[counts >= 2].to(f64)
            tot["col"] += float((many * torch.log(many)).sum())
            tot["d"] += float(d_each[idx].sum())
            anchors += b
    m = {k: v / anchors for k, v in tot.items()}
    acc = float(((zbar @ means.T).argmax(1) == y).to(f64).mean())
    return NozawaSatoReport(
        batch_size=b, temperature=t, info_loss=m["info"], upsilon=m["cover"], sup_loss=m["sup"],
        sub_loss=m["sub"], collision=m["col"], d=m["d"],
        lower_bound=0.5 * (m["sup"] + m["sub"] + m["col"]) + m["d"],
        curl_lower_bound=m["curl"] + m["col"] + m["d"], mu_accuracy=acc, batches=per * rounds)

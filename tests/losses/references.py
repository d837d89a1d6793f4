"""Brute-force float64 reference implementations of the contrastlab losses.

Every function here is written from the formulas of ``SPEC.md`` (sections A2-A4) with plain
Python loops over anchors, positives and negatives and ``math.exp`` / ``math.log`` on Python
floats. Nothing here calls or imitates :mod:`contrastlab`: the references are deliberately slow and
obvious so that the vectorised / tiled library code can be checked against them.

Inputs are torch tensors (converted once to nested lists of Python floats); outputs are Python
floats or lists of floats (one entry per anchor, in the order the library uses: rows of ``z1``
first, then rows of ``z2``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

Vector = list[float]

# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def to_lists(x: torch.Tensor) -> Any:
    """A tensor as nested Python lists of float64 values (no autograd, no library code)."""
    return x.detach().to(torch.float64).cpu().tolist()


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """Inner product of two equal-length vectors, summed left to right."""
    assert len(a) == len(b)
    total = 0.0
    for x, y in zip(a, b, strict=True):
        total += x * y
    return total


def reduce(values: Sequence[float], reduction: str) -> float | list[float]:
    """``"mean"`` / ``"sum"`` / ``"none"`` over per-anchor values."""
    if reduction == "none":
        return list(values)
    total = math.fsum(values)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / len(values)
    raise ValueError(reduction)


# --------------------------------------------------------------------------------------------
# A4: feature normalisation
# --------------------------------------------------------------------------------------------


def ref_normalize_row(row: Sequence[float], kind: str) -> Vector:
    """SPEC A4 on one vector f.

    - ``"sphere"``: f / ||f||;
    - ``"ball"``:   f * min(1, 1/||f||) (projection onto the closed unit ball);
    - ``"none"``:   f unchanged.
    """
    norm = math.sqrt(math.fsum(x * x for x in row))
    if kind == "sphere":
        return [x / norm for x in row]
    if kind == "ball":
        scale = min(1.0, 1.0 / norm)
        return [x * scale for x in row]
    if kind == "none":
        return [float(x) for x in row]
    raise ValueError(kind)


def ref_normalize(z: Any, kind: str) -> Any:
    """SPEC A4 applied row-wise along the last dimension of a nested list (any depth >= 1)."""
    if isinstance(z, torch.Tensor):
        z = to_lists(z)
    if z and isinstance(z[0], list):
        return [ref_normalize(row, kind) for row in z]
    return ref_normalize_row(z, kind)


# --------------------------------------------------------------------------------------------
# A2: the loss family on a score vector v in R^k
# --------------------------------------------------------------------------------------------


def ref_score_loss_vector(v: Sequence[float], loss: str, temperature: float = 1.0) -> float:
    """SPEC A2, with v_i = f(x)^T (f(x+) - f(x_i^-)):

    - logistic:      log(1 + sum_i exp(-v_i))            (natural log; t ignored)
    - infonce:       log(1 + sum_i exp(-v_i / t))
    - hinge:         max(0, 1 + max_i(-v_i))             (t ignored)
    - infonce-mean:  log(1 + (1/k) sum_i exp(-v_i / t))  (the Jiang+ code's mean over negatives)
    """
    k = len(v)
    if loss == "logistic":
        return math.log(1.0 + math.fsum(math.exp(-vi) for vi in v))
    if loss == "infonce":
        return math.log(1.0 + math.fsum(math.exp(-vi / temperature) for vi in v))
    if loss == "infonce-mean":
        return math.log(1.0 + math.fsum(math.exp(-vi / temperature) for vi in v) / k)
    if loss == "hinge":
        return max(0.0, 1.0 + max(-vi for vi in v))
    raise ValueError(loss)


def ref_score_loss(v: Any, loss: str, temperature: float = 1.0) -> Any:
    """SPEC A2 applied to every score vector along the last dimension (nested lists)."""
    if isinstance(v, torch.Tensor):
        v = to_lists(v)
    if v and isinstance(v[0], list):
        return [ref_score_loss(row, loss, temperature) for row in v]
    return ref_score_loss_vector(v, loss, temperature)


# --------------------------------------------------------------------------------------------
# NCE with an explicit set of k negatives
# --------------------------------------------------------------------------------------------


def ref_nce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    normalize: str = "none",
) -> list[float]:
    """Per-anchor NCE loss (SPEC A2): after normalising every vector (A4),
    v_i = a^T (p - n_i) for each of the anchor's k negatives n_i, loss = score_loss(v).

    ``negatives`` is (B, k, d) (own negatives per anchor) or (k, d) (shared by all anchors).
    """
    a_rows = ref_normalize(anchor, normalize)
    p_rows = ref_normalize(positive, normalize)
    neg = ref_normalize(negatives, normalize)
    shared = negatives.ndim == 2
    out = []
    for b in range(len(a_rows)):
        a, p = a_rows[b], p_rows[b]
        negs = neg if shared else neg[b]
        v = []
        for n in negs:
            v.append(dot(a, [pj - nj for pj, nj in zip(p, n, strict=True)]))
        out.append(ref_score_loss_vector(v, loss, temperature))
    return out


# --------------------------------------------------------------------------------------------
# two-view in-batch objectives (SimCLR NT-Xent, SupCon, Chuang/Robinson)
# --------------------------------------------------------------------------------------------


def _two_views(z1: torch.Tensor, z2: torch.Tensor, normalize: str) -> list[Vector]:
    """Rows [z1; z2] after normalisation: row i and row i+B are the two views of sample i."""
    return ref_normalize(z1, normalize) + ref_normalize(z2, normalize)


def _other_view(i: int, batch: int) -> int:
    return i + batch if i < batch else i - batch


def ref_info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, normalize: str = "sphere"
) -> list[float]:
    """SimCLR NT-Xent (Chen et al. 2020), per anchor, 2B anchors.

    s_ij = z_i^T z_j / t over the 2B normalised views; for anchor i with positive i±B:
    loss_i = -log( exp(s_{i,pos}) / sum_{j != i} exp(s_ij) ).
    """
    z = _two_views(z1, z2, normalize)
    batch = len(z) // 2
    out = []
    for i in range(2 * batch):
        pos = _other_view(i, batch)
        numerator = math.exp(dot(z[i], z[pos]) / temperature)
        denominator = math.fsum(
            math.exp(dot(z[i], z[j]) / temperature) for j in range(2 * batch) if j != i
        )
        out.append(-math.log(numerator / denominator))
    return out


def ref_supcon(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    normalize: str = "sphere",
) -> list[float]:
    """SupCon L_out (Khosla et al. 2020, eq. 2), without the base-temperature factor, per anchor.

    Over the 2B normalised views (view i+B has the label of view i), s_ij = z_i^T z_j / t,
    P(i) = {p != i : y_p = y_i}, A(i) = {a != i}:
    loss_i = -(1/|P(i)|) sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) ).
    ``labels=None``: every sample is its own class (then this is NT-Xent).
    """
    z = _two_views(z1, z2, normalize)
    batch = len(z) // 2
    y = list(range(batch)) if labels is None else [int(c) for c in labels.tolist()]
    y = y + y
    out = []
    for i in range(2 * batch):
        denominator = math.fsum(
            math.exp(dot(z[i], z[a]) / temperature) for a in range(2 * batch) if a != i
        )
        positives = [p for p in range(2 * batch) if p != i and y[p] == y[i]]
        terms = [math.log(math.exp(dot(z[i], z[p]) / temperature) / denominator) for p in positives]
        out.append(-math.fsum(terms) / len(positives))
    return out


def ref_debiased_hard(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    normalize: str = "sphere",
) -> list[float]:
    """Debiased (Chuang et al. 2020, beta = 0) / hard-negative (Robinson et al. 2021) loss per
    anchor, as in their published code (SPEC A3: ``chingyaoc/DCL main.py``, ``joshr17/HCL
    image/main.py``).

    2B views; anchor i, its positive i±B, the N = 2B-2 other rows j are its negatives:
    pos = exp(z_i^T z_pos / t), neg_j = exp(z_i^T z_j / t), imp_j = exp(beta z_i^T z_j / t),
    reweight = sum_j imp_j neg_j / mean_j imp_j,
    Ng = (-tau_plus N pos + reweight) / (1 - tau_plus), Ng = max(Ng, N exp(-1/t)),
    loss_i = -log( pos / (pos + Ng) ).
    """
    z = _two_views(z1, z2, normalize)
    batch = len(z) // 2
    n_neg = 2 * batch - 2
    out = []
    for i in range(2 * batch):
        pos_index = _other_view(i, batch)
        pos = math.exp(dot(z[i], z[pos_index]) / temperature)
        neg, imp = [], []
        for j in range(2 * batch):
            if j in (i, pos_index):
                continue
            s = dot(z[i], z[j])
            neg.append(math.exp(s / temperature))
            imp.append(math.exp(beta * s / temperature))
        assert len(neg) == n_neg
        mean_imp = math.fsum(imp) / n_neg
        reweight = math.fsum(w * e for w, e in zip(imp, neg, strict=True)) / mean_imp
        ng = (-tau_plus * n_neg * pos + reweight) / (1.0 - tau_plus)
        ng = max(ng, n_neg * math.exp(-1.0 / temperature))
        out.append(-math.log(pos / (pos + ng)))
    return out


# --------------------------------------------------------------------------------------------
# Jiang et al. (2023): SCL / HSCL / UCL / HUCL as in rjiang03/HCL (SPEC A3)
# --------------------------------------------------------------------------------------------


def _jiang_setup(
    z: torch.Tensor, labels: torch.Tensor, temperature: float, normalize: str
) -> tuple[list[Vector], list[int], list[list[float]]]:
    """Normalised rows, labels, and S = Z Z^T / t as nested lists."""
    rows = ref_normalize(z, normalize)
    y = [int(c) for c in labels.tolist()]
    n = len(rows)
    s = [[dot(rows[i], rows[j]) / temperature for j in range(n)] for i in range(n)]
    return rows, y, s


def ref_jiang_positives(labels: torch.Tensor) -> list[list[int]]:
    """P_i = {p : y_p = y_i}, INCLUDING p = i (the Jiang+ code's convention)."""
    y = [int(c) for c in labels.tolist()]
    return [[p for p in range(len(y)) if y[p] == y[i]] for i in range(len(y))]


def ref_jiang_sampling_law(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float,
    normalize: str,
    unsupervised: bool,
) -> list[dict[int, float]]:
    """The law of anchor i's negatives: p_ij ∝ exp(beta z_i^T z_j) on N_i (raw inner product of
    the normalised rows, NOT divided by the temperature).

    N_i = {j : y_j != y_i} (SCL/HSCL) or all j, including i and its own class (UCL/HUCL).
    Returned as one dict {j: p_ij} per anchor.
    """
    rows = ref_normalize(z, normalize)
    y = [int(c) for c in labels.tolist()]
    n = len(rows)
    law = []
    for i in range(n):
        candidates = [j for j in range(n) if unsupervised or y[j] != y[i]]
        weights = {j: math.exp(beta * dot(rows[i], rows[j])) for j in candidates}
        total = math.fsum(weights.values())
        law.append({j: w / total for j, w in weights.items()})
    return law


def _pair_loss(s_ip: float, g: float) -> float:
    """l_ip = -log( exp(S_ip) / (exp(S_ip) + g_ip) )."""
    e = math.exp(s_ip)
    return -math.log(e / (e + g))


def _g_from_indices(
    s_row: Sequence[float], indices: Sequence[int], negatives_reduction: str
) -> float:
    total = math.fsum(math.exp(s_row[j]) for j in indices)
    if negatives_reduction == "mean":
        return total / len(indices)
    if negatives_reduction == "sum":
        return total
    raise ValueError(negatives_reduction)


def ref_jiang_given_indices(
    z: torch.Tensor,
    labels: torch.Tensor,
    indices: dict[tuple[int, int], Sequence[int]],
    *,
    temperature: float = 1.0,
    normalize: str = "ball",
    negatives_reduction: str = "mean",
    reduction: str = "mean",
) -> float | list[float]:
    """The sampled Jiang+ loss for GIVEN negative indices j_1..j_K of every pair (i, p):

    g_ip = (1/K) sum_r exp(S_{i j_r})  ("mean"; "sum": without the 1/K),
    l_ip = -log( exp(S_ip) / (exp(S_ip) + g_ip) ),
    loss = sum_i sum_{p in P_i} l_ip / sum_i |P_i|  (``reduction="none"``: the l_ip in row-major
    order of (i, p); ``"sum"``: their sum).
    """
    _, _, s = _jiang_setup(z, labels, temperature, normalize)
    positives = ref_jiang_positives(labels)
    terms = []
    for i, p_set in enumerate(positives):
        for p in p_set:
            g = _g_from_indices(s[i], indices[(i, p)], negatives_reduction)
            terms.append(_pair_loss(s[i][p], g))
    return reduce(terms, reduction)


def ref_jiang_possible_pair_losses(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    unsupervised: bool,
    temperature: float = 1.0,
    normalize: str = "ball",
    negatives_reduction: str = "mean",
) -> list[list[tuple[tuple[int, ...], float]]]:
    """For each pair (i, p) in row-major order, every (multiset, l_ip) with j_1..j_K ranging over
    all multisets of N_i (the support of the sampling law for any finite beta)."""
    _, y, s = _jiang_setup(z, labels, temperature, normalize)
    out = []
    for i, p_set in enumerate(ref_jiang_positives(labels)):
        candidates = [j for j in range(len(y)) if unsupervised or y[j] != y[i]]
        combos = list(itertools.combinations_with_replacement(candidates, k))
        gs = [_g_from_indices(s[i], combo, negatives_reduction) for combo in combos]
        for p in p_set:
            out.append(
                [(combo, _pair_loss(s[i][p], g)) for combo, g in zip(combos, gs, strict=True)]
            )
    return out


def _multisets_with_probability(
    law: dict[int, float], k: int
) -> list[tuple[tuple[int, ...], float]]:
    """Every multiset {j_1..j_K} of the support of ``law`` with its probability under K i.i.d.
    draws: K! / prod_j c_j! * prod_j p_j^{c_j} (multinomial)."""
    support = sorted(law)
    out = []
    for combo in itertools.combinations_with_replacement(support, k):
        counts: dict[int, int] = {}
        for j in combo:
            counts[j] = counts.get(j, 0) + 1
        prob = float(math.factorial(k))
        for j, c in counts.items():
            prob *= law[j] ** c / math.factorial(c)
        out.append((combo, prob))
    return out


def ref_jiang(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    beta: float = 0.0,
    temperature: float = 1.0,
    normalize: str = "ball",
    unsupervised: bool = False,
    negatives_reduction: str = "mean",
    mode: str = "loss",
    law: list[dict[int, float]] | None = None,
    by_tuples: bool = False,
    reduction: str = "mean",
) -> float | list[float]:
    """Deterministic forms of the Jiang+ (2023) SCL/HSCL/UCL/HUCL loss (SPEC A3), t = temperature.

    With S = Z Z^T / t, P_i (including i), N_i and p_ij as in :func:`ref_jiang_sampling_law`:

    - ``mode="loss"``: for each pair (i, p), the exact expectation
      E_{j_1..j_K iid ~ p_i.} [ -log( exp(S_ip) / (exp(S_ip) + g_ip) ) ],
      g_ip = (1/K) sum_r exp(S_{i j_r}) ("mean") or sum_r exp(S_{i j_r}) ("sum"); enumerated over
      all multisets with multinomial probabilities (or over all |N_i|^K ordered tuples when
      ``by_tuples``, a slower check of the multiset enumeration).
    - ``mode="mean"``: the plug-in form, g_ip = sum_j p_ij exp(S_ij) ("mean") or
      K sum_j p_ij exp(S_ij) ("sum").

    loss = sum_i sum_{p in P_i} l_ip / sum_i |P_i| (``reduction="none"``: the l_ip in row-major
    order of (i, p); ``"sum"``: their sum).  ``law`` overrides p_ij (e.g. frozen at other inputs,
    to differentiate with the law detached).
    """
    _, _, s = _jiang_setup(z, labels, temperature, normalize)
    if law is None:
        law = ref_jiang_sampling_law(
            z, labels, beta=beta, normalize=normalize, unsupervised=unsupervised
        )
    positives = ref_jiang_positives(labels)
    terms = []
    for i, p_set in enumerate(positives):
        law_i = law[i]
        if mode == "loss":
            if by_tuples:
                support = sorted(law_i)
                outcomes = []
                for tup in itertools.product(support, repeat=k):
                    prob = 1.0
                    for j in tup:
                        prob *= law_i[j]
                    outcomes.append((tup, prob))
            else:
                outcomes = _multisets_with_probability(law_i, k)
            g_values = [
                (prob, _g_from_indices(s[i], combo, negatives_reduction))
                for combo, prob in outcomes
            ]
            for p in p_set:
                terms.append(math.fsum(prob * _pair_loss(s[i][p], g) for prob, g in g_values))
        elif mode == "mean":
            g = math.fsum(law_i[j] * math.exp(s[i][j]) for j in law_i)
            if negatives_reduction == "sum":
                g *= k
            elif negatives_reduction != "mean":
                raise ValueError(negatives_reduction)
            for p in p_set:
                terms.append(_pair_loss(s[i][p], g))
        else:
            raise ValueError(mode)
    return reduce(terms, reduction)


def numerical_gradient(fn: Any, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central finite differences of a float-valued function of a float64 tensor."""
    base = x.detach().clone().to(torch.float64)
    grad = torch.zeros_like(base)
    flat = base.view(-1)
    gflat = grad.view(-1)
    for idx in range(flat.numel()):
        old = float(flat[idx])
        flat[idx] = old + h
        up = fn(base.clone())
        flat[idx] = old - h
        down = fn(base.clone())
        flat[idx] = old
        gflat[idx] = (up - down) / (2.0 * h)
    return grad

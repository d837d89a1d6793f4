"""Negative samplers: they return indices into a pool, so any loss can use any sampler.

A sampler chooses, for each of B anchors, k indices into a pool of N candidates (the batch, a
memory bank, a negative pool). Samplers are separate from losses, as miners are in
pytorch-metric-learning: the loss gathers ``pool[idx]`` (:func:`gather_negatives`).

The laws (Jiang et al. 2023):

- ``uniform``: the marginal D (unsupervised; the anchor's class may be drawn: collisions);
- ``other-class``: D(. | c- != c) (supervised);
- ``tilted``: q(j | i) ∝ eta(s_ij) * 1[j allowed], with the hardening function
  eta(s) = exp(beta * s) and s_ij the similarity of anchor i and candidate j (HUCL with all
  candidates allowed, HSCL with the other classes only). beta = 0 recovers the untilted law.

All draws are i.i.d. **with replacement** by default (the population losses and the Jiang et
al. code); ``replace=False`` draws k distinct indices by **successive sampling** (sampling with
probability proportional to the weights, without replacement): the first index is drawn from q,
each later one from q restricted to the candidates not yet drawn and renormalized (Hájek 1981,
*Sampling from a Finite Population*, successive sampling; Rosén 1972). It is implemented as the
exponential race / Gumbel-top-k: key_j = q_j / E_j with E_j ~ Exp(1) i.i.d., the k largest keys
in decreasing order (Efraimidis & Spirakis 2006, *Weighted random sampling with a reservoir*,
IPL 97(5); Kool, van Hoof & Welling 2019, *Stochastic Beams and Where to Find Them*, ICML), which
is also what ``torch.multinomial(replacement=False)`` computes. For a uniform q it is simple random
sampling without replacement (every k-subset equally likely; Bao et al.'s law of the in-batch
negatives); for a tilted q the inclusion probabilities are not proportional to q (a heavy
candidate is drawn at most once). It needs k <= the number of allowed candidates, unless
``fill=True`` (:func:`sample_from_log_probs`).
The sampling weights are always detached: no gradient flows through the sampling law.
:func:`distinct_counts` and :func:`expected_distinct_counts` measure how many distinct negatives
an anchor actually gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrastlab._validation import (
    check_choice,
    check_generator,
    check_labels,
    check_nonnegative,
    check_positive_int,
    check_tensor,
)

SAMPLERS = ("uniform", "other-class", "tilted", "tilted-other-class")
#: the one table of the negative laws: sampler kind -> (its support, whether exp(beta s) tilts
#: it). The population losses and the Jiang et al. losses name a law by its support
#: (``negatives="marginal"`` or ``"other-class"``) and beta; the samplers and the run config by
#: its kind. Each name below is that law's one name in the other vocabulary.
SAMPLER_LAWS: dict[str, tuple[str, bool]] = {
    "uniform": ("marginal", False),
    "tilted": ("marginal", True),
    "other-class": ("other-class", False),
    "tilted-other-class": ("other-class", True),
}


def sampler_support(kind: str) -> str:
    """The support of sampler ``kind``: ``marginal`` (every candidate; unsupervised) or
    ``other-class`` (the candidates of the other classes; supervised)."""
    return SAMPLER_LAWS[check_choice("sampler", kind, SAMPLERS)][0]


def sampler_tilted(kind: str) -> bool:
    """Whether sampler ``kind`` tilts its support by exp(beta s) (beta applies)."""
    return SAMPLER_LAWS[check_choice("sampler", kind, SAMPLERS)][1]


def sampler_kind(negatives: str, tilted: bool = True) -> str:
    """The sampler kind of the law on support ``negatives`` (``marginal`` | ``other-class``),
    tilted or not (the inverse of :func:`sampler_support` and :func:`sampler_tilted`)."""
    check_choice("negatives", negatives, ("marginal", "other-class"))
    return next(k for k, law in SAMPLER_LAWS.items() if law == (negatives, bool(tilted)))


def candidate_mask(
    anchor_labels: torch.Tensor | None,
    pool_labels: torch.Tensor | None,
    kind: str = "marginal",
    num_anchors: int | None = None,
    pool_size: int | None = None,
    self_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (B, N) mask of the allowed negatives.

    ``kind="marginal"`` allows every candidate; ``"other-class"`` only candidates whose label
    differs from the anchor's. ``self_index`` (B,) optionally forbids candidate ``self_index[b]``
    for anchor b (e.g. the anchor itself when the pool is the batch).
    """
    check_choice("kind", kind, ("marginal", "other-class"))
    if kind == "other-class":
        if anchor_labels is None or pool_labels is None:
            raise ValueError("anchor_labels and pool_labels are required for kind='other-class'")
        mask = anchor_labels[:, None] != pool_labels[None, :]
    else:
        if num_anchors is None or pool_size is None:
            if anchor_labels is None or pool_labels is None:
                raise ValueError("num_anchors and pool_size are required for kind='marginal'")
            num_anchors, pool_size = len(anchor_labels), len(pool_labels)
        mask = torch.ones(num_anchors, pool_size, dtype=torch.bool)
        if anchor_labels is not None:
            mask = mask.to(anchor_labels.device)
    if self_index is not None:
        mask = mask.clone()
        mask[torch.arange(mask.shape[0], device=mask.device), self_index] = False
    return mask


def tilted_log_probs(
    scores: torch.Tensor, beta: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probabilities (B, N) of q(j | i) ∝ exp(beta * scores_ij) on the allowed candidates.

    Computed as a masked log-softmax in float64 (stable for any beta); -inf where not allowed.
    The result is detached. Raises ValueError if an anchor has no allowed candidate.
    """
    check_tensor("scores", scores, ndim=2, shape_hint="(B, N)")
    beta = check_nonnegative("beta", beta)
    logits = beta * scores.detach().to(torch.float64)
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(
                f"mask must have the shape of scores {tuple(scores.shape)}; got {tuple(mask.shape)}"
            )
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            row = int(torch.nonzero(empty)[0])
            raise ValueError(
                f"mask: anchor {row} has no allowed negative (e.g. every sample of the batch "
                "has its class); the supervised losses need at least one other-class sample"
            )
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.log_softmax(logits, dim=1)


def sample_from_log_probs(
    log_probs: torch.Tensor,
    k: int,
    replace: bool = True,
    generator: torch.Generator | None = None,
    fill: bool = False,
) -> torch.Tensor:
    """Draw k indices per row from the categorical laws exp(log_probs) (rows sum to 1).

    ``replace=True``: k i.i.d. draws (``torch.multinomial``). ``replace=False``: successive
    sampling without replacement (module docstring), the indices in the order drawn; a row with
    m < k allowed candidates (probability > 0) is a ValueError, unless ``fill=True``: then that
    row gets all m of its candidates (in random order) followed by k - m i.i.d. draws from its law,
    so it has m distinct indices rather than k.

    ``generator``: a ``torch.Generator`` or None (anything else: ``ValueError``). A law with NaN
    or +inf log-probabilities (e.g. from non-finite scores) is a one-line ``ValueError``, not
    torch's "invalid multinomial distribution".
    """
    check_generator(generator)
    check_positive_int("k", k)
    bad = torch.isnan(log_probs) | (log_probs == float("inf"))
    if bool(bad.any()):
        raise ValueError(
            f"log_probs contains NaN or +inf values ({int(bad.sum())} of {log_probs.numel()} "
            "entries; e.g. from non-finite scores): not a probability law"
        )
    probs = log_probs.exp()
    gen_device = generator.device if generator is not None else probs.device
    if replace:
        idx = torch.multinomial(probs.to(gen_device), k, replacement=True, generator=generator)
        return idx.to(log_probs.device)
    probs = probs.to(gen_device)
    allowed = probs > 0
    m = allowed.sum(dim=1)
    short = m < k
    if bool(short.any()) and not fill:
        raise ValueError(
            f"k must be <= the number of allowed candidates ({int(m.min())}) when replace=False; "
            f"got {k}"
        )
    # exponential race: the k largest q_j / E_j, E_j ~ Exp(1) (Efraimidis & Spirakis 2006)
    keys = probs / torch.empty_like(probs).exponential_(generator=generator)
    keys = keys.masked_fill(~allowed, -1.0)  # never before an allowed candidate (no 0/0 NaN)
    width = min(k, probs.shape[1])
    idx = torch.topk(keys, width, dim=1).indices
    if width < k:
        idx = torch.cat([idx, idx.new_zeros(idx.shape[0], k - width)], dim=1)
    if bool(short.any()):
        rows = torch.nonzero(short).flatten()
        extra = torch.multinomial(probs[rows], k, replacement=True, generator=generator)
        after = torch.arange(k, device=idx.device)[None, :] >= m[rows, None]
        idx[rows] = torch.where(after, extra, idx[rows])
    return idx.to(log_probs.device)


def distinct_counts(idx: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """(R,) int64: the number of distinct negatives in each row of the (R, k) pool indices
    ``idx``; with ``ids`` (N,) (e.g. the data-set index of every pool member), the number of
    distinct ``ids[idx]`` (two pool members holding the same sample count once)."""
    if idx.ndim != 2:
        raise ValueError(f"idx must have shape (R, k); got {tuple(idx.shape)}")
    vals = idx
    if ids is not None:
        vals = torch.unique(ids.to(idx.device), return_inverse=True)[1][idx]
    width = int(vals.max()) + 1 if vals.numel() else 1
    seen = torch.zeros(vals.shape[0], width, dtype=torch.bool, device=vals.device)
    seen.scatter_(1, vals, True)
    return seen.sum(dim=1)


def expected_distinct_counts(
    log_probs: torch.Tensor, k: int, ids: torch.Tensor | None = None
) -> torch.Tensor:
    """(R,) float64: the expected number of distinct negatives among k i.i.d. draws from each
    row's law q: sum_u 1 - (1 - Q_u)^k, with Q_u the total probability of the pool members holding
    sample u (``ids``; default: each pool member its own sample). Used where no draw is made
    (the exact expectation over i.i.d. draws)."""
    check_positive_int("k", k)
    q = log_probs.detach().to(torch.float64).exp()
    if ids is not None:
        inv = torch.unique(ids.to(q.device), return_inverse=True)[1]
        q = q.new_zeros(q.shape[0], int(inv.max()) + 1).index_add_(1, inv, q)
    q = q.clamp(0.0, 1.0)
    return (-torch.expm1(k * torch.log1p(-q))).sum(dim=1)


def sample_uniform(
    num_anchors: int,
    pool_size: int,
    k: int,
    replace: bool = True,
    generator: torch.Generator | None = None,
    self_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """k indices per anchor, uniform over the pool (the marginal law), optionally not self."""
    check_generator(generator)
    check_positive_int("num_anchors", num_anchors)
    check_positive_int("pool_size", pool_size)
    check_positive_int("k", k)
    if self_index is None and replace:
        return torch.randint(0, pool_size, (num_anchors, k), generator=generator)
    mask = candidate_mask(
        None, None, "marginal", num_anchors=num_anchors, pool_size=pool_size, self_index=self_index
    )
    scores = torch.zeros(num_anchors, pool_size, dtype=torch.float64)
    return sample_from_log_probs(tilted_log_probs(scores, 0.0, mask), k, replace, generator)


def sample_other_class(
    anchor_labels: torch.Tensor,
    pool_labels: torch.Tensor,
    k: int,
    replace: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """k indices per anchor, uniform over the pool members of another class (supervised)."""
    check_generator(generator)
    check_labels("anchor_labels", anchor_labels, len(anchor_labels))
    check_labels("pool_labels", pool_labels, len(pool_labels))
    mask = candidate_mask(anchor_labels, pool_labels, "other-class")
    scores = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    return sample_from_log_probs(tilted_log_probs(scores, 0.0, mask), k, replace, generator)


def sample_tilted(
    scores: torch.Tensor,
    beta: float,
    k: int,
    mask: torch.Tensor | None = None,
    replace: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """k indices per anchor with probability ∝ exp(beta * scores_ij) on the allowed candidates."""
    check_generator(generator)
    return sample_from_log_probs(tilted_log_probs(scores, beta, mask), k, replace, generator)


def gather_negatives(pool: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather (B, k, d) negatives from a (N, d) pool with (B, k) indices (differentiable)."""
    check_tensor("pool", pool, ndim=2, shape_hint="(N, d)")
    if idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must be an integer tensor of shape (B, k); got {tuple(idx.shape)}")
    return pool[idx]


@dataclass(frozen=True)
class NegativeSampler:
    """A configured sampling law, usable by any loss.

    Attributes:
        kind: ``uniform`` (marginal), ``other-class``, ``tilted`` (marginal, tilted by
            exp(beta s)) or ``tilted-other-class`` (other classes, tilted).
        beta: hardness for the tilted kinds (>= 0).
        replace: draw with replacement (default) or k distinct indices.
        exclude_self: forbid the candidate at the anchor's own index (pool = batch).
    """

    kind: str = "uniform"
    beta: float = 0.0
    replace: bool = True
    exclude_self: bool = False

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, SAMPLERS)
        check_nonnegative("beta", self.beta)

    def log_probs(
        self,
        scores: torch.Tensor,
        anchor_labels: torch.Tensor | None = None,
        pool_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The (B, N) log-probabilities of the law given anchor-candidate similarities."""
        check_tensor("scores", scores, ndim=2, shape_hint="(B, N)")
        b, n = scores.shape
        support = sampler_support(self.kind)
        self_index = torch.arange(b, device=scores.device) if self.exclude_self else None
        if self.exclude_self and n < b:
            raise ValueError(
                f"exclude_self needs a pool at least as large as the batch ({b}); got {n}"
            )
        mask = candidate_mask(
            anchor_labels,
            pool_labels,
            support,
            num_anchors=b,
            pool_size=n,
            self_index=self_index,
        ).to(scores.device)
        beta = self.beta if sampler_tilted(self.kind) else 0.0
        return tilted_log_probs(scores, beta, mask)

    def __call__(
        self,
        scores: torch.Tensor,
        k: int,
        anchor_labels: torch.Tensor | None = None,
        pool_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw (B, k) indices into the pool."""
        check_generator(generator)
        return sample_from_log_probs(
            self.log_probs(scores, anchor_labels, pool_labels), k, self.replace, generator
        )

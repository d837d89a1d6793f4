"""Negative samplers: they return indices into a pool, so any loss can use any sampler.

A sampler chooses, for each of B anchors, k indices into a pool of N candidates (the batch, a
memory bank, a negative pool). Samplers are separate from losses, as miners are in
pytorch-metric-learning: the loss gathers ``pool[idx]`` (:func:`gather_negatives`).

The laws (Jiang et al. 2023, SPEC A3):

- ``uniform``: the marginal D (unsupervised; the anchor's class may be drawn: collisions);
- ``other-class``: D(. | c- != c) (supervised);
- ``tilted``: q(j | i) ∝ eta(s_ij) * 1[j allowed], with the hardening function
  eta(s) = exp(beta * s) and s_ij the similarity of anchor i and candidate j (HUCL with all
  candidates allowed, HSCL with the other classes only). beta = 0 recovers the untilted law.

All draws are i.i.d. **with replacement** by default (the population losses and the Jiang et
al. code); ``replace=False`` draws k distinct indices (sequentially, each draw proportional to
the weights of the candidates not yet drawn), which needs k <= the number of allowed candidates.
The sampling weights are always detached: no gradient flows through the sampling law.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrastlab._validation import (
    check_choice,
    check_labels,
    check_nonnegative,
    check_positive_int,
    check_tensor,
)

SAMPLERS = ("uniform", "other-class", "tilted", "tilted-other-class")


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
) -> torch.Tensor:
    """Draw k indices per row from the categorical laws exp(log_probs) (rows sum to 1)."""
    check_positive_int("k", k)
    probs = log_probs.exp()
    if not replace:
        allowed = int((probs > 0).sum(dim=1).min())
        if k > allowed:
            raise ValueError(
                f"k must be <= the number of allowed candidates ({allowed}) when replace=False; "
                f"got {k}"
            )
    gen_device = generator.device if generator is not None else probs.device
    idx = torch.multinomial(probs.to(gen_device), k, replacement=replace, generator=generator)
    return idx.to(log_probs.device)


def sample_uniform(
    num_anchors: int,
    pool_size: int,
    k: int,
    replace: bool = True,
    generator: torch.Generator | None = None,
    self_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """k indices per anchor, uniform over the pool (the marginal law), optionally not self."""
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
        supervised = self.kind in ("other-class", "tilted-other-class")
        self_index = torch.arange(b, device=scores.device) if self.exclude_self else None
        if self.exclude_self and n < b:
            raise ValueError(
                f"exclude_self needs a pool at least as large as the batch ({b}); got {n}"
            )
        mask = candidate_mask(
            anchor_labels,
            pool_labels,
            "other-class" if supervised else "marginal",
            num_anchors=b,
            pool_size=n,
            self_index=self_index,
        ).to(scores.device)
        beta = self.beta if self.kind.startswith("tilted") else 0.0
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
        return sample_from_log_probs(
            self.log_probs(scores, anchor_labels, pool_labels), k, self.replace, generator
        )

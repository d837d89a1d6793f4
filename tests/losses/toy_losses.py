"""Two losses defined outside the package, as a user would, for tests/losses/test_registry.py.

- ``align-uniform``: Wang & Isola 2020 (ICML), *Understanding contrastive representation
  learning through alignment and uniformity on the hypersphere*, eq. (4)/(5) with alpha = 2:
  ``E ||z1 - z2||^2 + w * log E_{i != j} exp(-t ||z_i - z_j||^2)`` over the 2B views (an
  in-batch loss; ``t`` is its ``temperature``, default 2 as in the paper).
- ``pool-triplet``: a margin loss over k negatives per anchor drawn from the pool by the
  configured sampler: ``mean_r max(0, m - z_a^T z_p + z_a^T z_{j_r})`` with margin m = 0.5
  (an explicit-k loss with a configurable law).

Module-level functions, so that the sweep's worker processes can import them.
"""

from __future__ import annotations

import torch

from contrastlab.losses import NegativeSampler, sample_from_log_probs


def align_uniform(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 2.0,
                  weight: float = 1.0) -> torch.Tensor:
    align = (z1 - z2).pow(2).sum(dim=1).mean()
    z = torch.cat([z1, z2])
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    uniform = torch.logsumexp(-temperature * sq[off], dim=0) - torch.log(
        torch.tensor(float(off.sum()), dtype=z.dtype))
    return align + weight * uniform


def pool_triplet(anchors: torch.Tensor, positives: torch.Tensor, anchor_labels: torch.Tensor,
                 pool: torch.Tensor, pool_labels: torch.Tensor, k: int, sampler: str,
                 beta: float, replace: bool, generator: torch.Generator | None,
                 stats: dict[str, float] | None, margin: float = 0.5) -> torch.Tensor:
    scores = anchors @ pool.T
    law = NegativeSampler(kind=sampler, beta=beta)
    supervised = sampler in ("other-class", "tilted-other-class")
    log_q = law.log_probs(scores, anchor_labels if supervised else None,
                          pool_labels if supervised else None)
    idx = sample_from_log_probs(log_q, k, replace, generator, fill=True)
    if stats is not None:
        stats["distinct_negatives"] = float(k)
    s_pos = (anchors * positives).sum(dim=1, keepdim=True)
    return torch.relu(margin - s_pos + scores.gather(1, idx)).mean()

"""Negative samplers: laws, reproducibility, replacement, masks."""

from __future__ import annotations

import math

import pytest
import torch

import contrastlab.losses as L


def test_other_class_never_collides(gen: torch.Generator) -> None:
    anchors = torch.tensor([0, 1, 2, 0])
    pool = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    idx = L.sample_other_class(anchors, pool, k=500, generator=gen)
    assert idx.shape == (4, 500)
    assert (pool[idx] != anchors[:, None]).all()
    # uniform over the allowed candidates: anchor 0 has 5 allowed, each ~ 1/5
    counts = torch.bincount(idx[0], minlength=7).double() / 500
    assert counts[:2].sum() == 0
    assert (counts[2:] - 0.2).abs().max() < 0.07


def test_tilted_frequencies_follow_exp_beta_s(gen: torch.Generator) -> None:
    scores = torch.tensor([[0.0, 0.5, 1.0, -1.0]])
    beta, n = 2.0, 40_000
    idx = L.sample_tilted(scores, beta, n, generator=gen)
    freq = torch.bincount(idx[0], minlength=4).double() / n
    want = torch.softmax(beta * scores[0].double(), 0)
    se = torch.sqrt(want * (1 - want) / n)
    assert ((freq - want).abs() < 4 * se).all(), (freq, want)


def test_tilted_with_mask_and_log_probs() -> None:
    scores = torch.randn(3, 6, dtype=torch.float64)
    mask = torch.rand(3, 6) > 0.3
    mask[:, 0] = True
    lp = L.tilted_log_probs(scores, 1.5, mask)
    assert torch.isneginf(lp[~mask]).all()
    assert torch.allclose(lp.exp().sum(1), torch.ones(3, dtype=torch.float64))
    assert not lp.requires_grad
    # beta = 0: uniform over the allowed
    lp0 = L.tilted_log_probs(scores, 0.0, mask)
    want = (1.0 / mask.sum(1, keepdim=True).double()).expand(-1, 6)
    assert torch.allclose(lp0.exp()[mask], want[mask])


def test_tilted_log_probs_stable_for_huge_beta() -> None:
    scores = torch.tensor([[1.0, 0.999, -1.0]], dtype=torch.float64)
    lp = L.tilted_log_probs(scores, 1e4, None)
    assert torch.isfinite(lp).all()
    assert lp[0, 0].exp().item() == pytest.approx(1.0 / (1.0 + math.exp(-10.0)), rel=1e-9)


def test_without_replacement_gives_distinct_indices(gen: torch.Generator) -> None:
    idx = L.sample_uniform(50, 10, 10, replace=False, generator=gen)
    assert all(len(set(row.tolist())) == 10 for row in idx)


def test_uniform_excluding_self(gen: torch.Generator) -> None:
    idx = L.sample_uniform(8, 8, 100, generator=gen, self_index=torch.arange(8))
    assert (idx != torch.arange(8)[:, None]).all()


def test_reproducible_with_generator() -> None:
    s = torch.randn(5, 9)
    a = L.sample_tilted(s, 3.0, 7, generator=torch.Generator().manual_seed(3))
    b = L.sample_tilted(s, 3.0, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", L.SAMPLERS)
def test_negative_sampler_object(kind: str, gen: torch.Generator) -> None:
    scores = torch.randn(6, 12)
    labels = torch.arange(12) % 3
    sampler = L.NegativeSampler(kind=kind, beta=2.0, exclude_self=True)
    idx = sampler(scores, 20, anchor_labels=labels[:6], pool_labels=labels, generator=gen)
    assert idx.shape == (6, 20)
    assert (idx != torch.arange(6)[:, None]).all()
    if "other-class" in kind:
        assert (labels[idx] != labels[:6, None]).all()
    lp = sampler.log_probs(scores, labels[:6], labels)
    if kind.startswith("tilted"):
        allowed = torch.isfinite(lp[0])
        ratio = (lp[0, allowed] - 2.0 * scores[0, allowed].double())
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))


def test_gather_negatives_feeds_nce_loss(gen: torch.Generator) -> None:
    pool = torch.randn(30, 4, requires_grad=True)
    anchors = torch.randn(5, 4)
    idx = L.sample_uniform(5, 30, 8, generator=gen)
    neg = L.gather_negatives(pool, idx)
    assert neg.shape == (5, 8, 4)
    L.nce_loss(anchors, anchors, neg).backward()
    assert pool.grad is not None and pool.grad.abs().sum() > 0


def test_successive_sampling_draws_distinct_indices_first_from_q(gen: torch.Generator) -> None:
    # replace=False: k distinct indices per row; the first one is a draw from q itself
    scores = torch.tensor([[0.0, 0.5, 1.0, -1.0, 0.2]]).expand(20_000, -1)
    lp = L.tilted_log_probs(scores, 2.0)
    idx = L.sample_from_log_probs(lp, 5, replace=False, generator=gen)
    assert bool((L.distinct_counts(idx) == 5).all())
    freq = torch.bincount(idx[:, 0], minlength=5).double() / idx.shape[0]
    want = lp[0].exp()
    se = torch.sqrt(want * (1 - want) / idx.shape[0])
    assert ((freq - want).abs() < 4 * se).all(), (freq, want)
    # the second draw: q renormalized over the rest, P(j2 = 1 | j1 = 2) = q1 / (1 - q2)
    first = idx[:, 0] == 2
    p21 = float((idx[first, 1] == 1).double().mean())
    want21 = float(want[1] / (1 - want[2]))
    assert abs(p21 - want21) < 4 * math.sqrt(want21 * (1 - want21) / int(first.sum()))


def test_successive_sampling_is_seeded() -> None:
    lp = L.tilted_log_probs(torch.randn(6, 30, generator=torch.Generator().manual_seed(0)), 3.0)
    a = L.sample_from_log_probs(lp, 30, False, torch.Generator().manual_seed(1))
    b = L.sample_from_log_probs(lp, 30, False, torch.Generator().manual_seed(1))
    c = L.sample_from_log_probs(lp, 30, False, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool((L.distinct_counts(a) == 30).all())  # k = pool: a permutation of the pool


def test_without_replacement_needs_enough_candidates_unless_fill(gen: torch.Generator) -> None:
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 2:] = False  # row 0: 2 allowed candidates
    lp = L.tilted_log_probs(torch.zeros(3, 6), 0.0, mask)
    with pytest.raises(ValueError, match=r"k must be <= the number of allowed candidates \(2\)"):
        L.sample_from_log_probs(lp, 4, replace=False, generator=gen)
    idx = L.sample_from_log_probs(lp, 4, replace=False, generator=gen, fill=True)
    assert idx.shape == (3, 4)
    assert set(idx[0, :2].tolist()) == {0, 1} and bool((idx[0] < 2).all())  # all, then i.i.d.
    assert L.distinct_counts(idx).tolist() == [2, 4, 4]


def test_with_replacement_repeats_at_k_near_the_pool(gen: torch.Generator) -> None:
    # i.i.d. uniform draws, k = P = 64: about P (1 - (1 - 1/P)^k) = 0.63 k distinct
    idx = L.sample_uniform(400, 64, 64, replace=True, generator=gen)
    mean = float(L.distinct_counts(idx).double().mean())
    want = 64 * (1 - (1 - 1 / 64) ** 64)
    assert abs(mean - want) < 0.5 and mean < 0.65 * 64
    lp = L.tilted_log_probs(torch.zeros(1, 64), 0.0)
    assert float(L.expected_distinct_counts(lp, 64)[0]) == pytest.approx(want, rel=1e-12)


def test_distinct_counts_with_ids() -> None:
    idx = torch.tensor([[0, 1, 2, 2], [3, 3, 3, 3]])
    assert L.distinct_counts(idx).tolist() == [3, 1]
    ids = torch.tensor([7, 7, 9, 5])  # pool members 0 and 1 hold the same sample
    assert L.distinct_counts(idx, ids).tolist() == [2, 1]
    lp = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).log()
    assert float(L.expected_distinct_counts(lp, 3, ids)[0]) == pytest.approx(1.0)
    assert float(L.expected_distinct_counts(lp, 3)[0]) == pytest.approx(2 * (1 - 0.5**3))

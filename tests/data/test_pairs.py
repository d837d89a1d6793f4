"""Tests of contrastlab.data.pairs: latent positives, augmented views, negative pools."""

from __future__ import annotations

import pytest
import torch

from contrastlab.data.pairs import (
    apply_augment,
    augmenter,
    make_views,
    negative_pool,
    positive_indices,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# latent positives
# ---------------------------------------------------------------------------------------------


def test_positive_indices_share_the_class_and_differ_from_the_anchor() -> None:
    y = torch.randint(0, 5, (300,), generator=gen(1))
    idx = torch.randint(0, 300, (1000,), generator=gen(2))
    pos = positive_indices(y, idx, gen(3))
    assert pos.shape == idx.shape and pos.dtype == torch.int64
    assert torch.equal(y[pos], y[idx])
    assert bool((pos != idx).all())


def test_positive_indices_cover_the_class_uniformly() -> None:
    y = torch.tensor([0, 1, 0, 2, 0, 1, 0])  # class 0: rows 0, 2, 4, 6
    idx = torch.full((4000,), 2)
    pos = positive_indices(y, idx, gen(0))
    counts = torch.bincount(pos, minlength=7)
    assert counts[[1, 2, 3, 5]].sum() == 0
    for r in (0, 4, 6):  # each other member about 1/3 of the time
        assert abs(int(counts[r]) / 4000 - 1 / 3) < 0.04


def test_singleton_class_is_its_own_positive() -> None:
    y = torch.tensor([0, 0, 1, 2, 2])
    pos = positive_indices(y, torch.tensor([2, 0, 1, 3, 4]), gen(0))
    assert pos.tolist() == [2, 1, 0, 4, 3]


def test_positive_indices_are_deterministic() -> None:
    y = torch.randint(0, 3, (50,), generator=gen(0))
    idx = torch.arange(50)
    a = positive_indices(y, idx, gen(7))
    assert torch.equal(a, positive_indices(y, idx, gen(7)))
    g = gen(7)
    first = positive_indices(y, idx, g)
    second = positive_indices(y, idx, g)  # the generator advanced
    assert torch.equal(first, a) and not torch.equal(first, second)


@pytest.mark.parametrize(
    ("y", "idx", "field"),
    [
        (torch.tensor([0.0, 1.0]), torch.tensor([0]), "y"),
        (torch.tensor([[0, 1]]), torch.tensor([0]), "y"),
        (torch.tensor([0, -1]), torch.tensor([0]), "y"),
        (torch.tensor([0, 1]), torch.tensor([2]), "idx"),
        (torch.tensor([0, 1]), torch.tensor([0.0]), "idx"),
    ],
)
def test_positive_indices_bad_input(y: torch.Tensor, idx: torch.Tensor, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}[ :]"):
        positive_indices(y, idx, gen())


def test_positive_indices_needs_a_generator() -> None:
    with pytest.raises(ValueError, match=r"^generator "):
        positive_indices(torch.tensor([0, 0]), torch.tensor([0]), 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------------


def test_latent_views_are_other_samples_of_the_class() -> None:
    n = 120
    y = torch.arange(n) % 4
    x = torch.stack([torch.arange(n, dtype=torch.float32), y.float()], dim=1)  # row id, class
    idx = torch.randint(0, n, (64,), generator=gen(0))
    x1, x2 = make_views(x, y, idx, "latent", gen(1))
    assert torch.equal(x1, x[idx])
    rows = x2[:, 0].long()
    assert torch.equal(y[rows], y[idx]) and bool((rows != idx).all())
    again = make_views(x, y, idx, "latent", gen(1))
    assert torch.equal(again[1], x2)


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        ("image", (6, 3, 16, 16)),
        ("image", (6, 1, 8, 8)),
        ("image", (4, 1, 28, 28)),
        ("signal", (6, 1, 40)),
        ("signal", (6, 40)),
        ("vector", (6, 32)),
    ],
)
def test_augment_views_differ_and_keep_the_shape(kind: str, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=gen(0))
    if kind == "image":  # a structured image, so a crop or flip visibly changes it
        ramp = torch.linspace(0, 1, shape[-1])
        x = 0.5 * x + 0.5 * ramp * ramp[:, None]
    y = torch.zeros(shape[0], dtype=torch.int64)
    idx = torch.arange(shape[0])
    aug = augmenter(kind)
    v1, v2 = make_views(x, y, idx, "augment", gen(5), augment=aug)
    assert v1.shape == v2.shape == x.shape and v1.dtype == x.dtype
    for i in range(shape[0]):
        assert not torch.allclose(v1[i], v2[i], atol=1e-4), f"row {i}: views equal"
        assert not torch.allclose(v1[i], x[i], atol=1e-4), f"row {i}: view equals input"
    assert bool(torch.isfinite(v1).all())
    if kind == "image":
        assert float(v1.min()) >= -1e-6 and float(v1.max()) <= 1 + 1e-6
    # deterministic under a seeded generator
    w1, w2 = make_views(x, y, idx, "augment", gen(5), augment=aug)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)


@pytest.mark.parametrize("kind", ["image", "signal", "vector"])
def test_augmenter_leaves_global_rng_and_threads_alone(kind: str) -> None:
    shape = {"image": (3, 3, 12, 12), "signal": (3, 1, 20), "vector": (3, 8)}[kind]
    x = torch.rand(shape, generator=gen(0))
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    augmenter(kind)(x, gen(1))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.get_num_threads() == threads


def test_augment_restores_the_thread_count() -> None:
    x = torch.rand(2, 3, 8, 8, generator=gen(0))
    torch.set_num_threads(2)
    try:
        augmenter("image")(x, gen(0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["image", "signal", "vector"])
def test_strength_zero_is_the_identity(kind: str) -> None:
    shape = {"image": (2, 3, 8, 8), "signal": (2, 1, 20), "vector": (2, 8)}[kind]
    x = torch.rand(shape, generator=gen(0))
    assert torch.equal(augmenter(kind, strength=0.0)(x, gen(1)), x)


def test_strength_scales_the_perturbation() -> None:
    phase = torch.rand(200, 1, 1, generator=gen(0)) * 6.28
    x = torch.sin(torch.linspace(0, 6.28, 40) + phase)  # smooth: a small shift changes little
    weak = (augmenter("signal", 0.2)(x, gen(1)) - x).abs().mean()
    strong = (augmenter("signal", 2.0)(x, gen(1)) - x).abs().mean()
    assert float(strong) > 2 * float(weak)


def test_signal_shift_is_zero_padded() -> None:
    x = torch.zeros(64, 1, 40)
    x[:, 0, 20] = 1.0  # a spike in the middle
    out = augmenter("signal", strength=1.0)(x, gen(3))
    peak = out[:, 0].argmax(dim=1)
    assert bool(((peak - 20).abs() <= 4).all())  # shifts of at most 0.1 * 40
    assert len(set(peak.tolist())) > 3


def test_vector_dropout_zeroes_features() -> None:
    x = torch.ones(100, 50)
    out = augmenter("vector", strength=1.0)(x, gen(0))
    zero_share = float((out == 0).float().mean())
    assert 0.07 < zero_share < 0.13  # p = 0.1


def test_apply_augment_checks_the_output() -> None:
    x = torch.rand(4, 8)
    assert apply_augment(augmenter("vector"), x, gen(0)).shape == x.shape
    with pytest.raises(ValueError, match=r"^augment "):
        apply_augment(lambda t, g: t[:2], x, gen(0))
    with pytest.raises(ValueError, match=r"^augment "):
        apply_augment("noise", x, gen(0))  # type: ignore[arg-type]


def test_latent_mode_with_an_augmenter_augments_both() -> None:
    y = torch.tensor([0, 0, 1, 1])
    x = torch.rand(4, 6, generator=gen(0))
    x1, x2 = make_views(x, y, torch.tensor([0, 2]), "latent", gen(0), augment=augmenter("vector"))
    assert not torch.allclose(x1, x[[0, 2]])
    assert x2.shape == x1.shape


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "simclr"}, "mode"),
        ({"mode": "augment"}, "augment"),
        ({"mode": "latent", "y_all": None}, "y_all"),
        ({"mode": "latent", "y_all": torch.tensor([0, 1])}, "y_all"),
        ({"mode": "latent", "idx": torch.tensor([9])}, "idx"),
        ({"mode": "augment", "augment": 3}, "augment"),
    ],
)
def test_make_views_bad_input(kwargs: dict, field: str) -> None:
    args: dict = {
        "x_all": torch.rand(4, 3),
        "y_all": torch.tensor([0, 0, 1, 1]),
        "idx": torch.tensor([0, 1]),
        "mode": "latent",
        "generator": gen(),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field}[ :]"):
        make_views(**args)


@pytest.mark.parametrize(
    ("kind", "strength", "x", "field"),
    [
        ("audio", 1.0, torch.rand(2, 3), "kind"),
        ("vector", -0.5, torch.rand(2, 3), "strength"),
        ("image", 1.0, torch.rand(2, 8, 8), "x"),
        ("vector", 1.0, torch.ones(2, 3, dtype=torch.int64), "x"),
        ("signal", 1.0, torch.rand(2, 1, 1, 8), "x"),
    ],
)
def test_augmenter_bad_input(kind: str, strength: float, x: torch.Tensor, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}[ :]"):
        augmenter(kind, strength)(x, gen())


# ---------------------------------------------------------------------------------------------
# negative pools
# ---------------------------------------------------------------------------------------------


def test_negative_pool_shape_range_and_determinism() -> None:
    y = torch.arange(1000) % 10
    pool = negative_pool(y, 4096, gen(0))
    assert pool.shape == (4096,) and pool.dtype == torch.int64
    assert int(pool.min()) >= 0 and int(pool.max()) < 1000
    assert torch.equal(pool, negative_pool(y, 4096, gen(0)))
    assert not torch.equal(pool, negative_pool(y, 4096, gen(1)))
    # the marginal: classes in proportion (uniform over rows)
    share = torch.bincount(y[pool], minlength=10).double() / 4096
    assert bool(((share - 0.1).abs() < 0.03).all())
    assert negative_pool(y, 1, gen(0)).shape == (1,)


def test_negative_pool_is_independent_of_the_batch_size() -> None:
    y = torch.arange(20) % 2
    big = negative_pool(y, 500, gen(0))  # larger than the data set: with replacement
    assert big.shape == (500,) and big.unique().numel() == 20


def test_supervised_pool_has_an_other_class_candidate_for_every_anchor() -> None:
    y = torch.tensor([0] * 99 + [1])
    for seed in range(30):
        pool = negative_pool(y, 3, gen(seed), anchor_labels=torch.tensor([0, 0]), supervised=True)
        assert pool.shape == (3,)
        assert bool((y[pool] != 0).any())
    anchors = torch.tensor([0, 1])
    for seed in range(30):
        pool = negative_pool(y, 2, gen(seed), anchor_labels=anchors, supervised=True)
        for c in (0, 1):
            assert bool((y[pool] != c).any())


def test_negative_pool_bad_input() -> None:
    y = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match=r"^size "):
        negative_pool(y, 0, gen())
    with pytest.raises(ValueError, match=r"^y_all "):
        negative_pool(torch.tensor([0.5]), 3, gen())
    with pytest.raises(ValueError, match=r"^y_all: "):
        negative_pool(torch.zeros(5, dtype=torch.int64), 3, gen(), torch.tensor([0]), True)
    with pytest.raises(ValueError, match=r"^size: "):
        negative_pool(y, 1, gen(), anchor_labels=torch.tensor([0, 1]), supervised=True)

"""Tests of contrastlab.data.registry: the Dataset type, the registry, the generated data sets
(synthetic, synthetic-circle, mnist1d, digits), splits and bad input."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from contrastlab.data.registry import (
    Dataset,
    DatasetInfo,
    datasets_table,
    derived_generator,
    list_datasets,
    load_dataset,
    register_dataset,
    stratified_split,
    stratified_subset,
)
from tests.data.helpers import assert_same

BUILTIN_NAMES = [
    "synthetic",
    "synthetic-circle",
    "mnist1d",
    "digits",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "stl10",
    "imagefolder",
    "rotten-tomatoes",
]


def assert_conventions(ds: Dataset) -> None:
    """What every data set promises (the registry module docstring)."""
    assert ds.x_train.dtype == torch.float32 and ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == torch.int64 and ds.y_test.dtype == torch.int64
    assert ds.x_train.shape[1:] == ds.x_test.shape[1:] == ds.input_shape
    assert ds.x_train.shape[0] == ds.y_train.shape[0] > 0
    assert ds.x_test.shape[0] == ds.y_test.shape[0] > 0
    assert int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) < ds.num_classes
    assert int(ds.y_test.min()) >= 0 and int(ds.y_test.max()) < ds.num_classes
    assert bool(torch.isfinite(ds.x_train).all()) and bool(torch.isfinite(ds.x_test).all())
    assert ds.kind in ("vector", "signal", "image")
    assert len(ds.input_shape) == {"vector": 1, "signal": 2, "image": 3}[ds.kind]
    assert ds.info["sizes"] == {
        **ds.info["sizes"],
        "train": ds.x_train.shape[0],
        "test": ds.x_test.shape[0],
    }
    assert len(ds.classes) == ds.num_classes
    if ds.kind == "image":
        assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_builtins_are_registered_in_order() -> None:
    names = [info.name for info in list_datasets()]
    assert names[: len(BUILTIN_NAMES)] == BUILTIN_NAMES
    for info in list_datasets():
        assert isinstance(info, DatasetInfo)
        assert info.kind in ("vector", "signal", "image")
        assert info.description and info.sizes and info.requires


def test_datasets_table_fits_100_columns() -> None:
    table = datasets_table()
    assert max(len(line) for line in table.splitlines()) <= 100
    assert table.splitlines()[0].split()[:4] == ["name", "kind", "classes", "sizes"]
    for info in list_datasets():
        assert any(line.startswith(info.name + " ") for line in table.splitlines())
    assert len(datasets_table(wide=True).splitlines()) == 2 + len(list_datasets())


def test_datasets_table_lists_every_dataset_with_sizes() -> None:
    table = datasets_table(wide=True)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["name", "kind", "classes", "sizes"]
    for info in list_datasets():
        row = next(line for line in lines if line.startswith(info.name + " "))
        assert info.sizes in row and info.kind in row
    assert "60,000 + 10,000" in table  # fashion-mnist
    assert "apt-get install dataset-fashion-mnist" in table


def test_register_and_load_a_custom_dataset() -> None:
    def loader(*, root: str | None, seed: int, **options: object) -> Dataset:
        g = torch.Generator().manual_seed(seed)
        n = int(options.get("n", 6))  # type: ignore[call-overload]
        return Dataset(
            "toy-test",
            torch.randn(n, 3, generator=g),
            torch.arange(n) % 2,
            torch.randn(2, 3, generator=g),
            torch.tensor([0, 1]),
            2,
            "vector",
            {"sizes": {"train": n, "test": 2}},
        )

    info = DatasetInfo("toy-test", "a toy", "vector", 2, "6 + 2", "-")
    register_dataset("toy-test", loader, info)
    try:
        assert list_datasets()[-1] == info
        ds = load_dataset("toy-test", seed=3, n=4)
        assert ds.input_shape == (3,) and ds.x_train.shape == (4, 3)
        assert_same(ds, load_dataset("toy-test", seed=3, n=4))
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("toy-test", loader, info)
        register_dataset("toy-test", loader, info, replace=True)
        with pytest.raises(ValueError, match=r"^info: "):
            register_dataset("other-name", loader, info)
    finally:
        from contrastlab.data import registry

        registry._REGISTRY.pop("toy-test", None)
    assert "toy-test" not in [i.name for i in list_datasets()]


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    msg = str(err.value)
    assert msg.startswith("name ") and "\n" not in msg
    for name in BUILTIN_NAMES:
        assert repr(name) in msg


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(ValueError, match=r"^seed "):
        load_dataset("synthetic", seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["synthetic", "synthetic-circle", "mnist1d", "digits"])
def test_generated_sets_take_no_root(name: str) -> None:
    with pytest.raises(ValueError, match=r"^root: "):
        load_dataset(name, root="/tmp")


@pytest.mark.parametrize(
    ("name", "options", "option"),
    [
        ("synthetic", {"clases": 3}, "clases"),
        ("synthetic", {"classes": 0}, "classes"),
        ("synthetic", {"classes": 2.5}, "classes"),
        ("synthetic", {"dim": True}, "dim"),
        ("synthetic", {"n_train": -5}, "n_train"),
        ("synthetic", {"n_test": 0}, "n_test"),
        ("synthetic", {"std": -1.0}, "std"),
        ("synthetic", {"std": math.nan}, "std"),
        ("synthetic", {"margin": 1.0}, "margin"),
        ("synthetic", {"sphere": "yes"}, "sphere"),
        ("synthetic", {"disjoint": 1}, "disjoint"),
        ("synthetic", {"prior": "uniformish"}, "prior"),
        ("synthetic", {"prior": [0.5, 0.6]}, "prior"),
        ("synthetic", {"classes": 3, "prior": [0.5, 0.3, 0.3]}, "prior"),
        ("synthetic", {"prior": "zipf:-1"}, "prior"),
        ("synthetic", {"per_class": 5, "n_train": 10}, "per_class"),
        ("synthetic", {"classes": 3, "per_class": 5, "prior": "zipf"}, "per_class"),
        ("synthetic-circle", {"per_class": 1}, "per_class"),
        ("synthetic-circle", {"test_fraction": 0.0}, "test_fraction"),
        ("mnist1d", {"num_samples": 5}, "num_samples"),
        ("mnist1d", {"n_samples": 500}, "n_samples"),
        ("digits", {"test_fraction": 1.5}, "test_fraction"),
        ("digits", {"n_train": 10}, "n_train"),
        ("fashion-mnist", {"n_train": 0}, "n_train"),
        ("cifar10", {"n_test": "all"}, "n_test"),
        ("cifar100", {"classes": 20}, "classes"),
        ("rotten-tomatoes", {"max_samples": 1}, "max_samples"),
        ("rotten-tomatoes", {"model": "bert"}, "model"),
    ],
)
def test_bad_options_name_the_option(name: str, options: dict, option: str) -> None:
    with pytest.raises(ValueError) as err:
        load_dataset(name, **options)
    msg = str(err.value)
    assert msg.startswith(f"{option}"), msg
    assert "\n" not in msg


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="foo is not an option of data set 'digits'; allowed: "
                                         "test_fraction"):
        load_dataset("digits", foo=1)


# ---------------------------------------------------------------------------------------------
# the Dataset type
# ---------------------------------------------------------------------------------------------


def _tiny(**changes: object) -> dict:
    fields: dict = {
        "name": "t",
        "x_train": torch.zeros(4, 2),
        "y_train": torch.tensor([0, 1, 0, 1]),
        "x_test": torch.zeros(2, 2),
        "y_test": torch.tensor([0, 1]),
        "num_classes": 2,
        "kind": "vector",
        "info": {},
    }
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"x_train": torch.zeros(4, 2, dtype=torch.float64)}, "x_train"),
        ({"y_test": torch.tensor([0.0, 1.0])}, "y_test"),
        ({"y_train": torch.tensor([0, 1, 0])}, "y_train"),
        ({"y_train": torch.tensor([0, 1, 2, 1])}, "y_train"),
        ({"x_test": torch.zeros(2, 3)}, "x_test"),
        ({"kind": "graph"}, "kind"),
        ({"kind": "image"}, "x_train"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_dataset_checks_its_fields(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field} "):
        Dataset(**_tiny(**changes))


def test_dataset_properties() -> None:
    ds = Dataset(**_tiny(info={"classes": ["a", "b"]}))
    assert ds.input_shape == (2,)
    assert ds.classes == ["a", "b"]
    assert Dataset(**_tiny()).classes == ["0", "1"]
    assert "input_shape=(2,)" in repr(ds)


# ---------------------------------------------------------------------------------------------
# splits and subsets
# ---------------------------------------------------------------------------------------------


def test_stratified_split_keeps_proportions_and_partitions() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 3 + [3] * 1)
    tr, te = stratified_split(y, 0.2, derived_generator(0, "t"))
    assert sorted(torch.cat([tr, te]).tolist()) == list(range(len(y)))
    assert torch.bincount(y[te], minlength=4).tolist() == [10, 6, 1, 0]  # 0.6 rounds to 1
    assert torch.bincount(y[tr], minlength=4).tolist() == [40, 24, 2, 1]  # singleton stays
    tr2, te2 = stratified_split(y, 0.2, derived_generator(0, "t"))
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    tr3, _ = stratified_split(y, 0.2, derived_generator(1, "t"))
    assert not torch.equal(tr, tr3)
    assert not torch.equal(tr.sort().values, tr)  # shuffled, not in class blocks


def test_stratified_subset_sizes_and_proportions() -> None:
    y = torch.tensor([0] * 700 + [1] * 200 + [2] * 100)
    idx = stratified_subset(y, 50, derived_generator(0, "s"))
    assert idx.numel() == 50 and idx.unique().numel() == 50
    assert torch.bincount(y[idx]).tolist() == [35, 10, 5]
    idx = stratified_subset(y, 7, derived_generator(0, "s"))  # largest remainders
    assert idx.numel() == 7 and torch.bincount(y[idx], minlength=3).tolist() == [5, 1, 1]
    assert stratified_subset(y, 5000, derived_generator(0, "s")).numel() == 1000


def test_derived_generators_differ_by_purpose_and_seed() -> None:
    a = torch.rand(4, generator=derived_generator(0, "a"))
    assert torch.equal(a, torch.rand(4, generator=derived_generator(0, "a")))
    assert not torch.equal(a, torch.rand(4, generator=derived_generator(0, "b")))
    assert not torch.equal(a, torch.rand(4, generator=derived_generator(1, "a")))


# ---------------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------------


def test_synthetic_defaults() -> None:
    ds = load_dataset("synthetic")
    assert_conventions(ds)
    assert ds.kind == "vector" and ds.num_classes == 10 and ds.input_shape == (32,)
    assert ds.x_train.shape == (2000, 32) and ds.x_test.shape == (1000, 32)
    assert set(ds.y_train.tolist()) == set(range(10))
    assert ds.info["prior"] == pytest.approx([0.1] * 10)


def test_synthetic_options_and_determinism() -> None:
    kw = {"classes": 4, "dim": 6, "n_train": 300, "n_test": 100, "std": 0.05}
    a = load_dataset("synthetic", seed=7, **kw)
    assert_conventions(a)
    assert a.input_shape == (6,) and a.num_classes == 4 and a.x_train.shape[0] == 300
    assert_same(a, load_dataset("synthetic", seed=7, **kw))
    b = load_dataset("synthetic", seed=8, **kw)
    assert not torch.equal(a.x_train, b.x_train)
    # classes are separated: the class means are far apart relative to std
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(4)])
    d = torch.cdist(means, means) + torch.eye(4) * 10
    assert float(d.min()) > 0.8
    assert a.info["options"]["std"] == 0.05 and a.info["seed"] == 7


def test_synthetic_per_class_prior_sphere() -> None:
    ds = load_dataset("synthetic", classes=3, dim=4, per_class=20, n_test=30)
    assert torch.bincount(ds.y_train).tolist() == [20, 20, 20]
    zipf = load_dataset("synthetic", classes=3, dim=4, prior="zipf:2", n_train=3000, n_test=10)
    freq = torch.bincount(zipf.y_train, minlength=3).double() / 3000
    rho = torch.tensor(zipf.info["prior"], dtype=torch.float64)
    assert rho[0] > rho[1] > rho[2]
    assert torch.allclose(freq, rho, atol=0.04)
    explicit = load_dataset("synthetic", classes=2, dim=3, prior=[0.9, 0.1], n_test=10)
    assert explicit.info["prior"] == pytest.approx([0.9, 0.1])
    dirichlet = load_dataset("synthetic", classes=5, dim=3, prior="dirichlet:0.5", n_test=10)
    assert sum(dirichlet.info["prior"]) == pytest.approx(1.0)
    sphere = load_dataset("synthetic", classes=3, dim=5, sphere=True, n_train=50, n_test=10)
    assert torch.allclose(sphere.x_train.norm(dim=1), torch.ones(50), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# synthetic-circle
# ---------------------------------------------------------------------------------------------


def test_synthetic_circle() -> None:
    ds = load_dataset("synthetic-circle", classes=5, per_class=20)
    assert_conventions(ds)
    assert ds.input_shape == (2,) and ds.num_classes == 5
    assert torch.bincount(ds.y_train).tolist() == [12] * 5  # the paper's 60/40 split
    assert torch.bincount(ds.y_test).tolist() == [8] * 5
    radius = (ds.y_train.double() + 1) / 2
    assert torch.allclose(ds.x_train.double().norm(dim=1), radius, atol=1e-5)
    assert_same(ds, load_dataset("synthetic-circle", classes=5, per_class=20))
    other = load_dataset("synthetic-circle", classes=5, per_class=20, seed=1)
    assert not torch.equal(ds.x_train, other.x_train)
    full = load_dataset("synthetic-circle")
    assert full.num_classes == 100 and full.x_train.shape == (60000, 2)


# ---------------------------------------------------------------------------------------------
# mnist1d
# ---------------------------------------------------------------------------------------------


def test_mnist1d_small_and_deterministic() -> None:
    pytest.importorskip("mnist1d", reason="pip install mnist1d")
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002 (checks that the loader restores the global state)
    before = (random.random(), np.random.rand())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    ds = load_dataset("mnist1d", num_samples=500)
    after = (random.random(), np.random.rand())  # noqa: NPY002
    assert before == after, "make_dataset's global seeding leaked"
    assert_conventions(ds)
    assert ds.kind == "signal" and ds.input_shape == (1, 40) and ds.num_classes == 10
    assert ds.x_train.shape == (400, 1, 40) and ds.x_test.shape == (100, 1, 40)
    assert set(ds.y_train.tolist()) == set(range(10))
    assert_same(ds, load_dataset("mnist1d", num_samples=500))
    other = load_dataset("mnist1d", num_samples=500, seed=1)
    assert not torch.equal(ds.x_train, other.x_train)
    assert ds.info["package_args"]["seed"] == 0 and ds.info["package_args"]["num_samples"] == 500


def test_mnist1d_matches_the_package() -> None:
    """The loader returns exactly make_dataset's arrays (same seed, same split)."""
    data = pytest.importorskip("mnist1d.data", reason="pip install mnist1d")
    args = data.get_dataset_args()
    args.num_samples, args.seed = 300, 42
    ref = data.make_dataset(args)
    ds = load_dataset("mnist1d", num_samples=300, seed=42)
    assert np.allclose(ds.x_train[:, 0].numpy(), ref["x"], atol=1e-6)
    assert np.array_equal(ds.y_test.numpy(), ref["y_test"])


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------


def test_digits() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert_conventions(ds)
    assert ds.kind == "image" and ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert abs(ds.x_test.shape[0] - 0.2 * 1797) <= 10
    # stratified: each class's test share is about 20%
    share = torch.bincount(ds.y_test, minlength=10) / torch.bincount(
        torch.cat([ds.y_train, ds.y_test]), minlength=10
    )
    assert bool(((share - 0.2).abs() < 0.02).all())
    # pixels are sklearn's /16, with the label kept
    ref = load_digits()
    row = int(torch.nonzero(ds.y_train == 3)[0])
    img = (ds.x_train[row, 0] * 16).round().numpy()
    matches = np.where((ref.images == img).all(axis=(1, 2)))[0]
    assert len(matches) >= 1 and ref.target[matches[0]] == 3
    assert_same(ds, load_dataset("digits"))
    other = load_dataset("digits", seed=1, test_fraction=0.3)
    assert not torch.equal(ds.y_train, other.y_train[: ds.y_train.numel()])
    assert abs(other.x_test.shape[0] - 0.3 * 1797) <= 10

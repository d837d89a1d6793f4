"""The STL-10 loader on small files written in the real binary format (column-major uint8
images, labels 1..10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlab.data.registry import load_dataset, validate_dataset


def _write(root: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Images (N, 3, 96, 96) as they should be read, written as STL-10 stores them."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        images[:, 0, 0, :] = 255  # the first row of channel 0 bright: orientation is checked
        images[:, 0, 1:, 0] = 0
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major per channel
        labels.tofile(folder / f"{split}_y.bin")
        out[split] = images
    return out


def test_stl10_reads_the_binary_format(tmp_path: Path) -> None:
    images = _write(tmp_path)
    ds = load_dataset("stl10", root=str(tmp_path), seed=0)
    assert ds.x_train.shape == (30, 3, 96, 96) and ds.x_test.shape == (20, 3, 96, 96)
    assert ds.kind == "image" and ds.num_classes == 10
    torch.testing.assert_close(ds.x_train, torch.from_numpy(images["train"]).float() / 255)
    assert ds.y_train.tolist() == [i % 10 for i in range(30)]
    assert bool((ds.x_train[:, 0, 0, :] == 1.0).all())  # a row, not a column, is bright
    sub = load_dataset("stl10", root=str(tmp_path / "stl10_binary"), seed=0, n_train=10)
    assert sub.x_train.shape == (10, 3, 96, 96) and sorted(sub.y_train.tolist()) == list(range(10))
    small = load_dataset("stl10", root=str(tmp_path), seed=0, size=32)
    torch.testing.assert_close(small.x_test, torch.nn.functional.avg_pool2d(ds.x_test, 3))


@pytest.mark.parametrize(("damage", "message"), [
    ("missing", "missing stl10_binary/test_y.bin"),
    ("truncated", "train_X.bin holds"),
    ("labels", "labels outside 1..10"),
])
def test_stl10_damage_is_one_line_naming_the_file(tmp_path: Path, damage: str,
                                                  message: str) -> None:
    _write(tmp_path)
    folder = tmp_path / "stl10_binary"
    if damage == "missing":
        (folder / "test_y.bin").unlink()
    elif damage == "truncated":
        data = (folder / "train_X.bin").read_bytes()
        (folder / "train_X.bin").write_bytes(data[:-100])
    else:
        np.zeros(30, dtype=np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(ValueError, match=message) as err:
        load_dataset("stl10", root=str(tmp_path), seed=0)
    assert "\n" not in str(err.value) and "never downloads" in str(err.value)


def test_stl10_options_and_root_are_checked_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.root is required for 'stl10'"):
        validate_dataset("stl10", None, {})
    _write(tmp_path)
    with pytest.raises(ValueError, match="size"):
        validate_dataset("stl10", str(tmp_path), {"size": 50})
    validate_dataset("stl10", str(tmp_path), {"size": 64, "n_train": 5})

"""The image-folder loader on small PNG files in the ImageFolder and Tiny-ImageNet layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from contrastlab.data.registry import load_dataset, validate_dataset

COLOURS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}


def _png(path: Path, colour: tuple[int, int, int], h: int = 30, w: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)


def write_folder(root: Path, per_class: int = 4, tiny_val: bool = False) -> None:
    """train/<class>/*.png and val/<class>/*.png (or Tiny-ImageNet's annotated val/)."""
    lines = []
    for c, colour in COLOURS.items():
        for i in range(per_class):
            _png(root / "train" / c / f"{c}_{i}.png", colour, 30 + i, 40)
        for i in range(2):
            if tiny_val:
                _png(root / "val" / "images" / f"val_{c}_{i}.png", colour)
                lines.append(f"val_{c}_{i}.png\t{c}\t0\t0\t10\t10")
            else:
                _png(root / "val" / c / f"{c}_v{i}.png", colour)
    if tiny_val:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("tiny_val", [False, True])
def test_imagefolder_reads_both_layouts(tmp_path: Path, tiny_val: bool) -> None:
    write_folder(tmp_path, tiny_val=tiny_val)
    ds = load_dataset("imagefolder", root=str(tmp_path), seed=0, size=16)
    assert ds.num_classes == 3 and ds.info["classes"] == ["ant", "bee", "cat"]
    assert ds.x_train.shape == (12, 3, 16, 16) and ds.x_test.shape == (6, 3, 16, 16)
    assert sorted(ds.y_test.tolist()) == [0, 0, 1, 1, 2, 2]
    for x, y in zip(ds.x_train, ds.y_train, strict=True):  # a uniform colour stays uniform
        want = torch.tensor(list(COLOURS.values())[int(y)], dtype=torch.float32) / 255
        torch.testing.assert_close(x, want.view(3, 1, 1).expand(3, 16, 16), atol=1e-5, rtol=0)
    sub = load_dataset("imagefolder", root=str(tmp_path), seed=0, size=16, n_train=6)
    assert sorted(sub.y_train.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(("damage", "message"), [
    ("no-val", "no folder val/ or test/"),
    ("unknown-class", "val/ has classes not in train/: dog"),
    ("corrupt", "cannot decode ant_0.png"),
    ("one-class", "at least 2 needed"),
])
def test_imagefolder_damage_is_one_line(tmp_path: Path, damage: str, message: str) -> None:
    write_folder(tmp_path)
    if damage == "no-val":
        for p in sorted((tmp_path / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (tmp_path / "val").rmdir()
    elif damage == "unknown-class":
        _png(tmp_path / "val" / "dog" / "d.png", (1, 2, 3))
    elif damage == "corrupt":
        (tmp_path / "train" / "ant" / "ant_0.png").write_bytes(b"not a png")
    else:
        for c in ("bee", "cat"):
            for p in (tmp_path / "train" / c).iterdir():
                p.unlink()
            (tmp_path / "train" / c).rmdir()
    with pytest.raises(ValueError, match=message) as err:
        load_dataset("imagefolder", root=str(tmp_path), seed=0, size=16)
    assert "\n" not in str(err.value)


def test_imagefolder_is_checked_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no folder train/"):
        validate_dataset("imagefolder", str(tmp_path), {})
    write_folder(tmp_path)
    with pytest.raises(ValueError, match="size"):
        validate_dataset("imagefolder", str(tmp_path), {"size": 4})
    validate_dataset("imagefolder", str(tmp_path), {"size": 32})

"""STL-10 (Coates, Lee & Ng 2011) from its binary files: the data set of Robinson et al. 2021 and
Chuang et al. 2020 (the READMEs of ``joshr17/HCL`` and ``chingyaoc/DCL`` report its results).

``root`` holds ``stl10_binary/`` (or is that folder), unpacked by the user from
https://cs.stanford.edu/~acoates/stl10/ (contrastlab never downloads), with ``train_X.bin``,
``train_y.bin``, ``test_X.bin`` and ``test_y.bin``. The format: ``*_X.bin`` is uint8, 3 x 96 x 96
bytes per image, each channel stored column-major (the layout of the original MATLAB arrays:
an image is read as (3, 96, 96) and transposed to (3, H, W)); ``*_y.bin`` is one uint8 label per
image, 1..10. 5,000 training and 8,000 test images in 10 classes. The 100,000 unlabelled images
(``unlabeled_X.bin``) are not read.

Options: ``n_train``, ``n_test`` (seeded stratified subsets; default everything) and ``size``
(32, 48, 64 or 96 pixels, default 96; smaller sizes are area-averaged, e.g. 64 for a CPU-sized
run). Values in [0, 1], float32, shape (3, size, size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from contrastlab.data.base import Dataset, DatasetInfo, derived_generator, subsample
from contrastlab.data.options import OptionsModel, parse_options

__all__ = ["BUILTINS", "STL10_CLASSES", "STL10_FILES", "Stl10Options"]

STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck"]
STL10_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
_FOLDER = "stl10_binary"
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


class Stl10Options(OptionsModel):
    """The options of ``stl10``: ``n_train``, ``n_test``, ``size``."""

    n_train: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)
    size: Literal[32, 48, 64, 96] = 96

    def train_size(self) -> int:
        """At most the 5,000 labelled training images."""
        return 5000 if self.n_train is None else min(self.n_train, 5000)


def _root_error(root: str | None, detail: str) -> ValueError:
    where = "" if root is None else f" at {root!r}"
    return ValueError(
        f"root: {detail}{where}; stl10 needs root=DIR with DIR/{_FOLDER}/{{"
        f"{', '.join(STL10_FILES)}}}, the binary version of STL-10 from "
        "https://cs.stanford.edu/~acoates/stl10/, downloaded and unpacked by you (contrastlab "
        "never downloads)")


def _base(root: str | None) -> Path:
    """The folder holding the four binary files; a one-line ValueError naming what is missing."""
    if root is None:
        raise _root_error(root, "no root given")
    base = Path(root).expanduser()
    folder = base if base.name == _FOLDER and not (base / _FOLDER).is_dir() else base / _FOLDER
    if not folder.is_dir():
        raise _root_error(root, f"no folder {_FOLDER}/")
    missing = [f for f in STL10_FILES if not (folder / f).is_file()]
    if missing:
        raise _root_error(root, f"missing {_FOLDER}/{', '.join(missing)}")
    return folder


def _check_root(root: str | None) -> None:
    _base(root)


def _read_split(folder: Path, split: str, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 3, 96, 96), labels int64 0..9) of ``split``, sizes checked."""
    xb = (folder / f"{split}_X.bin").stat().st_size
    labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8)
    n = labels.shape[0]
    if n == 0 or xb != n * _IMAGE_BYTES:
        raise _root_error(root, f"{split}_X.bin holds {xb} bytes, not {n} images of "
                                f"{_IMAGE_BYTES} bytes ({split}_y.bin has {n} labels)")
    if int(labels.min()) < 1 or int(labels.max()) > 10:
        raise _root_error(root, f"{split}_y.bin has labels outside 1..10")
    images = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8).reshape(n, 3, _SIDE, _SIDE)
    images = np.ascontiguousarray(images.transpose(0, 1, 3, 2))  # column-major -> (C, H, W)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64) - 1)


def _to_float(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images.to(torch.float32) / 255.0
    if size != _SIDE:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def _load_stl10(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """STL-10's labelled splits from the binary files (module docstring)."""
    opts = parse_options(Stl10Options, options, "data set 'stl10'")
    folder = _base(root)
    parts = {}
    for split in ("train", "test"):
        images, labels = _read_split(folder, split, root)
        n = opts.n_train if split == "train" else opts.n_test
        idx_images, y = subsample(torch.arange(labels.shape[0]), labels, n,
                                  derived_generator(seed, f"stl10/{split}"))
        parts[split] = (_to_float(images[idx_images], opts.size), y)
    return Dataset(
        name="stl10",
        x_train=parts["train"][0],
        y_train=parts["train"][1],
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        num_classes=10,
        kind="image",
        info={"source": f"STL-10 binary files in {str(folder)!r}", "root": str(root),
              "options": opts.model_dump(), "classes": STL10_CLASSES, "seed": seed,
              "sizes": {"train": int(parts["train"][1].numel()),
                        "test": int(parts["test"][1].numel())}},
    )


BUILTINS: tuple[tuple[Any, DatasetInfo], ...] = (
    (
        _load_stl10,
        DatasetInfo(
            "stl10",
            "STL-10 96x96 (binary files; Robinson et al. / Chuang et al.)",
            "image",
            10,
            "5,000 + 8,000 labelled (option size: 32, 48, 64 or 96 px)",
            "root with stl10_binary/ (never downloaded)",
            options=Stl10Options,
            root="required",
            check_root=_check_root,
            train_size=Stl10Options.train_size,
        ),
    ),
)

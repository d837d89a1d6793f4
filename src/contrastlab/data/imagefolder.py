"""Image folders (Tiny-ImageNet, ImageNet-100 and any data set laid out as torchvision's
``ImageFolder``): ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``root/test/``).

The classes are the subfolder names of ``train/``, sorted (their index is the label); ``val/``
(or ``test/``) must use the same names. Every file with an image extension (.jpeg, .jpg, .png,
.webp, .gif) is decoded with Pillow (RGB; a torchvision dependency), its shorter side resized to
``size`` (antialiased, bilinear) and the centre ``size x size`` cropped, in [0, 1]. Options:
``size`` (default 64, Tiny-ImageNet's), ``n_train`` / ``n_test`` (seeded stratified subsets,
chosen from the file lists before any image is decoded). The images are held in memory
(N x 3 x size x size float32): a subset keeps the memory bounded (ImageNet-100 at 64 px is
130,000 x 49 KB = 6.4 GB; ``n_train`` 20,000 is 1 GB). Tiny-ImageNet's own ``val/`` (one
folder of images with ``val_annotations.txt``) is read through that file.

Nothing is downloaded: ``data.root`` points at the unpacked folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from contrastlab.data.base import Dataset, DatasetInfo, derived_generator, stratified_subset
from contrastlab.data.options import OptionsModel, parse_options

__all__ = ["BUILTINS", "IMAGE_EXTENSIONS", "ImageFolderOptions"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp", ".gif")
_TEST_SPLITS = ("val", "test")


class ImageFolderOptions(OptionsModel):
    """The options of ``imagefolder``: ``size``, ``n_train``, ``n_test``."""

    size: int = Field(64, ge=8, le=512)
    n_train: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)


def _root_error(root: str | None, detail: str) -> ValueError:
    where = "" if root is None else f" at {root!r}"
    return ValueError(f"root: {detail}{where}; imagefolder needs root=DIR with DIR/train/<class>/"
                      "<images> and DIR/val/<class>/<images> (or DIR/test/), unpacked by you "
                      "(contrastlab never downloads)")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _listing(root: str | None) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """(class names, split -> [(file, label)]) without decoding anything."""
    if root is None:
        raise _root_error(root, "no root given")
    base = Path(root).expanduser()
    train = base / "train"
    if not train.is_dir():
        raise _root_error(root, "no folder train/")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise _root_error(root, f"train/ has {len(classes)} class folder(s); at least 2 needed")
    index = {c: i for i, c in enumerate(classes)}
    split = next((s for s in _TEST_SPLITS if (base / s).is_dir()), None)
    if split is None:
        raise _root_error(root, "no folder val/ or test/")
    files = {"train": [(f, index[c]) for c in classes for f in _images_in(train / c)]}
    annotations = base / split / "val_annotations.txt"
    if annotations.is_file():  # Tiny-ImageNet: val/images/<file> listed with its class
        files["test"] = _annotated(base / split, annotations, index, root)
    else:
        unknown = sorted(p.name for p in (base / split).iterdir()
                         if p.is_dir() and p.name not in index)
        if unknown:
            raise _root_error(root, f"{split}/ has classes not in train/: {', '.join(unknown[:5])}")
        files["test"] = [(f, index[c]) for c in classes if (base / split / c).is_dir()
                         for f in _images_in(base / split / c)]
    for name, listed in files.items():
        if not listed:
            raise _root_error(root, f"no images in the {name} split")
    return classes, files


def _annotated(folder: Path, annotations: Path, index: dict[str, int],
               root: str | None) -> list[tuple[Path, int]]:
    out = []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not line.strip():
            continue
        if parts[1] not in index:
            raise _root_error(root, f"{annotations.name}: class {parts[1]!r} is not in train/")
        out.append((folder / "images" / parts[0], index[parts[1]]))
    return out


def _decode(path: Path, size: int, root: str | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            img = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise _root_error(root, f"cannot decode {path.name} ({str(err).splitlines()[0]})"
                          ) from None
    img = img.permute(2, 0, 1)
    x = img.to(torch.float32).unsqueeze(0) / 255.0
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[0, :, top : top + size, left : left + size].clamp(0.0, 1.0)


def _split(files: list[tuple[Path, int]], n: int | None, size: int, seed: int, name: str,
           root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    rows = (torch.arange(y.numel()) if n is None or n >= y.numel()
            else stratified_subset(y, n, derived_generator(seed, f"imagefolder/{name}")))
    x = torch.stack([_decode(files[int(i)][0], size, root) for i in rows])
    return x, y[rows]


def _check_root(root: str | None) -> None:
    _listing(root)


def _load_imagefolder(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """An image folder (module docstring)."""
    opts = parse_options(ImageFolderOptions, options, "data set 'imagefolder'")
    classes, files = _listing(root)
    x_train, y_train = _split(files["train"], opts.n_train, opts.size, seed, "train", root)
    x_test, y_test = _split(files["test"], opts.n_test, opts.size, seed, "test", root)
    return Dataset(
        name="imagefolder", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        num_classes=len(classes), kind="image",
        info={"source": f"image folder {str(root)!r}", "root": str(root), "seed": seed,
              "options": opts.model_dump(), "classes": classes,
              "sizes": {"train": int(y_train.numel()), "test": int(y_test.numel())}},
    )


BUILTINS: tuple[tuple[Any, DatasetInfo], ...] = (
    (
        _load_imagefolder,
        DatasetInfo(
            "imagefolder",
            "class folders of images (Tiny-ImageNet, ImageNet-100, ...; train/ and val/)",
            "image",
            None,
            "as found (options n_train, n_test, size)",
            "root with train/<class>/ and val/<class>/ (never downloaded)",
            options=ImageFolderOptions,
            root="required",
            check_root=_check_root,
        ),
    ),
)

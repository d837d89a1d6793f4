"""Real data sets, all offline: MNIST-1D, digits, Fashion-MNIST, CIFAR-10/100.

Nothing here downloads. MNIST-1D is generated locally by the ``mnist1d`` package's
``make_dataset`` (never its ``get_dataset``, which downloads); digits ship inside scikit-learn;
Fashion-MNIST is read from IDX files (Debian's ``dataset-fashion-mnist`` package puts them in
``/usr/share/datasets/fashion-mnist``) through torchvision; CIFAR-10/100 are read through
torchvision from a directory the user downloaded themselves.

Images are float32 in ``[0, 1]``, channel first. Heavy imports (torchvision, scikit-learn,
mnist1d) happen inside the loaders, so importing :mod:`contrastlab.data` stays light.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from pydantic import Field

from contrastlab.data.assemble import assemble_dataset, seeded_split
from contrastlab.data.base import (
    Dataset,
    DatasetInfo,
    default_cache_dir,
    derived_generator,
    no_root,
    subsample,
)
from contrastlab.data.options import OptionsModel, parse_options

__all__ = [
    "BUILTINS",
    "FASHION_MNIST_DEFAULT_ROOT",
    "FASHION_MNIST_FILES",
    "prepare_fashion_mnist",
]

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files."""

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def require(module: str, purpose: str, install: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ImportError(f"{purpose} needs the package {top!r}: {install}") from err


def _torchvision_datasets() -> Any:
    return require(
        "torchvision.datasets", "this data set", "pip install 'contrastlab[vision]' (torchvision)"
    )


def _images_to_float(data: Any) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) to float32 (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(data))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    else:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous().to(torch.float32).div_(255.0)


def _labels(targets: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1)


# --------------------------------------------------------------------------------------------
# MNIST-1D
# --------------------------------------------------------------------------------------------


@contextmanager
def _preserved_global_rngs() -> Iterator[None]:
    """``make_dataset`` seeds Python's and NumPy's global generators: put them back after."""
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what it seeds)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002


class Mnist1dOptions(OptionsModel):
    """The options of ``mnist1d``: ``num_samples`` (train + test; the package keeps 80 % for
    training)."""

    num_samples: int = Field(5000, ge=10)

    def train_size(self) -> int:
        """The package's split: the first 80 % (``int(0.8 * num_samples)``) are training."""
        return int(0.8 * self.num_samples)


def _load_mnist1d(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """MNIST-1D (Greydanus & Kobak, ICML 2024), generated locally.

    ``mnist1d.data.make_dataset`` with the package's default arguments except ``num_samples``
    (option, default 5000: the canonical 4,000 train + 1,000 test) and ``seed`` (the package's
    own seed; ``seed=42`` with 5000 samples is the canonical data set). The split is the
    package's (first 80% train). Inputs are (1, 40) signals, standardized by the package.
    The global ``random`` / ``numpy.random`` states are restored afterwards.
    """
    no_root("mnist1d", root)
    opts = parse_options(Mnist1dOptions, options, "data set 'mnist1d'")
    num_samples = opts.num_samples
    if seed >= 2**32:
        raise ValueError(f"seed must be < 2**32 for mnist1d (NumPy's seed range); got {seed}")
    data_mod = require("mnist1d.data", "the data set 'mnist1d'", "pip install mnist1d")
    args = data_mod.get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    with _preserved_global_rngs():
        d = data_mod.make_dataset(args)
    x_train = torch.as_tensor(np.asarray(d["x"]), dtype=torch.float32).unsqueeze(1)
    x_test = torch.as_tensor(np.asarray(d["x_test"]), dtype=torch.float32).unsqueeze(1)
    info = {
        "source": "mnist1d.data.make_dataset (Greydanus & Kobak 2024), generated locally",
        "options": opts.model_dump(),
        "package_args": {k: v for k, v in vars(args).items() if k != "url" and not callable(v)},
    }
    train, test = (x_train, _labels(d["y"])), (x_test, _labels(d["y_test"]))
    return assemble_dataset("mnist1d", "signal", 10, train, test, info, seed=seed)


# --------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------


class DigitsOptions(OptionsModel):
    """The options of ``digits``: ``test_fraction`` of the seeded stratified split."""

    test_fraction: float = Field(0.2, gt=0, lt=1)


def _load_digits(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """UCI optical digits as bundled with scikit-learn (``load_digits``; 1,797 8x8 images).

    Options: ``test_fraction`` (default 0.2) of a seeded stratified split. Pixels (0..16) are
    scaled to [0, 1]; shape (1, 8, 8).
    """
    no_root("digits", root)
    opts = parse_options(DigitsOptions, options, "data set 'digits'")
    frac = opts.test_fraction
    datasets = require("sklearn.datasets", "the data set 'digits'", "pip install scikit-learn")
    bunch = datasets.load_digits()
    x = torch.as_tensor(np.asarray(bunch.images), dtype=torch.float32).div_(16.0).unsqueeze(1)
    train, test = seeded_split(x, _labels(bunch.target), frac, seed, "digits/split")
    info = {
        "source": "sklearn.datasets.load_digits (UCI optical recognition of digits)",
        "options": opts.model_dump(),
    }
    return assemble_dataset("digits", "image", 10, train, test, info, seed=seed)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


def _fashion_root_error(root: Path, detail: str) -> ValueError:
    return ValueError(
        f"root: {detail} at {str(root)!r}; Fashion-MNIST needs a directory with the four IDX "
        f"files ({', '.join(FASHION_MNIST_FILES)}, plain or .gz): on Debian/Ubuntu "
        f"'apt-get install dataset-fashion-mnist' puts them in {FASHION_MNIST_DEFAULT_ROOT}"
    )


def _atomic_copy(source: Any, dest: Path) -> None:
    """Copy the stream ``source`` to ``dest`` through a temporary file in its directory, renamed
    into place, so concurrent readers never see a partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(source, f)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_fashion_mnist(root: str | os.PathLike[str], cache_dir: Path | None = None) -> Path:
    """A directory that torchvision's ``FashionMNIST(dir, download=False)`` reads.

    ``root`` is either torchvision's layout (``root/FashionMNIST/raw/`` holds the four IDX
    files; returned as it is) or a directory holding the four files plain or gzipped (Debian's
    package). In the second case the files are gunzipped (or linked, when plain) into
    ``cache_dir/fashion-mnist/<key>/FashionMNIST/raw/``, where the key hashes the source files'
    paths, sizes and modification times, so a changed source never reuses stale files.
    """
    src = Path(root).expanduser()
    if not src.is_dir():
        raise _fashion_root_error(src, "no such directory")
    if all((src / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_MNIST_FILES):
        return src
    found: dict[str, Path] = {}
    for f in FASHION_MNIST_FILES:
        for cand in (src / f, src / f"{f}.gz"):
            if cand.is_file():
                found[f] = cand
                break
    missing = [f for f in FASHION_MNIST_FILES if f not in found]
    if missing:
        raise _fashion_root_error(src, f"missing {', '.join(missing)} (plain or .gz)")
    h = hashlib.sha256()
    for f in FASHION_MNIST_FILES:
        st = found[f].stat()
        h.update(f"{found[f].resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    base = (cache_dir or default_cache_dir()) / "fashion-mnist" / h.hexdigest()[:16]
    raw = base / "FashionMNIST" / "raw"
    for f in FASHION_MNIST_FILES:
        dest = raw / f
        if dest.is_file():
            continue
        source = found[f]
        if source.suffix == ".gz":
            try:
                with gzip.open(source, "rb") as fin:
                    _atomic_copy(fin, dest)
            except (OSError, EOFError) as err:
                raise _fashion_root_error(src, f"cannot gunzip {source.name} ({err})") from None
        else:
            raw.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(source.resolve(), dest)
            except FileExistsError:
                pass
            except OSError:
                with open(source, "rb") as fin:
                    _atomic_copy(fin, dest)
    return base


class FashionOptions(OptionsModel):
    """The options of ``fashion-mnist``: ``n_train``, ``n_test`` (seeded stratified subsets;
    default everything) and ``cache_dir`` (where gunzipped files go)."""

    n_train: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)
    cache_dir: str | None = None

    def train_size(self) -> int:
        """At most the 60,000 training images."""
        return 60000 if self.n_train is None else min(self.n_train, 60000)


def _check_fashion_root(root: str | None) -> None:
    """The IDX files exist under ``root`` (or the default root), before any work."""
    src = Path(root if root is not None else FASHION_MNIST_DEFAULT_ROOT).expanduser()
    if not src.is_dir():
        raise _fashion_root_error(src, "no such directory")
    if all((src / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_MNIST_FILES):
        return
    missing = [f for f in FASHION_MNIST_FILES
               if not (src / f).is_file() and not (src / f"{f}.gz").is_file()]
    if missing:
        raise _fashion_root_error(src, f"missing {', '.join(missing)} (plain or .gz)")


def _load_fashion_mnist(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; 60,000 + 10,000 28x28 images, 10 classes).

    ``root``: a directory with the four IDX files, plain or gzipped (default
    ``/usr/share/datasets/fashion-mnist``, from ``apt-get install dataset-fashion-mnist``), or
    torchvision's ``root/FashionMNIST/raw/`` layout; see :func:`prepare_fashion_mnist`. Read by
    ``torchvision.datasets.FashionMNIST(..., download=False)``. Options: ``n_train``,
    ``n_test`` (seeded stratified subsets; default everything) and ``cache_dir`` (where
    gunzipped files go; default :func:`default_cache_dir`). Shape (1, 28, 28).
    """
    opts = parse_options(FashionOptions, options, "data set 'fashion-mnist'")
    n_train, n_test = opts.n_train, opts.n_test
    cache_dir = None if opts.cache_dir is None else Path(opts.cache_dir).expanduser()
    source = root if root is not None else FASHION_MNIST_DEFAULT_ROOT
    tv = _torchvision_datasets()
    tv_root = prepare_fashion_mnist(source, cache_dir)
    splits = {}
    for train in (True, False):
        try:
            ds = tv.FashionMNIST(str(tv_root), train=train, download=False)
        except (RuntimeError, AssertionError, ValueError, OSError) as err:
            raise _fashion_root_error(Path(source), f"unreadable IDX files ({err})") from None
        splits[train] = (_images_to_float(ds.data), _labels(ds.targets))
    train_set = subsample(*splits[True], n_train, derived_generator(seed, "fmnist/train"))
    test_set = subsample(*splits[False], n_test, derived_generator(seed, "fmnist/test"))
    info = {
        "source": f"torchvision.datasets.FashionMNIST over IDX files in {str(source)!r}",
        "root": str(source),
        "options": opts.model_dump(),
    }
    return assemble_dataset("fashion-mnist", "image", 10, train_set, test_set, info, seed=seed,
                            classes=list(FASHION_MNIST_CLASSES))


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------------------------

_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "data_batch_1..5, test_batch, batches.meta", 10),
    "cifar100": ("CIFAR100", "cifar-100-python", "train, test, meta", 100),
}


def _cifar_root_error(name: str, root: str | None, detail: str) -> ValueError:
    cls, folder, files, _ = _CIFAR[name]
    where = "" if root is None else f" at {root!r}"
    return ValueError(
        f"root: {detail}{where}; {name} needs root=DIR with DIR/{folder}/{{{files}}}, the "
        f"'python version' of {cls} from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "downloaded and unpacked by you (contrastlab never downloads)"
    )


_CIFAR_FILES = {
    "cifar10": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                "data_batch_5", "test_batch", "batches.meta"),
    "cifar100": ("train", "test", "meta"),
}


class CifarOptions(OptionsModel):
    """The options of ``cifar10`` / ``cifar100``: ``n_train``, ``n_test`` (seeded stratified
    subsets; default everything)."""

    n_train: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)

    def train_size(self) -> int:
        """At most the 50,000 training images."""
        return 50000 if self.n_train is None else min(self.n_train, 50000)


def _cifar_base(name: str, root: str | None) -> Path:
    """The directory holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``) with every
    batch file; a one-line ValueError naming what is missing otherwise."""
    _, folder, _, _ = _CIFAR[name]
    if root is None:
        raise _cifar_root_error(name, root, "no root given")
    base = Path(root).expanduser()
    if base.name == folder and not (base / folder).is_dir():
        base = base.parent  # root points at the unpacked folder itself
    if not (base / folder).is_dir():
        raise _cifar_root_error(name, root, f"no folder {folder}/")
    missing = [f for f in _CIFAR_FILES[name] if not (base / folder / f).is_file()]
    if missing:
        raise _cifar_root_error(name, root, f"missing {folder}/{', '.join(missing)}")
    return base


def _check_cifar_root(name: str, root: str | None) -> None:
    """Before any work: ``root`` holds every batch file of ``name``."""
    _cifar_base(name, root)


def _load_cifar(name: str, root: str | None, seed: int, options: dict[str, Any]) -> Dataset:
    cls_name, folder, _, num_classes = _CIFAR[name]
    opts = parse_options(CifarOptions, options, f"data set {name!r}")
    n_train, n_test = opts.n_train, opts.n_test
    base = _cifar_base(name, root)
    tv = _torchvision_datasets()
    cls = getattr(tv, cls_name)
    splits = {}
    for train in (True, False):
        try:
            ds = cls(str(base), train=train, download=False)
        except RuntimeError as err:
            raise _cifar_root_error(
                name, root, f"files missing or corrupted (md5 check failed: {err})"
            ) from None
        except (OSError, EOFError, KeyError, ValueError, TypeError) as err:
            raise _cifar_root_error(name, root, f"unreadable files ({err})") from None
        splits[train] = (_images_to_float(ds.data), _labels(ds.targets), list(ds.classes))
    x_train, y_train, classes = splits[True]
    x_test, y_test, _ = splits[False]
    for split, y in (("train", y_train), ("test", y_test)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise _cifar_root_error(name, root, f"{split} labels outside 0..{num_classes - 1}")
    train_set = subsample(x_train, y_train, n_train, derived_generator(seed, f"{name}/tr"))
    test_set = subsample(x_test, y_test, n_test, derived_generator(seed, f"{name}/te"))
    info = {
        "source": f"torchvision.datasets.{cls_name} over {str(base / folder)!r}",
        "root": str(root),
        "options": opts.model_dump(),
    }
    names = [str(c) for c in classes] if len(classes) == num_classes else None
    return assemble_dataset(name, "image", num_classes, train_set, test_set, info, seed=seed,
                            classes=names)


def _load_cifar10(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10(root, download=False)``.

    ``root`` (required) holds ``cifar-10-batches-py/`` (or is that folder). Options:
    ``n_train``, ``n_test`` (seeded stratified subsets). Shape (3, 32, 32), values in [0, 1].
    """
    return _load_cifar("cifar10", root, seed, options)


def _load_cifar100(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """CIFAR-100 (fine labels) through ``torchvision.datasets.CIFAR100(root, download=False)``.

    ``root`` (required) holds ``cifar-100-python/`` (or is that folder). Options: ``n_train``,
    ``n_test``. Shape (3, 32, 32), values in [0, 1].
    """
    return _load_cifar("cifar100", root, seed, options)


def _cifar_builtin(
    name: str, loader: Callable[..., Dataset], description: str
) -> tuple[Callable[..., Dataset], DatasetInfo]:
    """The registry entry of ``cifar10`` / ``cifar100`` (folder and class count from
    :data:`_CIFAR`)."""
    _, folder, _, num_classes = _CIFAR[name]
    info = DatasetInfo(
        name,
        description,
        "image",
        num_classes,
        "50,000 + 10,000",
        f"torchvision; root=DIR with {folder}/",
        options=CifarOptions,
        root="required",
        check_root=functools.partial(_check_cifar_root, name),
        train_size=CifarOptions.train_size,
    )
    return loader, info


BUILTINS: tuple[tuple[Callable[..., Dataset], DatasetInfo], ...] = (
    (
        _load_mnist1d,
        DatasetInfo(
            "mnist1d",
            "MNIST-1D (Greydanus & Kobak 2024), generated locally by make_dataset",
            "signal",
            10,
            "generated (default 4,000 + 1,000; option num_samples)",
            "mnist1d",
            options=Mnist1dOptions,
            root="none",
            train_size=Mnist1dOptions.train_size,
        ),
    ),
    (
        _load_digits,
        DatasetInfo(
            "digits",
            "UCI optical digits, 8x8 (bundled with scikit-learn)",
            "image",
            10,
            "1,797 (seeded 80/20 split)",
            "scikit-learn",
            options=DigitsOptions,
            root="none",
        ),
    ),
    (
        _load_fashion_mnist,
        DatasetInfo(
            "fashion-mnist",
            "Fashion-MNIST 28x28 (IDX files; apt-get install dataset-fashion-mnist)",
            "image",
            10,
            "60,000 + 10,000",
            f"torchvision; root (default {FASHION_MNIST_DEFAULT_ROOT})",
            options=FashionOptions,
            root="optional",
            check_root=_check_fashion_root,
            train_size=FashionOptions.train_size,
        ),
    ),
    _cifar_builtin(
        "cifar10", _load_cifar10, "CIFAR-10 32x32 colour images (your own copy; never downloaded)"
    ),
    _cifar_builtin(
        "cifar100",
        _load_cifar100,
        "CIFAR-100 32x32 colour images, fine labels (your own copy; never downloaded)",
    ),
)

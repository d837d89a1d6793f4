"""The data-set registry: one name per data set, one :class:`Dataset` type for all of them.

``load_dataset(name, root=..., seed=..., **options)`` returns a :class:`Dataset` of float32 inputs
and int64 labels split into train and test. Data sets are never downloaded: the generated ones
(``synthetic``, ``synthetic-circle``, ``mnist1d``) are made locally, the others are read from
files that are already on the machine (a wheel, a Debian package, or a user-given ``root``).
The conventions of every :class:`Dataset` are stated in :mod:`contrastlab.data.base`, which
holds the type and the helpers the loaders share (re-exported here).

Built-in data sets (``contrastlab datasets`` lists them): ``synthetic``, ``synthetic-circle``
(:mod:`contrastlab.data.generated`), ``mnist1d``, ``digits``, ``fashion-mnist``, ``cifar10``,
``cifar100`` (:mod:`contrastlab.data.real`), ``stl10`` (:mod:`contrastlab.data.stl10`),
``imagefolder`` (:mod:`contrastlab.data.imagefolder`) and ``rotten-tomatoes``
(:mod:`contrastlab.data.text`). Other data sets join with :func:`register_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from contrastlab._tables import fit_table
from contrastlab._validation import check_choice
from contrastlab.data.base import (
    KINDS,
    Dataset,
    DatasetInfo,
    DatasetLoader,
    default_cache_dir,
    derived_generator,
    no_root,
    stratified_split,
    stratified_subset,
    subsample,
)
from contrastlab.data.generated import BUILTINS as GENERATED
from contrastlab.data.generated import CircleOptions, SyntheticOptions
from contrastlab.data.imagefolder import BUILTINS as IMAGEFOLDER
from contrastlab.data.options import OptionsModel, parse_options
from contrastlab.data.real import BUILTINS as REAL
from contrastlab.data.stl10 import BUILTINS as STL10
from contrastlab.data.text import BUILTINS as TEXT

__all__ = [
    "KINDS",
    "CircleOptions",
    "Dataset",
    "DatasetInfo",
    "DatasetLoader",
    "SyntheticOptions",
    "datasets_table",
    "default_cache_dir",
    "derived_generator",
    "list_datasets",
    "load_dataset",
    "no_root",
    "register_dataset",
    "stratified_split",
    "stratified_subset",
    "subsample",
    "train_size",
    "validate_dataset",
]

_REGISTRY: dict[str, tuple[Callable[..., Dataset], DatasetInfo]] = {}


def register_dataset(
    name: str, loader: Callable[..., Dataset], info: DatasetInfo, *, replace: bool = False
) -> None:
    """Add a data set to the registry.

    ``loader`` is called as ``loader(root=root, seed=seed, **options)`` and returns a
    :class:`Dataset`. A name already registered is refused unless ``replace=True``.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"name must be a non-empty string without outer spaces; got {name!r}")
    if not callable(loader):
        raise ValueError(f"loader must be callable; got {type(loader).__name__}")
    if not isinstance(info, DatasetInfo):
        raise ValueError(f"info must be a DatasetInfo; got {type(info).__name__}")
    if info.name != name:
        raise ValueError(f"info: its name {info.name!r} must equal the registered name {name!r}")
    check_choice("info.kind", info.kind, KINDS)
    _register_builtins()
    if name in _REGISTRY and not replace:
        raise ValueError(f"name: data set {name!r} is already registered (pass replace=True)")
    _REGISTRY[name] = (loader, info)


def list_datasets() -> list[DatasetInfo]:
    """The registered data sets, in registration order (the built-ins first)."""
    _register_builtins()
    return [info for _, info in _REGISTRY.values()]


def load_dataset(name: str, *, root: str | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Load the data set ``name`` (see :func:`list_datasets`).

    Args:
        name: a registered name (unknown names raise a ValueError listing the registered ones).
        root: where the files are, for the data sets read from files (``fashion-mnist``,
            ``cifar10``, ``cifar100``); the others take no root.
        seed: an integer >= 0; every random choice (generation, splits, subsets) derives from it,
            so equal arguments give identical tensors.
        options: the data set's own options (its loader's docstring lists them); an unknown or
            bad option raises a ValueError naming it.
    """
    _register_builtins()
    if name not in _REGISTRY:
        shown = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(f"name must be one of the registered data sets {shown}; got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    if root is not None and not isinstance(root, str | os.PathLike):
        raise ValueError(f"root must be a directory path or None; got {type(root).__name__}")
    loader, _ = _REGISTRY[name]
    ds = loader(root=None if root is None else os.fspath(root), seed=int(seed), **options)
    if not isinstance(ds, Dataset):
        raise TypeError(f"the loader of {name!r} returned {type(ds).__name__}, not a Dataset")
    return ds


def validate_dataset(name: str, root: str | None, options: Mapping[str, Any],
                     prefix: str = "data") -> OptionsModel | None:
    """Check a data set's ``root`` and ``options`` without loading it (what the config does
    before any work): the name is registered, a root is given where required and refused where
    the data set takes none, the root holds the files (the data set's own ``check_root``), and
    the options parse against its declared model. Returns the parsed options (None when the
    data set declares no model). Raises a one-line ValueError naming ``prefix.root`` or
    ``prefix.options.<name>``."""
    _register_builtins()
    if name not in _REGISTRY:
        shown = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(f"{prefix}.name must be one of {shown}; got {name!r}")
    info = _REGISTRY[name][1]
    if info.root == "none" and root is not None:
        raise ValueError(f"{prefix}.root: data set {name!r} takes no root (it needs no files); "
                         f"got {root!r}")
    if info.root == "required" and root is None:
        raise ValueError(f"{prefix}.root is required for {name!r}: the directory holding its "
                         "files; nothing is downloaded; set data.root=PATH")
    if info.check_root is not None:
        try:
            info.check_root(root)
        except ValueError as exc:
            text = str(exc).splitlines()[0]
            raise ValueError(text if text.startswith(f"{prefix}.root")
                             else f"{prefix}.{text}" if text.startswith("root")
                             else f"{prefix}.root: {text}") from None
    if info.options is None:
        return None
    return parse_options(info.options, options, f"data set {name!r}", f"{prefix}.options")


def train_size(name: str, options: OptionsModel | None) -> int | None:
    """The number of training samples of data set ``name`` with the parsed ``options``, when
    its registration tells it without loading (None otherwise)."""
    _register_builtins()
    info = _REGISTRY[name][1]
    if info.train_size is None or options is None:
        return None
    return info.train_size(options)


def datasets_table(wide: bool = False) -> str:
    """A text table of the registered data sets (what ``contrastlab datasets`` prints): long
    cells wrapped to fit the terminal, or with ``wide`` one line per data set."""
    header = ("name", "kind", "classes", "sizes", "requires", "description")
    rows = []
    for info in list_datasets():
        classes = "option" if info.num_classes is None else str(info.num_classes)
        rows.append((info.name, info.kind, classes, info.sizes, info.requires, info.description))
    return fit_table(header, rows, wide=wide)


#: the built-in data sets, in this order (``contrastlab datasets`` lists them so)
BUILTINS: tuple[tuple[Callable[..., Dataset], DatasetInfo], ...] = (
    *GENERATED, *REAL, *STL10, *IMAGEFOLDER, *TEXT)


def _register_builtins() -> None:
    """Register the built-in data sets, once, on first use of the registry."""
    global _builtins_registered
    if _builtins_registered:
        return
    _builtins_registered = True
    for loader, info in BUILTINS:
        if info.name not in _REGISTRY:  # a user's registration of the same name wins
            _REGISTRY[info.name] = (loader, info)
    # built-ins first, in their order, then anything registered before
    order = [info.name for _, info in BUILTINS]
    for name in [n for n in _REGISTRY if n not in order]:
        _REGISTRY[name] = _REGISTRY.pop(name)


_builtins_registered = False

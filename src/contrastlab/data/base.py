"""The :class:`Dataset` type and what every data-set loader shares (no loader lives here).

The registry (:mod:`contrastlab.data.registry`) and the loaders (:mod:`contrastlab.data.generated`,
:mod:`contrastlab.data.real`, :mod:`contrastlab.data.text`) all build on this module, which
imports none of them.

Conventions of every :class:`Dataset`:

- ``x_*`` float32 of shape ``(N, *input_shape)``; ``y_*`` int64 in ``0..num_classes-1``;
- ``kind`` is ``"vector"`` (``(d,)``), ``"signal"`` (``(channels, length)``) or ``"image"``
  (``(channels, height, width)``, pixel values in ``[0, 1]``); it selects the augmentations of
  :mod:`contrastlab.data.pairs` and the default encoder;
- ``info`` is JSON-serializable provenance: ``source``, the resolved ``options``, ``sizes``,
  ``classes`` (class names) and the ``seed``.

Helpers of the loaders: :func:`default_cache_dir`, :func:`derived_generator` (independent
seeded streams), :func:`no_root`, and the seeded stratified :func:`stratified_split`,
:func:`stratified_subset` and :func:`subsample`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from contrastlab._validation import check_choice
from contrastlab.data.options import OptionsModel

__all__ = [
    "KINDS",
    "Dataset",
    "DatasetInfo",
    "DatasetLoader",
    "class_holdout",
    "default_cache_dir",
    "derived_generator",
    "no_root",
    "stratified_split",
    "stratified_subset",
    "subsample",
]

KINDS = ("vector", "signal", "image")
"""The kinds of input: they drive the augmentations and the choice of encoder."""


# --------------------------------------------------------------------------------------------
# the Dataset type
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A labelled data set split into train and test (see the module docstring for conventions).

    The constructor checks the conventions (dtypes, shapes, label range) and raises a one-line
    ``ValueError`` naming the field otherwise.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValueError(f"num_classes must be an integer >= 1; got {self.num_classes!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1; got {self.num_classes!r}")
        want_ndim = {"vector": 2, "signal": 3, "image": 4}[self.kind]
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
                got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"x_{split} must be a float32 torch.Tensor; got {got}")
            if x.ndim != want_ndim:
                raise ValueError(
                    f"x_{split} must have {want_ndim} dimensions for kind {self.kind!r}; "
                    f"got shape {tuple(x.shape)}"
                )
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(f"y_{split} must be a 1-D int64 torch.Tensor")
            if y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"y_{split} must have one label per row of x_{split} ({x.shape[0]}); "
                    f"got {y.shape[0]}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(
                    f"y_{split} must hold labels in [0, {self.num_classes - 1}]; "
                    f"got [{int(y.min())}, {int(y.max())}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"x_test must have the input shape of x_train {tuple(self.x_train.shape[1:])}; "
                f"got {tuple(self.x_test.shape[1:])}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (``x_train.shape[1:]``)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def classes(self) -> list[str]:
        """Class names (from ``info["classes"]``; ``"0".."C-1"`` when not recorded)."""
        names = self.info.get("classes")
        if isinstance(names, list) and len(names) == self.num_classes:
            return [str(n) for n in names]
        return [str(c) for c in range(self.num_classes)]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, train={self.x_train.shape[0]}, "
            f"test={self.x_test.shape[0]})"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What ``contrastlab datasets`` shows about a registered data set.

    ``num_classes`` is ``None`` when it is an option (the synthetic sets); ``sizes`` and
    ``requires`` are short human-readable strings.
    """

    name: str
    description: str
    kind: str
    num_classes: int | None
    sizes: str
    requires: str
    #: the options model (:mod:`contrastlab.data.options`); None: not declared (a user's loader
    #: that parses its own options: they are then checked only when the data set is loaded)
    options: type[OptionsModel] | None = None
    #: ``"none"`` (generated or found by itself: a root is refused), ``"optional"``,
    #: ``"required"``, or None (not declared)
    root: str | None = None
    #: checks a root before any work (raises a one-line ValueError), e.g. that the files exist
    check_root: Callable[[str | None], None] | None = None
    #: the number of training samples the parsed options give, when known without loading
    train_size: Callable[[Any], int | None] | None = None


class DatasetLoader(Protocol):
    """A loader: ``loader(root=..., seed=..., **options) -> Dataset``."""

    def __call__(self, *, root: str | None, seed: int, **options: Any) -> Dataset: ...


def default_cache_dir() -> Path:
    """Where derived files are cached: ``$CONTRASTLAB_CACHE``, else
    ``$XDG_CACHE_HOME/contrastlab``, else ``~/.cache/contrastlab``."""
    env = os.environ.get("CONTRASTLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "contrastlab"


# --------------------------------------------------------------------------------------------
# helpers shared by the loaders
# --------------------------------------------------------------------------------------------


def derived_generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded from ``(seed, purpose)`` by a stable hash, so that the random
    choices of different purposes (a split, a subset) are independent streams of one seed."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def no_root(name: str, root: str | None) -> None:
    """Refuse a ``root`` for a data set that is generated or found by itself."""
    if root is not None:
        raise ValueError(f"root: data set {name!r} takes no root (it needs no files); got {root!r}")


def _class_ranks(y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rank, counts)``: each row's position in a uniformly random order of its class, and the
    class sizes. Vectorized (a random permutation, then a stable sort by class)."""
    n = int(y.numel())
    perm = torch.randperm(n, generator=generator)
    order = perm[torch.argsort(y[perm], stable=True)]  # grouped by class, random within
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[y[order]]
    return rank, counts


def stratified_subset(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of a random subset of size ``n`` with the class proportions of ``y`` (largest
    remainder rounding), in random order. ``n >= len(y)`` returns a permutation of everything."""
    total = int(y.numel())
    if n >= total:
        return torch.randperm(total, generator=generator)
    rank, counts = _class_ranks(y, generator)
    quota = counts.to(torch.float64) * (n / total)
    take = torch.floor(quota).to(torch.int64)
    rest = n - int(take.sum())
    if rest > 0:
        # ties broken by a random key so no class is favoured systematically
        jitter = torch.rand(quota.shape, dtype=torch.float64, generator=generator)
        key = (quota - take) + 1e-9 * jitter
        key[take >= counts] = -1.0
        take[torch.argsort(key, descending=True)[:rest]] += 1
    out = torch.arange(total)[rank < take[y]]
    return out[torch.randperm(int(out.numel()), generator=generator)]


def class_holdout(y: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """The one stratified hold-out rule: a boolean mask over the rows of ``y`` (labels >= 0)
    holding out ``round(n_c * fraction)`` rows of each class c with n_c rows (halves rounded up),
    chosen uniformly at random, but never the last row of a class (at most n_c - 1)."""
    rank, counts = _class_ranks(y, generator)
    n_test = torch.floor(counts.to(torch.float64) * fraction + 0.5).to(torch.int64)
    n_test = torch.minimum(n_test, (counts - 1).clamp(min=0))
    return rank < n_test[y]


def stratified_split(
    y: torch.Tensor, test_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded stratified split: ``(train_idx, test_idx)``, each in random order, the test rows
    chosen by :func:`class_holdout`."""
    is_test = class_holdout(y, test_fraction, generator)
    rows = torch.arange(int(y.numel()))
    tr, te = rows[~is_test], rows[is_test]
    tr = tr[torch.randperm(int(tr.numel()), generator=generator)]
    te = te[torch.randperm(int(te.numel()), generator=generator)]
    return tr, te


def subsample(
    x: torch.Tensor, y: torch.Tensor, n: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified random subset of ``n`` rows (``None``: everything, order kept)."""
    if n is None or n >= int(y.numel()):
        return x, y
    idx = stratified_subset(y, n, generator)
    return x[idx], y[idx]

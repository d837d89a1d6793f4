"""The data-set registry: one name per data set, one :class:`Dataset` type for all of them.

``load_dataset(name, root=..., seed=..., **options)`` returns a :class:`Dataset` of float32 inputs
and int64 labels split into train and test. Data sets are never downloaded: the generated ones
(``synthetic``, ``synthetic-circle``, ``mnist1d``) are made locally, the others are read from
files that are already on the machine (a wheel, a Debian package, or a user-given ``root``).

Conventions of every :class:`Dataset`:

- ``x_*`` float32 of shape ``(N, *input_shape)``; ``y_*`` int64 in ``0..num_classes-1``;
- ``kind`` is ``"vector"`` (``(d,)``), ``"signal"`` (``(channels, length)``) or ``"image"``
  (``(channels, height, width)``, pixel values in ``[0, 1]``); it selects the augmentations of
  :mod:`contrastlab.data.pairs` and the default encoder;
- ``info`` is JSON-serializable provenance: ``source``, the resolved ``options``, ``sizes``,
  ``classes`` (class names) and the ``seed``.

Built-in data sets (``contrastlab datasets`` lists them): ``synthetic``, ``synthetic-circle``
(this module), ``mnist1d``, ``digits``, ``fashion-mnist``, ``cifar10``, ``cifar100``
(:mod:`contrastlab.data.real`) and ``rotten-tomatoes`` (:mod:`contrastlab.data.text`). Other
data sets join with :func:`register_dataset`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import Field, model_validator

from contrastlab._validation import check_choice
from contrastlab.data.latent import (
    balanced_prior,
    check_prior,
    dirichlet_prior,
    make_generator,
    zipf_prior,
)
from contrastlab.data.options import OptionsModel, parse_options
from contrastlab.data.synthetic import circle_toy_dataset, gaussian_mixture

__all__ = [
    "KINDS",
    "Dataset",
    "DatasetInfo",
    "DatasetLoader",
    "datasets_table",
    "default_cache_dir",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "stratified_split",
    "stratified_subset",
    "validate_dataset",
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


def datasets_table() -> str:
    """A plain-text table of the registered data sets (what ``contrastlab datasets`` prints)."""
    header = ("name", "kind", "classes", "sizes", "requires", "description")
    rows = [header]
    for info in list_datasets():
        classes = "option" if info.num_classes is None else str(info.num_classes)
        rows.append((info.name, info.kind, classes, info.sizes, info.requires, info.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[i].ljust(widths[i]) for i in range(len(header) - 1)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(header[-1])]))
    return "\n".join(lines)


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


def stratified_split(
    y: torch.Tensor, test_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded stratified split: ``(train_idx, test_idx)``, each in random order.

    Each class with n_c samples sends ``round(n_c * test_fraction)`` of them (halves rounded
    up) to the test set, but always keeps at least one in the training set.
    """
    rank, counts = _class_ranks(y, generator)
    n_test = torch.floor(counts.to(torch.float64) * test_fraction + 0.5).to(torch.int64)
    n_test = torch.minimum(n_test, (counts - 1).clamp(min=0))
    is_test = rank < n_test[y]
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


# --------------------------------------------------------------------------------------------
# synthetic data sets (built on contrastlab.data.synthetic)
# --------------------------------------------------------------------------------------------


def _parse_prior(spec: Any, C: int, generator: torch.Generator) -> torch.Tensor:
    """A prior from its spec: None / "balanced", "zipf[:s]", "dirichlet[:alpha]", or C numbers."""
    allowed = "'balanced', 'zipf', 'zipf:S', 'dirichlet', 'dirichlet:ALPHA' or C probabilities"
    if spec is None:
        return balanced_prior(C)
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        kind = kind.strip().lower()
        try:
            param = float(arg) if arg.strip() else 1.0
        except ValueError:
            raise ValueError(f"prior must be {allowed}; got {spec!r}") from None
        if kind == "balanced" and not arg:
            return balanced_prior(C)
        if kind == "zipf":
            if not (math.isfinite(param) and param >= 0):
                raise ValueError(f"prior: the zipf exponent must be a number >= 0; got {spec!r}")
            return zipf_prior(C, param)
        if kind == "dirichlet":
            if not (math.isfinite(param) and param > 0):
                raise ValueError(f"prior: the dirichlet alpha must be a number > 0; got {spec!r}")
            return dirichlet_prior(C, param, generator=generator)
        raise ValueError(f"prior must be {allowed}; got {spec!r}")
    return check_prior(spec, C, name="prior")


class SyntheticOptions(OptionsModel):
    """The options of ``synthetic`` (:func:`_load_synthetic`)."""

    classes: int = Field(10, ge=2)
    dim: int = Field(32, ge=1)
    n_train: int | None = Field(None, ge=1)
    per_class: int | None = Field(None, ge=1)
    n_test: int = Field(1000, ge=1)
    prior: str | list[float] | None = None
    std: float | None = Field(None, gt=0, allow_inf_nan=False)
    separation: float | None = Field(None, gt=0, allow_inf_nan=False)
    margin: float = Field(0.1, gt=0, lt=1)
    sphere: bool = False
    disjoint: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticOptions:
        if self.per_class is not None and self.n_train is not None:
            raise ValueError("per_class: give either per_class or n_train, not both")
        prior = _parse_prior(self.prior, self.classes, torch.Generator().manual_seed(0))
        if self.per_class is not None and not torch.allclose(prior, balanced_prior(self.classes)):
            raise ValueError("per_class: only with a balanced prior; use n_train with another "
                             "prior")
        if self.sphere and self.dim < 2:
            raise ValueError(f"dim must be >= 2 with sphere=True (a sphere S^(dim-1)); got "
                             f"{self.dim}")
        if self.sphere and self.separation is not None:
            raise ValueError("separation: not used with sphere=True (centers are unit vectors)")
        return self

    def train_size(self) -> int:
        """The number of training samples these options give."""
        if self.per_class is not None:
            return self.per_class * self.classes
        return 2000 if self.n_train is None else self.n_train


def _load_synthetic(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """The latent-class model of Gaussian classes (:func:`gaussian_mixture`, SPEC A1).

    Options (:class:`SyntheticOptions`): ``classes`` (C >= 2, default 10), ``dim`` (default
    32), ``n_train`` (default 2000, labels drawn i.i.d. from the prior) or ``per_class``
    (exactly that many training samples per class; balanced prior only), ``n_test`` (default
    1000, i.i.d. from the prior), ``prior`` (``"balanced"``, ``"zipf"``, ``"zipf:S"``,
    ``"dirichlet"``, ``"dirichlet:ALPHA"`` or C probabilities), ``std``, ``separation``,
    ``margin``, ``sphere`` (classes on S^{dim-1}) and ``disjoint`` (truncated, non-overlapping
    supports; default True) — see :func:`gaussian_mixture`. The seed drives the layout, the
    prior draw and the samples.
    """
    no_root("synthetic", root)
    o = parse_options(SyntheticOptions, options, "data set 'synthetic'")
    C, dim, per_class, n_test = o.classes, o.dim, o.per_class, o.n_test
    n_train = (2000 if o.n_train is None else o.n_train) if per_class is None else None
    std, separation, margin, sphere, disjoint = o.std, o.separation, o.margin, o.sphere, o.disjoint
    prior_spec = o.prior
    resolved = o.model_dump()
    resolved["n_train"] = n_train
    gen = make_generator(seed)
    prior = _parse_prior(prior_spec, C, gen)
    layout_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    try:
        model = gaussian_mixture(
            C,
            dim,
            prior,
            std=std,
            separation=separation,
            disjoint=disjoint,
            sphere=sphere,
            margin=margin,
            seed=layout_seed,
        )
    except ValueError as err:
        raise ValueError(str(err)) from None
    if per_class is not None:
        y_train = torch.arange(C, dtype=torch.int64).repeat_interleave(per_class)
        y_train = y_train[torch.randperm(y_train.numel(), generator=gen)]
        x_train = model.sample_inputs(y_train, gen)
    else:
        assert n_train is not None
        x_train, y_train = model.sample(n_train, gen)
    x_test, y_test = model.sample(n_test, gen)
    resolved["prior"] = prior_spec if isinstance(prior_spec, str | None) else prior.tolist()
    return Dataset(
        name="synthetic",
        x_train=x_train.to(torch.float32),
        y_train=y_train,
        x_test=x_test.to(torch.float32),
        y_test=y_test,
        num_classes=C,
        kind="vector",
        info={
            "source": "contrastlab.data.synthetic.gaussian_mixture (latent-class model, SPEC A1)",
            "options": resolved,
            "prior": [float(p) for p in prior],
            "sizes": {"train": int(y_train.numel()), "test": int(y_test.numel())},
            "classes": [str(c) for c in range(C)],
            "seed": seed,
        },
    )


class CircleOptions(OptionsModel):
    """The options of ``synthetic-circle`` (:func:`_load_synthetic_circle`)."""

    classes: int = Field(100, ge=2)
    per_class: int = Field(1000, ge=2)
    test_fraction: float = Field(0.4, gt=0, lt=1)

    def train_size(self) -> int:
        """The training samples of the stratified split (:func:`stratified_split`)."""
        n_test = min(math.floor(self.per_class * self.test_fraction + 0.5), self.per_class - 1)
        return self.classes * (self.per_class - n_test)


def _load_synthetic_circle(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """Bao, Nagano & Nozawa 2022's 2-D circle toy (:func:`circle_toy_dataset`, SPEC B2).

    Options: ``classes`` (default 100), ``per_class`` (default 1000) and ``test_fraction``
    (default 0.4: the paper's stratified 60/40 train/validation split).
    """
    no_root("synthetic-circle", root)
    o = parse_options(CircleOptions, options, "data set 'synthetic-circle'")
    C, per_class, frac = o.classes, o.per_class, o.test_fraction
    x, y = circle_toy_dataset(C, per_class, seed)
    tr, te = stratified_split(y, frac, derived_generator(seed, "synthetic-circle/split"))
    return Dataset(
        name="synthetic-circle",
        x_train=x[tr].to(torch.float32),
        y_train=y[tr],
        x_test=x[te].to(torch.float32),
        y_test=y[te],
        num_classes=C,
        kind="vector",
        info={
            "source": "contrastlab.data.synthetic.circle_toy_dataset (Bao et al. 2022, SPEC B2)",
            "options": o.model_dump(),
            "sizes": {"train": int(tr.numel()), "test": int(te.numel())},
            "classes": [f"r={(c + 1) / 2:g}" for c in range(C)],
            "seed": seed,
        },
    )


_builtins_registered = False


def _register_builtins() -> None:
    """Register the built-in data sets, once, on first use of the registry (lazily: the loader
    modules import this one)."""
    global _builtins_registered
    if _builtins_registered:
        return
    _builtins_registered = True
    from contrastlab.data.real import BUILTINS as REAL
    from contrastlab.data.text import BUILTINS as TEXT

    builtins: Iterable[tuple[Callable[..., Dataset], DatasetInfo]] = (
        (
            _load_synthetic,
            DatasetInfo(
                "synthetic",
                "latent-class Gaussian mixture (any C, dim, prior, spread; sphere or R^d)",
                "vector",
                None,
                "generated (default 2,000 + 1,000)",
                "-",
                options=SyntheticOptions,
                root="none",
                train_size=SyntheticOptions.train_size,
            ),
        ),
        (
            _load_synthetic_circle,
            DatasetInfo(
                "synthetic-circle",
                "Bao et al. 2022 2-D circle toy (class l on the circle of radius (l+1)/2)",
                "vector",
                None,
                "generated (default 60,000 + 40,000)",
                "-",
                options=CircleOptions,
                root="none",
                train_size=CircleOptions.train_size,
            ),
        ),
        *REAL,
        *TEXT,
    )
    for loader, info in builtins:
        if info.name not in _REGISTRY:  # a user's registration of the same name wins
            _REGISTRY[info.name] = (loader, info)
    # built-ins first, in their order, then anything registered before
    order = [info.name for _, info in builtins]
    for name in [n for n in _REGISTRY if n not in order]:
        _REGISTRY[name] = _REGISTRY.pop(name)

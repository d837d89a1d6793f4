"""The generated data sets of the registry: ``synthetic`` and ``synthetic-circle``.

Both are made locally from :mod:`contrastlab.data.synthetic` (the latent-class Gaussian mixture
and Bao et al.'s circle toy); :data:`BUILTINS` is what
:mod:`contrastlab.data.registry` registers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, model_validator

from contrastlab.data.base import Dataset, DatasetInfo, derived_generator, no_root, stratified_split
from contrastlab.data.latent import (
    balanced_prior,
    make_generator,
    parse_prior,
)
from contrastlab.data.options import OptionsModel, parse_options
from contrastlab.data.synthetic import circle_toy_dataset, gaussian_mixture

__all__ = ["BUILTINS", "CircleOptions", "SyntheticOptions"]


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
        prior = parse_prior(self.prior, self.classes, torch.Generator().manual_seed(0))
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
    """The latent-class model of Gaussian classes (:func:`gaussian_mixture`).

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
    prior = parse_prior(prior_spec, C, gen)
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
            "source": "contrastlab.data.synthetic.gaussian_mixture (the latent-class model of "
                      "Arora et al. 2019)",
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
    """Bao, Nagano & Nozawa 2022's 2-D circle toy (:func:`circle_toy_dataset`).

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
            "source": "contrastlab.data.synthetic.circle_toy_dataset (Bao et al. 2022's toy, "
                      "their code/jobs/toy/circle.sh)",
            "options": o.model_dump(),
            "sizes": {"train": int(tr.numel()), "test": int(te.numel())},
            "classes": [f"r={(c + 1) / 2:g}" for c in range(C)],
            "seed": seed,
        },
    )


BUILTINS: tuple[tuple[Callable[..., Dataset], DatasetInfo], ...] = (
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
)

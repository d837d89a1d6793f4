"""How a loader assembles its :class:`~contrastlab.data.base.Dataset`: the seeded split of one
pool of samples, and the provenance every loader records (the conventions of
:mod:`contrastlab.data.base`: ``info`` ends with ``sizes``, ``classes`` and ``seed``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from contrastlab.data.base import Dataset, derived_generator, stratified_split

__all__ = ["assemble_dataset", "seeded_split"]

Split = tuple[torch.Tensor, torch.Tensor]


def seeded_split(
    x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int, purpose: str
) -> tuple[Split, Split]:
    """``((x_train, y_train), (x_test, y_test))``: the stratified split of
    :func:`~contrastlab.data.base.stratified_split` drawn from the stream ``(seed, purpose)``
    (:func:`~contrastlab.data.base.derived_generator`), inputs made contiguous."""
    tr, te = stratified_split(y, test_fraction, derived_generator(seed, purpose))
    return (x[tr].contiguous(), y[tr]), (x[te].contiguous(), y[te])


def assemble_dataset(
    name: str,
    kind: str,
    num_classes: int,
    train: Split,
    test: Split,
    info: Mapping[str, Any],
    *,
    seed: int,
    classes: list[str] | None = None,
    extra_sizes: Mapping[str, int] | None = None,
) -> Dataset:
    """The :class:`~contrastlab.data.base.Dataset` of ``train`` and ``test`` (each ``(x, y)``)
    whose ``info`` is the loader's own keys (``info``: its source, options...) followed by
    ``sizes`` (the train and test counts, then ``extra_sizes``), ``classes`` (default ``"0"``
    .. ``"C-1"``) and ``seed``."""
    (x_train, y_train), (x_test, y_test) = train, test
    sizes = {"train": int(y_train.numel()), "test": int(y_test.numel()), **(extra_sizes or {})}
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        kind=kind,
        info={
            **info,
            "sizes": sizes,
            "classes": [str(c) for c in range(num_classes)] if classes is None else classes,
            "seed": seed,
        },
    )

"""Helpers shared by the data-set tests."""

from __future__ import annotations

import torch

from contrastlab.data.registry import Dataset


def assert_same(a: Dataset, b: Dataset) -> None:
    """Two loads of a data set are identical, split by split."""
    for f in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f

"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch


def simplex_etf(num_classes: int, dim: int | None = None, dtype: torch.dtype = torch.float64):
    """Unit-norm simplex ETF (SPEC A7), written independently of the library for the tests."""
    c = num_classes
    d = c - 1 if dim is None else dim
    centered = torch.eye(c, dtype=dtype) - 1.0 / c
    u, _, _ = torch.linalg.svd(centered)
    v = u[:, : c - 1] * math.sqrt(c / (c - 1))
    out = torch.zeros(c, d, dtype=dtype)
    out[:, : c - 1] = v
    return out


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for a module of small tensors: on 2 shared cores OpenMP
    spin-waiting makes such modules several times slower. The previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)

"""The data tests use small tensors: one torch thread for every module here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_data_tests(one_thread: None) -> Iterator[None]:
    yield

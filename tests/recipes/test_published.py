"""The one comparison of measured against published numbers (recipes.published)."""

import math

import pytest

from contrastlab.recipes.published import attach_published, published_rows


def test_rows_and_the_largest_gap():
    rows, gap = published_rows({2: 0.5, 1: 0.25, "b": 0.1},
                               {1: (0.3, 0.01), 2: (0.45, 0.02), "b": (0.1, 0.0)}, "beta",
                               order=lambda k: -1 if k == "b" else k)
    assert [r["beta"] for r in rows] == ["b", 1, 2]
    assert rows[1] == {"beta": 1, "published": 0.25, "measured": 0.3, "measured_sd": 0.01,
                       "gap": pytest.approx(0.05)}
    assert gap == pytest.approx(0.05)
    rows, gap = published_rows({1: 0.25, 2: 0.5}, {1: (0.25, 0.0)}, "beta")  # 2 not measured
    assert math.isinf(gap) and math.isnan(rows[1]["measured"])


def test_attach_adds_metrics_table_and_note():
    metrics, tables, notes = {"a": 1.0}, {}, []
    table, gap = published_rows({32: 0.7}, {32: (0.72, 0.01)}, "batch_size")
    attach_published({"published_max_abs_gap": gap}, table, "batch_size",
                     lambda b: f"K+1={b}", metrics, tables, notes)
    assert metrics["published_max_abs_gap"] == pytest.approx(0.02) and metrics["a"] == 1.0
    assert tables["published"] is table
    assert notes == ["against the published numbers: K+1=32 measured 0.7200 published 0.7000"]

"""The one table renderer (contrastlab._tables): tables that fit the terminal."""

from __future__ import annotations

from contrastlab._tables import MAX_WIDTH, fit_table, markdown_table

HEADER = ["loss", "n", *(f"metric_{i}" for i in range(8))]
BODY = [["hucl", "3", *(f"0.{i}123 ± 0.0{i}45" for i in range(8))],
        ["ucl", "3", *(f"0.{i}321 ± 0.0{i}54" for i in range(8))]]


def test_a_narrow_table_is_one_line_per_row() -> None:
    text = fit_table(["a", "b"], [["1", "22"], ["333", "4"]], width=100)
    assert text.splitlines() == ["a    b", "---  --", "1    22", "333  4"]


def test_numbers_split_into_blocks_that_repeat_the_keys() -> None:
    text = fit_table(HEADER, BODY, width=80, keep=2)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    blocks = text.split("\n\n")
    assert len(blocks) >= 2
    for block in blocks:
        rows = block.splitlines()
        assert rows[0].split()[:2] == ["loss", "n"] and len(rows) == 2 + len(BODY)
        assert rows[2].startswith("hucl") and rows[3].startswith("ucl")
    for cell in BODY[0][2:]:  # every cell whole, once
        assert text.count(cell) == 1


def test_wide_keeps_one_line_per_row_and_text_wraps() -> None:
    wide = fit_table(HEADER, BODY, wide=True, width=80, keep=2)
    assert len(wide.splitlines()) == 2 + len(BODY) and len(wide.splitlines()[0]) > 80
    text = fit_table(["name", "description"], [["x", "word " * 40]], width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert len(text.splitlines()) > 3 and text.count("word") == 40
    assert MAX_WIDTH == 100


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]).splitlines() == [
        "| a | b |", "|---|---|", "| 1 | 2 |"]


def test_right_aligned_columns_split_into_blocks_repeating_the_keys() -> None:
    from contrastlab._tables import columns_table, text_table

    rows = [{"k": k, **{f"column_{i}": 1.0 / (k + i) for i in range(12)}} for k in (1, 16)]
    cols = ["k", *(f"column_{i}" for i in range(12))]
    one = columns_table(rows, cols)  # no width: one line per row, as before
    assert len(one.splitlines()) == 4
    fitted = columns_table(rows, cols, width=60, keep=1)
    assert max(len(line) for line in fitted.splitlines()) <= 60
    blocks = fitted.split("\n\n")
    assert len(blocks) > 1 and all(b.split()[0] == "k" for b in blocks)
    assert set(fitted.split()) == set(one.split())
    assert text_table(["a"], [["1"]], width=10) == "a\n-\n1"

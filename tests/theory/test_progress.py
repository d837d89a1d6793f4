"""Progress bars of the long theory commands (issue 18, item 3): ``optimum`` over its k values and
``bounds`` over its K. A bar is on stderr only, when forced (``progress=True``) or when stderr is
a terminal (``progress=None``, what the CLI passes); never in a pipe, a file or a test's capture,
and the numbers and the output text do not change."""

from __future__ import annotations

import json

import pytest

from contrastlab.theory.bounds import idealized_bounds
from contrastlab.theory.commands import optimum_output

pytestmark = pytest.mark.usefixtures("one_thread")


def test_optimum_bar_when_forced_with_the_k_and_the_same_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = (3, "zipf:1", [1, 4])
    quiet = optimum_output(*args, restarts=1, as_json=True, progress=False)
    assert capsys.readouterr().err == ""
    shown = optimum_output(*args, restarts=1, as_json=True, progress=True)
    err = capsys.readouterr().err
    assert shown == quiet  # the numbers do not depend on the bar
    assert "optima" in err and "2/2" in err and "k=4" in err  # count, total and the k solved
    assert "<" in err  # elapsed<remaining: the time left
    assert json.loads(shown)["rows"][1]["k"] == 4


def test_optimum_bar_absent_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    optimum_output(3, "balanced", [1, 2], restarts=1, progress=None)
    assert capsys.readouterr().err == ""


def test_bounds_bar_when_forced_names_the_term_and_k(capsys: pytest.CaptureFixture[str]) -> None:
    ks = [1, 64, 4096]
    quiet = idealized_bounds(5, ks, progress=False).to_json()
    assert capsys.readouterr().err == ""
    shown = idealized_bounds(5, ks, progress=True).to_json()
    err = capsys.readouterr().err
    assert shown == quiet
    assert "bounds" in err and "100%" in err and "Col K=4096" in err


def test_bounds_bar_absent_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    idealized_bounds(5, [1, 64, 4096], progress=None)
    assert capsys.readouterr().err == ""

"""contrastlab.convergence: the held-out-loss test of a run's convergence."""

import math

import pytest

from contrastlab.convergence import convergence


def _hist(losses: dict[int, float]) -> list[dict[str, float]]:
    return [{"epoch": e, "train_loss": 1.0, **({"heldout_loss": v} if v is not None else {})}
            for e, v in sorted(losses.items())]


def test_flat_tail_is_converged_and_falling_tail_is_not() -> None:
    flat = convergence(_hist({4: 3.0, 8: 2.0, 12: 1.6, 16: 1.5, 20: 1.495}), 20)
    assert flat["converged"] and (flat["from_epoch"], flat["to_epoch"]) == (16, 20)
    assert flat["relative_decrease"] == pytest.approx(0.005 / 1.5)
    falling = convergence(_hist({4: 3.0, 8: 2.0, 12: 1.6, 16: 1.5, 20: 1.4}), 20)
    assert not falling["converged"] and falling["relative_decrease"] == pytest.approx(0.1 / 1.5)
    assert "fell 6.67 %" in falling["reason"]


def test_rising_loss_counts_as_converged_and_tol_decides() -> None:
    assert convergence(_hist({8: 1.0, 10: 1.2}), 10)["converged"]
    assert convergence(_hist({8: 1.0, 10: 0.995}), 10, tol=0.01)["converged"]
    assert not convergence(_hist({8: 1.0, 10: 0.98}), 10, tol=0.01)["converged"]


def test_reference_is_the_last_evaluation_before_the_window() -> None:
    # 30 epochs, window 20 %: the reference is the last evaluation at or before epoch 24
    res = convergence(_hist({10: 2.0, 20: 1.0, 25: 0.5, 30: 0.5}), 30)
    assert res["from_epoch"] == 20 and not res["converged"]


def test_missing_evaluations_are_not_converged_with_a_reason() -> None:
    none = convergence(_hist({10: None}), 10)
    assert not none["converged"] and "final epoch 10" in none["reason"]
    only_last = convergence(_hist({9: 1.0, 10: 1.0}), 10)
    assert not only_last["converged"] and "eval.every" in only_last["reason"]
    nan = convergence(_hist({8: math.nan, 10: 1.0}), 10)
    assert not nan["converged"]


@pytest.mark.parametrize(("kw", "msg"), [({"window": 0.0}, "window"), ({"window": 1.0}, "window"),
                                          ({"tol": -1.0}, "tol"), ({"tol": math.inf}, "tol")])
def test_bad_arguments(kw: dict[str, float], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        convergence(_hist({8: 1.0, 10: 1.0}), 10, **kw)

"""contrastlab.recipes.stats: paired confidence bounds over seeds."""

import math

import pytest
from scipy.stats import t as student_t

from contrastlab.recipes.stats import accuracy_trend_metrics, paired_bounds, paired_trend


def test_paired_bounds_match_the_t_interval_written_out() -> None:
    x, y = [0.50, 0.60, 0.55], [0.58, 0.66, 0.65]
    d = [b - a for a, b in zip(x, y, strict=True)]
    mean = sum(d) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 2)
    half = student_t.ppf(0.95, 2) * sd / math.sqrt(3)
    b = paired_bounds(x, y)
    assert b["mean"] == pytest.approx(mean) and b["sd"] == pytest.approx(sd)
    assert (b["lower"], b["upper"]) == pytest.approx((mean - half, mean + half))
    assert b["lower"] > 0  # a consistent gain over three seeds is significant


def test_one_seed_has_no_bound_and_noise_straddles_zero() -> None:
    one = paired_bounds([0.5], [0.9])
    assert one["lower"] == -math.inf and one["upper"] == math.inf
    noisy = paired_bounds([0.5, 0.5, 0.5], [0.55, 0.45, 0.52])
    assert noisy["lower"] < 0 < noisy["upper"]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_bounds([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        paired_bounds([1.0, 2.0], [1.0, 2.0], level=0.4)


def test_paired_trend_pairs_by_seed_against_first_and_previous() -> None:
    recs = [{"loss.k": k, "seed": s, "acc": acc}
            for k, accs in {1: [0.5, 0.6, 0.7], 4: [0.6, 0.7, 0.8], 16: [0.6, 0.7, 0.9]}.items()
            for s, acc in enumerate(accs)]
    rows = paired_trend(recs, "acc")
    pairs = {(r["from"], r["loss.k_a"], r["loss.k_b"]): r for r in rows}
    assert set(pairs) == {("first", 1, 4), ("previous", 1, 4), ("first", 1, 16),
                          ("previous", 4, 16)}
    assert pairs[("first", 1, 4)]["mean"] == pytest.approx(0.1)
    assert pairs[("first", 1, 4)]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert pairs[("previous", 4, 16)]["mean"] == pytest.approx(0.1 / 3)
    # seeds missing on one side are left out of the pairing
    rows = paired_trend([*recs, {"loss.k": 64, "seed": 7, "acc": 1.0}], "acc")
    assert not any(r["loss.k_b"] == 64 for r in rows)


def test_accuracy_trend_metrics_along_any_key_and_per_data_set() -> None:
    # accuracy per (batch size, seed): rises from 16 to 64, falls from 64 to 128
    acc = {16: [0.30, 0.32, 0.31], 64: [0.40, 0.43, 0.41], 128: [0.35, 0.36, 0.34]}
    rows = [{"train.batch_size": b, "seed": s, "acc": a}
            for b, vals in acc.items() for s, a in enumerate(vals)]
    trends = paired_trend(rows, "acc", key="train.batch_size")
    m = accuracy_trend_metrics(trends, key="train.batch_size")
    first_to_last = paired_bounds(acc[16], acc[128])
    assert m["min_accuracy_gain"] == pytest.approx(first_to_last["mean"])
    assert m["min_accuracy_gain_lower"] == pytest.approx(first_to_last["lower"])
    assert m["min_accuracy_step_upper"] == pytest.approx(paired_bounds(acc[64], acc[128])["upper"])
    assert m["min_accuracy_step_upper"] < 0 < m["min_accuracy_gain_lower"]
    # per data set: the worst set decides (here a flat copy of the first two sizes)
    flat = [{**t, "data": "b"} for t in paired_trend(
        [{"loss.k": r["train.batch_size"], "seed": r["seed"], "acc": 0.5} for r in rows],
        "acc")]
    tagged = [{**t, "data": "a", "loss.k_b": t["train.batch_size_b"]} for t in trends]
    both = accuracy_trend_metrics(tagged + flat)
    assert both["min_accuracy_gain"] == pytest.approx(0.0)

"""How the report merges runs: swept keys as `contrastlab results`, labels, intervals, answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrastlab.experiments.results import load_records, results_table
from contrastlab.report.answer import answer_lines
from contrastlab.report.grouping import (
    difference_interval,
    group_records,
    mean_interval,
    run_label,
    series_keys,
    swept_keys,
)
from tests.report import synthetic_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_sweep(tmp_path_factory.mktemp("beta_k"))


def test_swept_keys_are_those_of_contrastlab_results(sweep: Path) -> None:
    records = load_records(sweep)
    keys = swept_keys(records)
    assert keys == ["loss.beta", "loss.k"]  # not the seed, not the constant keys
    header = results_table(sweep).splitlines()[0].split()
    assert header[:len(keys)] == keys
    assert series_keys(keys) == ["loss.beta"]
    assert series_keys(keys, exclude=()) == keys


def test_groups_and_labels(sweep: Path) -> None:
    records = load_records(sweep)
    groups = group_records(records, ["loss.beta"])
    assert [g.label for g in groups] == ["hucl beta=0 sphere", "hucl beta=5 sphere"]
    assert [len(g.records) for g in groups] == [12, 12]
    by_k = group_records(records, ["loss.beta", "loss.k"])
    assert [g.label for g in by_k][:4] == [
        "hucl beta=0 k=1 sphere", "hucl beta=0 k=4 sphere", "hucl beta=0 k=16 sphere",
        "hucl beta=0 k=64 sphere"]  # numeric order of k, not text order
    assert len({g.label for g in by_k}) == 8
    assert run_label({"loss.name": "ucl"}, []) == "ucl"
    assert run_label({}, []) == "all runs"
    # two keys with the same last part keep their full names
    rec = {"loss.name": "nce", "seed": 1, "data.seed": 2, "loss.normalize": "ball"}
    assert run_label(rec, ["seed", "data.seed"]) == "nce seed=1 data.seed=2 ball"
    # labels that print alike stay distinct
    twins = [{"loss.name": "x", "a.v": 0.1}, {"loss.name": "x", "a.v": 0.1000001}]
    assert [g.label for g in group_records(twins, ["a.v"])] == ["x v=0.1", "x v=0.1 #2"]


def test_intervals() -> None:
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0) and iv.n == 3
    # t_{0.975, 2} = 4.3027, s = 1
    assert iv.low == pytest.approx(2.0 - 4.302653 / 3**0.5, abs=1e-5)
    assert iv.high == pytest.approx(2.0 + 4.302653 / 3**0.5, abs=1e-5)
    assert iv.contains(3.0) and not iv.contains(4.5)
    one = mean_interval([0.7])
    assert (one.low, one.high, one.contains(0.7)) == (None, None, None)
    d = difference_interval([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert d.mean == pytest.approx(1.0)
    # Welch with equal variances and sizes: dof 4, se = sqrt(2/3)
    assert d.high - d.mean == pytest.approx(2.776445 * (2 / 3) ** 0.5, abs=1e-5)
    assert difference_interval([1.0], [0.0, 1.0]).low is None
    with pytest.raises(ValueError, match="values"):
        mean_interval([])


def test_answer_per_group(sweep: Path) -> None:
    lines = answer_lines(load_records(sweep))
    head, beta0, beta5 = lines
    assert "mc_acc" in head and "largest k" in head
    assert "within the 95 % interval (over seeds) of the best k in 1 of 2 groups" in head
    assert "outside it in 1" in head
    assert beta0.startswith("hucl beta=0 sphere (4 k, 3 seeds per k): best k=1 (0.900")
    assert "largest drop from k=1 to k=64 is 0.150" in beta0
    assert "accuracy at the largest k=64 (0.750) is outside the 95 % interval" in beta0
    assert beta5.startswith("hucl beta=5 sphere")
    assert "no drop" in beta5 and "within the 95 % interval" in beta5
    # another accuracy on request
    assert "linear probe accuracy [probe_acc]" in answer_lines(load_records(sweep),
                                                                "probe_acc")[0]


def test_answer_with_one_seed_says_so(tmp_path: Path) -> None:
    records = load_records(synthetic_sweep(tmp_path, seeds=(0,)))
    head, beta0, _ = answer_lines(records)
    assert "undecided in 2 (one seed: no interval)" in head
    assert "one seed: no interval" in beta0
    assert "largest drop from k=1 to k=64 is 0.150 (one seed: no interval)" in beta0
    assert "no interval to compare with" in beta0
    assert "within" not in beta0 and "outside" not in beta0


def test_answer_without_data() -> None:
    assert "cannot answer" in answer_lines([])[0]
    one_k = [{"status": "done", "loss.name": "ucl", "loss.k": 4, "mc_acc": 0.5, "seed": s}
             for s in (0, 1)]
    lines = answer_lines(one_k)
    assert "single k" in lines[0] and "only k=4" in lines[1]
    no_k = [{"status": "done", "loss.name": "supcon", "mc_acc": 0.5}]
    assert "explicit k" in answer_lines(no_k)[0]
    failed = [dict(r, status="failed") for r in one_k]
    assert "cannot answer" in answer_lines(failed)[0]

"""The benchmark harness runs and every implementation agrees with contrastlab (tiny sizes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_losses.py"


def test_bench_quick_runs_and_agrees(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_losses", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "table.md"
    assert mod.main(["--quick", "--repeats", "1", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| NT-Xent" in table and "published" in table and "NO |" not in table


def test_bench_augment_quick_runs(tmp_path: Path) -> None:
    path = BENCH.parent / "bench_augment.py"
    spec = importlib.util.spec_from_file_location("bench_augment", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "augment.md"
    assert mod.main(["--quick", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| 16 x 32px | contrastlab batched |" in table and "(peer)" in table


def test_bench_train_quick_runs(tmp_path: Path) -> None:
    path = BENCH.parent / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "train.md"
    assert mod.main(["--quick", "--threads", "1", "--workers", "0", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| contrastlab, engine batched |" in table and "hand-written" in table

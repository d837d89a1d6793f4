"""The benchmark harnesses run (tiny sizes) and every loss implementation agrees with
contrastlab."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _table(name: str, args: list[str], tmp_path: Path) -> str:
    """Run ``benchmarks/<name>.py``'s main with ``args`` and ``--out``; the table it wrote."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / f"{name}.md"
    assert mod.main([*args, "--out", str(out)]) == 0
    return out.read_text()


def test_bench_quick_runs_and_agrees(tmp_path: Path) -> None:
    table = _table("bench_losses", ["--quick", "--repeats", "1"], tmp_path)
    assert "| NT-Xent" in table and "published" in table and "NO |" not in table


def test_bench_augment_quick_runs(tmp_path: Path) -> None:
    table = _table("bench_augment", ["--quick", "--repeats", "1", "--threads", "1"], tmp_path)
    assert "| 16 x 32px | contrastlab batched |" in table and "(peer)" in table


def test_bench_train_quick_runs(tmp_path: Path) -> None:
    table = _table("bench_train", ["--quick", "--threads", "1", "--workers", "0", "--repeats", "2"],
                   tmp_path)
    assert "| contrastlab, engine batched |" in table and "hand-written" in table
    assert "2 interleaved run(s) per case" in table


def test_bench_sharded_quick_runs(tmp_path: Path) -> None:
    """Two gloo processes (spawned: run as a script, as a user runs it)."""
    import subprocess
    import sys

    out = tmp_path / "sharded.md"
    subprocess.run([sys.executable, str(BENCHMARKS / "bench_sharded.py"), "--quick",
                    "--repeats", "1", "--out", str(out)], check=True, timeout=600,
                   capture_output=True)
    table = out.read_text()
    assert "| 256 | info_nce |" in table and "| 256 | debiased_hard |" in table
    diffs = [float(line.split("|")[-2]) for line in table.splitlines()
             if line.startswith("| 256")]
    assert max(diffs) < 1e-4  # the sharded gradient is the global one

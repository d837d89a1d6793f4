"""benchmarks/bench_kernel.py runs end to end on tiny sizes and every implementation agrees."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernel.py"


def test_bench_kernel_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_kernel", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_kernel", mod)  # (its dataclass looks itself up)
    spec.loader.exec_module(mod)
    out, js = tmp_path / "kernel.md", tmp_path / "kernel.json"
    argv = ["--n", "64", "--d", "8", "--k", "16", "--nce-d", "8", "--repeats", "1"]
    argv += ["--no-compile", "--no-memory", "--out", str(out), "--json", str(js)]
    assert mod.main(argv) == 0
    records = json.loads(js.read_text())["records"]
    impls = {(r["kind"], r["impl"]) for r in records if "ms" in r}
    assert ("ntxent", "contrastlab") in impls and ("ntxent", "floor") in impls
    assert ("supcon", "supcontrast") in impls and ("nce", "plain") in impls
    assert all(r.get("agrees", True) for r in records)
    assert "| ntxent N=64 d=8 | contrastlab |" in out.read_text()
    # a configuration over the memory budget is skipped with its reason
    big = mod.Case("ntxent", 16384, 128)
    assert mod.estimate_mb(big, "pml") > 1e6 and mod.estimate_mb(big, "contrastlab") < 150

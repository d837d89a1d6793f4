"""The fused Triton losses (contrastlab.losses.kernels.fused): values and gradients against the
dense float64 paths under Triton's interpreter on CPU (one subprocess for the module:
``TRITON_INTERPRET=1`` must be set before triton is imported, and this process may already have
imported it), the dispatch of the tiled entry points, and on CUDA (``-m cuda`` machines) the
compiled kernels at N up to 16384 against the dense float64 path and the memory target
(N = 262,144, d = 128 in < 2 GB extra).

Tolerances (u = 2^-9, the unit roundoff of bfloat16):

- float32 inputs (float32 products, float32 accumulation): 1e-5 relative for the loss values and
  the gradients, the criterion of the float32 torch kernels (test_tiled.py);
- bfloat16 inputs whose normalized rows are bfloat16 numbers (``normalize="none"``, or the
  ``signs`` rows whose sphere normalization is exact): the products are exact and accumulated in
  float32, so the values get the float32 bound 1e-5; the gradients are rounded twice to
  bfloat16 (the backward's softmax weights for the second product, as FlashAttention does, and
  the returned gradient, which is bfloat16): ``3 u``;
- other bfloat16 inputs: the normalized float32 rows are rounded to bfloat16 for the products,
  each logit moves by at most ``2 u |z_i| |z_j| / t <= 2 u / t`` (rows of norm <= 1), so each
  row's loss by at most ``K 2 u / t`` (the log-sum-exps are 1-Lipschitz in the logits; ``K =
  (1 + 2 beta) / (1 - tau)`` for the debiased head, 1 otherwise; times the number of rows for
  ``reduction="sum"``), and each softmax weight relatively by at most ``K 4 u / t``: the
  gradients get ``3 u + K 4 u / t``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.losses as L
from contrastlab.losses import kernels as T
from contrastlab.losses.kernels import fused as FU
from contrastlab.losses.kernels import inbatch as IB

from .helpers import rows as _rows

F64 = torch.float64
U_BF16 = 2.0**-9
F32_TOL = 1e-5
SCRIPT = Path(__file__).with_name("fused_interpret.py")
ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def interpreted() -> list[dict[str, Any]]:
    """The records of tests/losses/fused_interpret.py (every case, one fresh process)."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=600, check=False, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def _exact_operands(c: dict[str, Any]) -> bool:
    return c["kind"] == "signs" or c["normalize"] == "none"


def _label(c: dict[str, Any]) -> str:
    return (f"{c['dtype']} {c['loss']} B={c['B']} d={c['d']} t={c['t']} {c['normalize']} "
            f"{c['kind']} {c['reduction']}: value {c['value']:.2e} grad {c['grad']:.2e}")


def test_interpreter_covers_the_grid(interpreted) -> None:
    seen = {(c["loss"], c["dtype"]) for c in interpreted}
    for loss in ("info_nce", "nce", "supcon", "debiased"):  # and "row_lse": float32 only
        assert {(loss, "float32"), (loss, "bfloat16")} <= seen
    assert {c["B"] for c in interpreted} >= {1, 5, 33}
    assert {c["d"] for c in interpreted} == {8, 16, 40}
    assert {c["t"] for c in interpreted} == {0.05, 0.5, 1.0}
    assert all(c["finite"] and c["out_dtype"] == "torch.float32" for c in interpreted)


def test_interpreter_float32_within_1e5(interpreted) -> None:
    cases = [c for c in interpreted if c["dtype"] == "float32" and not c.get("precision")]
    assert len(cases) >= 20
    for c in cases:
        assert c["value"] <= F32_TOL and c["grad"] <= F32_TOL, _label(c)


def test_interpreter_bfloat16_exact_operands(interpreted) -> None:
    cases = [c for c in interpreted if c["dtype"] == "bfloat16" and _exact_operands(c)]
    assert len(cases) >= 4
    for c in cases:
        assert c["value"] <= F32_TOL, _label(c)
        assert c["grad"] <= 3 * U_BF16, _label(c)


def test_interpreter_bfloat16_rounded_operands(interpreted) -> None:
    cases = [c for c in interpreted if c["dtype"] == "bfloat16" and not _exact_operands(c)]
    assert len(cases) >= 10
    for c in cases:
        k = (1 + 2 * c.get("beta", 0.0)) / (1 - c.get("tau", 0.0)) if c["loss"] == "debiased" else 1
        rows = (c["B"] if c["loss"] == "nce" else 2 * c["B"]) if c["reduction"] == "sum" else 1
        assert c["value_abs"] <= rows * k * 2 * U_BF16 / c["t"], _label(c)
        assert c["grad"] <= 3 * U_BF16 + k * 4 * U_BF16 / c["t"], _label(c)


def test_interpreter_float16_operands(interpreted) -> None:
    # float32 inputs, precision="fp16": the normalized rows rounded to float16 (u = 2^-11), the
    # bounds of the bfloat16 rounded-operand case with float16's u (the weights stay float32)
    u = 2.0**-11
    (c,) = [c for c in interpreted if c.get("precision") == "fp16"]
    assert c["value_abs"] <= 2 * u / c["t"] and c["grad"] <= 3 * u + 4 * u / c["t"], _label(c)


def test_interpreter_no_negatives_is_zero(interpreted) -> None:
    # B = 1: each of the 2 rows has no negative, L_neg = -inf, the loss 0 and no NaN
    cases = [c for c in interpreted if c["loss"] == "info_nce" and c["B"] == 1]
    assert cases and all(c["value_abs"] == 0.0 and c["grad_abs"] == 0.0 for c in cases)


# --------------------------------------------------------------------------------------------
# dispatch and arguments (no kernel runs: CPU tensors keep the torch path)
# --------------------------------------------------------------------------------------------


def test_cpu_tensors_keep_the_torch_path() -> None:
    z = _rows((4, 3), 1, torch.float32)
    assert not FU.use_fused(z, z)
    assert not FU.use_fused(z, "not a tensor")


@pytest.mark.parametrize("name", ["info_nce", "supcon", "debiased_hard", "nce_loss"])
def test_tiled_entry_points_route_to_fused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    seen: list[tuple[Any, ...]] = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append((args, kwargs))
        return torch.zeros(())

    monkeypatch.setattr(IB, "use_fused", lambda *xs: True)
    monkeypatch.setattr(IB, f"fused_{name}", spy)
    z1, z2, y = _rows((4, 3), 1), _rows((4, 3), 2), torch.tensor([0, 1, 0, 1])
    if name == "info_nce":
        T.tiled_info_nce(z1, z2, 0.3, "ball", "sum")
        expected: tuple[Any, ...] = (z1, z2, 0.3, "ball", "sum")
    elif name == "supcon":
        T.tiled_supcon(z1, z2, y, 0.3, "ball", 0.07, "none")
        expected = (z1, z2, y, 0.3, "ball", 0.07, "none")
    elif name == "debiased_hard":
        T.tiled_debiased_hard(z1, z2, 0.3, 0.2, 2.0, "ball", "sum")
        expected = (z1, z2, 0.3, 0.2, 2.0, "ball", "sum")
    else:
        T.tiled_nce_loss(z1, z2, z1, "infonce-mean", 0.3, "ball", "none")
        expected = (z1, z2, z1, "infonce-mean", 0.3, "ball", "none")
    (args, kwargs), = seen
    assert len(args) == len(expected) and kwargs == {"check_finite": True}
    assert all(a is e if isinstance(e, torch.Tensor) else a == e
               for a, e in zip(args, expected, strict=True))


def test_fused_bad_arguments() -> None:
    z = _rows((4, 3), 3)  # float64
    with pytest.raises(ValueError, match=r"^the fused kernels take"):
        FU.fused_info_nce(z, z)
    with pytest.raises(ValueError, match=r"^precision"):
        FU.fused_info_nce(z.float(), z.float(), precision="fp8")
    with pytest.raises(ValueError, match=r"^temperature"):
        FU.fused_info_nce(z.float(), z.float(), temperature=0.0)
    with pytest.raises(ValueError, match=r"^loss"):
        FU.fused_nce_loss(z.float(), z.float(), z.float(), loss="hinge")
    with pytest.raises(ValueError, match=r"^negatives"):
        FU.fused_nce_loss(z.float(), z.float(), _rows((5, 4), 4, torch.float32))
    with pytest.raises(ValueError, match=r"^z1"):
        FU.fused_debiased_hard(z[:1].float(), z[:1].float())
    with pytest.raises(ValueError, match=r"^z2"):
        FU.fused_info_nce(z.float(), torch.full((4, 3), float("nan")))


def test_bench_fused_cpu_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_fused", ROOT / "benchmarks/bench_fused.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the benchmark itself")
    assert mod.main(["--out", str(tmp_path / "fused.md")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("bench_fused: no CUDA device")


# --------------------------------------------------------------------------------------------
# CUDA: the compiled kernels
# --------------------------------------------------------------------------------------------


def _cuda_rows(n: int, d: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    return _rows((n, d), seed, F64).detach().to("cuda", dtype).requires_grad_(True)


def _errors(fused: Any, dense: Any, xs: list[torch.Tensor]) -> tuple[float, float, float]:
    """(relative value error, absolute value error, relative gradient error) of fused on xs
    against dense on the same values in float64."""
    refs = [x.detach().to(F64).requires_grad_(True) for x in xs]
    out, ref = fused(*xs), dense(*refs)
    g = torch.cat([x.double().flatten() for x in torch.autograd.grad(out, xs)])
    gr = torch.cat([x.flatten() for x in torch.autograd.grad(ref, refs)])
    err = float((out.double() - ref).abs())
    return err / float(ref.abs()), err, float((g - gr).norm() / gr.norm())


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("n", [1024, 4096, 16384])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_info_nce_matches_float64(n: int, dtype: torch.dtype) -> None:
    t, b = 0.1, n // 2
    xs = [_cuda_rows(b, 128, 1, dtype), _cuda_rows(b, 128, 2, dtype)]
    rel, err, grad = _errors(lambda x, y: FU.fused_info_nce(x, y, t),
                             lambda x, y: L.info_nce(x, y, t, tiled=False), xs)
    if dtype == torch.float32:
        assert rel <= F32_TOL and grad <= F32_TOL
    else:
        assert err <= 2 * U_BF16 / t and grad <= 3 * U_BF16 + 4 * U_BF16 / t


@pytest.mark.cuda
@cuda
def test_cuda_other_losses_match_float64() -> None:
    b, d, t = 2048, 128, 0.2
    z1, z2 = _cuda_rows(b, d, 3, torch.float32), _cuda_rows(b, d, 4, torch.float32)
    pool = _cuda_rows(8192, d, 5, torch.float32)
    y = torch.arange(b, device="cuda") % 10
    cases = [
        (lambda x, q, n: FU.fused_nce_loss(x, q, n, "infonce", t, "sphere"),
         lambda x, q, n: L.nce_loss(x, q, n, "infonce", t, "sphere", tiled=False), [z1, z2, pool]),
        (lambda x, q: FU.fused_supcon(x, q, y, t), lambda x, q: L.supcon(x, q, y, t, tiled=False),
         [z1, z2]),
        (lambda x, q: FU.fused_debiased_hard(x, q, t, 0.1, 1.0),
         lambda x, q: L.debiased_hard(x, q, t, 0.1, 1.0, tiled=False), [z1, z2]),
    ]
    for fused, dense, xs in cases:
        rel, _, grad = _errors(fused, dense, xs)
        assert rel <= F32_TOL and grad <= F32_TOL


@pytest.mark.cuda
@cuda
def test_cuda_dispatch_of_the_dense_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    z1, z2 = _cuda_rows(1024, 64, 6, torch.float32), _cuda_rows(1024, 64, 7, torch.float32)
    assert FU.use_fused(z1, z2)
    calls: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(args[0].shape[0])
        return FU.fused_info_nce(*args, **kwargs)

    monkeypatch.setattr(IB, "fused_info_nce", spy)
    out = L.info_nce(z1, z2, 0.2)  # 2B = 2048 rows: tiled, on CUDA the Triton kernels
    assert calls == [1024]
    ref = L.info_nce(z1.double(), z2.double(), 0.2, tiled=False)
    assert abs(out.item() - ref.item()) <= F32_TOL * abs(ref.item())


@pytest.mark.cuda
@cuda
def test_cuda_memory_n262144() -> None:
    b, d = 131072, 128  # N = 262,144 rows: an N x N float32 matrix would be 256 GiB
    g = torch.Generator(device="cuda").manual_seed(0)
    z1 = torch.randn(b, d, device="cuda", generator=g).bfloat16().requires_grad_(True)
    z2 = torch.randn(b, d, device="cuda", generator=g).bfloat16().requires_grad_(True)
    FU.fused_info_nce(z1[:256], z2[:256], 0.1).backward()  # compile the kernels first
    z1.grad = z2.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = FU.fused_info_nce(z1, z2, 0.1)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert torch.isfinite(loss) and extra < 2 * 1024**3, f"{extra / 1024**2:.0f} MiB"

"""The fused Triton losses under Triton's interpreter against the dense float64 paths: run as a
script (``python tests/losses/fused_interpret.py``) in a fresh process, since
``TRITON_INTERPRET=1`` must be set before triton is imported; prints one JSON list, one record
per case, with the errors of the loss values and of the gradients.

Each case evaluates a fused function on float32 or bfloat16 inputs (forward and backward) and
the dense path (``tiled=False``) on the same values in float64. Errors:

- ``value``: ``max_i |l_i - ref_i| / max_i |ref_i|`` (the (2B,) or (B,) vector for
  ``reduction="none"``, else the scalar), and ``value_abs`` = ``max_i |l_i - ref_i|``;
- ``grad``: ``||g - g_ref|| / ||g_ref||`` over the gradients of all inputs together (the
  gradient of ``sum(l * w)`` with fixed random weights w for ``none``), ``grad_abs`` its largest
  entry; a zero reference gradient gives ``grad`` = ``grad_abs``.

Input kinds: ``general`` (random rows, norms in [0.5, 1.5]); ``signs`` (rows with 4 or 16
entries +-1, the rest 0, times a power of two: the sphere normalization is exact, so bfloat16
operands are the normalized rows themselves). Tiles of 16 / 32 (not dividing N, k nor d) so that
every kernel path runs: several row and column blocks, feature chunks, partial tiles.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (here, by the fused kernels)

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import contrastlab.losses as L
from contrastlab.losses.kernels import fused as FU
from contrastlab.losses.kernels.triton_lse import KernelConfig

F64 = torch.float64
CFG = KernelConfig(block_m=32, block_n=16, block_d=32, bwd_block_m=32, bwd_block_n=32,
                   block_do=32, num_warps=1, num_stages=1)


def _rows(n: int, d: int, seed: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "general":
        x = torch.randn(n, d, generator=g, dtype=F64)
        return x / x.norm(dim=1, keepdim=True) * (0.5 + torch.rand(n, 1, generator=g, dtype=F64))
    nnz = 16 if d >= 16 else 4  # sum of squares 16 or 4: norm 4 or 2, exact
    x = torch.zeros(n, d, dtype=F64)
    for i in range(n):
        idx = torch.randperm(d, generator=g)[:nnz]
        x[i, idx] = torch.randint(0, 2, (nnz,), generator=g).to(F64) * 2 - 1
    return x * 2.0 ** torch.randint(-3, 2, (n, 1), generator=g).to(F64)


def _build(c: dict[str, Any]) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor],
                                        list[torch.Tensor]]:
    """(fused fn, dense fn, float64 inputs) of a case."""
    b, d, t, nz, red = c["B"], c["d"], c["t"], c["normalize"], c["reduction"]
    kw = {"precision": c.get("precision"), "config": CFG}
    if c["loss"] == "row_lse":  # the building block: scale 2, a rectangular x y^T, no mask
        xs = [_rows(b, d, 6, "general"), _rows(c["k"], d, 7, "general")]
        return (lambda x, y: FU.fused_row_lse(x, y, t, 2.0, config=CFG),
                lambda x, y: torch.logsumexp(2.0 * x @ y.T / t, dim=1), xs)
    if c["loss"] == "nce":
        xs = [_rows(b, d, 1, c["kind"]), _rows(b, d, 2, c["kind"]), _rows(c["k"], d, 3, c["kind"])]
        name = c["nce"]
        return (lambda a, p, n: FU.fused_nce_loss(a, p, n, name, t, nz, red, **kw),
                lambda a, p, n: L.nce_loss(a, p, n, name, t, nz, red, tiled=False), xs)
    xs = [_rows(b, d, 4, c["kind"]), _rows(b, d, 5, c["kind"])]
    if c["loss"] == "info_nce":
        return (lambda x, y: FU.fused_info_nce(x, y, t, nz, red, **kw),
                lambda x, y: L.info_nce(x, y, t, nz, red, tiled=False), xs)
    if c["loss"] == "supcon":
        lab = None if c["classes"] is None else torch.arange(b) % c["classes"]
        return (lambda x, y: FU.fused_supcon(x, y, lab, t, nz, None, red, **kw),
                lambda x, y: L.supcon(x, y, lab, t, nz, None, red, tiled=False), xs)
    beta, tau = c["beta"], c["tau"]
    return (lambda x, y: FU.fused_debiased_hard(x, y, t, tau, beta, nz, red, **kw),
            lambda x, y: L.debiased_hard(x, y, t, tau, beta, nz, red, tiled=False), xs)


def _run(fn: Callable[..., torch.Tensor], xs: list[torch.Tensor],
         w: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(the loss in float64, the gradients of all inputs in float64, the loss's dtype)."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    out = fn(*xs)
    target = out.sum() if w is None else (out.double() * w).sum()
    grads = torch.autograd.grad(target, xs)
    flat = torch.cat([g.double().flatten() for g in grads])
    assert all(g.dtype == x.dtype for g, x in zip(grads, xs, strict=True))
    return out.detach().double(), flat, str(out.dtype)


def evaluate(c: dict[str, Any]) -> dict[str, Any]:
    fused, dense, xs64 = _build(c)
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[c["dtype"]]
    xs = [x.to(dt) for x in xs64]
    xs_ref = [x.to(F64) for x in xs]  # the same values, in float64
    n_out = c["B"] if c["loss"] in ("nce", "row_lse") else 2 * c["B"]
    w = None
    if c["reduction"] == "none":
        w = torch.rand(n_out, generator=torch.Generator().manual_seed(9), dtype=F64)
    t0 = time.perf_counter()
    out, g, out_dtype = _run(fused, xs, w)
    seconds = time.perf_counter() - t0
    ref, g_ref, _ = _run(dense, xs_ref, w)
    v_abs = float((out - ref).abs().max())
    g_abs = float((g - g_ref).abs().max())
    g_norm = float(g_ref.norm())
    return {**c, "value_abs": v_abs, "value": v_abs / max(float(ref.abs().max()), 1e-300),
            "grad_abs": g_abs,
            "grad": float((g - g_ref).norm()) / g_norm if g_norm > 0 else g_abs,
            "finite": bool(torch.isfinite(out).all() and torch.isfinite(g).all()),
            "out_dtype": out_dtype, "seconds": seconds}


def cases() -> list[dict[str, Any]]:
    """B in {1, 5, 33}, d in {8, 16, 40}, t in {0.05, 0.5, 1}, each loss, both dtypes."""
    base = {"normalize": "sphere", "kind": "general", "reduction": "mean"}
    shapes = [  # (B, d, t, normalize, reduction)
        (1, 8, 0.5, "sphere", "none"),
        (5, 16, 0.05, "sphere", "mean"),
        (5, 40, 1.0, "ball", "sum"),
        (33, 40, 0.05, "sphere", "none"),
        (12, 8, 1.0, "none", "mean"),
        (33, 16, 0.5, "sphere", "sum"),
    ]
    out: list[dict[str, Any]] = []
    for dtype in ("float32", "bfloat16"):
        for b, d, t, nz, red in shapes:
            shape = {**base, "dtype": dtype, "B": b, "d": d, "t": t, "normalize": nz,
                     "reduction": red}
            out.append({**shape, "loss": "info_nce"})
            out.append({**shape, "loss": "nce", "k": 2 * b + 3,
                        "nce": ("infonce", "infonce-mean", "logistic")[b % 3]})
        for b, d, t in ((5, 16, 0.5), (17, 40, 0.05)):
            shape = {**base, "dtype": dtype, "B": b, "d": d, "t": t}
            out.append({**shape, "loss": "supcon", "classes": 3, "reduction": "none"})
            out.append({**shape, "loss": "supcon", "classes": None})
            out.append({**shape, "loss": "debiased", "beta": 0.0, "tau": 0.1,
                        "reduction": "none"})
            out.append({**shape, "loss": "debiased", "beta": 1.0, "tau": 0.1})
        # bfloat16 operands equal to the normalized rows: the kernels' own error
        for loss in ("info_nce", "nce"):
            out.append({**base, "dtype": dtype, "loss": loss, "B": 17, "d": 40, "t": 0.05,
                        "kind": "signs", "k": 40, "nce": "infonce", "reduction": "none"})
            out.append({**base, "dtype": dtype, "loss": loss, "B": 17, "d": 40, "t": 0.5,
                        "normalize": "none", "k": 40, "nce": "infonce"})
    # float16 operands (``precision="fp16"``: float32 inputs, the normalized rows rounded to
    # float16; the weights stay float32) and the row log-sum-exp itself
    out.append({**base, "dtype": "float32", "loss": "info_nce", "B": 17, "d": 16, "t": 0.5,
                "precision": "fp16"})
    out.append({**base, "dtype": "float32", "loss": "row_lse", "B": 20, "d": 8, "t": 0.5,
                "k": 37, "reduction": "none"})
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    only = sys.argv[1] if len(sys.argv) > 1 else None
    records = [evaluate(c) for c in cases() if only is None or c["loss"] == only]
    print(json.dumps(records))

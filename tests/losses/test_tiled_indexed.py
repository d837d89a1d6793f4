"""The indexed-pool NCE kernel (contrastlab.losses.kernels.indexed) against the dense gather
``nce_loss(anchor, positive, pool[index])``: values and gradients (anchor, positive and pool) in
float64 and float32 for both ways of forming the scores, every loss / normalization /
reduction, edge shapes, repeated indices, column chunks, bfloat16 input, gradcheck, the default
dispatch of ``nce_loss(..., negative_index=...)``, the one-line errors, and a memory regression
test (B = k = 4096, M = 65536, d = 128: the dense gather would be 8 GB) in a subprocess."""

from __future__ import annotations

import re

import pytest
import torch

import contrastlab.losses as L
from contrastlab.losses import kernels as T
from contrastlab.losses import nce as nce_module
from contrastlab.losses.kernels import engine as E
from contrastlab.losses.kernels import indexed as TI

from . import references as R
from .helpers import rows as _rows
from .memory import measure

F64 = torch.float64
LOSSES = ("infonce", "infonce-mean", "logistic")
METHODS = ("bank", "gather")

pytestmark = pytest.mark.usefixtures("one_thread")



def _index(b: int, k: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, m, (b, k), generator=g)


def _grads(out: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    gs = torch.autograd.grad(out.sum(), xs, retain_graph=True)
    return [g.detach() for g in gs]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.detach().to(F64), b.detach().to(F64)
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-300))


def _dense(a, p, pool, idx, loss="infonce", t=0.5, normalize="sphere", reduction="mean"):
    return L.nce_loss(a, p, pool[idx], loss, t, normalize, reduction, tiled=False)


def _assert_matches(out, ref, xs, xs_ref=None, tol=1e-10) -> None:
    xs_ref = xs if xs_ref is None else xs_ref
    assert out.shape == ref.shape
    assert _rel(out, ref) <= tol, ("value", _rel(out, ref))
    for name, g, gr in zip(
        ("anchor", "positive", "pool"), _grads(out, *xs), _grads(ref, *xs_ref), strict=True
    ):
        assert _rel(g, gr) <= tol, (name, _rel(g, gr))


# --------------------------------------------------------------------------------------------
# float64: kernel == dense gather, values and gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("normalize", ["sphere", "ball", "none"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_dense_float64(method, loss, normalize, reduction) -> None:
    # B = 7 in blocks of 3 (the last one partial); k = 5 of M = 9 rows: repeats in most rows
    a, p, pool = _rows((7, 4), 1), _rows((7, 4), 2), _rows((9, 4), 3)
    idx = _index(7, 5, 9, 4)
    out = TI.tiled_nce_indexed(a, p, pool, idx, loss, 0.3, normalize, reduction, 3, method)
    ref = _dense(a, p, pool, idx, loss, 0.3, normalize, reduction)
    assert out.dtype == F64
    _assert_matches(out, ref, (a, p, pool))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("b", "k", "m", "block_rows"),
    [
        (1, 6, 8, None),  # B = 1
        (6, 1, 8, None),  # k = 1
        (6, 4, 1, None),  # M = 1: every negative is the same row
        (6, 4, 8, 1),  # one anchor per block
        (6, 4, 8, 4),  # B not divisible by block_rows
        (6, 4, 8, 100),  # block_rows > B
        (5, 40, 3, 2),  # k >> M: heavy repeats
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_edge_shapes(method, b, k, m, block_rows, reduction) -> None:
    a, p, pool = _rows((b, 3), 10), _rows((b, 3), 11), _rows((m, 3), 12)
    idx = _index(b, k, m, 13)
    for loss in LOSSES:
        out = TI.tiled_nce_indexed(
            a, p, pool, idx, loss, 0.5, "sphere", reduction, block_rows, method
        )
        _assert_matches(out, _dense(a, p, pool, idx, loss, 0.5, "sphere", reduction),
                        (a, p, pool))


@pytest.mark.parametrize("method", METHODS)
def test_repeated_indices_count_as_repeated_negatives(method) -> None:
    a, p, pool = _rows((4, 3), 20), _rows((4, 3), 21), _rows((5, 3), 22)
    idx = torch.tensor([[2, 2, 2], [0, 1, 0], [4, 4, 3], [1, 1, 1]])
    out = TI.tiled_nce_indexed(a, p, pool, idx, temperature=0.4, reduction="none",
                               method=method)
    _assert_matches(out, _dense(a, p, pool, idx, t=0.4, normalize="none", reduction="none"),
                    (a, p, pool))
    # against the brute-force float64 reference (lists, SPEC A2) as well
    ref = R.ref_nce_loss(a, p, pool[idx], "infonce", 0.4, "none")
    torch.testing.assert_close(out.detach(), torch.tensor(ref, dtype=F64), rtol=1e-10,
                               atol=1e-12)
    # a negative drawn three times weighs three times: the same as listing it three times
    pool_grad = _grads(out[0], pool)[0]
    assert pool_grad[[0, 1, 3, 4]].abs().max() == 0.0 and pool_grad[2].abs().max() > 0.0


@pytest.mark.parametrize("method", METHODS)
def test_column_chunks_and_small_blocks(method, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tiny BLOCK_ELEMENTS: one anchor per block and, for the gather method, negatives in
    # chunks of BLOCK_ELEMENTS // d = 3 (k = 10: chunks 3, 3, 3, 1)
    monkeypatch.setattr(E, "BLOCK_ELEMENTS", 12)
    br, chunk = TI.indexed_block_shape(9, 10, 7, 4, method)
    assert br == 1 and chunk == (3 if method == "gather" else 10)
    a, p, pool = _rows((9, 4), 30), _rows((9, 4), 31), _rows((7, 4), 32)
    idx = _index(9, 10, 7, 33)
    for reduction in ("mean", "none"):
        out = TI.tiled_nce_indexed(a, p, pool, idx, "infonce", 0.2, "ball", reduction,
                                   method=method)
        _assert_matches(out, _dense(a, p, pool, idx, "infonce", 0.2, "ball", reduction),
                        (a, p, pool))


@pytest.mark.parametrize("method", METHODS)
def test_large_logits_exact_in_float64(method) -> None:
    # unnormalized rows with norms 0.1 .. 10 and t = 0.05: logits up to about +-2000
    g = torch.Generator().manual_seed(40)
    scale = torch.logspace(-1, 1, 50, dtype=F64)[torch.randperm(50, generator=g)].unsqueeze(1)
    a = (torch.randn(50, 4, generator=g, dtype=F64) * scale).requires_grad_(True)
    p = (torch.randn(50, 4, generator=g, dtype=F64) * scale).requires_grad_(True)
    pool = (torch.randn(30, 4, generator=g, dtype=F64) * 5).requires_grad_(True)
    idx = _index(50, 12, 30, 41)
    for loss in ("infonce", "infonce-mean"):
        out = TI.tiled_nce_indexed(a, p, pool, idx, loss, 0.05, "none", "none", 16, method)
        ref = _dense(a, p, pool, idx, loss, 0.05, "none", "none")
        _assert_matches(out, ref, (a, p, pool))


@pytest.mark.parametrize("method", METHODS)
def test_float32_stable_for_large_logits(method) -> None:
    # norm-100 features, t = 0.05: exponents of order 2e5
    g = torch.Generator().manual_seed(42)
    a = (100.0 * torch.randn(40, 8, generator=g)).requires_grad_(True)
    p = (100.0 * torch.randn(40, 8, generator=g)).requires_grad_(True)
    pool = (100.0 * torch.randn(64, 8, generator=g)).requires_grad_(True)
    idx = _index(40, 16, 64, 43)
    for normalize in ("sphere", "none"):
        out = TI.tiled_nce_indexed(a, p, pool, idx, "infonce", 0.05, normalize,
                                   block_rows=16, method=method)
        grads = _grads(out, a, p, pool)
        assert torch.isfinite(out) and all(torch.isfinite(x).all() for x in grads)
        if normalize == "sphere":  # logits within +-20: compare with float64
            xs = [x.detach().double().requires_grad_(True) for x in (a, p, pool)]
            ref = _dense(*xs, idx, "infonce", 0.05, "sphere")
            _assert_matches(out, ref, (a, p, pool), xs, tol=1e-5)


# --------------------------------------------------------------------------------------------
# float32 and bfloat16 against the float64 dense gather
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", *METHODS])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float32_within_1e5_of_float64(method, reduction) -> None:
    # B = 301 in blocks of 128 (the last one partial), k = 37 of M = 500, d = 32
    a64, p64, pool64 = _rows((301, 32), 50), _rows((301, 32), 51), _rows((500, 32), 52)
    idx = _index(301, 37, 500, 53)
    xs32 = [x.detach().float().requires_grad_(True) for x in (a64, p64, pool64)]
    for loss in LOSSES:
        ref = _dense(a64, p64, pool64, idx, loss, 0.2, "sphere", reduction)
        out = TI.tiled_nce_indexed(*xs32, idx, loss, 0.2, "sphere", reduction, 128, method)
        assert out.dtype == torch.float32
        _assert_matches(out, ref, xs32, (a64, p64, pool64), tol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_input(method) -> None:
    a, p = _rows((70, 16), 60, torch.bfloat16), _rows((70, 16), 61, torch.bfloat16)
    pool = _rows((90, 16), 62, torch.bfloat16)
    idx = _index(70, 24, 90, 63)
    out = TI.tiled_nce_indexed(a, p, pool, idx, "infonce", 0.1, "sphere", block_rows=32,
                               method=method)
    assert out.dtype == torch.float32  # computed in float32, a float32 loss
    grads = _grads(out, a, p, pool)
    assert all(g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all() for g in grads)
    # the same bfloat16 values in float64: only float32 rounding differs
    xs = [x.detach().to(F64).requires_grad_(True) for x in (a, p, pool)]
    ref = _dense(*xs, idx, "infonce", 0.1, "sphere")
    assert abs(out.item() - ref.item()) <= 1e-5 * abs(ref.item())
    for g, gr in zip(grads, _grads(ref, *xs), strict=True):
        assert _rel(g, gr) < 2e-2


# --------------------------------------------------------------------------------------------
# autograd details
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(method, reduction) -> None:
    a, p, pool = _rows((3, 2), 70), _rows((3, 2), 71), _rows((4, 2), 72)
    idx = torch.tensor([[0, 3], [1, 1], [2, 0]])

    def fn(x, q, m):
        return TI.tiled_nce_indexed(x, q, m, idx, "infonce", 0.5, "sphere", reduction, 2, method)

    assert torch.autograd.gradcheck(fn, (a, p, pool), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_frozen_pool_no_grad_and_scaled_backward(method) -> None:
    a, p = _rows((9, 4), 80), _rows((9, 4), 81)
    pool = _rows((13, 4), 82).detach()  # a memory bank: no gradient
    idx = _index(9, 6, 13, 83)
    out = TI.tiled_nce_indexed(a, p, pool, idx, temperature=0.3, block_rows=4, method=method)
    ref = L.nce_loss(a, p, pool[idx], temperature=0.3, tiled=False)
    torch.testing.assert_close(out, ref)
    # an upstream gradient other than 1 (the fused backward scales its stored gradients)
    g_out = torch.autograd.grad(3.0 * out, [a, p])
    g_ref = torch.autograd.grad(3.0 * ref, [a, p])
    for g, gr in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(g, gr)
    # only the pool requires a gradient
    pool_g = pool.clone().requires_grad_(True)
    out = TI.tiled_nce_indexed(a.detach(), p.detach(), pool_g, idx, method=method)
    ref = L.nce_loss(a.detach(), p.detach(), pool_g[idx], tiled=False)
    torch.testing.assert_close(_grads(out, pool_g)[0], _grads(ref, pool_g)[0])
    with torch.no_grad():
        value = TI.tiled_nce_indexed(a, p, pool, idx, temperature=0.3, method=method)
    torch.testing.assert_close(value, L.nce_loss(a, p, pool[idx], temperature=0.3).detach())


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_other_integer_index_dtypes(dtype: torch.dtype) -> None:
    a, p, pool = _rows((5, 3), 94), _rows((5, 3), 95), _rows((8, 3), 96)
    idx = _index(5, 4, 8, 97)
    out = L.nce_loss(a, p, pool, negative_index=idx.to(dtype), tiled=True)
    _assert_matches(out, L.nce_loss(a, p, pool[idx]), (a, p, pool))


def test_module_takes_negative_index() -> None:
    a, p, pool = _rows((5, 3), 90), _rows((5, 3), 91), _rows((8, 3), 92)
    idx = _index(5, 4, 8, 93)
    module = L.NCELoss("infonce-mean", 0.5, "sphere")
    torch.testing.assert_close(module(a, p, pool, idx), module(a, p, pool[idx]))


# --------------------------------------------------------------------------------------------
# the cost model, the block shape and the default dispatch
# --------------------------------------------------------------------------------------------


def test_cost_model_and_block_shape() -> None:
    c = TI.GATHER_COST
    m = 65536
    assert TI.choose_method(int(m / c) - 1, m) == "gather"
    assert TI.choose_method(int(m / c) + 1, m) == "bank"
    assert TI.choose_method(10**6, 8) == "bank"
    # one bank row would exceed BLOCK_ELEMENTS: gather
    assert TI.choose_method(10**6, T.BLOCK_ELEMENTS + 1) == "gather"
    # blocks within BLOCK_ELEMENTS scores / gathered elements, at most MAX_BLOCK_ROWS anchors
    assert TI.indexed_block_shape(4096, 4096, 65536, 128, "bank") == (64, 4096)
    assert TI.indexed_block_shape(4096, 4096, 65536, 128, "gather") == (8, 4096)
    assert TI.indexed_block_shape(4096, 16, 64, 128, "gather") == (256, 16)
    assert TI.indexed_block_shape(10, 16, 64, 128, "bank") == (10, 16)
    # a row of k d > BLOCK_ELEMENTS gathered elements: one anchor, chunks of the negatives
    assert TI.indexed_block_shape(100, 65536, 10**6, 128, "gather") == (1, 32768)
    assert TI.indexed_block_shape(100, 64, 1000, 8, "gather", block_rows=7) == (7, 64)
    with pytest.raises(ValueError, match=r"^block_rows"):
        TI.indexed_block_shape(100, 64, 1000, 8, "gather", block_rows=0)
    with pytest.raises(ValueError, match=r"^k"):
        TI.choose_method(0, 10)


def test_dispatch_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nce_module, "TILED_MIN_PAIRS", 6 * 50)
    calls: list[tuple[int, int]] = []
    real = TI.tiled_nce_indexed

    def spy(*args, **kwargs):
        calls.append(tuple(args[3].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(nce_module, "tiled_nce_indexed", spy)
    a, p, pool = _rows((6, 3), 100), _rows((6, 3), 101), _rows((20, 3), 102)
    small, big = _index(6, 49, 20, 103), _index(6, 50, 20, 104)
    L.nce_loss(a, p, pool, negative_index=small)
    assert calls == []
    auto = L.nce_loss(a, p, pool, negative_index=big)
    assert calls == [(6, 50)]
    dense = L.nce_loss(a, p, pool, negative_index=big, tiled=False)
    assert calls == [(6, 50)]
    _assert_matches(auto, dense, (a, p, pool))
    _assert_matches(dense, L.nce_loss(a, p, pool[big], tiled=False), (a, p, pool))
    forced = L.nce_loss(a, p, pool, negative_index=small, tiled=True)
    assert calls == [(6, 50), (6, 49)]
    _assert_matches(forced, L.nce_loss(a, p, pool[small]), (a, p, pool))
    # hinge: the dense gather (no tiled form); asking for the kernel is an error
    hinge = L.nce_loss(a, p, pool, "hinge", negative_index=big, reduction="none")
    assert calls == [(6, 50), (6, 49)]
    torch.testing.assert_close(hinge, L.nce_loss(a, p, pool[big], "hinge", reduction="none"))
    with pytest.raises(ValueError, match=r"^tiled") as err:
        L.nce_loss(a, p, pool, "hinge", negative_index=big, tiled=True)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# bad input: one-line ValueErrors naming the argument
# --------------------------------------------------------------------------------------------

Z = torch.randn(4, 3)
POOL = torch.randn(10, 3)
IDX = torch.randint(0, 10, (4, 5))

BAD = [
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX[0]), "negative_index", "2 dimensions"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX[:3]), "negative_index", "B = 4"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX[:, :0]), "negative_index", "k >= 1"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX + 10), "negative_index", r"\[0, 9\]"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX - 10), "negative_index", r"\[0, 9\]"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX.float()), "negative_index", "integer"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX > 3), "negative_index", "integer"),
    (lambda: L.nce_loss(Z, Z, POOL, negative_index=IDX.tolist()), "negative_index", "Tensor"),
    (lambda: L.nce_loss(Z, Z, POOL[None], negative_index=IDX), "negatives", r"\(M, d\)"),
    (lambda: L.nce_loss(Z, Z, POOL[:, :2], negative_index=IDX), "negatives", "d = 3"),
    (lambda: L.nce_loss(Z, Z[:, :2], POOL, negative_index=IDX), "positive", "shape"),
    (lambda: L.nce_loss(Z, Z, POOL, "svm", negative_index=IDX), "loss", "infonce"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL, IDX, method="dense"), "method", "bank"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL, IDX, loss="hinge"), "loss", "infonce"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL[None], IDX), "pool", r"\(M, d\)"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL, IDX[:, :0]), "index", "k >= 1"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL, IDX, block_rows=0), "block_rows", ">= 1"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL, IDX, temperature=0.0), "temperature", "> 0"),
    (lambda: TI.tiled_nce_indexed(Z, Z, POOL, IDX, reduction="avg"), "reduction", "mean"),
]


@pytest.mark.parametrize(("call", "name", "allowed"), BAD)
def test_bad_input_one_line_errors(call, name: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b") as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(allowed, msg), msg


# --------------------------------------------------------------------------------------------
# memory: B = k = 4096, M = 65536, d = 128 in a fresh process; pool[index] would be 8 GB
# --------------------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
from contrastlab.losses.kernels.indexed import tiled_nce_indexed

method, b = sys.argv[1], int(sys.argv[2])
k, m, d = 4096, 65536, 128
g = torch.Generator().manual_seed(0)
a = torch.randn(b, d, generator=g).requires_grad_(True)
p = torch.randn(b, d, generator=g).requires_grad_(True)
pool = torch.randn(m, d, generator=g).requires_grad_(True)
idx = torch.randint(0, m, (b, k), generator=g)  # 128 MB of int64, allocated before `base`
# warm the allocator and the kernel on a few anchors first
tiled_nce_indexed(a[:8], p[:8], pool, idx[:8], method=method).backward()
a.grad = p.grad = pool.grad = None
base = status_mb("VmRSS")
t0 = time.perf_counter()
if method == "auto":  # through nce_loss's default dispatch
    loss = L.nce_loss(a, p, pool, temperature=0.1, normalize="sphere", negative_index=idx)
else:
    loss = tiled_nce_indexed(a, p, pool, idx, temperature=0.1, normalize="sphere", method=method)
loss.backward()
report(base, loss, seconds=time.perf_counter() - t0)
"""

# The kernel's own peak is 110-170 MB here (the pool's gradient and normalized copy, 32 MB
# each; the anchors' gradients; one 16 MB block buffer and its temporaries); the dense gather
# pool[index] alone would be 8 GB (float32) at B = 4096, its gradient as much again.
MEMORY_LIMIT_MB = 300.0


@pytest.mark.parametrize(
    ("method", "batch"),
    # auto (nce_loss's dispatch; the bank method at these sizes) at the full size; the gather
    # method (blocks of 8 anchors, the same buffers at any B) at B = 512 to keep it quick
    [("auto", 4096), ("gather", 512)],
)
def test_memory_k4096_m65536(method: str, batch: int) -> None:
    result = measure(_MEMORY_SCRIPT, method, str(batch))
    assert result["extra_mb"] < MEMORY_LIMIT_MB, f"peak RSS grew by {result['extra_mb']:.0f} MB"


@pytest.mark.parametrize("normalize", ["sphere", "none"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_auto_works_on_the_drawn_rows_only(normalize, reduction) -> None:
    # B k = 12 draws from M = 40 rows: "auto" compacts the pool to the rows drawn; the gradient
    # still reaches the full pool, zero on the rows never drawn
    a, p, pool = _rows((4, 3), 30), _rows((4, 3), 31), _rows((40, 3), 32)
    idx = _index(4, 3, 40, 33)
    out = TI.tiled_nce_indexed(a, p, pool, idx, "infonce", 0.4, normalize, reduction)
    ref = _dense(a, p, pool, idx, "infonce", 0.4, normalize, reduction)
    _assert_matches(out, ref, (a, p, pool))
    g_pool = _grads(TI.tiled_nce_indexed(a, p, pool, idx, "infonce", 0.4, normalize), pool)[0]
    never = torch.ones(40, dtype=torch.bool)
    never[idx.flatten()] = False
    assert bool(never.any()) and float(g_pool[never].abs().max()) == 0.0
    assert float(g_pool[~never].abs().max()) > 0.0

"""The tiled kernels of SCL / HSCL / UCL / HUCL (contrastlab.losses.kernels.jiang) against the dense
code (``tiled=False``): values and gradients of both exact forms (``exact="mean"``, the plug-in,
and ``exact=True``/``"loss"``, the quadrature) over beta, the negatives' and the pairs'
reductions, the normalizations and temperatures, block sizes, small batches and their errors,
float32 / bfloat16 inputs, the default dispatch, the ``tiled`` argument of the losses and their
modules, and the memory of B = 16384 (a fresh subprocess)."""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

import contrastlab.losses as L
from contrastlab.losses.kernels import jiang as TJ

from .helpers import labels as _labels
from .helpers import rows as _rows
from .memory import measure

F64 = torch.float64

# (``contrastlab.losses.scl`` is the function; the module is reached through importlib)
scl_module = importlib.import_module("contrastlab.losses.scl")

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> (negatives, the loss function, the betas it takes); beta = 0 is SCL / UCL
VARIANTS: dict[str, tuple[str, Callable[..., torch.Tensor]]] = {
    "scl": ("other-class", L.scl),
    "hscl": ("other-class", L.hscl),
    "ucl": ("marginal", L.ucl),
    "hucl": ("marginal", L.hucl),
}
# (variant, beta): the four losses, the hard ones at two hardnesses
LOSS_BETAS = [("scl", 0.0), ("hscl", 1.0), ("hscl", 5.0), ("ucl", 0.0), ("hucl", 1.0),
              ("hucl", 5.0)]




def _grad(out: torch.Tensor, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """d/dx of a random weighting of the outputs (not just their sum)."""
    w = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    (g,) = torch.autograd.grad((out * w.to(out.dtype)).sum(), x)
    return g.detach()


@pytest.fixture(params=["symmetric", "rows"])
def plug_in_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both tilings of exact="mean": symmetric strips (default) and row blocks."""
    from contrastlab.losses.kernels import jiang as tiled_jiang

    monkeypatch.setattr(tiled_jiang, "PLUG_IN_METHOD", request.param)
    return str(request.param)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of a against b (absolute below norm 1e-14)."""
    a64, b64 = a.detach().to(F64), b.detach().to(F64)
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-14))


def _call(variant: str, beta: float, z: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
    _, fn = VARIANTS[variant]
    if variant.startswith("h"):
        kw["beta"] = beta
    return fn(z, y, **kw)


def _tiled(variant: str, beta: float, z: torch.Tensor, y: torch.Tensor,
           block_rows: int | None = None, **kw: Any) -> torch.Tensor:
    negatives, _ = VARIANTS[variant]
    beta = beta if variant.startswith("h") else 0.0
    return L.tiled_hard_contrastive(z, y, negatives, beta, block_rows=block_rows, **kw)


def _assert_equal(variant: str, beta: float, z: torch.Tensor, y: torch.Tensor,
                  block_rows: int, tol: float, grad_atol: float = 0.0, **kw: Any) -> None:
    ref = _call(variant, beta, z, y, tiled=False, **kw)
    out = _tiled(variant, beta, z, y, block_rows, **kw)
    assert out.dtype == ref.dtype and out.shape == ref.shape, kw
    assert _rel(out, ref) < tol, (kw, _rel(out, ref))
    g_out, g_ref = _grad(out, z), _grad(ref, z)
    close = float((g_out - g_ref).abs().max()) <= grad_atol
    assert close or _rel(g_out, g_ref) < tol, (kw, _rel(g_out, g_ref))


# --------------------------------------------------------------------------------------------
# float64: tiled == dense over the whole grid
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "beta"), LOSS_BETAS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_plug_in_equals_dense_float64(
    plug_in_method: str, variant: str, beta: float, reduction: str
) -> None:
    # B = 23 rows in blocks of 7 (the last one partial), 4 classes
    z, y = _rows((23, 5), 1), _labels(23, 4, 2)
    for nr, norm, t in itertools.product(["mean", "sum"], ["ball", "sphere", "none"], [1.0, 0.1]):
        _assert_equal(variant, beta, z, y, 7, 1e-12, k=7, temperature=t, normalize=norm,
                      exact="mean", negatives_reduction=nr, reduction=reduction)


@pytest.mark.parametrize(("variant", "beta"), LOSS_BETAS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_exact_loss_equals_dense_float64(variant: str, beta: float, reduction: str) -> None:
    # the quadrature is the dense one restricted to each block's anchors: B = 13, blocks of 5
    z, y = _rows((13, 4), 3), _labels(13, 3, 4)
    grid = [("mean", "ball", 1.0), ("sum", "sphere", 0.1), ("mean", "none", 0.1)]
    if reduction == "mean":
        grid += [("sum", "ball", 1.0), ("mean", "sphere", 1.0), ("sum", "none", 1.0)]
    for nr, norm, t in grid:
        _assert_equal(variant, beta, z, y, 5, 1e-10, k=5, temperature=t, normalize=norm,
                      exact=True, negatives_reduction=nr, reduction=reduction)


@pytest.mark.parametrize("exact", ["mean", "loss"])
def test_block_sizes_agree(plug_in_method: str, exact: str) -> None:
    # B = 17: blocks of 1, 4 (the last partial), 17 (one block) and 64 (more than B)
    z, y = _rows((17, 3), 5), _labels(17, 3, 6)
    for variant, beta in (("hscl", 2.0), ("hucl", 2.0)):
        ref = _call(variant, beta, z, y, k=6, temperature=0.5, exact=exact, reduction="none",
                    tiled=False)
        g_ref = _grad(ref, z)
        for br in (1, 4, 17, 64):
            out = _tiled(variant, beta, z, y, br, k=6, temperature=0.5, exact=exact,
                         reduction="none")
            assert _rel(out, ref) < 1e-10 and _rel(_grad(out, z), g_ref) < 1e-10, (variant, br)


def test_exact_loss_default_blocks_by_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    # by default a quadrature block holds ~LOSS_BLOCK_PAIRS pairs (>= LOSS_MIN_BLOCK_ROWS rows)
    monkeypatch.setattr(TJ, "LOSS_BLOCK_PAIRS", 10)
    monkeypatch.setattr(TJ, "LOSS_MIN_BLOCK_ROWS", 2)
    blocks: list[tuple[int, int]] = []
    real = TJ._loss_block

    def spy(zn: torch.Tensor, **kw: Any) -> torch.Tensor:
        blocks.append((kw["r0"], kw["r1"]))
        return real(zn, **kw)

    monkeypatch.setattr(TJ, "_loss_block", spy)
    z, y = _rows((13, 3), 9), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 0])
    ref = L.hucl(z, y, 1.0, 4, exact=True, tiled=False)
    with torch.no_grad():
        out = L.tiled_hard_contrastive(z, y, "marginal", 1.0, 4, exact=True)
    # the largest class has 6 members: 10 // 6 = 1 row, raised to 2
    assert blocks == [(r, min(13, r + 2)) for r in range(0, 13, 2)]
    assert _rel(out, ref) < 1e-12


def test_gradcheck(plug_in_method: str) -> None:
    # the analytic backward of the plug-in kernel and the checkpointed quadrature blocks; at
    # beta = 0 (for beta > 0 the hardness law is detached: finite differences would see it)
    z = _rows((5, 3), 7)
    y = torch.tensor([0, 1, 0, 2, 1])
    for negatives, exact, red in itertools.product(
        ["other-class", "marginal"], ["mean", "loss"], ["mean", "none"]
    ):
        def fn(x: torch.Tensor, negatives: str = negatives, exact: str = exact,
               red: str = red) -> torch.Tensor:
            return L.tiled_hard_contrastive(x, y, negatives, 0.0, 3, 0.5, "ball", exact,
                                            "mean", red, block_rows=2)

        assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_upstream_gradient_scaled_and_no_grad(plug_in_method: str) -> None:
    z, y = _rows((11, 4), 8), _labels(11, 3, 9)
    for exact in ("mean", True):
        for red in ("mean", "sum"):
            ref = 2.5 * L.hscl(z, y, 1.0, 5, 0.5, exact=exact, reduction=red, tiled=False)
            out = 2.5 * L.hscl(z, y, 1.0, 5, 0.5, exact=exact, reduction=red, tiled=True)
            assert _rel(_grad(out, z), _grad(ref, z)) < 1e-10
        with torch.no_grad():
            a = L.hucl(z, y, 1.0, 5, exact=exact, reduction="none", tiled=True)
        b = L.hucl(z.detach(), y, 1.0, 5, exact=exact, reduction="none", tiled=True)
        ref = L.hucl(z, y, 1.0, 5, exact=exact, reduction="none", tiled=False)
        assert not a.requires_grad and not b.requires_grad
        assert _rel(a, ref) < 1e-12 and _rel(b, ref) < 1e-12


# --------------------------------------------------------------------------------------------
# small batches, lone classes, and the errors of the dense code
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exact", ["mean", True])
def test_small_batches_and_a_single_member_class(plug_in_method: str, exact: bool | str) -> None:
    cases = [
        (torch.tensor([0]), ("ucl", "hucl")),  # B = 1: the anchor is its only candidate
        (torch.tensor([0, 1]), ("scl", "hscl", "ucl", "hucl")),
        (torch.tensor([3, 3]), ("ucl", "hucl")),
        (torch.tensor([0, 0, 0, 1, 2, 2]), ("scl", "hscl", "ucl", "hucl")),  # class 1: alone
    ]
    for y, variants in cases:
        z = _rows((len(y), 3), 10 + len(y))
        for variant in variants:
            for red in ("mean", "none"):
                for br in (1, 2):
                    # B = 1: the gradient is 0; the symmetric kernel returns ~1e-17 round-off
                    _assert_equal(variant, 2.0, z, y, br, 1e-10, grad_atol=1e-15, k=4,
                                  temperature=0.5, exact=exact, reduction=red)


@pytest.mark.parametrize("exact", ["mean", True])
def test_no_negative_errors_match_dense(exact: bool | str) -> None:
    # supervised losses with a single class in the batch (B = 1, B = 2, B = 5): the same error
    for y in (torch.tensor([0]), torch.tensor([1, 1]), torch.zeros(5, dtype=torch.long)):
        z = _rows((len(y), 3), 20)
        for variant in ("scl", "hscl"):
            msgs = []
            for tiled in (False, True):
                with pytest.raises(ValueError, match=r"^mask: anchor 0 has no allowed") as err:
                    _call(variant, 1.0, z, y, k=3, exact=exact, tiled=tiled)
                msgs.append(str(err.value))
            assert msgs[0] == msgs[1]


def test_argument_errors() -> None:
    z, y = _rows((6, 3), 21), torch.tensor([0, 1, 0, 1, 2, 2])
    for fn in (L.scl, L.hscl, L.ucl, L.hucl):
        with pytest.raises(ValueError, match=r"^tiled=True .*exact") as err:
            fn(z, y, k=3, exact=False, tiled=True)
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match=r"^tiled must be"):
            fn(z, y, k=3, exact="mean", tiled="yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^tiled must be"):
            fn(z, y, k=3, exact=False, tiled=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^tiled=True .*exact"):
        L.HSCLLoss(exact=False, tiled=True)  # refused at construction
    with pytest.raises(ValueError, match=r"^exact"):
        L.tiled_hard_contrastive(z, y, "marginal", exact=False)
    with pytest.raises(ValueError, match=r"^block_rows"):
        L.tiled_hard_contrastive(z, y, "marginal", exact="mean", block_rows=0)
    with pytest.raises(ValueError, match=r"^reduction"):
        L.tiled_hard_contrastive(z, y, "marginal", exact="mean", reduction="avg")
    with pytest.raises(ValueError, match=r"^normalize"):
        L.tiled_hard_contrastive(z, y, "marginal", exact="mean", normalize="cube")
    with pytest.raises(ValueError, match=r"^labels"):
        L.tiled_hard_contrastive(z, y[:4], "marginal", exact="mean")
    with pytest.raises(ValueError, match=r"^negatives"):
        L.tiled_hard_contrastive(z, y, "others", exact="mean")
    # the sampled form with tiled=False / None is the dense sampled loss, unchanged
    g1, g2 = (torch.Generator().manual_seed(0) for _ in range(2))
    a = L.hucl(z, y, k=3, generator=g1, tiled=False)
    b = L.hucl(z, y, k=3, generator=g2)
    assert a.item() == b.item()


# --------------------------------------------------------------------------------------------
# float32 and bfloat16 inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "beta"), LOSS_BETAS)
def test_float32_within_1e5(plug_in_method: str, variant: str, beta: float) -> None:
    # plug-in: B = 301 in blocks of 128; quadrature: B = 48 in blocks of 20
    for exact, b, br in (("mean", 301, 128), (True, 48, 20)):
        z64, y = _rows((b, 16), 30), _labels(b, 7, 31)
        z32 = z64.detach().float().requires_grad_(True)
        for red in ("mean", "none"):
            kw = {"k": 16, "temperature": 0.1, "exact": exact, "reduction": red}
            ref = _call(variant, beta, z64, y, tiled=False, **kw)
            out = _tiled(variant, beta, z32, y, br, **kw)
            dense32 = _call(variant, beta, z32, y, tiled=False, **kw)
            assert out.dtype == torch.float32
            assert _rel(out, ref) <= 1e-5, (exact, red, _rel(out, ref))
            assert _rel(out, dense32) <= 1e-5, (exact, red, _rel(out, dense32))
            g = _grad(out, z32)
            assert g.dtype == torch.float32
            assert _rel(g, _grad(ref, z64)) <= 1e-5, (exact, red, _rel(g, _grad(ref, z64)))


def test_bfloat16_input() -> None:
    zb, y = _rows((70, 16), 40, torch.bfloat16), _labels(70, 5, 41)
    for exact in ("mean", True):
        out = L.hscl(zb, y, 1.0, 8, 0.2, exact=exact, tiled=True)
        assert out.dtype == torch.float32  # computed in float32, a float32 loss
        (g,) = torch.autograd.grad(out, zb)
        assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()
        # the same bfloat16 values in float64: only the float32 compute differs
        x = zb.detach().to(F64).requires_grad_(True)
        ref = L.hscl(x, y, 1.0, 8, 0.2, exact=exact, tiled=False)
        (gr,) = torch.autograd.grad(ref, x)
        assert abs(out.item() - ref.item()) <= 1e-5 * abs(ref.item())
        assert _rel(g, gr) < 2e-2


@pytest.mark.parametrize("normalize", ["ball", "none"])
def test_large_logits(plug_in_method: str, normalize: str) -> None:
    # norm-100 features, t = 0.05, beta = 30, k = 4096 (the dense stability test's setting)
    g = torch.Generator().manual_seed(50)
    z = (100.0 * torch.randn(24, 8, generator=g, dtype=F64)).requires_grad_(True)
    y = torch.arange(24) % 4
    for variant, exact in itertools.product(("hscl", "hucl"), ("mean", True)):
        kw = {"k": 4096, "temperature": 0.05, "normalize": normalize, "exact": exact}
        out = _tiled(variant, 30.0, z, y, 5, **kw)
        grad = _grad(out, z)
        assert torch.isfinite(out) and torch.isfinite(grad).all()
        ref = _call(variant, 30.0, z, y, tiled=False, **kw)
        assert _rel(out, ref) < 1e-10 and _rel(grad, _grad(ref, z)) < 1e-9, (variant, exact)
        z32 = z.detach().float().requires_grad_(True)
        out32 = _tiled(variant, 30.0, z32, y, 5, **kw)
        assert torch.isfinite(out32) and torch.isfinite(_grad(out32, z32)).all()


# --------------------------------------------------------------------------------------------
# the dispatch, the modules and the gather flag
# --------------------------------------------------------------------------------------------


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = TJ.tiled_hard_contrastive

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(int(args[0].shape[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(scl_module, "tiled_hard_contrastive", spy)  # what scl dispatches to
    return calls


def test_dispatch_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    rows = L.TILED_MIN_ROWS
    small, big = _rows((rows - 1, 8), 60, torch.float32), _rows((rows, 8), 61, torch.float32)
    y_small, y_big = _labels(rows - 1, 10, 62), _labels(rows, 10, 63)
    L.hscl(small, y_small, exact="mean")
    assert calls == []
    auto = L.hscl(big, y_big, exact="mean")
    assert calls == [rows]
    dense = L.hscl(big, y_big, exact="mean", tiled=False)
    assert calls == [rows]
    assert abs(auto.item() - dense.item()) <= 1e-5 * abs(dense.item())
    # the sampled form stays dense whatever B is
    L.hucl(big, y_big, k=4, generator=torch.Generator().manual_seed(0))
    assert calls == [rows]
    # the quadrature dispatches on the same threshold (lowered here: it is slow at B = 1024)
    monkeypatch.setattr(scl_module, "TILED_MIN_ROWS", 12)
    z, y = _rows((12, 3), 64), _labels(12, 3, 65)
    L.ucl(z[:11], y[:11], k=3, exact=True)
    assert calls == [rows]
    auto = L.ucl(z, y, k=3, exact=True)
    assert calls == [rows, 12]
    assert _rel(auto, L.ucl(z, y, k=3, exact=True, tiled=False)) < 1e-12


def test_modules_and_gather_flag_forward_tiled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    z, y = _rows((9, 4), 70), _labels(9, 3, 71)
    ref = L.hscl(z, y, 2.0, 5, exact="mean", tiled=False)
    module = L.HSCLLoss(beta=2.0, k=5, exact="mean", tiled=True)
    torch.testing.assert_close(module(z, y), ref, rtol=1e-12, atol=0)
    assert calls == [9]
    # gather=True outside torch.distributed: call_gathered passes ``tiled`` on positionally
    for name, beta in (("scl", None), ("hscl", 2.0), ("ucl", None), ("hucl", 2.0)):
        fn = getattr(L, name)
        args = (z, y) if beta is None else (z, y, beta)
        out = fn(*args, k=5, exact="mean", tiled=True, gather=True)
        ref = fn(*args, k=5, exact="mean", tiled=False)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
    assert calls == [9] * 5
    gathered_module = L.HUCLLoss(beta=2.0, k=5, exact="mean", tiled=True, gather=True)
    torch.testing.assert_close(gathered_module(z, y), L.hucl(z, y, 2.0, 5, exact="mean"),
                               rtol=1e-12, atol=0)
    assert calls == [9] * 6


# --------------------------------------------------------------------------------------------
# memory: B = 16384, d = 128, float64 in a fresh process; a B x B float64 matrix is 2 GB
# --------------------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
b, d = 16384, 128
g = torch.Generator().manual_seed(0)
z = torch.randn(b, d, generator=g, dtype=torch.float64).requires_grad_(True)
y = torch.randint(0, 10, (b,), generator=g)
# warm the allocator and the kernel on a small batch first
L.hscl(z[:64], y[:64], 1.0, temperature=0.1, exact="mean", tiled=True).backward()
z.grad = None
base = status_mb("VmRSS")
loss = L.hscl(z, y, 1.0, temperature=0.1, exact="mean")  # the default dispatch
loss.backward()
report(base, loss)
"""

# The kernel's own peak is about 180 MB here (two 256 x 16384 float64 block buffers of 32 MB,
# the normalized rows, dZn and the normalization's backward, 16 MB each); the dense path would
# need several B x B matrices of 2048 MB each.
MEMORY_LIMIT_MB = 300.0


def test_memory_b16384_plug_in() -> None:
    result = measure(_MEMORY_SCRIPT, timeout=600)
    assert result["extra_mb"] < MEMORY_LIMIT_MB, f"peak RSS grew by {result['extra_mb']:.0f} MB"
    assert 0.0 < result["loss"] < 10.0

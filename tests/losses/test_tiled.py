"""The tiled kernels (contrastlab.losses.kernels) against the brute-force references and the exact
dense losses: values and gradients in float64 and float32, bfloat16 input, the default dispatch,
and a memory regression test (peak RSS of N = 16384 rows, d = 128, in a subprocess)."""

from __future__ import annotations

import importlib

import pytest
import torch

import contrastlab.losses as L
from contrastlab.losses import debiased as debiased_module
from contrastlab.losses import infonce as infonce_module
from contrastlab.losses import kernels as T
from contrastlab.losses import nce as nce_module
from contrastlab.losses.kernels import engine as E

from . import references as R
from .helpers import labels as _labels
from .helpers import rows as _rows
from .memory import measure

F64 = torch.float64
# (``contrastlab.losses.supcon`` is the function; the module is reached through importlib)
supcon_module = importlib.import_module("contrastlab.losses.supcon")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=["symmetric", "rows"])
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both tilings of the self-similarity losses."""
    monkeypatch.setattr(E, "SELF_SIMILARITY_METHOD", request.param)
    return str(request.param)




def _grads(out: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    gs = torch.autograd.grad(out.sum(), xs)
    return [g.detach() for g in gs]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.detach().to(F64), b.detach().to(F64)
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-300))


# --------------------------------------------------------------------------------------------
# against the brute-force float64 references (tiny sizes, blocks that do not divide N)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("block_rows", [1, 3, 64])
@pytest.mark.parametrize("normalize", ["sphere", "ball", "none"])
def test_info_nce_matches_reference(method, batch, block_rows, normalize) -> None:
    z1, z2 = _rows((batch, 3), 1), _rows((batch, 3), 2)
    out = T.tiled_info_nce(z1, z2, 0.3, normalize, reduction="none", block_rows=block_rows)
    ref = R.ref_info_nce(z1, z2, 0.3, normalize)
    torch.testing.assert_close(out.detach(), torch.tensor(ref, dtype=F64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("block_rows", [1, 5])
def test_supcon_matches_reference(method, labelled, batch, block_rows) -> None:
    z1, z2 = _rows((batch, 4), 3), _rows((batch, 4), 4)
    y = _labels(batch, 3, 5) if labelled else None
    out = T.tiled_supcon(z1, z2, y, 0.2, "sphere", reduction="none", block_rows=block_rows)
    ref = R.ref_supcon(z1, z2, y, 0.2, "sphere")
    torch.testing.assert_close(out.detach(), torch.tensor(ref, dtype=F64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("block_rows", [1, 4])
def test_debiased_hard_matches_reference(method, beta, tau_plus, block_rows) -> None:
    z1, z2 = _rows((5, 3), 6), _rows((5, 3), 7)
    out = T.tiled_debiased_hard(
        z1, z2, 0.5, tau_plus, beta, "sphere", reduction="none", block_rows=block_rows
    )
    ref = R.ref_debiased_hard(z1, z2, 0.5, tau_plus, beta, "sphere")
    torch.testing.assert_close(out.detach(), torch.tensor(ref, dtype=F64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("k", [1, 7])
@pytest.mark.parametrize("loss", T.TILED_NCE_LOSSES)
@pytest.mark.parametrize("block_rows", [1, 2, 64])
def test_nce_shared_pool_matches_reference(batch, k, loss, block_rows) -> None:
    a, p, n = _rows((batch, 3), 8), _rows((batch, 3), 9), _rows((k, 3), 10)
    out = T.tiled_nce_loss(a, p, n, loss, 0.5, "sphere", reduction="none", block_rows=block_rows)
    ref = R.ref_nce_loss(a, p, n, loss, 0.5, "sphere")
    torch.testing.assert_close(out.detach(), torch.tensor(ref, dtype=F64), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# against the exact dense losses: values and gradients, float64 and float32
# --------------------------------------------------------------------------------------------


def _cases(batch: int, d: int, dtype: torch.dtype, seed: int = 0):
    """(name, tiled fn, exact fn, inputs) for every tiled loss and configuration."""
    z1, z2 = _rows((batch, d), seed, dtype), _rows((batch, d), seed + 1, dtype)
    y = _labels(batch, 7, seed + 2)
    a, p = _rows((batch, d), seed + 3, dtype), _rows((batch, d), seed + 4, dtype)
    pool = _rows((3 * batch + 1, d), seed + 5, dtype)
    out = [
        ("info_nce", lambda x1, x2, **kw: L.info_nce(x1, x2, 0.1, **kw), (z1, z2)),
        ("supcon", lambda x1, x2, **kw: L.supcon(x1, x2, None, 0.1, **kw), (z1, z2)),
        ("supcon-labels", lambda x1, x2, **kw: L.supcon(x1, x2, y, 0.1, **kw), (z1, z2)),
        (
            "supcon-base-t",
            lambda x1, x2, **kw: L.supcon(x1, x2, y, 0.1, base_temperature=0.07, **kw),
            (z1, z2),
        ),
    ]
    for beta in (0.0, 1.0):
        for tau in (0.0, 0.1):
            out.append(
                (
                    f"debiased-beta{beta}-tau{tau}",
                    lambda x1, x2, beta=beta, tau=tau, **kw: L.debiased_hard(
                        x1, x2, 0.5, tau, beta, **kw
                    ),
                    (z1, z2),
                )
            )
    for loss in T.TILED_NCE_LOSSES:
        out.append(
            (
                f"nce-{loss}",
                lambda x, q, n, loss=loss, **kw: L.nce_loss(
                    x, q, n, loss, 0.2, normalize="sphere", **kw
                ),
                (a, p, pool),
            )
        )
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tiled_equals_exact_float64(method, reduction) -> None:
    for name, fn, xs in _cases(45, 6, F64):
        ref = fn(*xs, reduction=reduction, tiled=False)
        out = fn(*xs, reduction=reduction, tiled=True)
        assert out.dtype == F64 and out.shape == ref.shape, name
        assert _rel(out, ref) < 1e-12, name
        for g, gr in zip(_grads(out, *xs), _grads(ref, *xs), strict=True):
            assert _rel(g, gr) < 1e-11, name


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_tiled_float32_within_1e5_of_float64(method, reduction) -> None:
    # 2B = 602 rows, d = 32, blocks of 128 rows (the last one partial)
    batch, block = 301, 128
    for name, fn, xs64 in _cases(batch, 32, F64, seed=10):
        xs32 = [x.detach().float().requires_grad_(True) for x in xs64]
        ref = fn(*xs64, reduction=reduction, tiled=False)
        if name.startswith("nce"):
            out = T.tiled_nce_loss(
                *xs32, name[4:], 0.2, "sphere", reduction=reduction, block_rows=block
            )
        else:
            out = fn(*xs32, reduction=reduction, tiled=True)
        assert out.dtype == torch.float32, name
        assert _rel(out, ref) <= 1e-5, (name, _rel(out, ref))
        for g, gr in zip(_grads(out, *xs32), _grads(ref, *xs64), strict=True):
            assert _rel(g, gr) <= 1e-5, (name, _rel(g, gr))


def test_explicit_block_rows_agree(method) -> None:
    z1, z2 = _rows((40, 5), 20), _rows((40, 5), 21)
    values = [
        T.tiled_debiased_hard(z1, z2, 0.5, 0.1, 1.0, block_rows=br) for br in (1, 7, 32, 80, 500)
    ]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_tiled(method, reduction) -> None:
    z1, z2 = _rows((3, 2), 30), _rows((3, 2), 31)
    y = torch.tensor([0, 1, 0])
    a, p, n = _rows((3, 2), 32), _rows((3, 2), 33), _rows((4, 2), 34)
    red = reduction
    cases = [
        (lambda x1, x2: T.tiled_info_nce(x1, x2, 0.5, reduction=red, block_rows=2), (z1, z2)),
        (lambda x1, x2: T.tiled_supcon(x1, x2, y, 0.5, reduction=red, block_rows=4), (z1, z2)),
        (
            lambda x1, x2: T.tiled_debiased_hard(x1, x2, 0.5, 0.1, 1.0, "sphere", red, 5),
            (z1, z2),
        ),
        (
            lambda x, q, m: T.tiled_nce_loss(x, q, m, "infonce", 0.5, "sphere", red, 2),
            (a, p, n),
        ),
    ]
    for fn, xs in cases:
        assert torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_frozen_pool_and_no_grad() -> None:
    a, p = _rows((9, 4), 40), _rows((9, 4), 41)
    n = _rows((13, 4), 42).detach()  # a memory bank: no gradient
    out = T.tiled_nce_loss(a, p, n, temperature=0.3, block_rows=4)
    ref = L.nce_loss(a, p, n, temperature=0.3, tiled=False)
    torch.testing.assert_close(out, ref)
    for g, gr in zip(_grads(out, a, p), _grads(ref, a, p), strict=True):
        torch.testing.assert_close(g, gr)
    with torch.no_grad():
        torch.testing.assert_close(T.tiled_nce_loss(a, p, n, temperature=0.3), ref.detach())


@pytest.mark.parametrize("normalize", ["sphere", "none"])
def test_float32_stable_for_large_logits(method, normalize) -> None:
    # norm-100 features, t = 0.05, beta = 30: exponents of order 1e6 / 6e6
    g = torch.Generator().manual_seed(0)
    z1 = (100.0 * torch.randn(50, 8, generator=g)).requires_grad_(True)
    z2 = (100.0 * torch.randn(50, 8, generator=g)).requires_grad_(True)
    for out in (
        T.tiled_info_nce(z1, z2, 0.05, normalize, block_rows=16),
        T.tiled_debiased_hard(z1, z2, 0.05, 0.1, 30.0, normalize, block_rows=16),
    ):
        grads = _grads(out, z1, z2)
        assert torch.isfinite(out) and all(torch.isfinite(x).all() for x in grads)


# --------------------------------------------------------------------------------------------
# bfloat16 input
# --------------------------------------------------------------------------------------------


def test_bfloat16_input(method) -> None:
    z1, z2 = _rows((70, 16), 50, torch.bfloat16), _rows((70, 16), 51, torch.bfloat16)
    y = _labels(70, 5, 52)
    for fn in (
        lambda x1, x2: T.tiled_info_nce(x1, x2, 0.1, block_rows=32),
        lambda x1, x2: T.tiled_supcon(x1, x2, y, 0.1, block_rows=32),
        lambda x1, x2: T.tiled_debiased_hard(x1, x2, 0.5, 0.1, 1.0, block_rows=32),
    ):
        out = fn(z1, z2)
        assert out.dtype == torch.float32  # computed in float32, a float32 loss
        g1, g2 = _grads(out, z1, z2)
        assert g1.dtype == torch.bfloat16 and torch.isfinite(g1.float()).all()
        # the same bfloat16 values, computed in float64: only float32 rounding differs (and the
        # bfloat16 rounding of the gradients)
        x1, x2 = (x.detach().to(F64).requires_grad_(True) for x in (z1, z2))
        ref = fn(x1, x2)
        r1, r2 = _grads(ref, x1, x2)
        assert abs(out.item() - ref.item()) <= 1e-5 * abs(ref.item())
        assert _rel(g1, r1) < 2e-2 and _rel(g2, r2) < 2e-2


# --------------------------------------------------------------------------------------------
# the default dispatch
# --------------------------------------------------------------------------------------------


def test_dispatch_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = T.tiled_info_nce

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(infonce_module, "tiled_info_nce", spy)
    rows = T.TILED_MIN_ROWS
    below = _rows((rows // 2 - 1, 4), 60, torch.float32), _rows((rows // 2 - 1, 4), 61)
    L.info_nce(below[0], below[1].float(), 0.2)
    assert calls == []
    z1, z2 = _rows((rows // 2, 4), 62, torch.float32), _rows((rows // 2, 4), 63, torch.float32)
    auto = L.info_nce(z1, z2, 0.2)
    assert calls == [rows // 2]
    exact = L.info_nce(z1, z2, 0.2, tiled=False)
    assert calls == [rows // 2]
    assert abs(auto.item() - exact.item()) <= 1e-5 * abs(exact.item())
    # supcon and debiased_hard dispatch on the same threshold
    for module, name, fn in (
        (supcon_module, "tiled_supcon", lambda x1, x2, **kw: L.supcon(x1, x2, None, 0.2, **kw)),
        (
            debiased_module,
            "tiled_debiased_hard",
            lambda x1, x2, **kw: L.debiased_hard(x1, x2, 0.5, 0.1, 1.0, **kw),
        ),
    ):
        seen: list[int] = []
        real_fn = getattr(T, name)

        def spy_fn(*args, real_fn=real_fn, seen=seen, **kwargs):
            seen.append(args[0].shape[0])
            return real_fn(*args, **kwargs)

        monkeypatch.setattr(module, name, spy_fn)
        fn(below[0].float(), below[1].float())
        assert seen == []
        a, b = fn(z1, z2), fn(z1, z2, tiled=False)
        assert seen == [rows // 2]
        assert abs(a.item() - b.item()) <= 1e-5 * abs(b.item())
    with pytest.raises(ValueError, match=r"^tiled"):
        L.info_nce(z1, z2, tiled="yes")  # type: ignore[arg-type]


def test_nce_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nce_module, "TILED_MIN_PAIRS", 6 * 50)
    calls: list[int] = []
    real = T.tiled_nce_loss

    def spy(*args, **kwargs):
        calls.append(args[2].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(nce_module, "tiled_nce_loss", spy)
    a, p = _rows((6, 3), 70), _rows((6, 3), 71)
    small, big = _rows((49, 3), 72), _rows((50, 3), 73)
    L.nce_loss(a, p, small)
    assert calls == []
    auto = L.nce_loss(a, p, big)
    assert calls == [50]
    torch.testing.assert_close(auto, L.nce_loss(a, p, big, tiled=False))
    # hinge and per-anchor (B, k, d) negatives stay exact; asking for tiling is an error
    L.nce_loss(a, p, big, loss="hinge")
    assert calls == [50]
    with pytest.raises(ValueError, match=r"^tiled"):
        L.nce_loss(a, p, big, loss="hinge", tiled=True)
    with pytest.raises(ValueError, match=r"^tiled"):
        L.nce_loss(a, p, _rows((6, 4, 3), 74), tiled=True)


def test_bad_arguments() -> None:
    z = _rows((4, 3), 80)
    with pytest.raises(ValueError, match=r"^block_rows"):
        T.tiled_info_nce(z, z, block_rows=0)
    with pytest.raises(ValueError, match=r"^reduction"):
        T.tiled_supcon(z, z, reduction="avg")
    with pytest.raises(ValueError, match=r"^loss"):
        T.tiled_nce_loss(z, z, z, loss="hinge")
    with pytest.raises(ValueError, match=r"^negatives"):
        T.tiled_nce_loss(z, z, _rows((2, 5, 3), 81))
    with pytest.raises(ValueError, match=r"^z1"):
        T.tiled_debiased_hard(z[:1], z[:1])
    with pytest.raises(ValueError, match=r"^beta"):
        T.tiled_debiased_hard(z, z, beta=-1.0)


def test_default_block_rows() -> None:
    assert T.default_block_rows(10, 10) == 10
    assert T.default_block_rows(16384, 16384) == 256
    assert T.default_block_rows(4096, 4096, 2048) == 512
    assert T.default_block_rows(256, 65536) == 64
    assert T.default_block_rows(100_000, 10**9) == 64
    with pytest.raises(ValueError, match=r"^d"):
        T.default_block_rows(10, 10, 0)


# --------------------------------------------------------------------------------------------
# memory: N = 16384 rows, d = 128 in a fresh process; an N x N float32 matrix is 1 GB
# --------------------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
which = sys.argv[1]
b, d = 8192, 128
g = torch.Generator().manual_seed(0)
z1 = torch.randn(b, d, generator=g).requires_grad_(True)
z2 = torch.randn(b, d, generator=g).requires_grad_(True)
y = torch.randint(0, 10, (b,), generator=g)
# warm the allocator and the kernels on a small batch first
L.info_nce(z1[:64], z2[:64], 0.1, tiled=True).backward()
z1.grad = z2.grad = None
base = status_mb("VmRSS")
if which == "info_nce":
    loss = L.info_nce(z1, z2, 0.1)
elif which == "supcon":
    loss = L.supcon(z1, z2, y, 0.1)
elif which == "supcon-distinct":  # every sample its own class: C = B
    loss = L.supcon(z1, z2, torch.arange(b), 0.1)
else:
    loss = L.debiased_hard(z1, z2, 0.5, 0.1, 1.0)
loss.backward()
report(base, loss)
"""

# The kernel's own peak is about 60-80 MB here (inputs, normalized copies, gradients, strip
# buffers); the bound leaves room for allocator and BLAS noise. The dense path would need several
# N x N matrices of 1024 MB each.
MEMORY_LIMIT_MB = 200.0


def _peak_extra_mb(which: str) -> float:
    return float(measure(_MEMORY_SCRIPT, which)["extra_mb"])


def test_memory_n16384_info_nce() -> None:
    extra = _peak_extra_mb("info_nce")
    assert extra < MEMORY_LIMIT_MB, f"peak RSS grew by {extra:.0f} MB"


def test_memory_n16384_supcon_with_as_many_classes_as_samples() -> None:
    # SupCon's positive term from the class sums is O(N d); a (2B, C) product of the rows with
    # the class sums, with C = B here, would take 1 GB in float64
    extra = _peak_extra_mb("supcon-distinct")
    assert extra < MEMORY_LIMIT_MB, f"peak RSS grew by {extra:.0f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["supcon", "debiased"])
def test_memory_n16384_other_losses(which: str) -> None:
    # the same strips as test_memory_n16384_info_nce (debiased: two scales, more buffers)
    extra = _peak_extra_mb(which)
    assert extra < MEMORY_LIMIT_MB, f"peak RSS grew by {extra:.0f} MB"


def test_mixed_norms_exact_in_float64(method) -> None:
    # unnormalized rows with norms from 0.1 to 10 and t = 0.05: logits from about -2000 to 2000,
    # so within one strip some column sums underflow against the strip's largest row and are
    # redone with per-column maxima
    g = torch.Generator().manual_seed(90)
    scale = torch.logspace(-1, 1, 60, dtype=F64)[torch.randperm(60, generator=g)].unsqueeze(1)
    z1 = (torch.randn(60, 4, generator=g, dtype=F64) * scale).requires_grad_(True)
    z2 = (torch.randn(60, 4, generator=g, dtype=F64) * scale).requires_grad_(True)
    for tiled, exact in (
        (
            lambda x1, x2: T.tiled_info_nce(x1, x2, 0.05, "none", "none", block_rows=16),
            lambda x1, x2: L.info_nce(x1, x2, 0.05, "none", "none", tiled=False),
        ),
        (
            lambda x1, x2: T.tiled_debiased_hard(x1, x2, 0.05, 0.1, 2.0, "none", "none", 16),
            lambda x1, x2: L.debiased_hard(x1, x2, 0.05, 0.1, 2.0, "none", "none", tiled=False),
        ),
    ):
        ref = exact(z1, z2)
        out = tiled(z1, z2)
        assert _rel(out, ref) < 1e-12
        for gt, gr in zip(_grads(out, z1, z2), _grads(ref, z1, z2), strict=True):
            assert _rel(gt, gr) < 1e-10


# --------------------------------------------------------------------------------------------
# the one-block shared-pool path (small B k, normalization folded in)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["sphere", "ball", "none"])
@pytest.mark.parametrize("loss", ["infonce", "infonce-mean", "logistic"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_one_block_nce_equals_dense(normalize, loss, reduction) -> None:
    a, p, n = _rows((7, 5), 90), _rows((7, 5), 91), _rows((11, 5), 92)
    assert 7 * 11 <= T.ONE_BLOCK_PAIRS
    out = T.tiled_nce_loss(a, p, n, loss, 0.3, normalize, reduction)
    blocked = T.tiled_nce_loss(a, p, n, loss, 0.3, normalize, reduction, block_rows=3)
    ref = L.nce_loss(a, p, n, loss, 0.3, normalize, reduction, tiled=False)
    assert out.grad_fn is not None and "OneBlock" in type(out.grad_fn).__name__
    assert _rel(out, ref) < 1e-13 and _rel(blocked, ref) < 1e-13
    for g, gr in zip(_grads(out * 3.0, a, p, n), _grads(ref * 3.0, a, p, n), strict=True):
        assert _rel(g, gr) < 1e-12
    # float32: relative error <= 1e-5 against the float64 reference
    xs32 = [x.detach().float().requires_grad_(True) for x in (a, p, n)]
    out32 = T.tiled_nce_loss(*xs32, loss, 0.3, normalize, reduction)
    assert out32.dtype == torch.float32 and _rel(out32, ref) <= 1e-5
    ref = L.nce_loss(a, p, n, loss, 0.3, normalize, reduction, tiled=False)
    for g, gr in zip(_grads(out32, *xs32), _grads(ref, a, p, n), strict=True):
        assert _rel(g, gr) <= 1e-5


def test_one_block_nce_gradcheck_frozen_pool_and_large_logits() -> None:
    a, p, n = _rows((3, 2), 93), _rows((3, 2), 94), _rows((4, 2), 95)
    assert torch.autograd.gradcheck(
        lambda x, q, m: T.tiled_nce_loss(x, q, m, "infonce", 0.5, "ball"), (a, p, n), eps=1e-6
    )
    frozen = n.detach()
    out = T.tiled_nce_loss(a, p, frozen, temperature=0.5)
    ref = L.nce_loss(a, p, frozen, temperature=0.5, tiled=False)
    for g, gr in zip(_grads(out, a, p), _grads(ref, a, p), strict=True):
        assert _rel(g, gr) < 1e-12
    g = torch.Generator().manual_seed(3)
    big = [(100.0 * torch.randn(20, 8, generator=g)).requires_grad_(True) for _ in range(3)]
    out = T.tiled_nce_loss(*big, temperature=0.05, normalize="none")
    ref = L.nce_loss(*[x.detach().double() for x in big], temperature=0.05, tiled=False)
    assert torch.isfinite(out) and _rel(out, ref) < 1e-6
    assert all(torch.isfinite(x).all() for x in _grads(out, *big))

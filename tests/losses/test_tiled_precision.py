"""Issue 14, "nothing lost, nothing silent", for the losses:

- float32 precision of every tiled kernel against the float64 dense reference, within 3x of the
  dense float32 path's own error (+ 1e-6) over a grid of B, beta, t, input norms and
  normalizations (:mod:`tests.losses.precision`; ``python -m tests.losses.precision`` prints the
  full table);
- bfloat16 / float16 inputs and autocast: the dense and the tiled paths both compute in float32
  and return a float32 loss;
- non-finite embeddings: a one-line ``ValueError`` naming the tensor from every public loss
  (functions and modules), skipped with ``check_finite=False``;
- ``generator``: anything but a ``torch.Generator`` or None is a one-line ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import contrastlab.losses as L
from contrastlab.losses.kernels import engine as E
from contrastlab.losses.kernels.indexed import tiled_nce_indexed

from . import precision as P

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------------------------
# precision of the tiled kernels
# --------------------------------------------------------------------------------------------


#: the kernels run over the whole B = 64 grid; the others (alternative tilings and paths of the
#: same engines) at its hardest point
MAIN = ("info_nce", "supcon", "debiased_hard", "nce", "nce_indexed/bank", "scl", "hscl", "ucl",
        "hucl")
AT_600 = ("info_nce", "supcon", "debiased_hard", "nce/blocks", "nce_indexed/bank", "hscl",
          "hucl")
HARDEST = {"t": 0.05, "norm": 100.0}


def _precision_cases() -> list[tuple[P.Case, int]]:
    """(case, roundings). B = 64: the main kernels over t x norm x beta in their default
    normalization; every kernel at t = 0.05, norm 100 and the largest beta in every
    normalization (the exact Jiang losses: norm 1 for ``none``, whose quadrature at logits of
    10^5 takes a minute). B = 600 (2B >= TILED_MIN_ROWS: the kernels by default): the same point
    for one kernel of each engine, and ``debiased_hard`` unnormalized. The report of issue 14
    (``debiased_hard``, beta = 30, t = 0.05, norm-100 unnormalized features: 94 % gradient error
    at B = 600, 160 % at B = 64 with ``tiled=True``) is the two ``debiased_hard`` cases in
    ``none`` at that point. B = 2048: NT-Xent, with one dense rounding (its dense float64 /
    float32 paths take seconds). The full grid: ``python -m tests.losses.precision``."""
    cases: list[tuple[P.Case, int]] = []
    for name, (default, has_beta, _) in P.KERNELS.items():
        top = 30.0 if has_beta else 0.0
        if name in MAIN:
            cases += [(c, P.ROUNDINGS) for c in P.grid(name, batches=(64,),
                                                       normalizations=(default,))]
        else:
            cases.append((P.Case(name, 64, top, 0.05, 100.0, default), P.ROUNDINGS))
        for nz in P.NORMALIZATIONS:
            if nz != default:
                norm = 1.0 if name.endswith("/exact") and nz == "none" else 100.0
                cases.append((P.Case(name, 64, top, 0.05, norm, nz), P.ROUNDINGS))
        if name in AT_600:
            cases.append((P.Case(name, 600, top, 0.05, 100.0, default), P.ROUNDINGS))
    cases.append((P.Case("debiased_hard", 600, 30.0, 0.05, 100.0, "none"), P.ROUNDINGS))
    cases.append((P.Case("info_nce", 2048, 0.0, 0.05, 100.0, "sphere"), 1))
    return cases


@pytest.mark.parametrize(
    ("case", "roundings"), _precision_cases(), ids=lambda c: getattr(c, "id", str(c))
)
def test_tiled_float32_error_within_3x_of_dense(case: P.Case, roundings: int) -> None:
    err = P.errors(case, roundings)
    assert P.within(err), (
        f"{case.id}: tiled error (loss, grad) {err.tiled} vs dense float32 {err.dense}; "
        f"ratios {P.ratio(err)}"
    )


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_folded_and_split_weights_agree(monkeypatch: pytest.MonkeyPatch, t: float) -> None:
    # the backward folds each row's exponent shift into one float32 number where that is
    # harmless (|shift|, |a S2| < FOLD_MAX_EXPONENT) and splits it otherwise: the same gradient
    z1, z2 = (torch.randn(300, 16, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    split = E._split_weights
    folded: list[bool] = []

    def spy(*args: object) -> E._Weights:
        out = split(*args)  # type: ignore[arg-type]
        folded.append(out.h is None)
        return out

    monkeypatch.setattr(E, "_split_weights", spy)
    grads = []
    for limit in (E.FOLD_MAX_EXPONENT, 0.0):
        monkeypatch.setattr(E, "FOLD_MAX_EXPONENT", limit)
        x1, x2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        out = L.supcon(x1, x2, torch.arange(300) % 7, t, tiled=True)
        grads.append(torch.cat(torch.autograd.grad(out, (x1, x2))))
    assert folded == [True, False]
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 2e-6


# --------------------------------------------------------------------------------------------
# bfloat16 / float16 inputs and autocast: float32 compute, a float32 loss, on both paths
# --------------------------------------------------------------------------------------------

Y16 = torch.arange(16) % 4
IDX = torch.randint(0, 24, (16, 8), generator=torch.Generator().manual_seed(3))


def _pairs() -> dict[str, Callable[..., torch.Tensor]]:
    """Every loss with a tiled / dense pair, as fn(x1, x2, x3, tiled) (x3: a pool)."""
    return {
        "info_nce": lambda a, b, n, tiled: L.info_nce(a, b, 0.1, tiled=tiled),
        "supcon": lambda a, b, n, tiled: L.supcon(a, b, Y16, 0.1, tiled=tiled),
        "supcon-unlabeled": lambda a, b, n, tiled: L.supcon(a, b, None, 0.1, tiled=tiled),
        "debiased_hard": lambda a, b, n, tiled: L.debiased_hard(a, b, 0.1, 0.1, 1.0,
                                                                tiled=tiled),
        "nce_loss-shared": lambda a, b, n, tiled: L.nce_loss(a, b, n, temperature=0.2,
                                                             normalize="sphere", tiled=tiled),
        "nce_loss-indexed": lambda a, b, n, tiled: L.nce_loss(
            a, b, n, temperature=0.2, normalize="sphere", tiled=tiled, negative_index=IDX),
        "hscl-mean": lambda a, b, n, tiled: L.hscl(a, Y16, 1.0, 8, 0.2, exact="mean",
                                                   tiled=tiled),
        "hucl-exact": lambda a, b, n, tiled: L.hucl(a, Y16, 1.0, 8, 0.5, exact=True,
                                                    tiled=tiled),
    }


def _inputs(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = ((16, 8), (16, 8), (24, 8))
    return [torch.randn(s, generator=g).to(dtype).requires_grad_(True) for s in shapes]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(_pairs()))
def test_low_precision_inputs_give_a_float32_loss(name: str, dtype: torch.dtype) -> None:
    fn = _pairs()[name]
    xs = _inputs(dtype)
    as32 = [x.detach().float().requires_grad_(True) for x in xs]
    for tiled in (False, True):
        out = fn(*xs, tiled=tiled)
        assert out.dtype == torch.float32, (name, tiled, out.dtype)
        # exactly the float32 computation on the same (exactly representable) values
        ref = fn(*as32, tiled=tiled)
        assert torch.equal(out.detach(), ref.detach()), (name, tiled)
        grads = torch.autograd.grad(out, xs, allow_unused=True)  # (unused inputs: None)
        for g in grads:
            assert g is None or (g.dtype == dtype and bool(torch.isfinite(g.float()).all()))


@pytest.mark.parametrize("name", list(_pairs()))
def test_autocast_computes_in_float32(name: str) -> None:
    fn = _pairs()[name]
    xs = _inputs(torch.float32)
    lin = torch.nn.Linear(8, 8)
    outside = [fn(*xs, tiled=tiled) for tiled in (False, True)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(xs[0])
        assert h.dtype == torch.bfloat16  # what a model under autocast hands the loss
        for tiled, ref in zip((False, True), outside, strict=True):
            out = fn(*xs, tiled=tiled)
            assert out.dtype == torch.float32
            assert torch.equal(out, ref), (name, tiled)  # no bfloat16 product inside
            assert fn(h, xs[1], xs[2], tiled=tiled).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# non-finite embeddings
# --------------------------------------------------------------------------------------------

Z = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
Y = torch.arange(8) % 2
POOL = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
IDX8 = torch.randint(0, 10, (8, 3), generator=torch.Generator().manual_seed(4))


def _bad(kind: str) -> torch.Tensor:
    x = Z.clone()
    x[1, 2] = float("nan") if kind == "nan" else float("inf")
    x[5, 0] = float("-inf") if kind == "inf" else x[5, 0]
    return x


# (name, call(z1, z2, z3, **kw) with the checked inputs in order, the inputs' names)
FINITE_CASES: list[tuple[str, Callable[..., object], tuple[str, ...]]] = [
    ("info_nce", lambda a, b, **kw: L.info_nce(a, b, **kw), ("z1", "z2")),
    ("info_nce-tiled", lambda a, b, **kw: L.info_nce(a, b, tiled=True, **kw), ("z1", "z2")),
    ("supcon", lambda a, b, **kw: L.supcon(a, b, Y, **kw), ("z1", "z2")),
    ("debiased_hard", lambda a, b, **kw: L.debiased_hard(a, b, **kw), ("z1", "z2")),
    ("nce_loss", lambda a, b, n, **kw: L.nce_loss(a, b, n, **kw),
     ("anchor", "positive", "negatives")),
    ("nce_loss-indexed", lambda a, b, n, **kw: L.nce_loss(
        a, b, torch.cat([n, POOL[:2]]), negative_index=IDX8, tiled=True, **kw),
     ("anchor", "positive", "negatives")),
    ("hard_contrastive", lambda a, **kw: L.hard_contrastive(a, Y, "marginal", **kw), ("z",)),
    ("scl", lambda a, **kw: L.scl(a, Y, k=4, **kw), ("z",)),
    ("hscl", lambda a, **kw: L.hscl(a, Y, k=4, exact="mean", **kw), ("z",)),
    ("ucl", lambda a, **kw: L.ucl(a, Y, k=4, exact=True, **kw), ("z",)),
    ("hucl-sampled", lambda a, **kw: L.hucl(a, Y, k=4, exact=False, **kw), ("z",)),
    ("tiled_info_nce", lambda a, b, **kw: L.tiled_info_nce(a, b, **kw), ("z1", "z2")),
    ("tiled_supcon", lambda a, b, **kw: L.tiled_supcon(a, b, Y, **kw), ("z1", "z2")),
    ("tiled_debiased_hard", lambda a, b, **kw: L.tiled_debiased_hard(a, b, **kw),
     ("z1", "z2")),
    ("tiled_nce_loss", lambda a, b, n, **kw: L.tiled_nce_loss(a, b, n, **kw),
     ("anchor", "positive", "negatives")),
    ("tiled_nce_indexed", lambda a, b, n, **kw: tiled_nce_indexed(
        a, b, torch.cat([n, POOL[:2]]), IDX8, **kw), ("anchor", "positive", "pool")),
    ("tiled_hard_contrastive", lambda a, **kw: L.tiled_hard_contrastive(
        a, Y, "other-class", exact="mean", **kw), ("z",)),
    ("InfoNCELoss", lambda a, b, **kw: L.InfoNCELoss(**kw)(a, b), ("z1", "z2")),
    ("SupConLoss", lambda a, b, **kw: L.SupConLoss(**kw)(a, b, Y), ("z1", "z2")),
    ("DebiasedHardLoss", lambda a, b, **kw: L.DebiasedHardLoss(**kw)(a, b), ("z1", "z2")),
    ("NCELoss", lambda a, b, n, **kw: L.NCELoss(**kw)(a, b, n),
     ("anchor", "positive", "negatives")),
    ("HardContrastiveLoss", lambda a, **kw: L.HardContrastiveLoss(k=4, **kw)(a, Y), ("z",)),
    ("HUCLLoss", lambda a, **kw: L.HUCLLoss(k=4, **kw)(a, Y), ("z",)),
]


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize(("name", "call", "names"), FINITE_CASES, ids=[c[0] for c in FINITE_CASES])
def test_non_finite_embeddings_raise_naming_the_tensor(name, call, names, kind) -> None:
    for pos, arg in enumerate(names):
        xs = [Z.clone() for _ in names]
        xs[pos] = _bad(kind)
        with pytest.raises(ValueError, match=rf"^{arg} contains NaN or inf values") as err:
            call(*xs)
        msg = str(err.value)
        assert "\n" not in msg and "check_finite=False" in msg
        assert f"({2 if kind == 'inf' else 1} of " in msg  # the count of bad entries


@pytest.mark.parametrize(("name", "call", "names"), FINITE_CASES, ids=[c[0] for c in FINITE_CASES])
def test_check_finite_false_skips_the_check(name, call, names) -> None:
    xs = [Z.clone() for _ in names]
    xs[0] = _bad("nan")
    try:
        out = call(*xs, check_finite=False)
    except ValueError as err:  # e.g. a sampler refusing the NaN law; not the entry check
        assert "check_finite=False" not in str(err), err
    else:
        assert isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all())
    # finite input: the same value with and without the check (which draws no random number)
    ok = [Z.clone() for _ in names]
    torch.manual_seed(0)
    a = call(*ok)
    torch.manual_seed(0)
    b = call(*ok, check_finite=False)
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)


def test_every_public_loss_takes_check_finite() -> None:
    import inspect

    funcs = [L.info_nce, L.supcon, L.debiased_hard, L.nce_loss, L.hard_contrastive, L.scl,
             L.hscl, L.ucl, L.hucl, L.tiled_info_nce, L.tiled_supcon, L.tiled_debiased_hard,
             L.tiled_nce_loss, L.tiled_nce_indexed, L.tiled_hard_contrastive]
    modules = [L.InfoNCELoss, L.SupConLoss, L.DebiasedHardLoss, L.NCELoss,
               L.HardContrastiveLoss]
    for f in [*funcs, *modules]:
        param = inspect.signature(f).parameters.get("check_finite")
        assert param is not None and param.default is True, f
    with pytest.raises(ValueError, match="check_finite"):
        L.InfoNCELoss(check_finite="yes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# the generator argument
# --------------------------------------------------------------------------------------------

GENERATOR_CALLS: list[Callable[[object], object]] = [
    lambda g: L.scl(Z, Y, k=4, generator=g),
    lambda g: L.hscl(Z, Y, k=4, generator=g),
    lambda g: L.ucl(Z, Y, k=4, generator=g),
    lambda g: L.hucl(Z, Y, k=4, generator=g),
    lambda g: L.hucl(Z, Y, k=4, generator=g, gather=True),
    lambda g: L.hard_contrastive(Z, Y, "marginal", generator=g),
    lambda g: L.pair_losses(torch.zeros(2, 3), torch.full((2, 3), -1.0986), torch.arange(2),
                            torch.zeros(2), 2, "sampled", generator=g),
    lambda g: L.HUCLLoss(k=4)(Z, Y, generator=g),
    lambda g: L.sample_uniform(3, 5, 2, generator=g),
    lambda g: L.sample_other_class(Y, Y, 2, generator=g),
    lambda g: L.sample_tilted(torch.randn(3, 4), 1.0, 2, generator=g),
    lambda g: L.sample_from_log_probs(torch.full((2, 3), -1.0986), 2, generator=g),
    lambda g: L.NegativeSampler()(torch.randn(3, 4), 2, generator=g),
]


@pytest.mark.parametrize("bad", [3, 2.5, "seed", torch.zeros(1)],
                         ids=["int", "float", "str", "Tensor"])
@pytest.mark.parametrize("call", GENERATOR_CALLS)
def test_generator_must_be_a_generator_or_none(call, bad) -> None:
    with pytest.raises(ValueError, match=r"^generator must be a torch\.Generator or None; got ")\
            as err:
        call(bad)
    assert type(bad).__name__ in str(err.value) and "\n" not in str(err.value)
    call(torch.Generator().manual_seed(0))  # a generator is fine
    call(None)


def test_sampler_refuses_a_nan_law() -> None:
    log_q = torch.full((2, 3), -1.0986)
    log_q[0, 1] = float("nan")
    with pytest.raises(ValueError, match="log_probs contains NaN"):
        L.sample_from_log_probs(log_q, 2)


def test_precision_grid_covers_the_issue() -> None:
    cases = [c for c, _ in _precision_cases()]
    assert len({c.id for c in cases}) == len(cases)
    assert {c.kernel for c in cases} == set(P.KERNELS)
    assert {c.b for c in cases} == {64, 600, 2048}
    assert {c.beta for c in cases} == {0.0, 1.0, 30.0}
    assert {c.t for c in cases} == {0.05, 0.5} and {c.norm for c in cases} == {1.0, 100.0}
    assert {c.normalize for c in cases} == set(P.NORMALIZATIONS)

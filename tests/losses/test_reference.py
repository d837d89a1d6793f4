"""contrastlab.losses against independent brute-force float64 references (``references.py``).

Every loss is compared with its loop-by-loop reference over a parametrised grid of batch size B,
number of negatives k, dimension d, temperature, hardness beta, tau_plus and normalisation, and
its gradient is checked with ``torch.autograd.gradcheck`` (float64, small sizes).  The sampled
Jiang+ forms are checked for reproducibility under a seeded generator, for a Monte-Carlo mean that
matches the brute-force exact expectation, and for gradients.
"""

from __future__ import annotations

import math

import pytest
import torch

import contrastlab.losses as L

from . import references as R

F64 = torch.float64
TEMPERATURES = (0.1, 0.5, 1.0)
NORMALIZATIONS = ("sphere", "ball", "none")
SCORE_LOSSES = ("logistic", "infonce", "hinge", "infonce-mean")
BETAS = (0.0, 0.5, 2.0)
TAU_PLUS = (0.0, 0.1, 0.3)

# Jiang+ variants: name -> (unsupervised, hard)
JIANG = {"scl": (False, False), "hscl": (False, True), "ucl": (True, False), "hucl": (True, True)}


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rows(shape: tuple[int, ...], seed: int, requires_grad: bool = False) -> torch.Tensor:
    """Random float64 vectors along the last dim with norms in [0.3, 0.85] or [1.15, 1.7]: some
    inside the unit ball, some outside, none near the ball's kink at norm 1."""
    g = _gen(seed)
    direction = torch.randn(shape, generator=g, dtype=F64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    u = torch.rand((*shape[:-1], 1), generator=g, dtype=F64)
    radius = torch.where(u < 0.5, 0.3 + 1.1 * u, 1.15 + 1.1 * (u - 0.5))
    return (direction * radius).requires_grad_(requires_grad)


def _labels(n: int, n_classes: int, seed: int) -> torch.Tensor:
    """Random labels in range(n_classes) with at least two classes present, so every anchor has at
    least one other-class sample."""
    g = _gen(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    y[0], y[1] = 0, 1
    return y[torch.randperm(n, generator=g)]


def _close(actual: torch.Tensor, expected, rtol: float = 1e-8, atol: float = 1e-10) -> None:
    expected_t = torch.as_tensor(expected, dtype=F64)
    assert isinstance(actual, torch.Tensor)
    assert actual.dtype == F64, actual.dtype
    assert actual.shape == expected_t.shape, (actual.shape, expected_t.shape)
    torch.testing.assert_close(actual.detach(), expected_t, rtol=rtol, atol=atol)


def _jiang_call(variant: str, z, labels, *, k, beta, **kwargs):
    fn = getattr(L, variant)
    if JIANG[variant][1]:
        return fn(z, labels, beta=beta, k=k, **kwargs)
    return fn(z, labels, k=k, **kwargs)


def _jiang_ref(variant: str, z, labels, *, k, beta, **kwargs) -> float | list[float]:
    unsupervised, hard = JIANG[variant]
    return R.ref_jiang(
        z, labels, k=k, beta=beta if hard else 0.0, unsupervised=unsupervised, **kwargs
    )


# --------------------------------------------------------------------------------------------
# the references themselves (cheap sanity checks on hand-computable values)
# --------------------------------------------------------------------------------------------


def test_reference_hand_values() -> None:
    assert R.ref_score_loss_vector([0.0, 0.0], "logistic") == pytest.approx(math.log(3.0))
    assert R.ref_score_loss_vector([0.0, 0.0], "infonce-mean", 0.5) == pytest.approx(math.log(2.0))
    assert R.ref_score_loss_vector([2.0, 0.5], "hinge") == pytest.approx(0.5)
    assert R.ref_score_loss_vector([2.0, 1.5], "hinge") == 0.0
    v = [0.3, -1.2, 0.7]
    assert R.ref_score_loss_vector(v, "infonce", 1.0) == pytest.approx(
        R.ref_score_loss_vector(v, "logistic")
    )
    assert R.ref_normalize_row([3.0, 4.0], "sphere") == pytest.approx([0.6, 0.8])
    assert R.ref_normalize_row([3.0, 4.0], "ball") == pytest.approx([0.6, 0.8])
    assert R.ref_normalize_row([0.3, 0.4], "ball") == pytest.approx([0.3, 0.4])
    # B = 1: the positive is the only candidate, NT-Xent is exactly 0
    z = torch.tensor([[1.0, 0.0]], dtype=F64)
    assert R.ref_info_nce(z, z) == pytest.approx([0.0, 0.0], abs=1e-15)


def test_reference_self_consistency() -> None:
    z1, z2 = _rows((5, 3), 1), _rows((5, 3), 2)
    assert R.ref_supcon(z1, z2, None, 0.3, "sphere") == pytest.approx(
        R.ref_info_nce(z1, z2, 0.3, "sphere"), rel=1e-12
    )
    # Chuang/Robinson with tau_plus = 0 and beta = 0 and no clamp active is NT-Xent
    a = R.ref_debiased_hard(z1, z2, 1.0, 0.0, 0.0, "sphere")
    assert a == pytest.approx(R.ref_info_nce(z1, z2, 1.0, "sphere"), rel=1e-12)
    z, y = _rows((5, 2), 3), torch.tensor([0, 1, 0, 2, 1])
    for unsup in (False, True):
        for red in ("mean", "sum"):
            m = R.ref_jiang(z, y, k=3, beta=1.5, unsupervised=unsup, negatives_reduction=red)
            t = R.ref_jiang(
                z, y, k=3, beta=1.5, unsupervised=unsup, negatives_reduction=red, by_tuples=True
            )
            assert m == pytest.approx(t, rel=1e-12)
    # K = 1: mean and sum coincide
    a = R.ref_jiang(z, y, k=1, beta=0.7, negatives_reduction="mean")
    assert a == pytest.approx(R.ref_jiang(z, y, k=1, beta=0.7, negatives_reduction="sum"))
    # Jensen: E[-log(e/(e+g))] is concave in g, so the plug-in form is >= the exact expectation
    for k in (1, 2, 4):
        exact = R.ref_jiang(z, y, k=k, beta=0.7, temperature=0.5)
        plug = R.ref_jiang(z, y, k=k, beta=0.7, temperature=0.5, mode="mean")
        assert plug >= exact - 1e-14
        if k == 1:
            assert plug > exact


# --------------------------------------------------------------------------------------------
# normalize and score_loss
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 5), (2, 1), (5,)])
def test_normalize(kind: str, shape: tuple[int, ...]) -> None:
    z = _rows(shape, 10 + len(shape))
    _close(L.normalize(z, kind), R.ref_normalize(z, kind), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", SCORE_LOSSES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("shape", [(9,), (5, 4), (2, 3, 7), (6, 1)])
def test_score_loss(loss: str, temperature: float, shape: tuple[int, ...]) -> None:
    v = 1.5 * torch.randn(shape, generator=_gen(sum(shape)), dtype=F64)
    _close(L.score_loss(v, loss, temperature=temperature), R.ref_score_loss(v, loss, temperature))


def test_score_loss_hinge_zero_region() -> None:
    v = torch.tensor([[2.0, 1.5, 3.0], [0.5, 2.0, 2.0]], dtype=F64)
    _close(L.score_loss(v, "hinge"), [0.0, 0.5])


# --------------------------------------------------------------------------------------------
# nce_loss with k explicit negatives
# --------------------------------------------------------------------------------------------

NCE_SIZES = [(1, 1, 2), (5, 3, 4), (12, 9, 5)]  # (B, k, d)


@pytest.mark.parametrize("loss", SCORE_LOSSES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("shared", [False, True], ids=["own-negatives", "shared-negatives"])
@pytest.mark.parametrize("size", NCE_SIZES, ids=lambda s: "B{}-k{}-d{}".format(*s))
def test_nce_loss(loss, temperature, normalize, shared, size) -> None:
    b, k, d = size
    seed = 100 * b + 10 * k + d + (7 if shared else 0)
    anchor, positive = _rows((b, d), seed), _rows((b, d), seed + 1)
    negatives = _rows((k, d) if shared else (b, k, d), seed + 2)
    got = L.nce_loss(
        anchor, positive, negatives, loss=loss, temperature=temperature, normalize=normalize
    )
    ref = R.ref_nce_loss(anchor, positive, negatives, loss, temperature, normalize)
    _close(got, R.reduce(ref, "mean"))


@pytest.mark.parametrize("loss", SCORE_LOSSES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shared", [False, True], ids=["own-negatives", "shared-negatives"])
def test_nce_loss_reduction(loss, reduction, shared) -> None:
    b, k, d = 6, 4, 3
    anchor, positive = _rows((b, d), 1), _rows((b, d), 2)
    negatives = _rows((k, d) if shared else (b, k, d), 3)
    got = L.nce_loss(
        anchor,
        positive,
        negatives,
        loss=loss,
        temperature=0.5,
        normalize="ball",
        reduction=reduction,
    )
    ref = R.ref_nce_loss(anchor, positive, negatives, loss, 0.5, "ball")
    _close(got, R.reduce(ref, reduction))


def test_nce_loss_defaults() -> None:
    """Defaults: loss="infonce", temperature=1.0, normalize="none", reduction="mean"."""
    anchor, positive, negatives = _rows((4, 3), 5), _rows((4, 3), 6), _rows((4, 5, 3), 7)
    ref = R.ref_nce_loss(anchor, positive, negatives, "infonce", 1.0, "none")
    _close(L.nce_loss(anchor, positive, negatives), R.reduce(ref, "mean"))


# --------------------------------------------------------------------------------------------
# two-view in-batch objectives
# --------------------------------------------------------------------------------------------

VIEW_SIZES = [(2, 2), (5, 3), (12, 5)]  # (B, d)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("size", VIEW_SIZES, ids=lambda s: "B{}-d{}".format(*s))
def test_info_nce(temperature, normalize, size) -> None:
    b, d = size
    z1, z2 = _rows((b, d), 7 * b + d), _rows((b, d), 7 * b + d + 1)
    got = L.info_nce(z1, z2, temperature=temperature, normalize=normalize)
    _close(got, R.reduce(R.ref_info_nce(z1, z2, temperature, normalize), "mean"))


def test_info_nce_defaults() -> None:
    """Defaults: temperature=0.5, normalize="sphere"."""
    z1, z2 = _rows((4, 3), 1), _rows((4, 3), 2)
    _close(L.info_nce(z1, z2), R.reduce(R.ref_info_nce(z1, z2, 0.5, "sphere"), "mean"))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("n_classes", [None, 2, 3])
@pytest.mark.parametrize("size", [(4, 2), (8, 3), (11, 5)], ids=lambda s: "B{}-d{}".format(*s))
def test_supcon(temperature, normalize, n_classes, size) -> None:
    b, d = size
    z1, z2 = _rows((b, d), 3 * b + d), _rows((b, d), 3 * b + d + 1)
    labels = None if n_classes is None else _labels(b, n_classes, b + n_classes)
    got = L.supcon(z1, z2, labels=labels, temperature=temperature, normalize=normalize)
    _close(got, R.reduce(R.ref_supcon(z1, z2, labels, temperature, normalize), "mean"))


def test_supcon_defaults_and_distinct_labels() -> None:
    """Defaults: temperature=0.1, normalize="sphere"; all-distinct labels equal labels=None."""
    z1, z2 = _rows((6, 3), 11), _rows((6, 3), 12)
    ref = R.reduce(R.ref_supcon(z1, z2, None, 0.1, "sphere"), "mean")
    _close(L.supcon(z1, z2), ref)
    _close(L.supcon(z1, z2, labels=torch.arange(6) * 3 + 1), ref)
    _close(L.supcon(z1, z2, labels=None, temperature=0.5), L.info_nce(z1, z2, temperature=0.5))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("tau_plus", TAU_PLUS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("size", [(2, 2), (6, 3), (10, 5)], ids=lambda s: "B{}-d{}".format(*s))
def test_debiased_hard(temperature, tau_plus, beta, normalize, size) -> None:
    b, d = size
    z1, z2 = _rows((b, d), 5 * b + d), _rows((b, d), 5 * b + d + 1)
    got = L.debiased_hard(
        z1, z2, temperature=temperature, tau_plus=tau_plus, beta=beta, normalize=normalize
    )
    ref = R.ref_debiased_hard(z1, z2, temperature, tau_plus, beta, normalize)
    _close(got, R.reduce(ref, "mean"), rtol=1e-8, atol=1e-9)


def test_debiased_hard_defaults() -> None:
    """Defaults: temperature=0.5, tau_plus=0.1, beta=1.0, normalize="sphere"."""
    z1, z2 = _rows((5, 3), 21), _rows((5, 3), 22)
    _close(L.debiased_hard(z1, z2), R.reduce(R.ref_debiased_hard(z1, z2, 0.5, 0.1, 1.0), "mean"))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("objective", ["info_nce", "supcon", "debiased_hard"])
def test_two_view_reduction(objective, reduction) -> None:
    """reduction="none" is the (2B,) vector of per-anchor losses, rows of z1 first."""
    z1, z2 = _rows((5, 3), 23), _rows((5, 3), 24)
    labels = _labels(5, 2, 25)
    if objective == "info_nce":
        got = L.info_nce(z1, z2, temperature=0.5, normalize="ball", reduction=reduction)
        ref = R.ref_info_nce(z1, z2, 0.5, "ball")
    elif objective == "supcon":
        got = L.supcon(z1, z2, labels, temperature=0.5, normalize="ball", reduction=reduction)
        ref = R.ref_supcon(z1, z2, labels, 0.5, "ball")
    else:
        got = L.debiased_hard(
            z1, z2, temperature=0.5, tau_plus=0.1, beta=0.5, normalize="ball", reduction=reduction
        )
        ref = R.ref_debiased_hard(z1, z2, 0.5, 0.1, 0.5, "ball")
    _close(got, R.reduce(ref, reduction))


@pytest.mark.parametrize("base_temperature", [0.07, 0.5])
def test_supcon_base_temperature(base_temperature) -> None:
    """base_temperature scales the loss by t / base_temperature (Khosla et al.'s code)."""
    z1, z2, labels = _rows((6, 3), 26), _rows((6, 3), 27), _labels(6, 3, 28)
    ref = R.reduce(R.ref_supcon(z1, z2, labels, 0.1, "sphere"), "mean")
    got = L.supcon(z1, z2, labels, temperature=0.1, base_temperature=base_temperature)
    _close(got, 0.1 / base_temperature * ref)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_debiased_hard_clamp_active(beta: float) -> None:
    """Positives close to their anchors and a large tau_plus push Ng below N exp(-1/t): the clamp
    must act (checked on the reference) and the library must follow it."""
    z1 = _rows((6, 3), 31)
    z2 = z1 + 0.05 * _rows((6, 3), 32)
    t, tau = 0.5, 0.3
    per_anchor = R.ref_debiased_hard(z1, z2, t, tau, beta, "sphere")
    z1n, z2n = R.ref_normalize(z1, "sphere"), R.ref_normalize(z2, "sphere")
    n_neg = 2 * 6 - 2
    pos0 = math.exp(R.dot(z1n[0], z2n[0]) / t)
    clamped0 = -math.log(pos0 / (pos0 + n_neg * math.exp(-1.0 / t)))
    assert per_anchor[0] == pytest.approx(clamped0, rel=1e-12)  # the clamp acts on anchor 0
    got = L.debiased_hard(z1, z2, temperature=t, tau_plus=tau, beta=beta)
    _close(got, R.reduce(per_anchor, "mean"))


# --------------------------------------------------------------------------------------------
# Jiang+ SCL / HSCL / UCL / HUCL: deterministic forms
# --------------------------------------------------------------------------------------------

JIANG_SIZES = [(4, 1, 2, 2), (6, 2, 3, 2), (8, 3, 2, 3), (5, 4, 3, 2)]  # (B, k, d, classes)


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("exact", [True, "mean"], ids=["exact-loss", "exact-mean"])
@pytest.mark.parametrize("negatives_reduction", ["mean", "sum"])
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("size", JIANG_SIZES, ids=lambda s: "B{}-k{}-d{}-C{}".format(*s))
def test_jiang_deterministic(variant, exact, negatives_reduction, temperature, normalize, size):
    b, k, d, c = size
    seed = 11 * b + 3 * k + d
    z, y = _rows((b, d), seed), _labels(b, c, seed)
    beta = 0.5 + 1.5 * (seed % 2)  # 0.5 or 2.0 for the hard variants
    got = _jiang_call(
        variant,
        z,
        y,
        k=k,
        beta=beta,
        temperature=temperature,
        normalize=normalize,
        exact=exact,
        negatives_reduction=negatives_reduction,
    )
    ref = _jiang_ref(
        variant,
        z,
        y,
        k=k,
        beta=beta,
        temperature=temperature,
        normalize=normalize,
        negatives_reduction=negatives_reduction,
        mode="loss" if exact is True else "mean",
    )
    _close(got, ref)


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("k", [8, 16, 32])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
@pytest.mark.parametrize("normalize", ["sphere", "none"])
def test_jiang_exact_loss_large_k(variant, k, temperature, normalize) -> None:
    """exact=True at larger K against the multinomial enumeration (B = 4, so |N_i| <= 4)."""
    scale = 2.0 if normalize == "none" else 1.0
    z, y = scale * _rows((4, 3), 5 * k), _labels(4, 2, k)
    kwargs = dict(k=k, beta=2.0, temperature=temperature, normalize=normalize)
    for negatives_reduction in ("mean", "sum"):
        got = _jiang_call(
            variant, z, y, exact=True, negatives_reduction=negatives_reduction, **kwargs
        )
        _close(got, _jiang_ref(variant, z, y, negatives_reduction=negatives_reduction, **kwargs))


@pytest.mark.parametrize("variant", ["hscl", "hucl"])
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("exact", [True, "mean"], ids=["exact-loss", "exact-mean"])
def test_jiang_hard_beta_grid(variant, beta, exact) -> None:
    z, y = _rows((6, 3), 41), _labels(6, 3, 41)
    got = _jiang_call(variant, z, y, k=3, beta=beta, temperature=0.5, exact=exact)
    ref = _jiang_ref(
        variant, z, y, k=3, beta=beta, temperature=0.5, mode="loss" if exact is True else "mean"
    )
    _close(got, ref)


@pytest.mark.parametrize("variant", ["hscl", "hucl"])
def test_jiang_beta_zero_equals_easy(variant) -> None:
    """hscl(beta=0) is scl and hucl(beta=0) is ucl (uniform law on N_i)."""
    easy = "scl" if variant == "hscl" else "ucl"
    z, y = _rows((6, 3), 43), _labels(6, 2, 43)
    for exact in (True, "mean"):
        _close(
            _jiang_call(variant, z, y, k=2, beta=0.0, exact=exact),
            _jiang_call(easy, z, y, k=2, beta=None, exact=exact),
            rtol=1e-12,
            atol=1e-14,
        )


@pytest.mark.parametrize("variant", list(JIANG))
def test_jiang_exact_true_is_exact_loss(variant) -> None:
    z, y = _rows((5, 2), 51), _labels(5, 2, 51)
    a = _jiang_call(variant, z, y, k=3, beta=1.0, exact=True)
    b = _jiang_call(variant, z, y, k=3, beta=1.0, exact="loss")
    _close(a, b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("variant", list(JIANG))
def test_jiang_defaults(variant) -> None:
    """Defaults: temperature=1.0, normalize="ball", negatives_reduction="mean"."""
    z, y = _rows((6, 2), 61), _labels(6, 2, 61)
    got = _jiang_call(variant, z, y, k=2, beta=1.0, exact=True)
    _close(got, _jiang_ref(variant, z, y, k=2, beta=1.0))


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("exact", [True, "mean"], ids=["exact-loss", "exact-mean"])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_jiang_reduction(variant, exact, reduction) -> None:
    """reduction="none": one loss per (anchor, positive) pair, in row-major order of (i, p)."""
    z, y = _rows((7, 3), 63), _labels(7, 3, 63)
    kwargs = dict(k=2, beta=1.5, temperature=0.5, normalize="sphere", negatives_reduction="sum")
    got = _jiang_call(variant, z, y, exact=exact, reduction=reduction, **kwargs)
    mode = "loss" if exact is True else "mean"
    _close(got, _jiang_ref(variant, z, y, mode=mode, reduction=reduction, **kwargs))


# --------------------------------------------------------------------------------------------
# Jiang+: the sampled form
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(JIANG))
def test_jiang_sampled_reproducible(variant) -> None:
    z, y = _rows((8, 3), 71, requires_grad=True), _labels(8, 3, 71)
    outs, grads = [], []
    for _ in range(2):
        loss = _jiang_call(variant, z, y, k=4, beta=2.0, exact=False, generator=_gen(5))
        (grad,) = torch.autograd.grad(loss, z)
        outs.append(loss.detach())
        grads.append(grad)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])
    others = {
        float(_jiang_call(variant, z.detach(), y, k=4, beta=2.0, exact=False, generator=_gen(s)))
        for s in range(6, 12)
    }
    assert len(others) > 1, "different seeds should give different samples"
    _jiang_call(variant, z, y, k=4, beta=2.0, exact=False)  # generator=None also works


@pytest.mark.parametrize("variant", ["scl", "hscl"])
@pytest.mark.parametrize("negatives_reduction", ["mean", "sum"])
@pytest.mark.parametrize("k", [1, 3])
def test_jiang_sampled_single_candidate(variant, negatives_reduction, k) -> None:
    """Two samples of two classes: each anchor's only supervised negative is the other sample, so
    the sampled form is deterministic and equals the formula with j_1 = ... = j_K fixed."""
    z, y = _rows((2, 3), 81, requires_grad=True), torch.tensor([0, 1])
    got = _jiang_call(
        variant,
        z,
        y,
        k=k,
        beta=1.0,
        temperature=0.5,
        exact=False,
        negatives_reduction=negatives_reduction,
        generator=_gen(0),
    )
    indices = {(0, 0): [1] * k, (1, 1): [0] * k}

    def ref(x):
        return R.ref_jiang_given_indices(
            x,
            y,
            indices,
            temperature=0.5,
            normalize="ball",
            negatives_reduction=negatives_reduction,
        )

    _close(got, ref(z))
    (grad,) = torch.autograd.grad(got, z)
    torch.testing.assert_close(grad, R.numerical_gradient(ref, z), rtol=1e-5, atol=1e-7)


def _identify_draws(per_pair: torch.Tensor, possible) -> list[tuple[int, ...]]:
    """The multiset of negative indices behind each sampled pair loss (the unique one whose
    formula value matches)."""
    draws = []
    for value, options in zip(per_pair.tolist(), possible, strict=True):
        matches = [combo for combo, v in options if abs(value - v) < 1e-10 * (1 + abs(value))]
        assert matches, (value, options)
        assert len(matches) == 1, (value, matches)
        draws.append(matches[0])
    return draws


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("negatives_reduction", ["mean", "sum"])
def test_jiang_sampled_pairs_in_support(variant, negatives_reduction) -> None:
    """Each sampled l_ip (reduction="none") is the formula at SOME multiset of K indices from
    N_i: other-class samples only for SCL/HSCL, any sample (the anchor included) for UCL/HUCL;
    and reduction="mean" is the mean of those pair losses for the same draw."""
    z, y = _rows((7, 2), 73), _labels(7, 3, 73)
    unsupervised = JIANG[variant][0]
    kwargs = dict(k=2, temperature=0.5, normalize="ball", negatives_reduction=negatives_reduction)
    possible = R.ref_jiang_possible_pair_losses(z, y, unsupervised=unsupervised, **kwargs)
    for seed in range(5):
        per_pair = _jiang_call(
            variant, z, y, beta=1.0, exact=False, reduction="none", generator=_gen(seed), **kwargs
        )
        assert per_pair.shape == (len(possible),)
        _identify_draws(per_pair, possible)
        mean = _jiang_call(
            variant, z, y, beta=1.0, exact=False, reduction="mean", generator=_gen(seed), **kwargs
        )
        _close(mean, float(per_pair.mean()), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_jiang_sampled_gradient_is_formula_with_fixed_draws(variant, normalize) -> None:
    """The gradient of the sampled loss is the gradient of the formula with the sampled indices
    held fixed (the sampling law is detached): the draws are recovered from the per-pair values,
    then the reference with those draws is differentiated by finite differences."""
    z, y = _rows((6, 2), 75, True), _labels(6, 3, 75)
    unsupervised = JIANG[variant][0]
    kwargs = dict(k=2, temperature=0.5, normalize=normalize, negatives_reduction="mean")
    possible = R.ref_jiang_possible_pair_losses(z, y, unsupervised=unsupervised, **kwargs)
    per_pair = _jiang_call(
        variant, z, y, beta=2.0, exact=False, reduction="none", generator=_gen(3), **kwargs
    )
    draws = _identify_draws(per_pair.detach(), possible)
    pairs = [(i, p) for i, p_set in enumerate(R.ref_jiang_positives(y)) for p in p_set]
    indices = dict(zip(pairs, draws, strict=True))
    loss = _jiang_call(variant, z, y, beta=2.0, exact=False, generator=_gen(3), **kwargs)
    _close(loss, float(per_pair.detach().mean()), rtol=1e-12, atol=1e-14)
    (grad,) = torch.autograd.grad(loss, z)

    def ref(x):
        return R.ref_jiang_given_indices(
            x, y, indices, temperature=0.5, normalize=normalize, negatives_reduction="mean"
        )

    torch.testing.assert_close(grad, R.numerical_gradient(ref, z), rtol=1e-5, atol=1e-7)


MC_CALLS = 1500


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("negatives_reduction", ["mean", "sum"])
def test_jiang_sampled_monte_carlo_mean(variant, negatives_reduction) -> None:
    """The mean of the sampled loss over many calls matches the brute-force exact expectation
    within 4 standard errors, for the whole loss and for every (i, p) pair (within 5 standard
    errors; one seeded generator, so the test is deterministic)."""
    z, y = _rows((6, 2), 91), torch.tensor([0, 1, 2, 0, 1, 2])
    kwargs = dict(
        k=3,
        beta=2.0,
        temperature=0.5,
        normalize="sphere",
        negatives_reduction=negatives_reduction,
    )
    gen = _gen(1234)
    values = torch.stack(
        [
            _jiang_call(variant, z, y, exact=False, generator=gen, reduction="none", **kwargs)
            for _ in range(MC_CALLS)
        ]
    )
    exact_pairs = torch.tensor(_jiang_ref(variant, z, y, reduction="none", **kwargs), dtype=F64)
    exact = _jiang_ref(variant, z, y, **kwargs)
    assert float(exact_pairs.mean()) == pytest.approx(exact, rel=1e-12)

    totals = values.mean(dim=1)
    mean, se = float(totals.mean()), float(totals.std()) / math.sqrt(MC_CALLS)
    assert se > 0
    assert abs(mean - exact) < 4 * se, (mean, exact, se, (mean - exact) / se)

    pair_se = values.std(dim=0) / math.sqrt(MC_CALLS)
    assert bool((pair_se > 0).all())
    z_scores = (values.mean(dim=0) - exact_pairs) / pair_se
    assert float(z_scores.abs().max()) < 5, z_scores


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------


def _gradcheck(fn, *inputs) -> None:
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", NORMALIZATIONS)
def test_gradcheck_normalize(kind) -> None:
    _gradcheck(lambda z: L.normalize(z, kind), _rows((5, 3), 1, requires_grad=True))


@pytest.mark.parametrize("loss", SCORE_LOSSES)
@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_gradcheck_score_loss(loss, temperature) -> None:
    v = (1.5 * torch.randn(4, 5, generator=_gen(2), dtype=F64)).requires_grad_(True)
    _gradcheck(lambda x: L.score_loss(x, loss, temperature=temperature), v)


@pytest.mark.parametrize("loss", SCORE_LOSSES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("shared", [False, True], ids=["own-negatives", "shared-negatives"])
def test_gradcheck_nce_loss(loss, normalize, shared) -> None:
    b, k, d = 3, 4, 3
    a, p = _rows((b, d), 3, True), _rows((b, d), 4, True)
    n = _rows((k, d) if shared else (b, k, d), 5, True)
    _gradcheck(
        lambda a_, p_, n_: L.nce_loss(a_, p_, n_, loss=loss, temperature=0.5, normalize=normalize),
        a,
        p,
        n,
    )


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_gradcheck_info_nce(normalize, temperature) -> None:
    z1, z2 = _rows((4, 3), 6, True), _rows((4, 3), 7, True)
    _gradcheck(lambda a, b: L.info_nce(a, b, temperature=temperature, normalize=normalize), z1, z2)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("with_labels", [False, True])
def test_gradcheck_supcon(normalize, with_labels) -> None:
    z1, z2 = _rows((5, 3), 8, True), _rows((5, 3), 9, True)
    labels = _labels(5, 2, 9) if with_labels else None
    _gradcheck(
        lambda a, b: L.supcon(a, b, labels=labels, temperature=0.5, normalize=normalize), z1, z2
    )


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("beta", [0.0, 2.0])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1])
def test_gradcheck_debiased_hard(normalize, beta, tau_plus) -> None:
    z1, z2 = _rows((4, 3), 10, True), _rows((4, 3), 11, True)
    _gradcheck(
        lambda a, b: L.debiased_hard(
            a, b, temperature=0.5, tau_plus=tau_plus, beta=beta, normalize=normalize
        ),
        z1,
        z2,
    )


def test_gradcheck_debiased_hard_clamped() -> None:
    z1 = _rows((6, 3), 31, True)
    z2 = (z1.detach() + 0.05 * _rows((6, 3), 32)).requires_grad_(True)
    _gradcheck(lambda a, b: L.debiased_hard(a, b, temperature=0.5, tau_plus=0.3, beta=1.0), z1, z2)


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("exact", [True, "mean"], ids=["exact-loss", "exact-mean"])
@pytest.mark.parametrize("negatives_reduction", ["mean", "sum"])
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_gradcheck_jiang_deterministic_beta0(variant, exact, negatives_reduction, normalize):
    """beta = 0: the law is uniform on N_i, so detaching it changes nothing; gradcheck applies."""
    z, y = _rows((5, 2), 12, True), _labels(5, 2, 12)
    _gradcheck(
        lambda x: _jiang_call(
            variant,
            x,
            y,
            k=2,
            beta=0.0,
            temperature=0.5,
            normalize=normalize,
            exact=exact,
            negatives_reduction=negatives_reduction,
        ),
        z,
    )


@pytest.mark.parametrize("variant", ["hscl", "hucl"])
@pytest.mark.parametrize("exact", [True, "mean"], ids=["exact-loss", "exact-mean"])
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_grad_jiang_deterministic_hard_law_detached(variant, exact, normalize) -> None:
    """beta > 0: the law p_ij ∝ exp(beta z_i.z_j) is detached, so the gradient must equal the
    finite-difference gradient of the reference with the law frozen at the input."""
    z, y = _rows((5, 2), 13, True), _labels(5, 2, 13)
    unsupervised = JIANG[variant][0]
    kwargs = dict(k=2, temperature=0.5, normalize=normalize, negatives_reduction="mean")
    loss = _jiang_call(variant, z, y, beta=2.0, exact=exact, **kwargs)
    (grad,) = torch.autograd.grad(loss, z)
    law = R.ref_jiang_sampling_law(z, y, beta=2.0, normalize=normalize, unsupervised=unsupervised)
    mode = "loss" if exact is True else "mean"

    def ref(x):
        return R.ref_jiang(x, y, unsupervised=unsupervised, mode=mode, law=law, **kwargs)

    torch.testing.assert_close(grad, R.numerical_gradient(ref, z), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", list(JIANG))
@pytest.mark.parametrize("negatives_reduction", ["mean", "sum"])
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_gradcheck_jiang_sampled(variant, negatives_reduction, normalize) -> None:
    """The generator is re-seeded inside the checked function, so every evaluation draws the
    same indices and the sampled loss is a smooth function of z."""
    z, y = _rows((6, 2), 14, True), _labels(6, 3, 14)
    _gradcheck(
        lambda x: _jiang_call(
            variant,
            x,
            y,
            k=3,
            beta=2.0,
            temperature=0.5,
            normalize=normalize,
            exact=False,
            negatives_reduction=negatives_reduction,
            generator=_gen(99),
        ),
        z,
    )


# --------------------------------------------------------------------------------------------
# float32 with logits beyond float32's exp range (|s| / t > 88.7)
# --------------------------------------------------------------------------------------------

F32_OBJECTIVES = [
    "info_nce",
    "supcon",
    "debiased_hard",
    "nce_loss-infonce",
    "nce_loss-infonce-mean",
    "nce_loss-logistic",
    "hscl-loss",
    "hucl-loss",
    "hscl-mean",
    "hucl-mean",
]


@pytest.mark.parametrize("objective", F32_OBJECTIVES)
def test_float32_large_logits_match_float64_reference(objective) -> None:
    """float32 inputs whose scaled similarities reach ~125 (exp overflows float32 at 88.7) must
    still match the float64 reference to float32 accuracy."""
    t = 0.05
    z1, z2 = 3.0 * _rows((6, 4), 1), 3.0 * _rows((6, 4), 2)
    y = _labels(6, 2, 3)
    assert float((z1 @ z2.T).abs().max()) / t > 100
    f = lambda x: x.to(torch.float32)  # noqa: E731
    if objective == "info_nce":
        got = L.info_nce(f(z1), f(z2), temperature=t, normalize="none")
        ref = R.reduce(R.ref_info_nce(z1, z2, t, "none"), "mean")
    elif objective == "supcon":
        got = L.supcon(f(z1), f(z2), y, temperature=t, normalize="none")
        ref = R.reduce(R.ref_supcon(z1, z2, y, t, "none"), "mean")
    elif objective == "debiased_hard":
        got = L.debiased_hard(f(z1), f(z2), temperature=t, tau_plus=0.1, beta=1.0, normalize="none")
        ref = R.reduce(R.ref_debiased_hard(z1, z2, t, 0.1, 1.0, "none"), "mean")
    elif objective.startswith("nce_loss"):
        loss = objective.split("-", 1)[1]
        n = 3.0 * _rows((6, 5, 4), 4)
        got = L.nce_loss(f(z1), f(z2), f(n), loss=loss, temperature=t)
        ref = R.reduce(R.ref_nce_loss(z1, z2, n, loss, t, "none"), "mean")
    else:
        variant, mode = objective.split("-")
        exact = True if mode == "loss" else "mean"
        kwargs = dict(k=3, beta=1.0, temperature=t, normalize="none")
        got = _jiang_call(variant, f(z1), y, exact=exact, **kwargs)
        ref = _jiang_ref(variant, z1, y, mode=mode, **kwargs)
    assert got.dtype == torch.float32
    assert math.isfinite(float(got))
    assert float(got) == pytest.approx(ref, rel=2e-5)

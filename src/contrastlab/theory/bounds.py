"""Bounds between contrastive and supervised losses, and their ingredients.

Setting: the latent-class model (Arora, Khandeparkar, Khodak, Plevrakis & Saunshi,
ICML 2019). ``C`` classes with prior ``rho`` (Bao et al. write ``pi``); an anchor of class
``c ~ rho``, its positive, and ``K`` unsupervised negatives whose classes are i.i.d. ``rho``.
The bounds relate the contrastive (InfoNCE / logistic) loss ``R_cont`` of a representation to
the cross-entropy of its *mean classifier*, ``R_mu-supv`` (Bao, Nagano & Nozawa, ICML 2022):
logits ``f(x)^T mu_c`` with ``mu_c`` the class means.

Conventions
-----------
- Natural logarithms throughout (Arora et al. state their bounds with ``log2``; Bao et al. and
  their code use ``ln``, and so does everything here).
- ``K`` is the number of negatives; coverage is evaluated at ``K + 1`` draws (anchor and
  negatives), as in Bao et al.'s code.
- ``C`` (the number of classes) means the uniform prior ``rho_c = 1/C``; ``prior`` gives any
  prior (a 1-D probability vector, validated by :func:`contrastlab.data.latent.check_prior`).
  With both, ``len(prior)`` must equal ``C``.
- Vectorization (like a NumPy ufunc): the functions of ``K`` (or ``n``) accept an int or a 1-D
  sequence / array of ints. A scalar input returns a ``numpy.float64`` scalar (a ``float``); a
  1-D input returns a float64 ``ndarray`` of the same shape. Bound functions also broadcast a
  scalar or 1-D ``R_cont`` against ``K``.
- Where a bound is undefined (Arora, Nozawa-Sato for ``K < C``) the value is ``nan``; where it
  blows up (coverage ``upsilon = 0``, or ``1 - tau`` underflowing to 0) it is ``+inf``. No
  Python exception and no NumPy warning is raised for these cases.
- Bad input raises a one-line ``ValueError`` naming the argument (``contrastlab._validation``).

The ingredients, exactly as Bao et al. evaluate them (``nzw0301/gap-contrastive-and-supervised-
losses@b1f4a40``, ``scripts/compare_upper_bound.py`` and ``scripts/plot_k_msuploss.py``):

- collision probability ``tau_K = 1 - (1 - 1/C)^K``;
- coverage ``upsilon_{K+1} = P(K + 1 i.i.d. draws cover all C classes)``;
- collision term ``Col_K = E_{m ~ Bin(K, 1/C)} log(1 + m)``;
- harmonic number ``H_{C-1}``: Bao's code uses the approximation ``ln(C - 1) + 0.577``; here
  :func:`harmonic_number` is exact and :func:`ash_bound` takes ``harmonic="approx"`` to
  reproduce the code (and its Ash values, which use it).

Numerical notes
---------------
- ``1 - tau_K`` is computed directly as ``exp(K log1p(-1/C))``, never as ``1 - tau_K``. The
  authors' code overflows for Arora and Ash at ``C = 10, K = 512``: it
  rounds ``tau`` to 1.0 and divides by zero. Here those entries are large finite numbers
  (2.1e23 and 4.3e23); ``+inf`` is returned only where ``1 - tau`` truly underflows.
- Coverage, uniform prior: exact inclusion-exclusion in integer (rational) arithmetic, see
  :func:`coverage_probability`. Naive float inclusion-exclusion cancels catastrophically (Nozawa
  & Sato's ``coupon.ipynb`` reports 4.52e-4 for ``C = 100, n = 128``; the exact value is
  1.50e-22).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.special import entr

from contrastlab._progress import progress_bar
from contrastlab._tables import markdown_table, text_table
from contrastlab._validation import as_index, check_choice, check_positive, check_positive_int
from contrastlab.data.latent import binomial_pmf, check_prior

__all__ = [
    "COVERAGE_METHODS",
    "MAX_K",
    "BoundsTable",
    "CoverageEstimate",
    "arora_bound",
    "ash_bound",
    "bao_delta_lower",
    "bao_delta_upper",
    "bao_lower_bound",
    "bao_upper_bound",
    "bounds_from_measurement",
    "collision_probability",
    "collision_term",
    "coverage_estimate",
    "coverage_probability",
    "harmonic_number",
    "idealized_bounds",
    "idealized_contrastive_minimum",
    "idealized_supervised_minimum",
    "nozawa_sato_bound",
]

FloatArray: TypeAlias = NDArray[np.float64]
FloatOrArray: TypeAlias = "np.float64 | NDArray[np.float64]"

COVERAGE_METHODS = ("auto", "exact", "convolution", "monte-carlo")
"""Methods of :func:`coverage_estimate` (see there)."""

HARMONIC_CHOICES = ("exact", "approx")

_EULER_GAMMA = 0.5772156649015329
_BAO_CODE_GAMMA = 0.577  # Bao et al.'s code: H_n ~ ln(n) + 0.577
_CONVOLUTION_BUDGET = 2e9  # multiply-adds after which "auto" abandons convolution for Monte Carlo
_EXACT_PRIOR_MAX_CLASSES = 20


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _int_scalar(name: str, value: Any, minimum: int) -> int:
    """An integer >= minimum (Python or NumPy ints; bools and floats refused)."""
    v = as_index(name, value, f"an integer >= {minimum}")
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(v)


def _plain_value(value: Any, what: str) -> Any:
    """``value`` with a tensor as a NumPy array; a bool or a string is a ``ValueError`` that
    starts with ``what`` (the allowed values)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, bool | np.bool_ | str | bytes):
        raise ValueError(f"{what}; got {value!r}")
    return value


def _int_array(name: str, value: Any, minimum: int = 1) -> tuple[NDArray[np.int64], bool]:
    """An int or a 1-D sequence of ints >= minimum, as an int64 array; and whether it was scalar."""
    what = f"{name} must be an integer >= {minimum} or a 1-D sequence of such integers"
    value = _plain_value(value, what)
    if np.ndim(value) == 0:
        try:
            v = _int_scalar(name, value, minimum)
        except ValueError:
            raise ValueError(f"{what}; got {value!r}") from None
        if v >= 2**62:
            raise ValueError(f"{what} (and < 2^62); got {value!r}")
        return np.array(v, dtype=np.int64), True
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}; got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and not (
        arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in arr)
    ):
        raise ValueError(f"{what}; got dtype {arr.dtype}: {arr.tolist()[:8]}")
    if any(int(v) < minimum or int(v) >= 2**62 for v in arr):
        raise ValueError(f"{what}; got {arr.tolist()[:8]}")
    return arr.astype(np.int64), False


def _float_array(name: str, value: Any) -> tuple[FloatArray, bool]:
    """A finite real or a 1-D sequence of finite reals, as a float64 array; and scalar-ness."""
    what = f"{name} must be a finite number or a 1-D sequence of finite numbers"
    value = _plain_value(value, what)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}; got {value!r}") from None
    if arr.ndim > 1 or arr.size == 0 or not bool(np.isfinite(arr).all()):
        raise ValueError(f"{what}; got {value!r}")
    return arr, arr.ndim == 0


def _check_classes(C: Any) -> int:
    return _int_scalar("C", C, 2)


@dataclass(frozen=True)
class _Prior:
    """A validated class prior: the probabilities, whether uniform, and the class count."""

    rho: FloatArray
    uniform: bool

    @property
    def C(self) -> int:
        return int(self.rho.size)


def _resolve_prior(C: Any, prior: Any) -> _Prior:
    """From ``C`` (uniform) and/or ``prior``: a validated prior (one-line ValueError otherwise)."""
    if prior is None:
        if C is None:
            raise ValueError("C: give the number of classes C (uniform prior) or a prior")
        c = _check_classes(C)
        return _Prior(np.full(c, 1.0 / c), True)
    c_opt = None if C is None else _check_classes(C)
    rho = check_prior(prior, c_opt, name="prior").numpy().astype(np.float64)
    if rho.size < 2:
        raise ValueError(f"prior must have at least 2 classes; got {rho.size}")
    return _Prior(rho, bool(np.all(rho == rho[0])))


def _finish(arr: Any, scalar: bool) -> FloatOrArray:
    out = np.asarray(arr, dtype=np.float64)
    if scalar:
        return np.float64(out.reshape(-1)[0])
    return out


def _log_cosh(x: float) -> float:
    """``log cosh(x)`` without overflow."""
    x = abs(x)
    return x + math.log1p(math.exp(-2.0 * x)) - math.log(2.0)


# --------------------------------------------------------------------------------------------
# collision probability, collision term, harmonic numbers
# --------------------------------------------------------------------------------------------


def _no_collision(K: NDArray[np.int64], p: _Prior) -> FloatArray:
    """``1 - tau_K = sum_c rho_c (1 - rho_c)^K``, computed without cancellation."""
    with np.errstate(all="ignore"):
        log_q = np.log1p(-p.rho)  # -inf for rho_c = 1
        stay = np.exp(K[..., None].astype(np.float64) * log_q)
    return np.asarray((stay * p.rho).sum(-1), dtype=np.float64)


def _tau(K: NDArray[np.int64], p: _Prior) -> FloatArray:
    with np.errstate(all="ignore"):
        log_q = np.log1p(-p.rho)
        hit = -np.expm1(K[..., None].astype(np.float64) * log_q)
    return np.asarray((hit * p.rho).sum(-1), dtype=np.float64)


def collision_probability(K: Any, C: Any = None, prior: Any = None) -> FloatOrArray:
    """The collision probability ``tau_K`` (Arora et al. 2019).

    The probability that at least one of ``K`` i.i.d. negatives falls in the anchor's class:
    ``tau_K = 1 - (1 - 1/C)^K`` for the uniform prior, and for a prior ``rho``, with the anchor's
    class ``c ~ rho`` itself random, ``tau_K = sum_c rho_c (1 - (1 - rho_c)^K)``. (For ``K = 1``
    this is Arora et al.'s ``tau = sum_c rho_c^2``.) Computed as ``-expm1(K log1p(-rho_c))``, so
    it is accurate for tiny ``rho_c`` and huge ``K``.

    Args:
        K: number of negatives, an int >= 1 or a 1-D sequence of them.
        C: number of classes (uniform prior), an int >= 2.
        prior: a class prior (1-D, nonnegative, sums to 1) instead of ``C``.

    Returns:
        float64, a scalar for scalar ``K``, else an array shaped like ``K``.
    """
    k, scalar = _int_array("K", K)
    p = _resolve_prior(C, prior)
    return _finish(_tau(k, p), scalar)


def _g(K: int, what: str, b2: float) -> FloatArray:
    """``log(1 + m)`` or ``log(1 + m + (K - m) e^{-2 b^2})`` at m = 0..K."""
    m = np.arange(K + 1, dtype=np.float64)
    if what == "col":
        return np.log1p(m)
    return np.log1p(m + (K - m) * math.exp(-2.0 * b2))


@functools.lru_cache(maxsize=4096)
def _expect_binomial(K: int, p: float, what: str, b2: float) -> float:
    """``E_{m ~ Bin(K, p)} g(m)`` (cached; the uniform-prior case)."""
    return float(np.dot(binomial_pmf(K, p).numpy(), _g(K, what, b2)))


#: the quantities :func:`_mix_binomial` computes, as a progress bar names them
_MIX_NAMES = {"col": "Col", "ideal": "R*_cont"}


#: the largest K whose binomial expectations are computed exactly (about 0.5 GB per array)
MAX_K = 2**26


def _mix_binomial(
    K: NDArray[np.int64], p: _Prior, what: str, b2: float = 0.0, bar: Any = None
) -> FloatArray:
    """``sum_c rho_c E_{m ~ Bin(K, rho_c)} g(m)`` per K (equal rho_c share one binomial);
    ``bar`` (a tqdm bar or None) advances by K + 1, the cost of a K, after each K."""
    if K.size and int(K.max()) > MAX_K:
        raise ValueError(f"K must be at most {MAX_K} (2^26): the exact expectation over "
                         f"Bin(K, rho_c) takes O(K) memory and time per K; got {int(K.max())}")
    values, inverse = np.unique(p.rho, return_inverse=True)
    weights = np.zeros_like(values)
    np.add.at(weights, inverse, p.rho)
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    out = np.zeros(K.shape, dtype=np.float64)
    for idx, kk in np.ndenumerate(K):
        k = int(kk)
        if bar is not None:
            bar.set_postfix_str(f"{_MIX_NAMES.get(what, what)} K={k}", refresh=False)
        if values.size == 1:
            out[idx] = _expect_binomial(k, float(values[0]), what, b2)
            if bar is not None:
                bar.update(k + 1)
            continue
        g = _g(k, what, b2)
        chunk = max(1, (1 << 22) // (k + 1))
        total = 0.0
        for s in range(0, values.size, chunk):
            pmf = binomial_pmf(k, torch.from_numpy(values[s : s + chunk])).numpy()
            total += float(weights[s : s + chunk] @ (pmf @ g))
        out[idx] = total
        if bar is not None:
            bar.update(k + 1)
    return out


def collision_term(K: Any, C: Any = None, prior: Any = None) -> FloatOrArray:
    """The collision term ``Col_K = E_{m ~ Bin(K, 1/C)} log(1 + m)``.

    ``m`` is the number of the ``K`` negatives in the anchor's class. It is the contrastive
    loss floor due to collisions subtracted in Arora et al.'s, Nozawa & Sato's and Ash et al.'s
    bounds, as evaluated in Bao et al.'s code (``collision_term`` in
    ``scripts/compare_upper_bound.py``). For a prior: the average over the anchor's class
    ``c ~ rho`` of ``E_{m ~ Bin(K, rho_c)} log(1 + m)``. The binomial pmf is
    :func:`contrastlab.data.latent.binomial_pmf` (float64, accurate to ``K = 10^6``).

    Args and return: as :func:`collision_probability`.
    """
    k, scalar = _int_array("K", K)
    p = _resolve_prior(C, prior)
    return _finish(_mix_binomial(k, p, "col"), scalar)


@functools.lru_cache(maxsize=512)
def _harmonic_small(n: int) -> float:
    return float(sum((Fraction(1, i) for i in range(1, n + 1)), Fraction(0)))


def _harmonic_one(n: int) -> float:
    """``H_n`` to float64 precision: exact rationals for n <= 200, else the asymptotic series
    ``ln n + gamma + 1/(2n) - 1/(12n^2) + 1/(120n^4) - 1/(252n^6) + 1/(240n^8)`` (next term
    < 1e-23 relative there)."""
    if n <= 200:
        return _harmonic_small(n)
    x = float(n)
    x2 = x * x
    tail = 1.0 / (2 * x) - (1.0 / 12 - (1.0 / 120 - (1.0 / 252 - 1.0 / (240 * x2)) / x2) / x2) / x2
    return math.log(x) + _EULER_GAMMA + tail


def harmonic_number(n: Any) -> FloatOrArray:
    """The harmonic number ``H_n = sum_{i=1}^n 1/i``, exactly (to float64 rounding).

    Not the approximation ``ln(n) + 0.577`` that Bao et al.'s code uses inside Ash et al.'s
    bound (that approximation is 0.05 low at
    ``n = 9``); see :func:`ash_bound`'s ``harmonic`` argument. ``n`` >= 0 (``H_0 = 0``), an int
    or a 1-D sequence of ints.
    """
    arr, scalar = _int_array("n", n, minimum=0)
    out = np.array([_harmonic_one(int(v)) for v in arr.reshape(-1)], dtype=np.float64)
    return _finish(out.reshape(arr.shape), scalar)


def _harmonic(n: int, harmonic: str) -> float:
    if harmonic == "exact":
        return _harmonic_one(n)
    return math.log(n) + _BAO_CODE_GAMMA


# --------------------------------------------------------------------------------------------
# coverage probability
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoverageEstimate:
    """The coverage probability ``upsilon_n`` with its standard error and method.

    ``value`` and ``stderr`` follow the vectorization convention of the module (scalar or array
    shaped like ``n``); ``stderr`` is 0 for the deterministic methods. ``method`` is the method
    actually used: ``"exact"`` (inclusion-exclusion in exact rational arithmetic),
    ``"convolution"`` (Poissonized convolution in float64, no cancellation) or
    ``"monte-carlo"``.
    """

    value: FloatOrArray
    stderr: FloatOrArray
    method: str


@functools.lru_cache(maxsize=4096)
def _coverage_uniform_exact(C: int, n: int) -> float:
    """``P(n uniform draws cover all C classes)`` by exact inclusion-exclusion.

    ``upsilon_n = sum_{j=0}^{C} (-1)^j binom(C, j) (C - j)^n / C^n``. The numerator is summed in
    Python integers and divided once (``int / int`` is correctly rounded), so the only error is
    the final rounding. Where the union bound already gives ``upsilon_n >= 1/2`` (``t_1 = C(1 -
    1/C)^n <= 1/2``) the terms ``j > J`` are omitted once ``(C - J) max_{j > J} t_j < 2^-80``
    (bounded in float logs with a factor 2 of slack), which moves the result by < 2^-79
    relative, i.e. at most one unit in the last place. Cost: ``J + 1`` big-integer powers of
    ``n log2 C`` bits (all ``C`` of them only in the cancellation regime ``t_1 > 1/2``, i.e.
    ``n < C ln 2C``).
    """
    if n < C:
        return 0.0
    j = np.arange(1, C, dtype=np.float64)
    log_t = (
        math.lgamma(C + 1)
        - np.array([math.lgamma(v + 1) + math.lgamma(C - v + 1) for v in j])
        + n * np.log1p(-j / C)
    )
    J = C - 1
    if log_t[0] <= math.log(0.5):
        # suffix maxima: bound[J] = (C - 1 - J) * max_{j > J} t_j, J = 0..C-2
        suffix_max = np.maximum.accumulate(log_t[::-1])[::-1]  # max over j >= index+1
        counts = C - 1 - np.arange(0, C - 1)
        log_bound = suffix_max + np.log(counts) + math.log(2.0)
        ok = np.nonzero(log_bound < -80 * math.log(2.0))[0]
        J = int(ok[0]) if ok.size else C - 1
    if J == 0:
        return 1.0
    num = 0
    for i in range(J + 1):
        term = math.comb(C, i) * (C - i) ** n
        num += -term if i % 2 else term
    return num / C**n


def _float_parts(rho: FloatArray) -> tuple[list[int], int]:
    """Integers ``a_c`` with ``rho_c = a_c / 2^e`` exactly (float64 values are dyadic)."""
    fr = [Fraction(float(r)) for r in rho]
    e = max(f.denominator for f in fr).bit_length() - 1
    return [int(f.numerator * (2**e // f.denominator)) for f in fr], e


def _coverage_prior_exact(rho: FloatArray, n: int) -> float:
    """Subset inclusion-exclusion ``sum_S (-1)^|S| (1 - rho(S))^n`` in exact rationals.

    The prior is taken as the exact rational vector ``a / sum(a)`` with ``rho_c = a_c / 2^e`` its
    float64 values, so it sums to exactly 1; then ``1 - rho(S) = A(S^c) / A`` and
    ``upsilon_n = sum_T (-1)^(C - |T|) A(T)^n / A^n`` over all subsets T. Cost ``2^C``
    big-integer powers: meant for C <= 20 and moderate n (the reference for the convolution).
    """
    C = rho.size
    if n < C or bool((rho == 0).any()):
        return 0.0
    a, _ = _float_parts(rho)
    total = sum(a)
    sums = [0]
    for v in a:
        sums += [s + v for s in sums]
    num = 0
    for mask, s in enumerate(sums):
        term = s**n
        num += -term if (C - mask.bit_count()) % 2 else term
    return num / total**n


def _poisson_window(lam: float) -> tuple[int, FloatArray]:
    """Poisson(lam) pmf on its numerical support ``lo, lo+1, ...`` (float64, sums to 1).

    Log-ratios to the mode are accumulated outward from the mode (``log p(j)/p(j-1) =
    log(lam/j)``), exponentiated and normalized by their sum, so the result carries only
    rounding error (no ``lgamma`` cancellation); entries that underflow are trimmed.
    """
    if lam <= 0.0:
        return 0, np.ones(1)
    s = math.sqrt(lam)
    mode = math.floor(lam)
    lo = max(0, math.floor(lam - 40.0 * s - 10.0))
    hi = math.ceil(lam + 40.0 * s + 800.0)
    j = np.arange(lo + 1, hi + 1, dtype=np.float64)
    steps = math.log(lam) - np.log(j)  # step into j
    right = np.cumsum(steps[mode - lo :])
    left = -np.cumsum(steps[: mode - lo][::-1])[::-1]
    logrel = np.concatenate([left, [0.0], right])
    w = np.exp(logrel)
    w /= w.sum()
    nz = np.nonzero(w)[0]
    return lo + int(nz[0]), w[nz[0] : nz[-1] + 1]


def _coverage_convolution(rho: FloatArray, n: int, budget: float = math.inf) -> float | None:
    """``upsilon_n`` by Poissonization (all terms nonnegative, so no cancellation).

    With ``N ~ Poisson(n)`` draws the class counts ``N_c ~ Poisson(n rho_c)`` are independent, so
    ``P(N = m, all N_c >= 1)`` is the m-th entry of the convolution of the zero-truncated pmfs,
    and ``upsilon_n = P(N = n, all covered) / P(N = n)``. Relative error ~(C + width) * 1e-16;
    values below ~1e-290 are not resolved (underflow). Returns ``None`` (abandoned) once the
    multiply-adds spent exceed ``budget``.
    """
    C = rho.size
    if n < C or bool((rho == 0).any()):
        return 0.0
    factors = []
    for r0 in rho:
        lo0, w0 = _poisson_window(float(r0) * n)
        factors.append((1, w0[1:]) if lo0 == 0 else (lo0, w0))
    los = np.array([lo for lo, _ in factors])
    his = np.array([lo + w.size - 1 for lo, w in factors])
    rest_lo = np.concatenate([np.cumsum(los[::-1])[::-1][1:], [0]])
    rest_hi = np.concatenate([np.cumsum(his[::-1])[::-1][1:], [0]])
    off, r, spent = 0, np.ones(1), 0.0
    for c, (lo, w) in enumerate(factors):
        spent += float(r.size) * float(w.size)
        if spent > budget:
            return None
        r = np.convolve(r, w)
        off += lo
        # keep indices i with n - i in [rest_lo, rest_hi] (reachable by the remaining factors)
        keep_lo = max(off, n - int(rest_hi[c]))
        keep_hi = min(off + r.size - 1, n - int(rest_lo[c]))
        if keep_hi < keep_lo:
            return 0.0
        r = r[keep_lo - off : keep_hi - off + 1]
        off = keep_lo
        nz = np.nonzero(r)[0]
        if nz.size == 0:
            return 0.0
        r = r[nz[0] : nz[-1] + 1]
        off += int(nz[0])
    if not off <= n < off + r.size:
        return 0.0
    lo_n, w_n = _poisson_window(float(n))
    return float(r[n - off] / w_n[n - lo_n])


def _coverage_monte_carlo(
    rho: FloatArray, n: int, num_samples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Fraction of ``num_samples`` multinomial(n, rho) count vectors with every count > 0."""
    C = rho.size
    chunk = max(1, 2_000_000 // C)
    hits, done = 0, 0
    while done < num_samples:
        m = min(chunk, num_samples - done)
        counts = rng.multinomial(n, rho, size=m)
        hits += int((counts > 0).all(axis=1).sum())
        done += m
    est = hits / num_samples
    return est, math.sqrt(est * (1.0 - est) / num_samples)


def coverage_estimate(
    n: Any,
    C: Any = None,
    prior: Any = None,
    *,
    method: str = "auto",
    num_samples: int = 100_000,
    seed: int = 0,
) -> CoverageEstimate:
    """The coverage probability ``upsilon_n = P(n i.i.d. class draws cover all C classes)``.

    Nozawa & Sato (NeurIPS 2021) write ``upsilon_{K+1}`` (anchor plus ``K`` negatives).

    Methods:

    - ``"exact"``, uniform prior: ``sum_j (-1)^j binom(C, j) (1 - j/C)^n`` in exact integer
      arithmetic, then one correctly rounded division (a provably negligible tail is dropped
      when ``upsilon_n >= 1/2``; see ``_coverage_uniform_exact``). Results are cached.
      Measured (one CPU core, Python 3.11 integers, no gmpy2, uncached): ``C=100, n=10^4``
      0.07 ms (the tail bound leaves only ``j = 0``); ``C=1000, n=10^4`` 10 ms; ``C=1000,
      n=10^5`` 0.3 ms; ``C=100, n=128`` 0.1 ms; the worst case is the cancellation regime
      ``n ~ C ln C``, e.g. ``C=1000, n=7000``: 0.35 s. A repeated call hits the cache (~0.1 ms,
      mostly argument checking). For comparison, the float DP of Nozawa's/Bao's code (``n``
      sweeps over ``C + 1`` states), vectorized in NumPy, takes 49 ms at ``C=100, n=10^4`` and
      76 ms at ``C=1000, n=10^4``; it is accurate (all its terms are nonnegative) but O(nC).
      Naive float inclusion-exclusion gives 2.6e-6 instead of 1.50e-22 at ``C=100, n=128``.
    - ``"exact"``, non-uniform prior: subset inclusion-exclusion ``sum_S (-1)^|S| (1 -
      rho(S))^n`` in exact rationals (the prior's float64 values, renormalized exactly). Cost
      ``2^C`` big-integer powers: allowed for ``C <= 20``, practical for ``C <= 12`` or so.
    - ``"convolution"``: Poissonization. ``N ~ Poisson(n)`` draws give independent counts
      ``N_c ~ Poisson(n rho_c)``, so ``upsilon_n = P(N = n, all N_c >= 1) / P(N = n)``, the
      numerator being one entry of the convolution of the zero-truncated Poisson pmfs. All terms
      are nonnegative, so float64 suffices (relative error ~1e-13; values below ~1e-290
      underflow to 0). Any prior; the cost is roughly ``C`` convolutions of windows of width
      ~``sqrt(n)``: 30 ms at ``C=100, n=10^4``, 0.2 s at ``C=1000, n=10^4``, 0.3 s for a
      Dirichlet(1) prior with ``C=100, n=10^5``.
    - ``"monte-carlo"``: ``num_samples`` multinomial count vectors (NumPy, ``seed``); ``stderr``
      is the binomial standard error ``sqrt(p (1 - p) / num_samples)`` (0 when the estimate is 0
      or 1: then the truth is within ~3 / num_samples of it).
    - ``"auto"`` (default): ``"exact"`` for a uniform prior (``C`` given, or all entries of
      ``prior`` equal); otherwise ``"convolution"``, abandoned for ``"monte-carlo"`` if it
      needs more than 2e9 multiply-adds. (Monte Carlo is thus needed only for the largest
      problems: the convolution is exact up to rounding for any C.)

    A class of prior 0 can never be drawn, so then ``upsilon_n = 0``; drop such classes from
    the prior if they are not real classes.

    Args:
        n: number of draws, an int >= 1 or a 1-D sequence of them.
        C: number of classes (uniform prior), an int >= 2.
        prior: a class prior instead of ``C``.
        method: one of :data:`COVERAGE_METHODS`.
        num_samples: Monte Carlo sample size (int >= 1).
        seed: Monte Carlo seed (int >= 0).
    """
    ns, scalar = _int_array("n", n)
    p = _resolve_prior(C, prior)
    check_choice("method", method, COVERAGE_METHODS)
    num_samples = check_positive_int("num_samples", num_samples)
    seed = _int_scalar("seed", seed, 0)
    if method == "exact" and not p.uniform and p.C > _EXACT_PRIOR_MAX_CLASSES:
        raise ValueError(
            f"method='exact' with a non-uniform prior needs C <= {_EXACT_PRIOR_MAX_CLASSES} "
            f"(2^C subsets); got C = {p.C}: use 'convolution' or 'monte-carlo'"
        )
    rng = np.random.default_rng(seed)
    values = np.zeros(ns.shape, dtype=np.float64)
    errs = np.zeros(ns.shape, dtype=np.float64)
    used: set[str] = set()
    for idx, v in np.ndenumerate(ns):
        values[idx], errs[idx], m = _coverage_one(p, int(v), method, num_samples, rng)
        used.add(m)
    return CoverageEstimate(_finish(values, scalar), _finish(errs, scalar), "+".join(sorted(used)))


def _coverage_one(
    p: _Prior, nv: int, method: str, num_samples: int, rng: np.random.Generator
) -> tuple[float, float, str]:
    """(value, Monte Carlo stderr or 0, method used) of ``upsilon_nv``.

    ``"auto"`` resolves to ``"exact"`` (uniform prior) or to a budgeted ``"convolution"``,
    abandoned for ``"monte-carlo"`` (:func:`coverage_estimate`).
    """
    m = method
    conv: float | None = None
    if m == "auto":
        if p.uniform:
            m = "exact"
        else:
            conv = _coverage_convolution(p.rho, nv, _CONVOLUTION_BUDGET)
            m = "monte-carlo" if conv is None else "convolution"
    if m == "exact":
        value = _coverage_uniform_exact(p.C, nv) if p.uniform else _coverage_prior_exact(p.rho, nv)
        return value, 0.0, m
    if m == "convolution":
        conv = _coverage_convolution(p.rho, nv) if conv is None else conv
        return (0.0 if conv is None else conv), 0.0, m  # never None without a budget
    est, err = _coverage_monte_carlo(p.rho, nv, num_samples, rng)
    return est, err, m


def coverage_probability(
    n: Any,
    C: Any = None,
    prior: Any = None,
    *,
    method: str = "auto",
    num_samples: int = 100_000,
    seed: int = 0,
) -> FloatOrArray:
    """``upsilon_n = P(n i.i.d. draws cover all C classes)``: the value of
    :func:`coverage_estimate` (see there for the methods, their cost and accuracy).

    For the uniform prior (``C`` given) this is exact inclusion-exclusion in rational
    arithmetic: 0.6909756 at ``(C=10, n=32)``, 1.50e-22 at ``(C=100, n=128)``, 1.23e-4 at
    ``(C=100, n=256)``. Scalar ``n`` gives a scalar, 1-D ``n`` an array.
    """
    return coverage_estimate(n, C, prior, method=method, num_samples=num_samples, seed=seed).value


# --------------------------------------------------------------------------------------------
# bounds
# --------------------------------------------------------------------------------------------


def _bound_inputs(
    R_cont: Any, K: Any, C: Any, prior: Any
) -> tuple[FloatArray, NDArray[np.int64], _Prior, bool]:
    r, r_scalar = _float_array("R_cont", R_cont)
    k, k_scalar = _int_array("K", K)
    p = _resolve_prior(C, prior)
    try:
        r, k = np.broadcast_arrays(r, k)
    except ValueError:
        raise ValueError(
            f"R_cont must be a scalar or have the same length as K ({k.size}); got {r.size}"
        ) from None
    return np.array(r, dtype=np.float64), np.array(k, dtype=np.int64), p, r_scalar and k_scalar


def _safe_ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    """``num / den``, with ``+inf`` where ``den == 0`` (a vacuous bound), warning-free."""
    with np.errstate(all="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    return np.asarray(out, dtype=np.float64)


def _upsilon(k: NDArray[np.int64], p: _Prior, coverage: CoverageEstimate | None) -> FloatArray:
    if coverage is not None:
        return np.asarray(coverage.value, dtype=np.float64).reshape(k.shape)
    prior = None if p.uniform else p.rho
    C = p.C if p.uniform else None
    return np.asarray(coverage_estimate(k + 1, C, prior).value, dtype=np.float64).reshape(k.shape)


def arora_bound(R_cont: Any, K: Any, C: Any = None, prior: Any = None) -> FloatOrArray:
    """Arora et al.'s bound ``R_mu-supv <= (R_cont - Col_K) / ((1 - tau_K) upsilon_{K+1})``.

    Arora, Khandeparkar, Khodak, Plevrakis & Saunshi, "A theoretical analysis of contrastive
    unsupervised representation learning" (ICML 2019), the bound for K negatives, in the form
    Bao et al. evaluate it (``compare_upper_bound.py``: ``coef_arora * (nceloss -
    collision)``). For ``K = 1`` it is their ``L_sup <= (L_un - tau) / (1 - tau)`` [R]. Natural
    log. Defined only for ``K >= C`` (``nan`` below); ``+inf`` where ``(1 - tau_K)
    upsilon_{K+1}`` is 0. With a prior, ``tau`` and ``upsilon`` are those of the prior
    and ``C = len(prior)``. The feature-norm bound ``b`` does not enter.
    """
    r, k, p, scalar = _bound_inputs(R_cont, K, C, prior)
    return _finish(_coverage_bound("arora", r, k, p, None), scalar)


def _coverage_bound(
    kind: str,
    r: FloatArray,
    k: NDArray[np.int64],
    p: _Prior,
    cov: CoverageEstimate | None,
    col_all: FloatArray | None = None,
) -> FloatArray:
    """The bounds through the coverage ``upsilon_{K+1}``, defined only for K >= C (``nan``
    below, ``+inf`` where the denominator is 0): ``kind="arora"``, Arora et al.'s
    ``(R_cont - Col_K) / ((1 - tau_K) upsilon_{K+1})``; ``kind="nozawa_sato"``, Nozawa & Sato's
    ``(2 R_cont - Col_K) / upsilon_{K+1}``."""
    out = np.full(k.shape, np.nan)
    ok = k >= p.C
    if ok.any():
        col = _mix_binomial(k[ok], p, "col") if col_all is None else col_all[ok]
        ups = _upsilon(k, p, cov)[ok]
        if kind == "arora":
            with np.errstate(all="ignore"):
                den = _no_collision(k[ok], p) * ups
            out[ok] = _safe_ratio(r[ok] - col, den)
        else:
            out[ok] = _safe_ratio(2.0 * r[ok] - col, ups)
    return out


def nozawa_sato_bound(R_cont: Any, K: Any, C: Any = None, prior: Any = None) -> FloatOrArray:
    """Nozawa & Sato's upper bound on ``R_mu-supv``: ``(2 R_cont - Col_K) / upsilon_{K+1}``.

    Nozawa & Sato, "Understanding negative samples in instance discriminative self-supervised
    representation learning" (NeurIPS 2021), their main upper bound [R], in the form Bao et al.
    evaluate it (``ub_nozawa = (2 * nceloss - collision) / v``). Natural log. Defined
    only for ``K >= C`` (``nan`` below); ``+inf`` where ``upsilon_{K+1} = 0``. (Their code's
    version with ``L_sub`` and ``d(f)`` is not this function.)
    """
    r, k, p, scalar = _bound_inputs(R_cont, K, C, prior)
    return _finish(_coverage_bound("nozawa_sato", r, k, p, None), scalar)


def ash_bound(
    R_cont: Any, K: Any, C: Any = None, prior: Any = None, *, harmonic: str = "exact"
) -> FloatOrArray:
    """Ash et al.'s upper bound ``2 max(1, 2 (C-1) H_{C-1} / K) (R_cont - Col_K) / (1 - tau_K)``.

    Ash, Goel, Krishnamurthy & Misra, "Investigating the role of negatives in contrastive
    representation learning" (AISTATS 2022) [R], in the form Bao et al. evaluate it (their
    ``coef_ash``). Defined for every ``K``; ``+inf`` where ``1 - tau_K`` underflows to 0.

    ``harmonic="exact"`` (default) uses the exact ``H_{C-1}``; ``harmonic="approx"`` uses Bao's
    code's ``ln(C - 1) + 0.577`` and reproduces their code's Ash values. With a prior, it
    enters through ``tau_K`` only and ``C = len(prior)`` in the coupon-collector factor (Ash et
    al. state the bound for uniform classes: this extension is an assumption).
    """
    check_choice("harmonic", harmonic, HARMONIC_CHOICES)
    r, k, p, scalar = _bound_inputs(R_cont, K, C, prior)
    return _finish(_ash(r, k, p, harmonic), scalar)


def _ash(
    r: FloatArray,
    k: NDArray[np.int64],
    p: _Prior,
    harmonic: str,
    col_all: FloatArray | None = None,
) -> FloatArray:
    h = _harmonic(p.C - 1, harmonic)
    coef = 2.0 * np.maximum(1.0, 2.0 * (p.C - 1) * h / k.astype(np.float64))
    col = _mix_binomial(k, p, "col") if col_all is None else col_all
    return np.asarray(coef * _safe_ratio(r - col, _no_collision(k, p)), dtype=np.float64)


def _delta_upper(k: NDArray[np.int64], p: _Prior, b: float) -> FloatArray:
    C = p.C
    out = math.log(float(p.rho.max())) + 2.0 * math.log(C) + 2.0 * _log_cosh(b * b)
    return out - np.log(k.astype(np.float64))


def _delta_lower(k: NDArray[np.int64], p: _Prior, b: float) -> FloatArray:
    entropy = float(entr(p.rho).sum())
    kf = k.astype(np.float64)
    return entropy + np.log(kf) - 2.0 * np.log1p(kf) - 2.0 * _log_cosh(b * b)


def bao_delta_upper(K: Any, C: Any = None, prior: Any = None, b: float = 1.0) -> FloatOrArray:
    """``Delta_U = log(pi_max C^2 cosh^2(b^2) / K)`` (Bao, Nagano & Nozawa, ICML 2022).

    The additive gap of Bao et al.'s upper bound ``R_mu-supv <= R_cont + Delta_U``
    (``ub_intercept`` in their ``scripts/plot_k_msuploss.py``). ``pi_max`` is the largest class
    probability (``1/C`` for uniform), ``b`` the bound on feature norms (``b = 1`` for
    unit-norm features). Natural log; ``log cosh`` is evaluated without overflow.
    """
    k, scalar = _int_array("K", K)
    p = _resolve_prior(C, prior)
    return _finish(_delta_upper(k, p, check_positive("b", b)), scalar)


def bao_delta_lower(K: Any, C: Any = None, prior: Any = None, b: float = 1.0) -> FloatOrArray:
    """``Delta_L = H(pi) + log K - 2 log(1 + K) - 2 log cosh(b^2)`` (Bao et al. 2022).

    The additive gap of Bao et al.'s lower bound ``R_mu-supv >= R_cont + Delta_L``
    (``lb_intercept`` in ``scripts/plot_k_msuploss.py``; the code plots ``R*_mu-supv -
    Delta_L`` against ``R*_cont``). ``H(pi)`` is the prior's entropy in nats (``log C`` for
    uniform).
    """
    k, scalar = _int_array("K", K)
    p = _resolve_prior(C, prior)
    return _finish(_delta_lower(k, p, check_positive("b", b)), scalar)


def bao_upper_bound(
    R_cont: Any, K: Any, C: Any = None, prior: Any = None, b: float = 1.0
) -> FloatOrArray:
    """Bao et al.'s upper bound ``R_mu-supv <= R_cont + Delta_U`` (see :func:`bao_delta_upper`).

    Bao, Nagano & Nozawa, "On the surrogate gap between contrastive and supervised losses" (ICML
    2022), main upper bound [R; as evaluated in their code]. Finite for every ``K >= 1``.
    """
    r, k, p, scalar = _bound_inputs(R_cont, K, C, prior)
    return _finish(r + _delta_upper(k, p, check_positive("b", b)), scalar)


def bao_lower_bound(
    R_cont: Any, K: Any, C: Any = None, prior: Any = None, b: float = 1.0
) -> FloatOrArray:
    """Bao et al.'s *lower* bound ``R_mu-supv >= R_cont + Delta_L`` (see :func:`bao_delta_lower`).

    Bao, Nagano & Nozawa (ICML 2022) [R; sign confirmed by Awasthi et al.'s slides].
    """
    r, k, p, scalar = _bound_inputs(R_cont, K, C, prior)
    return _finish(r + _delta_lower(k, p, check_positive("b", b)), scalar)


# --------------------------------------------------------------------------------------------
# idealized minima (Bao et al., Figs. 3-4)
# --------------------------------------------------------------------------------------------


def idealized_contrastive_minimum(K: Any, C: Any, b: float = 1.0) -> FloatOrArray:
    """``R*_cont(K) = E_{m ~ Bin(K, 1/C)} log(1 + m + (K - m) e^{-2 b^2})`` (Bao et al. 2022).

    The contrastive loss when each of the ``m`` same-class negatives scores like the positive and
    the other ``K - m`` are antipodal (``nceloss_min`` in Bao et al.'s
    ``scripts/plot_k_msuploss.py``, used in their Figs. 3-4). Not attainable for ``C > 2``
    (antipodal negatives for every class pair are impossible), so it is an idealization, below
    the ETF value (:func:`contrastlab.theory.etf_loss`). Uniform prior, natural log.
    """
    k, scalar = _int_array("K", K)
    c = _check_classes(C)
    bb = check_positive("b", b)
    p = _Prior(np.full(c, 1.0 / c), True)
    return _finish(_mix_binomial(k, p, "ideal", bb * bb), scalar)


def idealized_supervised_minimum(C: Any, b: float = 1.0) -> float:
    """``R*_mu-supv = log(1 + (C - 1) e^{-2 b^2})`` (``suploss_min`` in Bao's code).

    0.7966 for ``C = 10`` and 2.6671 for ``C = 100`` at ``b = 1``. A Python float.
    """
    c = _check_classes(C)
    bb = check_positive("b", b)
    return math.log1p((c - 1) * math.exp(-2.0 * bb * bb))


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

COLUMN_LABELS = {
    "C": "C",
    "K": "K",
    "R_cont": "R_cont",
    "Col": "Col_K",
    "tau": "tau_K",
    "upsilon": "upsilon_K+1",
    "upsilon_stderr": "upsilon s.e.",
    "Delta_U": "Delta_U",
    "Delta_L": "Delta_L",
    "bao_upper": "Bao UB",
    "bao_lower": "Bao LB",
    "arora": "Arora",
    "nozawa_sato": "N&S",
    "ash": "Ash",
    "R_mu_supv_star": "R*_mu-supv",
}


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return str(int(v))
    x = float(v)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0.0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
        return f"{x:.3e}"
    return f"{x:.4f}"


def _json_value(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return int(v)
    x = float(v)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


@dataclass(frozen=True)
class BoundsTable:
    """A tidy table of bounds: one dict per row (keys :attr:`columns`) plus metadata.

    Columns (natural log): ``C``, ``K``, ``R_cont`` (the contrastive loss the bounds are
    evaluated at), ``Col`` (``Col_K``), ``tau`` (``tau_K``), ``upsilon`` (``upsilon_{K+1}``),
    ``Delta_U``, ``Delta_L``, ``bao_upper``, ``bao_lower``, ``arora``, ``nozawa_sato``, ``ash``;
    the idealized table adds ``R_mu_supv_star``, a measurement table ``upsilon_stderr``.
    ``nan`` = undefined (``K < C``), ``inf`` = vacuous (blows up).
    """

    rows: list[dict[str, Any]]
    columns: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> FloatArray:
        """One column as a float64 array."""
        check_choice("name", name, self.columns)
        return np.array([float(row[name]) for row in self.rows], dtype=np.float64)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = [COLUMN_LABELS.get(c, c) for c in self.columns]
        body = [[_fmt(row[c]) for c in self.columns] for row in self.rows]
        return header, body

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with aligned columns."""
        return markdown_table(*self._cells(), aligned=True)

    def to_text(self, width: int | None = None) -> str:
        """A plain aligned text table (right-aligned columns separated by two spaces); with
        ``width``, split into blocks of columns that repeat ``C`` and ``K`` when wider."""
        return text_table(*self._cells(), rule=False, width=width, keep=2)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows with JSON-safe values: non-finite numbers become ``"inf"``/``"nan"``."""
        return [{c: _json_value(row[c]) for c in self.columns} for row in self.rows]

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON: ``{"meta": ..., "rows": [...]}``; ``inf``/``nan`` written as strings."""
        meta = {
            k: _json_value(v) if not isinstance(v, list | dict) else v for k, v in self.meta.items()
        }
        return json.dumps({"meta": meta, "rows": self.to_dicts()}, indent=indent)

    def __str__(self) -> str:
        return self.to_text()


_BOUND_COLUMNS = (
    "C", "K", "R_cont", "Col", "tau", "upsilon", "Delta_U", "Delta_L",
    "bao_upper", "bao_lower", "arora", "nozawa_sato", "ash",
)  # fmt: skip


def _table_rows(
    r: FloatArray,
    k: NDArray[np.int64],
    p: _Prior,
    b: float,
    harmonic: str,
    cov: CoverageEstimate,
    bar: Any = None,
) -> dict[str, FloatArray]:
    du, dl = _delta_upper(k, p, b), _delta_lower(k, p, b)
    col = _mix_binomial(k, p, "col", bar=bar)
    return {
        "R_cont": r,
        "Col": col,
        "tau": _tau(k, p),
        "upsilon": np.asarray(cov.value, dtype=np.float64).reshape(k.shape),
        "Delta_U": du,
        "Delta_L": dl,
        "bao_upper": r + du,
        "bao_lower": r + dl,
        "arora": _coverage_bound("arora", r, k, p, cov, col),
        "nozawa_sato": _coverage_bound("nozawa_sato", r, k, p, cov, col),
        "ash": _ash(r, k, p, harmonic, col),
    }


def _bounds_table(
    kind: str,
    k: NDArray[np.int64],
    p: _Prior,
    cols: dict[str, FloatArray],
    columns: tuple[str, ...],
    b: float,
    harmonic: str,
    cov: CoverageEstimate,
    row_extra: dict[str, Any],
    meta_extra: dict[str, Any],
) -> BoundsTable:
    """The :class:`BoundsTable` of the columns ``cols``: one row per K (``C``, ``K``, the
    columns, then ``row_extra``) and the metadata of the evaluation (then ``meta_extra``)."""
    rows = [
        {"C": p.C, "K": int(kv), **{name: float(v[i]) for name, v in cols.items()}, **row_extra}
        for i, kv in enumerate(k)
    ]
    meta = {"kind": kind, "C": p.C, "b": b, "harmonic": harmonic, "coverage_method": cov.method,
            **meta_extra}
    return BoundsTable(rows, columns, meta)


def idealized_bounds(
    C: Any, Ks: Any, b: float = 1.0, *, harmonic: str = "exact", progress: bool | None = False
) -> BoundsTable:
    """Every bound evaluated at the idealized contrastive minimum ``R*_cont(K)`` (Bao et al.,
    Figs. 3-4).

    One row per ``K`` in ``Ks``; uniform prior over ``C`` classes, feature-norm bound ``b``.
    ``harmonic`` is passed to :func:`ash_bound` (``"approx"`` reproduces their code's Ash
    values). The rows also carry ``R_mu_supv_star`` = :func:`idealized_supervised_minimum`.

    What the table shows (checked in the tests): Bao's upper bound is finite for every
    K and the smallest for ``K >= C``; it decreases in K, but toward ``R*_mu-supv + 2 log
    cosh(b^2)`` (0.868 above ``R*_mu-supv`` at ``b = 1``), not toward ``R*_mu-supv`` itself.
    Arora's and Nozawa-Sato's are ``nan`` for ``K < C`` and huge where ``upsilon_{K+1}`` is
    tiny; Ash's grows with K through ``1 / (1 - tau_K)``.

    ``progress``: a progress bar (tqdm, on stderr) with the time left, over the two binomial
    expectations per K (``R*_cont`` and ``Col``, each costing O(K): about 20 s on one core for
    1,000 values of K up to 65,536); None: only when stderr is a terminal, and once the work has
    lasted half a second.
    """
    c = _check_classes(C)
    k, _ = _int_array("Ks", Ks)
    k = k.reshape(-1)
    bb = check_positive("b", b)
    check_choice("harmonic", harmonic, HARMONIC_CHOICES)
    p = _Prior(np.full(c, 1.0 / c), True)
    with progress_bar(2 * int((k + 1).sum()), "bounds", progress,
                      bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]",
                      delay=0.5 if progress is None else 0.0) as bar:
        r = _mix_binomial(k, p, "ideal", bb * bb, bar)
        cov = coverage_estimate(k + 1, c)
        cols = _table_rows(r, k, p, bb, harmonic, cov, bar)
    star = idealized_supervised_minimum(c, bb)
    extra = {"R_mu_supv_star": star}
    return _bounds_table("idealized", k, p, cols, (*_BOUND_COLUMNS, "R_mu_supv_star"), bb,
                         harmonic, cov, extra, extra)


def bounds_from_measurement(
    R_cont: Any,
    K: Any,
    b: float,
    prior: Any = None,
    *,
    C: Any = None,
    harmonic: str = "exact",
    coverage_method: str = "auto",
    num_samples: int = 100_000,
    seed: int = 0,
) -> BoundsTable:
    """Every bound evaluated from a measured contrastive loss.

    Args:
        R_cont: the measured contrastive (InfoNCE, natural log) loss, a number, or one per K.
        K: the number of negatives it was measured with (int >= 1 or a 1-D sequence).
        b: the measured bound on feature norms (``max ||f(x)||``), > 0; enters Bao's gaps only.
        prior: the estimated class prior (e.g. label frequencies), or give ``C`` for uniform.
        C: number of classes, for a uniform prior.
        harmonic: ``"exact"`` or ``"approx"`` (Bao's code) for Ash's ``H_{C-1}``.
        coverage_method, num_samples, seed: passed to :func:`coverage_estimate`; the table's
            ``upsilon_stderr`` column and ``meta["coverage_method"]`` say what was used.

    Returns:
        A :class:`BoundsTable`, one row per ``(R_cont, K)`` pair.
    """
    r, k, p, _ = _bound_inputs(R_cont, K, C, prior)
    r, k = r.reshape(-1), k.reshape(-1)
    bb = check_positive("b", b)
    check_choice("harmonic", harmonic, HARMONIC_CHOICES)
    cov = coverage_estimate(
        k + 1,
        p.C if p.uniform else None,
        None if p.uniform else p.rho,
        method=coverage_method,
        num_samples=num_samples,
        seed=seed,
    )
    cols = _table_rows(r, k, p, bb, harmonic, cov)
    cols["upsilon_stderr"] = np.asarray(cov.stderr, dtype=np.float64).reshape(k.shape)
    columns = (*_BOUND_COLUMNS[:6], "upsilon_stderr", *_BOUND_COLUMNS[6:])
    return _bounds_table("measurement", k, p, cols, columns, bb, harmonic, cov, {},
                         {"uniform_prior": p.uniform})

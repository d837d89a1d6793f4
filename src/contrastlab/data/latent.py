"""The latent-class data model of contrastive learning, and its exact collision statistics.

Model (Arora, Khandeparkar, Khodak, Plevrakis & Saunshi 2019, "A theoretical analysis of
contrastive unsupervised representation learning", Sec. 2; used by Awasthi, Dikkala & Kamath
2022, Jiang et al. 2023 and Bao, Nagano & Nozawa 2022):

- latent classes ``0, ..., C-1`` (0-based here; the papers count from 1) with a prior ``rho``
  (Bao et al. write ``pi``);
- each class c has an input law ``D_c``, given here by a :class:`ClassSampler`;
- the marginal is ``D(x) = sum_c rho_c D_c(x)``;
- anchor and positive: ``c ~ rho``, then ``x, x+ ~ D_c`` i.i.d. (two independent draws);
- unsupervised negatives: ``x-_1, ..., x-_k ~ D`` i.i.d.; their classes are i.i.d. ``rho``, so the
  number m of negatives in the anchor's class c is ``Binomial(k, rho_c)`` and the class counts
  are ``Multinomial(k, rho)``; collisions with the anchor's class are allowed;
- supervised negatives: ``x-_i ~ D(. | c- != c) = sum_{c' != c} rho_c' D_c' / (1 - rho_c)``.

Conventions: classes are 0-based ``int64``; priors are 1-D ``float64`` tensors; ``k`` (the
number of negatives per anchor) is always explicit and independent of ``n`` (the number of
anchors). Randomness comes only from the ``torch.Generator`` passed in (``None``: torch's global
generator), so a seeded generator makes every draw reproducible. Sampling is on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from contrastlab._validation import (
    as_float64_vector,
    as_index,
    as_positive_int,
    check_choice,
    check_generator,
)

__all__ = [
    "NEGATIVES",
    "PRIOR_GRAMMAR",
    "ClassSampler",
    "ContrastiveTuples",
    "LatentClassModel",
    "balanced_prior",
    "binomial_pmf",
    "check_prior",
    "dirichlet_prior",
    "make_generator",
    "parse_prior",
    "two_level_prior",
    "zipf_prior",
]

NEGATIVES = ("marginal", "other-class")
"""The laws of negatives: ``"marginal"`` = D (unsupervised), ``"other-class"`` = D(.|c' != c)."""

_PRIOR_ATOL = 1e-6


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (an integer >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _sample_categorical(
    weights: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None
) -> torch.Tensor:
    """i.i.d. draws from the categorical law ``weights / weights.sum()`` (inverse CDF).

    ``weights`` is a 1-D float64 tensor with a positive sum. The CDF is divided by its last entry,
    so it ends at exactly 1.0 and a class of weight 0 is never returned (its CDF step is empty,
    and ``searchsorted(..., right=True)`` returns the first index whose CDF exceeds u in [0, 1)).
    """
    cum = torch.cumsum(weights, 0)
    cdf = cum / cum[-1]
    u = torch.rand(shape, dtype=torch.float64, generator=generator)
    idx = torch.searchsorted(cdf, u.reshape(-1), right=True).reshape(shape)
    return idx.clamp_(max=weights.numel() - 1)


def _class_blocks(labels: torch.Tensor, C: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(c, rows)`` for every class c in 0..C-1 present in the int64 ``labels``, in class order:
    the indices of its entries, in their order (a stable sort groups the classes)."""
    counts = torch.bincount(labels, minlength=C).tolist()
    order = torch.argsort(labels, stable=True)
    start = 0
    for c, cnt in enumerate(counts):
        if cnt == 0:
            continue
        yield c, order[start : start + cnt]
        start += cnt


# --------------------------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------------------------


def check_prior(
    rho: Any, num_classes: int | None = None, *, name: str = "prior", atol: float = _PRIOR_ATOL
) -> torch.Tensor:
    """Validate a class prior and return it as a 1-D float64 tensor that sums to 1.

    ``rho`` may be a tensor, an array or a sequence of numbers. It must be 1-D and non-empty, with
    finite nonnegative entries summing to 1 within ``atol``; with ``num_classes`` given it must
    have that length. The result is renormalized (``rho / rho.sum()``) so downstream code sees an
    exact probability vector. Otherwise a one-line ``ValueError`` naming ``name`` is raised.
    """
    t = as_float64_vector(
        name, rho, items="sequence of class probabilities", vector="probability vector"
    )
    if num_classes is not None and t.numel() != num_classes:
        raise ValueError(
            f"{name} must have length {num_classes} (one entry per class); got {t.numel()}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must have finite entries; got {t.tolist()[:8]}")
    if bool((t < 0).any()):
        worst = float(t.min())
        raise ValueError(f"{name} must have nonnegative entries; got a minimum of {worst!r}")
    total = float(t.sum())
    if not abs(total - 1.0) <= atol:
        raise ValueError(f"{name} must sum to 1 (within {atol:g}); got a sum of {total!r}")
    return t / t.sum()


def balanced_prior(C: int) -> torch.Tensor:
    """The uniform prior ``rho_c = 1/C`` (Arora et al. 2019; Awasthi et al. 2022), float64."""
    C = as_positive_int("C", C)
    return torch.full((C,), 1.0 / C, dtype=torch.float64)


def zipf_prior(C: int, s: float = 1.0) -> torch.Tensor:
    """Zipf prior ``rho_c ∝ c^(-s)`` for classes c = 1..C (0-based index c-1), float64.

    ``s = 0`` is the balanced prior; larger ``s`` is more imbalanced (class 0 the most frequent).
    """
    C = as_positive_int("C", C)
    if isinstance(s, bool) or not isinstance(s, int | float | np.integer | np.floating):
        raise ValueError(f"s must be a finite number >= 0; got {s!r}")
    if not (math.isfinite(float(s)) and float(s) >= 0.0):
        raise ValueError(f"s must be a finite number >= 0; got {s!r}")
    logw = -float(s) * torch.log(torch.arange(1, C + 1, dtype=torch.float64))
    return torch.softmax(logw, 0)


def dirichlet_prior(
    C: int,
    alpha: float | Sequence[float] | torch.Tensor = 1.0,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random prior ``rho ~ Dirichlet(alpha)`` on C classes, float64.

    ``alpha`` is one concentration > 0 (symmetric Dirichlet) or C of them. Give either ``seed``
    (an integer >= 0) or a ``torch.Generator``; with neither, torch's global generator is used.
    The draw itself is NumPy's ``Generator.dirichlet``, seeded by a 63-bit integer taken from the
    torch generator, because it stays accurate for small alpha (where Gamma draws underflow);
    entries may then be exactly 0, which :func:`check_prior` accepts.
    """
    C = as_positive_int("C", C)
    if seed is not None and generator is not None:
        raise ValueError("seed: give either seed or generator, not both")
    gen = make_generator(seed) if seed is not None else check_generator(generator)
    try:
        a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"alpha must be a number > 0 or {C} numbers > 0; got {alpha!r}") from None
    if a.numel() == 1:
        a = a.expand(C)
    if a.numel() != C or not bool(torch.isfinite(a).all()) or not bool((a > 0).all()):
        raise ValueError(f"alpha must be a number > 0 or {C} numbers > 0; got {alpha!r}")
    np_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=gen).item())
    draw = np.random.default_rng(np_seed).dirichlet(a.numpy())
    return check_prior(torch.from_numpy(np.asarray(draw, dtype=np.float64)), C)


# --------------------------------------------------------------------------------------------
# binomial pmf (float64, log-space)
# --------------------------------------------------------------------------------------------


_LOG_2PI = math.log(2.0 * math.pi)


def two_level_prior(C: int, heavy: int, ratio: float) -> torch.Tensor:
    """``heavy`` classes with ``ratio`` times the mass of each of the others, float64."""
    C = as_positive_int("C", C)
    h = as_positive_int("heavy", heavy)
    if not h < C:
        raise ValueError(f"heavy must be < the number of classes C = {C}; got {heavy}")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (
            math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio must be a finite number > 0; got {ratio!r}")
    w = torch.ones(C, dtype=torch.float64)
    w[:h] = float(ratio)
    return w / w.sum()


PRIOR_GRAMMAR = ("'balanced', 'zipf[:S]', 'dirichlet[:ALPHA[:SEED]]', 'two-level:HEAVY:RATIO', "
                 "C comma-separated weights or a list of C probabilities")


def _prior_number(text: str, spec: str, cast: Any = float) -> Any:
    try:
        return cast(text)
    except ValueError:
        raise ValueError(f"prior must be {PRIOR_GRAMMAR}; got {spec!r}") from None


def parse_prior(spec: Any, C: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The class prior named by ``spec``: the one grammar of priors (the data sets' ``prior``
    option, the theory command line, the recipes' parameters).

    ``None`` or ``"balanced"``; ``"zipf[:S]"`` (S >= 0, default 1; :func:`zipf_prior`);
    ``"dirichlet[:ALPHA[:SEED]]"`` (ALPHA > 0, default 1; drawn with seed SEED, else from
    ``generator``, else with seed 0; :func:`dirichlet_prior`); ``"two-level:HEAVY:RATIO"``
    (:func:`two_level_prior`); ``"w1,...,wC"`` (nonnegative weights, normalized); or a sequence
    of C probabilities (:func:`check_prior`). Returns a float64 tensor; a one-line
    ``ValueError`` otherwise.
    """
    C = as_positive_int("C", C)
    if spec is None:
        return balanced_prior(C)
    if not isinstance(spec, str):
        return check_prior(spec, C, name="prior")
    try:
        return _parse_prior_text(spec, C, generator)
    except ValueError as err:  # every message names the option
        msg = str(err)
        raise ValueError(msg if msg.startswith("prior") else f"prior {spec!r}: {msg}") from None


def _parse_prior_text(spec: str, C: int, generator: torch.Generator | None) -> torch.Tensor:
    name, _, rest = spec.strip().partition(":")
    args = rest.split(":") if rest else []
    name = name.strip().lower()
    if name == "balanced" and not args:
        return balanced_prior(C)
    if name == "zipf" and len(args) <= 1:
        return zipf_prior(C, _prior_number(args[0], spec) if args else 1.0)
    if name == "dirichlet" and len(args) <= 2:
        alpha = _prior_number(args[0], spec) if args else 1.0
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"prior: the dirichlet alpha must be a number > 0; got {spec!r}")
        if len(args) == 2:
            return dirichlet_prior(C, alpha, seed=_prior_number(args[1], spec, int))
        if generator is None:
            return dirichlet_prior(C, alpha, seed=0)
        return dirichlet_prior(C, alpha, generator=generator)
    if name == "two-level" and len(args) == 2:
        return two_level_prior(C, _prior_number(args[0], spec, int), _prior_number(args[1], spec))
    if "," not in spec:
        raise ValueError(f"prior must be {PRIOR_GRAMMAR}; got {spec!r}")
    w = torch.tensor([_prior_number(x, spec) for x in spec.split(",")], dtype=torch.float64)
    if w.numel() != C or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(
            w.sum()) <= 0:
        raise ValueError(f"prior must list {C} nonnegative weights with a positive sum; got "
                         f"{spec!r}")
    return check_prior(w / w.sum(), C)


def _stirlerr(n: torch.Tensor) -> torch.Tensor:
    """``log n! - [(n + 1/2) log n - n + log(2 pi)/2]`` for n >= 1 (float64; Loader 2000).

    Direct ``lgamma`` for n <= 15, the asymptotic series (5 terms, error < 1e-16) above.
    """
    small = n <= 15
    ns = torch.where(small, n, torch.ones_like(n))
    direct = torch.lgamma(ns + 1.0) - (ns + 0.5) * torch.log(ns) + ns - 0.5 * _LOG_2PI
    nl = torch.where(small, torch.full_like(n, 16.0), n)
    n2 = nl * nl
    series = (
        1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680 - 1.0 / 1188 / n2) / n2) / n2) / n2
    ) / nl
    return torch.where(small, direct, series)


def _bd0(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The deviance term ``x log(x / mu) + mu - x`` for x, mu > 0 (broadcast), without
    cancellation (Loader 2000: a series in ``v = (x - mu) / (x + mu)`` where ``|v| < 0.1``)."""
    x, mu = torch.broadcast_tensors(x, mu)
    out = x / mu
    out.log_().mul_(x).add_(mu).sub_(x)
    v = (x - mu) / (x + mu)
    near = v.abs() < 0.1
    if bool(near.any()):
        xs, ms, vs = x[near], mu[near], v[near]
        s = (xs - ms) * vs
        ej = 2.0 * xs * vs
        v2 = vs * vs
        # term j is ~|v|^(2j-1) relative to the first: stop below 1e-17
        vmax = float(vs.abs().max())
        terms = 1 if vmax == 0.0 else min(16, max(1, math.ceil(-17.0 / (2.0 * math.log10(vmax)))))
        for j in range(1, terms + 1):
            ej.mul_(v2)
            s.add_(ej / (2 * j + 1))
        out[near] = s
    return out


def _binomial_log_pmf(k: int, p: torch.Tensor) -> torch.Tensor:
    """log Binomial(k, p) pmf at m = 0..k, shape ``(*p.shape, k+1)``, float64.

    Loader's saddle-point form (C. Loader 2000, "Fast and accurate computation of binomial
    probabilities", the algorithm of R's ``dbinom``):
    ``log pmf(m) = stirlerr(k) - stirlerr(m) - stirlerr(k-m) - bd0(m, kp) - bd0(k-m, kq)
    - log(2 pi m (k-m) / k) / 2`` for 0 < m < k, and ``k log(1-p)``, ``k log p`` at the ends.
    It avoids the cancellation of ``lgamma(k+1) - lgamma(m+1) - lgamma(k-m+1)``: relative error
    ~1e-13 even at k = 10^6. p = 0 and p = 1 give exact point masses.
    """
    m = torch.arange(k + 1, dtype=torch.float64)
    p = p.to(torch.float64).unsqueeze(-1)
    q = 1.0 - p
    kf = float(k)
    out = torch.empty(*p.shape[:-1], k + 1, dtype=torch.float64)
    out[..., 0] = (kf * torch.log1p(-p)).squeeze(-1)
    out[..., k] = (kf * torch.log(p)).squeeze(-1)
    if k >= 2:
        mi = m[1:k]
        inner_p = p.clamp(min=torch.finfo(torch.float64).tiny)
        inner_q = q.clamp(min=torch.finfo(torch.float64).tiny)
        st = _stirlerr(mi)
        stir = _stirlerr(torch.tensor(kf, dtype=torch.float64)) - st - st.flip(0)  # k-m = flip(m)
        lc = stir - _bd0(mi, kf * inner_p) - _bd0(kf - mi, kf * inner_q)
        lf = _LOG_2PI + torch.log(mi) + torch.log1p(-mi / kf)
        inner = lc - 0.5 * lf
        degenerate = (p == 0.0) | (p == 1.0)
        out[..., 1:k] = torch.where(degenerate, torch.full_like(inner, -math.inf), inner)
    return out


def binomial_pmf(k: int, p: float | torch.Tensor) -> torch.Tensor:
    """The Binomial(k, p) pmf at m = 0..k, float64, shape ``(*p.shape, k + 1)``.

    Computed in log space with Loader's saddle-point algorithm (as R's ``dbinom``), so it is
    accurate (relative error ~1e-13 where the pmf does not underflow) and sums to 1 for k up to
    10^6 and beyond. ``p`` in [0, 1].
    """
    k = as_positive_int("k", k)
    pt = torch.as_tensor(p, dtype=torch.float64)
    if not bool(((pt >= 0) & (pt <= 1)).all()):
        raise ValueError(f"p must lie in [0, 1]; got {p!r}")
    return torch.exp(_binomial_log_pmf(k, pt))


# --------------------------------------------------------------------------------------------
# class samplers and the model
# --------------------------------------------------------------------------------------------


@runtime_checkable
class ClassSampler(Protocol):
    """The input law ``D_c`` of one latent class.

    ``sample(n, generator)`` returns ``n`` i.i.d. inputs, a tensor of shape ``(n, *input_shape)``,
    drawing all its randomness from ``generator`` (``None``: torch's global generator).
    """

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class ContrastiveTuples:
    """n contrastive tuples, each an anchor, a positive and k negatives.

    Shapes (``s`` is the model's ``input_shape``): ``anchor (n, *s)``, ``positive (n, *s)``,
    ``negatives (n, k, *s)``, ``anchor_class (n,)`` and ``negative_class (n, k)`` (int64, 0-based).
    The positive shares the anchor's class.
    """

    anchor: torch.Tensor
    positive: torch.Tensor
    negatives: torch.Tensor
    anchor_class: torch.Tensor
    negative_class: torch.Tensor

    @property
    def n(self) -> int:
        """Number of tuples."""
        return int(self.anchor_class.shape[0])

    @property
    def k(self) -> int:
        """Number of negatives per tuple."""
        return int(self.negative_class.shape[1])

    @property
    def collisions(self) -> torch.Tensor:
        """``(n,)`` int64: the number m of negatives in the anchor's class."""
        return (self.negative_class == self.anchor_class[:, None]).sum(1)


class LatentClassModel:
    """The latent-class model of Arora et al. 2019 (Sec. 2): a prior over classes and one
    :class:`ClassSampler` per class.

    Args:
        samplers: one sampler per class (class c is ``samplers[c]``); all with one
            ``input_shape``.
        prior: the class prior ``rho`` (length C, nonnegative, sums to 1); ``None`` = balanced.
    """

    def __init__(self, samplers: Sequence[ClassSampler], prior: Any = None) -> None:
        if isinstance(samplers, str | bytes) or not isinstance(samplers, Sequence):
            raise ValueError(
                f"samplers must be a sequence of class samplers; got {type(samplers).__name__}"
            )
        if len(samplers) == 0:
            raise ValueError("samplers must hold at least one class sampler; got an empty list")
        shapes = []
        for i, s in enumerate(samplers):
            if not callable(getattr(s, "sample", None)) or not hasattr(s, "input_shape"):
                raise ValueError(
                    f"samplers[{i}] must have a sample(n, generator) method and an input_shape; "
                    f"got {type(s).__name__}"
                )
            shapes.append(tuple(int(d) for d in s.input_shape))
        if any(sh != shapes[0] for sh in shapes):
            raise ValueError(
                f"samplers must all have the same input_shape; got {sorted(set(shapes))}"
            )
        self._samplers: tuple[ClassSampler, ...] = tuple(samplers)
        self._input_shape: tuple[int, ...] = shapes[0]
        C = len(self._samplers)
        self._prior = balanced_prior(C) if prior is None else check_prior(prior, C, name="prior")

    # ---- properties ------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """C, the number of latent classes."""
        return len(self._samplers)

    @property
    def prior(self) -> torch.Tensor:
        """The class prior rho, a float64 tensor of length C (a copy)."""
        return self._prior.clone()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (common to all classes)."""
        return self._input_shape

    @property
    def samplers(self) -> tuple[ClassSampler, ...]:
        """The class samplers; ``samplers[c]`` draws from D_c."""
        return self._samplers

    def __repr__(self) -> str:
        return f"LatentClassModel(num_classes={self.num_classes}, input_shape={self.input_shape})"

    # ---- sampling --------------------------------------------------------------------------

    def sample_classes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n,)`` int64 classes drawn i.i.d. from rho."""
        n = as_positive_int("n", n)
        return _sample_categorical(self._prior, (n,), check_generator(generator))

    def sample_inputs(
        self, classes: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Inputs for given classes: ``x[i] ~ D_{classes[i]}`` independently, shape
        ``(*classes.shape, *input_shape)``.

        Vectorized: one ``sample`` call per class present (classes are visited in order 0..C-1,
        which fixes the use of the generator). The dtype is the promotion of the samplers'.
        """
        generator = check_generator(generator)
        if not isinstance(classes, torch.Tensor) or classes.is_floating_point():
            raise ValueError("classes must be an integer torch.Tensor of class indices")
        flat = classes.reshape(-1).to(torch.int64)
        C = self.num_classes
        if flat.numel() == 0:
            raise ValueError("classes must not be empty")
        if bool((flat < 0).any()) or bool((flat >= C).any()):
            raise ValueError(f"classes must lie in [0, {C - 1}]")
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        for c, idx in _class_blocks(flat, C):
            cnt = idx.numel()
            xs = self._samplers[c].sample(cnt, generator)
            if not isinstance(xs, torch.Tensor) or tuple(xs.shape) != (cnt, *self._input_shape):
                got = tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__
                raise ValueError(
                    f"samplers[{c}].sample({cnt}) must return shape "
                    f"{(cnt, *self._input_shape)}; got {got}"
                )
            pieces.append((idx, xs))
        dtype = pieces[0][1].dtype
        for _, xs in pieces[1:]:
            dtype = torch.promote_types(dtype, xs.dtype)
        out = torch.empty((flat.numel(), *self._input_shape), dtype=dtype)
        for idx, xs in pieces:
            out[idx] = xs.to(dtype)
        return out.reshape(*classes.shape, *self._input_shape)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n labelled inputs from the marginal: ``y ~ rho``, ``x ~ D_y``.

        Returns ``(x, y)`` with ``x (n, *input_shape)`` and ``y (n,)`` int64.
        """
        n = as_positive_int("n", n)
        generator = check_generator(generator)
        y = _sample_categorical(self._prior, (n,), generator)
        return self.sample_inputs(y, generator), y

    def sample_negative_classes(
        self,
        anchor_class: torch.Tensor,
        k: int,
        negatives: str = "marginal",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``(n, k)`` int64 classes of k negatives per anchor class.

        ``"marginal"``: i.i.d. rho, independent of the anchor (collisions allowed).
        ``"other-class"``: i.i.d. from rho restricted to ``c' != c`` and renormalized, i.e.
        ``rho_c' / (1 - rho_c)`` (exact inverse CDF per anchor class; never the anchor's class).
        """
        k = as_positive_int("k", k)
        check_choice("negatives", negatives, NEGATIVES)
        generator = check_generator(generator)
        C = self.num_classes
        if (
            not isinstance(anchor_class, torch.Tensor)
            or anchor_class.ndim != 1
            or anchor_class.is_floating_point()
            or anchor_class.dtype == torch.bool
        ):
            raise ValueError("anchor_class must be a 1-D integer torch.Tensor of class indices")
        anchor_class = anchor_class.to(torch.int64)
        if bool((anchor_class < 0).any()) or bool((anchor_class >= C).any()):
            raise ValueError(f"anchor_class must hold class indices in [0, {C - 1}]")
        n = int(anchor_class.shape[0])
        if negatives == "marginal":
            return _sample_categorical(self._prior, (n, k), generator)
        if C < 2:
            raise ValueError("negatives='other-class' needs at least 2 classes; this model has 1")
        if bool((self._prior == 1.0).any()):
            raise ValueError(
                "negatives='other-class' needs 2 classes of positive prior mass; "
                f"prior puts all mass on class {int(torch.argmax(self._prior))}"
            )
        out = torch.empty((n, k), dtype=torch.int64)
        for c, rows in _class_blocks(anchor_class, C):
            w = self._prior.clone()
            w[c] = 0.0
            out[rows] = _sample_categorical(w, (rows.numel(), k), generator)
        return out

    def sample_tuples(
        self,
        n: int,
        k: int,
        negatives: str = "marginal",
        generator: torch.Generator | None = None,
    ) -> ContrastiveTuples:
        """n contrastive tuples with k negatives each (Arora et al. 2019, Sec. 2).

        Anchor class ``c ~ rho``; anchor and positive are two independent draws from ``D_c``;
        the k negatives are i.i.d. from the marginal ``D`` (``negatives="marginal"``,
        unsupervised: a negative may come from class c, a *collision*) or from
        ``D(. | c' != c)`` (``"other-class"``, supervised: never class c). ``k`` is explicit and
        independent of ``n``. Vectorized: classes are drawn in bulk, then one sampler call per
        class produces that class's anchors, positives and negatives together.
        """
        n = as_positive_int("n", n)
        k = as_positive_int("k", k)
        check_choice("negatives", negatives, NEGATIVES)
        generator = check_generator(generator)
        anchor_class = _sample_categorical(self._prior, (n,), generator)
        negative_class = self.sample_negative_classes(anchor_class, k, negatives, generator)
        labels = torch.cat([anchor_class, anchor_class, negative_class.reshape(-1)])
        x = self.sample_inputs(labels, generator)
        return ContrastiveTuples(
            anchor=x[:n],
            positive=x[n : 2 * n],
            negatives=x[2 * n :].reshape(n, k, *self._input_shape),
            anchor_class=anchor_class,
            negative_class=negative_class,
        )

    # ---- exact collision statistics (unsupervised negatives) ----------------------------

    def _check_class(self, c: Any) -> int:
        C = self.num_classes
        ci = as_index("c", c, f"a class index in [0, {C - 1}] or None")
        if not 0 <= ci < C:
            raise ValueError(f"c must be a class index in [0, {C - 1}] or None; got {c!r}")
        return ci

    def collision_pmf(self, k: int, c: int | None = None) -> torch.Tensor:
        """Exact pmf of the number m of negatives in the anchor's class, m = 0..k (float64).

        For unsupervised negatives (``"marginal"``) and anchor class c this is
        ``Binomial(k, rho_c)``; with ``c=None`` the anchor class is itself random, and
        the pmf is the mixture ``sum_c rho_c Binomial(k, rho_c)``. (With ``"other-class"``
        negatives m = 0 always.) Computed in log space (Loader's algorithm, see
        :func:`binomial_pmf`); accurate for k up to 10^6 and beyond. Classes with equal prior
        share one binomial, so a balanced prior costs O(k).
        """
        k = as_positive_int("k", k)
        if c is not None:
            ci = self._check_class(c)
            return torch.exp(_binomial_log_pmf(k, self._prior[ci]))
        values, inverse = torch.unique(self._prior, return_inverse=True)
        weights = torch.zeros_like(values).index_add_(0, inverse, self._prior)
        keep = weights > 0
        values, weights = values[keep], weights[keep]
        out = torch.zeros(k + 1, dtype=torch.float64)
        chunk = max(1, (1 << 22) // (k + 1))
        for s in range(0, values.numel(), chunk):
            v, w = values[s : s + chunk], weights[s : s + chunk]
            out += (w[:, None] * torch.exp(_binomial_log_pmf(k, v))).sum(0)
        return out

    def collision_probability(self, k: int, c: int | None = None) -> torch.Tensor:
        """P(at least one of k unsupervised negatives is in the anchor's class), float64 scalar.

        ``1 - (1 - rho_c)^k`` for anchor class c; for ``c=None`` the average over c ~ rho,
        ``sum_c rho_c (1 - (1 - rho_c)^k)`` (Arora et al. 2019's tau_k). Computed as
        ``-expm1(k * log1p(-rho_c))``, accurate for tiny rho_c and large k.
        """
        k = as_positive_int("k", k)
        rho = self._prior
        if c is not None:
            rho_c = rho[self._check_class(c)]
            return -torch.expm1(k * torch.log1p(-rho_c))
        return (rho * -torch.expm1(k * torch.log1p(-rho))).sum()

    def expected_collisions(self, k: int, c: int | None = None) -> torch.Tensor:
        """E[m], the expected number of the k unsupervised negatives in the anchor's class.

        ``k rho_c`` for anchor class c; ``k sum_c rho_c^2`` for ``c=None`` (float64 scalar).
        """
        k = as_positive_int("k", k)
        if c is not None:
            return k * self._prior[self._check_class(c)]
        return k * (self._prior**2).sum()

    def class_counts_log_pmf(self, counts: torch.Tensor) -> torch.Tensor:
        """log Multinomial(k, rho) pmf of negative class-count vectors.

        ``counts`` is an integer tensor ``(..., C)`` of nonnegative counts, each row summing to
        its own k; returns ``(...)`` float64 ``log k! - sum_c log n_c! + sum_c n_c log rho_c``
        (``-inf`` where a class of prior 0 has a positive count).
        """
        if not isinstance(counts, torch.Tensor) or counts.is_floating_point():
            raise ValueError("counts must be an integer torch.Tensor of shape (..., C)")
        C = self.num_classes
        if counts.ndim < 1 or counts.shape[-1] != C:
            raise ValueError(f"counts must have shape (..., {C}); got {tuple(counts.shape)}")
        if bool((counts < 0).any()):
            raise ValueError("counts must be nonnegative")
        nc = counts.to(torch.float64)
        k = nc.sum(-1)
        return (
            torch.lgamma(k + 1.0)
            - torch.lgamma(nc + 1.0).sum(-1)
            + torch.xlogy(nc, self._prior).sum(-1)
        )

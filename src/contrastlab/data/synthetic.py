"""Synthetic class samplers and ready-made latent-class models.

- :class:`GaussianClass`: ``N(mean, std^2 I)`` in R^d, optionally truncated to a ball, so classes
  can have bounded, disjoint supports ("non-overlapping" classes, the assumption of Awasthi,
  Dikkala & Kamath 2022's structural result).
- :class:`SphericalCapClass`: the projected normal ``normalize(u + std * z)`` on S^{d-1},
  optionally restricted to a cap around ``u``.
- :func:`gaussian_mixture`: C well-separated classes of either kind, disjoint by construction
  when asked (the guarantee is stated there).
- :class:`CircleClass`, :func:`circle_toy`, :func:`circle_toy_dataset`: the 2-D "circle" toy of
  Bao, Nagano & Nozawa 2022 (their ``code/jobs/toy/circle.sh``).

Conventions: every sampler computes in float64 from the ``torch.Generator`` it is given (``None``:
torch's global generator) and returns its own ``dtype`` (float32 unless told). All draws are
reproducible from a seeded generator. Sampling is on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import integrate, special

from contrastlab._validation import (
    as_float64_vector,
    as_positive_int,
    check_generator,
    check_positive,
    check_unit_interval,
)
from contrastlab.data.latent import LatentClassModel, make_generator

__all__ = [
    "CircleClass",
    "GaussianClass",
    "SphericalCapClass",
    "circle_toy",
    "circle_toy_dataset",
    "gaussian_mixture",
]

# A batch of candidate draws holds at most this many float64 numbers (rejection sampling).
_MAX_BATCH_NUMBERS = 1 << 23
# Below this probability of the support a truncated law is refused (sampling would not end).
_MIN_ACCEPTANCE = 1e-7
# Quadrature over a ~ N(0, 1) is cut at |a| = 38.5, where the density is below 1e-320.
_A_MAX = 38.5


def _vector(name: str, value: Any) -> torch.Tensor:
    t = as_float64_vector(name, value, items="vector of numbers", vector="vector")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must have finite entries")
    return t.clone()


def _out_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    return dtype


def _unit_gaussian_directions(n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, dim) float64 directions uniform on S^{dim-1} (normalized Gaussians; the measure-zero
    event of a zero vector is redrawn)."""
    z = torch.randn(n, dim, dtype=torch.float64, generator=generator)
    norms = z.norm(dim=1)
    bad = norms == 0
    while bool(bad.any()):
        z[bad] = torch.randn(int(bad.sum()), dim, dtype=torch.float64, generator=generator)
        norms = z.norm(dim=1)
        bad = norms == 0
    return z / norms[:, None]


def _default_atol(x: torch.Tensor, scale: float) -> float:
    """Rounding slack for a membership test of x (float32 casts of float64 draws)."""
    return 16.0 * torch.finfo(x.dtype).eps * max(1.0, scale)


# --------------------------------------------------------------------------------------------
# Gaussian classes
# --------------------------------------------------------------------------------------------


class GaussianClass:
    """Isotropic Gaussian ``N(mean, std^2 I)`` in R^d, optionally truncated to a ball.

    With ``radius`` set, the law is the Gaussian conditioned on ``||x - mean|| <= radius`` (a
    truncated Gaussian with bounded support). It is sampled exactly and without rejection: an
    isotropic Gaussian is a uniform direction times an independent radius with
    ``(radius / std)^2 ~ chi^2_d``, so the conditioned radius is drawn by inverting the chi-square
    CDF restricted to ``[0, radius]`` (``scipy.special.gammaincinv``), which works however small
    the ball is compared with ``std * sqrt(d)`` (rejection from the Gaussian would not end there).
    A ball that holds less than 1e-7 of the Gaussian's mass is refused.

    Args:
        mean: the center, a 1-D vector of length d (``input_shape == (d,)``).
        std: the standard deviation of each coordinate, > 0.
        radius: ``None`` (support R^d) or the radius > 0 of the support ball around ``mean``.
        dtype: dtype of the samples (default float32); computation is float64.
    """

    def __init__(
        self,
        mean: Any,
        std: float = 1.0,
        radius: float | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.mean = _vector("mean", mean)
        self.std = check_positive("std", std)
        self.radius = None if radius is None else check_positive("radius", radius)
        self.dtype = _out_dtype(dtype)
        self.input_shape: tuple[int, ...] = (int(self.mean.numel()),)
        self._mass = 1.0
        if self.radius is not None:
            d = self.input_shape[0]
            self._mass = float(special.gammainc(d / 2.0, 0.5 * (self.radius / self.std) ** 2))
            if not self._mass >= _MIN_ACCEPTANCE:
                raise ValueError(
                    f"radius must hold at least {_MIN_ACCEPTANCE:g} of the Gaussian's mass; "
                    f"radius={self.radius:g} holds {self._mass:.3g} at std={self.std:g}, d={d}"
                )

    @property
    def support_mass(self) -> float:
        """P(||z - mean|| <= radius) for the untruncated Gaussian (1.0 without a radius)."""
        return self._mass

    def __repr__(self) -> str:
        return f"GaussianClass(dim={self.input_shape[0]}, std={self.std:g}, radius={self.radius})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, d)`` i.i.d. draws (exact; see the class docstring)."""
        n = as_positive_int("n", n)
        generator = check_generator(generator)
        d = self.input_shape[0]
        if self.radius is None:
            z = torch.randn(n, d, dtype=torch.float64, generator=generator)
            return (self.mean + self.std * z).to(self.dtype)
        directions = _unit_gaussian_directions(n, d, generator)
        u = torch.rand(n, dtype=torch.float64, generator=generator)
        half_chi2 = special.gammaincinv(d / 2.0, (u * self._mass).numpy())
        r = self.std * torch.sqrt(2.0 * torch.from_numpy(np.asarray(half_chi2)))
        r = r.clamp_(max=self.radius)  # guards the last ulp of the inverse CDF
        return (self.mean + directions * r[:, None]).to(self.dtype)

    def contains(self, x: torch.Tensor, atol: float | None = None) -> torch.Tensor:
        """``(n,)`` bool: whether each row of x lies in the support (the ball, or all of R^d).

        ``atol`` (default: a few ulps of x's dtype times the scale) absorbs the rounding of the
        cast from float64.
        """
        x64 = x.to(torch.float64).reshape(-1, self.input_shape[0])
        if self.radius is None:
            return torch.isfinite(x64).all(1)
        if atol is None:
            atol = _default_atol(x, float(self.mean.norm()) + self.radius)
        return (x64 - self.mean).norm(dim=1) <= self.radius + atol


class SphericalCapClass:
    """Projected normal on the unit sphere S^{d-1}, optionally restricted to a cap.

    A draw is ``normalize(u + std * z)`` with ``u = direction / ||direction||`` and
    ``z ~ N(0, I_d)``; its angle to u is ``atan2(std ||z_perp||, 1 + std z_par)`` (about
    ``std * sqrt(d - 1)`` for small std). With ``max_angle`` set, the law is conditioned on that
    angle being ``<= max_angle``: the support is the closed cap of geodesic radius ``max_angle``
    around u. It is sampled by exact rejection, vectorized, with batches sized from the
    acceptance probability (computed once by 1-D quadrature); a cap of probability below 1e-7
    is refused.

    Args:
        direction: the cap's center, a nonzero 1-D vector of length d >= 2.
        std: the spread of the Gaussian perturbation before normalization, > 0.
        max_angle: ``None`` (support: the whole sphere) or the cap's angular radius in (0, pi].
        dtype: dtype of the samples (default float32); computation is float64.
    """

    def __init__(
        self,
        direction: Any,
        std: float = 0.1,
        max_angle: float | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        u = _vector("direction", direction)
        if u.numel() < 2:
            raise ValueError(f"direction must have length >= 2 (a sphere S^(d-1)); got {u.numel()}")
        norm = float(u.norm())
        if norm == 0.0:
            raise ValueError("direction must be a nonzero vector")
        self.direction = u / norm
        self.std = check_positive("std", std)
        if max_angle is not None:
            max_angle = check_positive("max_angle", max_angle)
            if max_angle > math.pi:
                raise ValueError(f"max_angle must lie in (0, pi]; got {max_angle!r}")
            if max_angle == math.pi:
                max_angle = None
        self.max_angle = max_angle
        self.dtype = _out_dtype(dtype)
        self.input_shape: tuple[int, ...] = (int(u.numel()),)
        self._acceptance = 1.0 if max_angle is None else self._cap_probability(max_angle)
        if not self._acceptance >= _MIN_ACCEPTANCE:
            raise ValueError(
                f"max_angle must hold at least {_MIN_ACCEPTANCE:g} of the projected normal; "
                f"max_angle={max_angle:g} holds {self._acceptance:.3g} at std={self.std:g}, "
                f"d={self.input_shape[0]} (decrease std or increase max_angle)"
            )

    def __repr__(self) -> str:
        return (
            f"SphericalCapClass(dim={self.input_shape[0]}, std={self.std:g}, "
            f"max_angle={self.max_angle})"
        )

    @property
    def cap_probability(self) -> float:
        """P(angle <= max_angle) under the unrestricted projected normal (1.0 without a cap)."""
        return self._acceptance

    def _cap_probability(self, alpha: float) -> float:
        """P(atan2(s r, 1 + s a) <= alpha), a ~ N(0,1), r ~ chi_{d-1} (independent)."""
        s, dof = self.std, self.input_shape[0] - 1
        a0 = -1.0 / s  # where 1 + s a changes sign

        def chi2_cdf(t: float) -> float:
            return float(special.gammainc(dof / 2.0, 0.5 * t * t))

        def phi(a: float) -> float:
            return math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)

        if alpha < math.pi / 2:
            tan_a = math.tan(alpha)

            def inside(a: float) -> float:  # 1 + s a > 0 and s r <= tan(alpha) (1 + s a)
                return phi(a) * chi2_cdf(tan_a * (1.0 + s * a) / s)

            lo = max(a0, -_A_MAX)
            pts = [0.0] if lo < 0.0 else None
            val, _ = integrate.quad(
                inside, lo, _A_MAX, points=pts, epsabs=0.0, epsrel=1e-6, limit=200
            )
            return float(min(1.0, max(0.0, val)))
        tan_b = math.tan(math.pi - alpha)

        def behind(a: float) -> float:  # 1 + s a < 0 and s r >= tan(pi - alpha) |1 + s a|
            return phi(a) * (1.0 - chi2_cdf(tan_b * abs(1.0 + s * a) / s))

        if a0 <= -_A_MAX:
            val = 0.0
        else:
            pts = [0.0] if a0 > 0.0 else None
            val, _ = integrate.quad(
                behind, -_A_MAX, a0, points=pts, epsabs=0.0, epsrel=1e-6, limit=200
            )
        return float(min(1.0, max(0.0, special.ndtr(1.0 / s) + val)))

    def _angles(self, x64: torch.Tensor) -> torch.Tensor:
        par = x64 @ self.direction
        perp = (x64 - par[:, None] * self.direction).norm(dim=1)
        return torch.atan2(perp, par)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, d)`` i.i.d. unit vectors (exact rejection sampling within the cap)."""
        n = as_positive_int("n", n)
        generator = check_generator(generator)
        d = self.input_shape[0]
        out = torch.empty(n, d, dtype=torch.float64)
        filled = 0
        max_rows = max(1, _MAX_BATCH_NUMBERS // d)
        while filled < n:
            remaining = n - filled
            want = (
                math.ceil(1.1 * remaining / self._acceptance) + 16 if self.max_angle else remaining
            )
            m = min(want, max_rows)
            v = self.direction + self.std * torch.randn(
                m, d, dtype=torch.float64, generator=generator
            )
            norms = v.norm(dim=1)
            ok = norms > 0
            x = v / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
            if self.max_angle is not None:
                ok &= self._angles(x) <= self.max_angle
            acc = x[ok][:remaining]
            out[filled : filled + acc.shape[0]] = acc
            filled += acc.shape[0]
        return out.to(self.dtype)

    def contains(self, x: torch.Tensor, atol: float | None = None) -> torch.Tensor:
        """``(n,)`` bool: whether each row of x is a unit vector in the cap (angle to the
        direction <= max_angle; without a cap, any unit vector). ``atol`` absorbs rounding."""
        x64 = x.to(torch.float64).reshape(-1, self.input_shape[0])
        if atol is None:
            atol = _default_atol(x, 1.0)
        unit = (x64.norm(dim=1) - 1.0).abs() <= atol
        if self.max_angle is None:
            return unit
        return unit & (self._angles(x64) <= self.max_angle + atol)


# --------------------------------------------------------------------------------------------
# Gaussian mixtures with a guarantee of disjoint supports
# --------------------------------------------------------------------------------------------


def _random_rotation(dim: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal (dim, dim) matrix (QR of a Gaussian, with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=generator))
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def _simplex(C: int, dim: int) -> torch.Tensor:
    """C unit vectors in R^dim (C - 1 <= dim) with pairwise inner product -1/(C-1) (the regular
    simplex / simplex ETF, Papyan et al. 2020)."""
    centered = torch.eye(C, dtype=torch.float64) - 1.0 / C
    # orthonormal basis of the (C-1)-dim subspace orthogonal to the all-ones vector
    basis = torch.linalg.qr(centered[:, : C - 1])[0]  # (C, C-1)
    coords = centered @ basis  # (C, C-1)
    coords = coords / coords.norm(dim=1, keepdim=True)
    out = torch.zeros(C, dim, dtype=torch.float64)
    out[:, : C - 1] = coords
    return out


def _cross_polytope(C: int, dim: int) -> torch.Tensor:
    """C of the 2 dim vectors ±e_i (min distance sqrt 2, min angle pi/2)."""
    eye = torch.eye(dim, dtype=torch.float64)
    return torch.cat([eye, -eye])[:C]


def _grid(C: int, dim: int) -> torch.Tensor:
    """C distinct points of the integer grid {0..side-1}^dim (mixed radix), centered; the
    minimum pairwise distance is 1."""
    side = 2
    while side**dim < C:
        side += 1
    idx = torch.arange(C, dtype=torch.int64)
    digits = torch.stack([(idx // side**j) % side for j in range(dim)], dim=1).to(torch.float64)
    return digits - digits.mean(0)


def _spread_directions(C: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """C unit vectors spread by greedy farthest-point selection among many random ones."""
    num = max(4096, 64 * C)
    num = min(num, max(C, _MAX_BATCH_NUMBERS // dim))
    cand = _unit_gaussian_directions(num, dim, generator)
    chosen = [0]
    best = (cand @ cand[0]).clone()  # max cosine to the chosen set
    for _ in range(C - 1):
        i = int(torch.argmin(best))
        chosen.append(i)
        best = torch.maximum(best, cand @ cand[i])
    return cand[chosen]


def _angles_between(u: torch.Tensor) -> torch.Tensor:
    """Pairwise angles of unit vectors, accurate for small angles (2 asin(|u - v| / 2))."""
    return 2.0 * torch.asin((torch.cdist(u, u) / 2.0).clamp(max=1.0))


def gaussian_mixture(
    C: int,
    dim: int,
    prior: Any = None,
    *,
    std: float | None = None,
    separation: float | None = None,
    disjoint: bool = True,
    sphere: bool = False,
    margin: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> LatentClassModel:
    """A latent-class model (Arora et al. 2019) of C Gaussian classes in R^dim or on S^{dim-1}.

    Class centers (seeded by ``seed``, then randomly rotated):

    - ``C <= dim + 1``: a regular simplex (simplex ETF, pairwise cosine -1/(C-1));
    - ``C <= 2 dim``: vertices of the cross-polytope ``±e_i`` (pairwise angle >= pi/2);
    - more classes: ``sphere=False``: C points of an integer grid (minimum distance 1);
      ``sphere=True``: directions spread by greedy farthest-point selection.

    ``sphere=False``: the centers are scaled so that the minimal distance between two means is
    ``separation`` (default 1.0) and class c is :class:`GaussianClass` ``(mean_c, std)``;
    ``std`` defaults to ``separation / (4 sqrt(dim))`` (a typical point lies a quarter of the
    separation from its mean). ``sphere=True``: class c is :class:`SphericalCapClass`
    ``(u_c, std)`` with unit centers (``separation`` must be left ``None``); ``std`` defaults to
    ``tan(Delta / 4) / sqrt(dim - 1)`` with Delta the minimal angle between centers.

    **Guarantee** (``disjoint=True``, "non-overlapping classes" of Awasthi et al. 2022): every
    class is truncated to a support that meets no other class's support. Euclidean: with d_min
    the minimal distance between means, class c lives in the closed ball of radius
    ``r = (1 - margin) d_min / 2`` around its mean; two such balls are disjoint (by the triangle
    inequality a common point would put two means within ``2r < d_min``), with a gap of
    ``margin * d_min`` between them. Sphere: with Delta the minimal angle between centers, class c
    lives in the cap of angular radius ``(1 - margin) Delta / 2``; caps are disjoint by the
    triangle inequality for geodesic distance. ``disjoint=False`` gives plain, overlapping
    Gaussians (projected normals).

    Args:
        C: number of classes (>= 2). dim: input dimension (>= 1; >= 2 with ``sphere``).
        prior: class prior (``None``: balanced). margin: in (0, 1), the relative gap kept
            between supports. seed: seeds the layout (the samples use the generator passed to
            ``sample``). dtype: dtype of the samples (default float32).
    """
    C, dim, margin, separation, std = _check_mixture_args(
        C, dim, std=std, separation=separation, disjoint=disjoint, sphere=sphere, margin=margin
    )
    gen = make_generator(seed)
    out_dtype = _out_dtype(dtype)
    centers = _mixture_centers(C, dim, sphere, gen)
    if sphere:
        samplers = _cap_classes(centers, std, margin, disjoint, out_dtype)
    else:
        samplers = _ball_classes(centers, std, separation, margin, disjoint, out_dtype)
    return LatentClassModel(samplers, prior)


def _check_mixture_args(
    C: int,
    dim: int,
    *,
    std: float | None,
    separation: float | None,
    disjoint: bool,
    sphere: bool,
    margin: float,
) -> tuple[int, int, float, float | None, float | None]:
    """The checked arguments of :func:`gaussian_mixture`: ``(C, dim, margin, separation, std)``
    (a one-line ValueError naming the first bad one)."""
    C = as_positive_int("C", C)
    if C < 2:
        raise ValueError(f"C must be an integer >= 2 (a latent-class model needs two classes: "
                         f"a negative of another class must exist); got {C}")
    dim = as_positive_int("dim", dim)
    if not isinstance(disjoint, bool):
        raise ValueError(f"disjoint must be True or False; got {disjoint!r}")
    if not isinstance(sphere, bool):
        raise ValueError(f"sphere must be True or False; got {sphere!r}")
    margin = check_unit_interval("margin", margin)
    if margin == 0.0:
        raise ValueError("margin must lie in (0, 1); got 0.0")
    if sphere and dim < 2:
        raise ValueError(f"dim must be >= 2 with sphere=True (a sphere S^(dim-1)); got {dim}")
    if sphere and separation is not None:
        raise ValueError("separation: not used with sphere=True (centers are unit vectors)")
    if separation is not None:
        separation = check_positive("separation", separation)
    if std is not None:
        std = check_positive("std", std)
    return C, dim, margin, separation, std


def _mixture_centers(C: int, dim: int, sphere: bool, generator: torch.Generator) -> torch.Tensor:
    """The (C, dim) float64 class centers of :func:`gaussian_mixture` (its layout rules), then
    randomly rotated; not yet scaled or normalized."""
    if C <= dim + 1:
        centers = _simplex(C, dim)
    elif C <= 2 * dim:
        centers = _cross_polytope(C, dim)
    elif sphere:
        centers = _spread_directions(C, dim, generator)
    else:
        centers = _grid(C, dim)
    return centers @ _random_rotation(dim, generator).T


def _cap_classes(
    centers: torch.Tensor, std: float | None, margin: float, disjoint: bool, dtype: torch.dtype
) -> list[Any]:
    """The classes of :func:`gaussian_mixture` on the sphere: projected normals around the unit
    centers, in disjoint caps when ``disjoint``."""
    C, dim = centers.shape
    centers = centers / centers.norm(dim=1, keepdim=True)
    ang = _angles_between(centers)
    ang.fill_diagonal_(math.inf)
    min_angle = float(ang.min())
    sd = std if std is not None else math.tan(min_angle / 4.0) / math.sqrt(dim - 1)
    cap = (1.0 - margin) * min_angle / 2.0 if disjoint else None
    return [SphericalCapClass(centers[c], sd, cap, dtype=dtype) for c in range(C)]


def _ball_classes(
    centers: torch.Tensor,
    std: float | None,
    separation: float | None,
    margin: float,
    disjoint: bool,
    dtype: torch.dtype,
) -> list[Any]:
    """The classes of :func:`gaussian_mixture` in R^dim: Gaussians around the centers scaled to
    the minimal distance ``separation``, truncated to disjoint balls when ``disjoint``."""
    C, dim = centers.shape
    sep = 1.0 if separation is None else separation
    dist = torch.cdist(centers, centers)
    dist.fill_diagonal_(math.inf)
    centers = centers * (sep / float(dist.min()))
    dist = torch.cdist(centers, centers)
    dist.fill_diagonal_(math.inf)
    d_min = float(dist.min())
    sd = std if std is not None else sep / (4.0 * math.sqrt(dim))
    radius = (1.0 - margin) * d_min / 2.0 if disjoint else None
    return [GaussianClass(centers[c], sd, radius, dtype=dtype) for c in range(C)]


# --------------------------------------------------------------------------------------------
# Bao et al.'s circle toy
# --------------------------------------------------------------------------------------------


class CircleClass:
    """One class of Bao et al.'s 2-D "circle" toy: points at distance ``radius`` from 0.

    Faithful to ``_generate_data_circle`` in ``code/toy_contrastive.py`` of
    ``nzw0301/gap-contrastive-and-supervised-losses`` (Bao, Nagano & Nozawa 2022): a
    point is ``radius * u / ||u||`` with ``u`` uniform on the square ``[-0.5, 0.5)^2``. The
    direction is therefore *not* uniform in angle: it favours the diagonals (within each octant
    ``tan`` of the angle to the nearest axis is uniform on [0, 1]). A ``u`` equal to 0 (which
    the original would leave at 0) is redrawn. Randomness comes from a ``torch.Generator``, so
    the draws differ from the original's NumPy ``RandomState`` stream.
    """

    def __init__(self, radius: float, *, dtype: torch.dtype | None = None) -> None:
        self.radius = check_positive("radius", radius)
        self.dtype = _out_dtype(dtype)
        self.input_shape: tuple[int, ...] = (2,)

    def __repr__(self) -> str:
        return f"CircleClass(radius={self.radius:g})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, 2)`` i.i.d. points with norm ``radius``."""
        n = as_positive_int("n", n)
        generator = check_generator(generator)
        u = torch.rand(n, 2, dtype=torch.float64, generator=generator) - 0.5
        norms = u.norm(dim=1)
        bad = norms == 0
        while bool(bad.any()):
            u[bad] = torch.rand(int(bad.sum()), 2, dtype=torch.float64, generator=generator) - 0.5
            norms = u.norm(dim=1)
            bad = norms == 0
        return (self.radius * u / norms[:, None]).to(self.dtype)

    def contains(self, x: torch.Tensor, atol: float | None = None) -> torch.Tensor:
        """``(n,)`` bool: whether each row of x has norm ``radius`` (within ``atol``)."""
        x64 = x.to(torch.float64).reshape(-1, 2)
        if atol is None:
            atol = _default_atol(x, self.radius)
        return (x64.norm(dim=1) - self.radius).abs() <= atol


def circle_toy(
    C: int = 100, prior: Any = None, *, dtype: torch.dtype | None = None
) -> LatentClassModel:
    """Bao et al. 2022's circle toy as a latent-class model: class l (0-based) is a
    :class:`CircleClass` of radius ``(l + 1) / 2``; ``prior`` ``None`` is balanced (the paper's
    1000 points per class). The model has no random parameters: all randomness is in the
    generator given to ``sample`` / ``sample_tuples``."""
    C = as_positive_int("C", C)
    return LatentClassModel([CircleClass((c + 1) / 2.0, dtype=dtype) for c in range(C)], prior)


def circle_toy_dataset(
    C: int = 100,
    per_class: int = 1000,
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed circle-toy data set of Bao et al. 2022 (``conf/dataset/toy/circle.yaml``:
    C = 100, 1000 points per class).

    Returns ``(x, y)``: ``x (C * per_class, 2)`` and ``y (C * per_class,)`` int64, in class blocks
    ``0, 0, ..., 1, 1, ...`` as in the original ``_generate_data_circle``; class l has norm
    ``(l + 1) / 2``. Seeded by ``seed`` (a torch generator; the values differ from the paper's
    NumPy stream). The paper then splits 60/40 (stratified) into train and validation.
    """
    C = as_positive_int("C", C)
    per_class = as_positive_int("per_class", per_class)
    gen = make_generator(seed)
    model = circle_toy(C, dtype=dtype)
    xs = [model.samplers[c].sample(per_class, gen) for c in range(C)]
    y = torch.arange(C, dtype=torch.int64).repeat_interleave(per_class)
    return torch.cat(xs), y

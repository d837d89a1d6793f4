"""Geometry of a representation: neural collapse and dimensional collapse.

Everything is computed from sufficient statistics gathered in **one pass** over (H, y), so data
that do not fit in memory can be streamed: :class:`GeometryAccumulator` keeps, in float64, the
class counts n_c, the class means, the pooled d x d within-class scatter and the per-class scalar
scatter, merged batch by batch with the pairwise update of Chan et al. (no cancellation: zero
within-class spread gives zero up to the rounding of the class means);
:meth:`GeometryAccumulator.finalize` turns them into :class:`GeometryStats` and
:func:`geometry_from_stats` into a :class:`GeometryReport`.
:func:`geometry_report` does both for embeddings held in memory (optionally in batches) and adds
NC4, which needs a second pass.

Notation (N samples, C classes, dimension d; labels 0..C-1, every class present):

- mu_c = class mean, mu_G = (1/N) sum_i h_i the global mean (sample-weighted, Papyan et al.);
- Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T;
- Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T;
- Sigma_T = (1/N) sum_i (h_i - mu_G)(h_i - mu_G)^T, the embedding covariance (Jing et al. 2022);
- M = [mu_1; ..; mu_C] (C x d), Mc = M - 1 mu_G^T (Papyan centering), Mbar = M - 1 mean_c(mu_c)
  (the configuration's own centroid).

Metrics (the attribute names of :class:`GeometryReport`):

- ``nc1`` = tr(Sigma_W Sigma_B^+) / C (Papyan, Han & Donoho 2020). Sigma_B^+ is the
  pseudo-inverse on the eigen-directions of Sigma_B with eigenvalue > ``1e-12`` times the largest
  (Sigma_B has rank <= C - 1). Computed exactly as sum_k v_k^T Sigma_W v_k / s_k^2 from the SVD
  Mc = U diag(s) V^T.
- ``nc2_equinorm`` = Std_c ||mu_c - mu_G|| / Avg_c ||mu_c - mu_G||; ``nc2_equiangularity`` =
  Std_{c<c'} cos(mu_c - mu_G, mu_c' - mu_G); ``nc2_max_angle`` = Avg_{c<c'} |cos + 1/(C-1)|
  (Papyan et al.; the standard deviations are sample standard deviations, ddof = 1, as
  ``torch.std`` in their reference code, and 0 when there is a single term).
- Jiang et al. (2023) notebook variants, on the *uncentered* means of the outputs as given:
  ``unit_norm_error`` = mean_c | ||mu_c|| - 1 | (meaningful for unit-sphere/ball outputs; not
  scale-free), ``zero_sum_norm`` = ||mean_c mu_c||, ``equiangularity_mean`` /
  ``equiangularity_max`` = mean / max over c != c' of |cos(mu_c, mu_c') + 1/(C-1)|, and
  ``within_class_rms`` = mean_c sqrt(mean_{i in c} ||h_i - mu_c||^2), the root-mean-square form of
  their ``inner_dist`` (the mean of the norms itself needs a second pass; the RMS is one-pass).
- ``etf_distance``: the distance of the class-mean configuration to the nearest simplex ETF,
  ``|| G / ||G||_F - P / sqrt(C - 1) ||_F`` with G = Mbar Mbar^T and P = I_C - 11^T / C
  (P / sqrt(C-1) is the Gram matrix of any simplex ETF normalized to unit Frobenius norm; this is
  the NC2 metric of Zhu et al. 2021 applied to the centered class means). It is 0 exactly when the
  centered class means form a simplex ETF of some radius in some orientation (equal norms,
  pairwise cosines -1/(C-1)); it is invariant to rotations, reflections, translations and
  scalings of the embeddings, and lies in [0, 2]. ``etf_distance_uncentered`` uses G = M M^T (no
  centering): 0 exactly when the raw means form an ETF centred at the origin, the Jiang et al.
  notion for normalized outputs (rotation- and scale-invariant, not translation-invariant).
- ``cosine`` (C x C) = cos(mu_c, mu_c') of the raw means (the Jiang et al. heat-maps) and
  ``cosine_centered`` = cos(mu_c - mu_G, mu_c' - mu_G). A zero vector has cosine 0 with every
  vector (a note is added to the report when it happens).
- ``nc3`` = || W / ||W||_F - Mc / ||Mc||_F ||_F for a linear classifier with rows w_c (C x d);
  ``nc4`` = fraction of samples with argmax_c (w_c^T h + b_c) != argmin_c ||h - mu_c|| (Papyan et
  al.). Both None without a classifier; NC4 needs the samples again (:func:`nc4_disagreements`).
- Spectra: ``covariance_spectrum`` = the singular values (= eigenvalues) of Sigma_T, descending
  (Jing et al.'s dimensional-collapse plot); ``class_mean_spectrum`` = those of
  ``np.cov(M.T)`` = Mbar^T Mbar / (C - 1) (the Jiang et al. plot), d values, descending.
- ``effective_rank`` = exp(-sum_i p_i log p_i), p_i = lambda_i / sum_j lambda_j over the
  eigenvalues of Sigma_T (Roy & Vetterli 2007, on the covariance spectrum of Jing et al.);
  ``class_mean_effective_rank`` the same on ``class_mean_spectrum``.
- ``numerical_rank`` = #{lambda_i > rank_tol * lambda_max} on Sigma_T (default 1e-6).
- ``rankme`` = exp(-sum_k p_k log p_k), p_k = sigma_k / sum_j sigma_j + 1e-7, sigma_k the singular
  values of the *uncentered* N x d embedding matrix (Garrido et al. 2023, their epsilon).
- Dimensional collapse (Jing et al. 2022): ``collapsed_dims`` = #{i : lambda_i / sum_j lambda_j <
  collapse_threshold} (default 1e-5: the direction carries less than that fraction of the total
  variance), ``dimensionally_collapsed`` = ``collapsed_dims > 0``, ``dims_99`` = the fewest
  leading directions holding 99% of the variance. Note that neural collapse in d > C - 1 *is*
  dimensional collapse onto C - 1 directions.

The scale-free measures (unchanged when every embedding is multiplied by s > 0 and rotated by an
orthogonal Q): nc1, the NC2 measures, etf_distance(_uncentered), cosines, the effective ranks,
numerical_rank, rankme, the collapse summary, nc3 and nc4 (with the classifier W -> W Q^T).

Bad input raises a one-line ``ValueError`` naming the argument: non-finite embeddings, labels
outside 0..C-1, a class without samples, fewer samples than classes, or class means that all
coincide (then no between-class structure exists and NC1 / NC2 / the ETF distance are undefined).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, ParamSpec, TypeVar

import torch

from contrastlab._tables import measure_table
from contrastlab._validation import (
    check_labels,
    check_positive,
    check_positive_int,
    check_tensor,
    check_unit_interval,
)

__all__ = [
    "GeometryAccumulator",
    "GeometryReport",
    "GeometryStats",
    "check_embeddings",
    "check_label_range",
    "effective_rank",
    "etf_distance",
    "geometry_from_stats",
    "geometry_report",
    "infer_num_classes",
    "nc4_disagreements",
    "rankme",
    "serial_when_small",
]

_F64 = torch.float64
_PINV_RTOL = 1e-12  # eigenvalues of Sigma_B below this fraction of the largest are ignored
_RANKME_EPS = 1e-7  # Garrido et al. 2023
_SERIAL_BELOW = 1 << 18  # embeddings with fewer entries are processed on one CPU thread

_P = ParamSpec("_P")
_R = TypeVar("_R")


def serial_when_small(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` on one intra-op CPU thread when its first argument is a small CPU tensor.

    Small problems are dominated by per-op overhead, and on a busy machine every multi-threaded
    op waits at a barrier for a descheduled worker (measured here: 34 ms instead of 45 us per op
    with 2 threads under load). The thread count is restored afterwards (it is a process-wide
    torch setting).
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        first = args[0] if args else next(iter(kwargs.values()), None)
        threads = torch.get_num_threads()
        small = (
            isinstance(first, torch.Tensor)
            and first.device.type == "cpu"
            and first.numel() < _SERIAL_BELOW
        )
        if not small or threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def check_embeddings(name: str, H: Any) -> torch.Tensor:
    H = check_tensor(name, H, ndim=2, shape_hint="(N, d)")
    if math.isfinite(float(H.detach().sum(dtype=_F64))):  # fast path: NaN/inf propagate
        return H
    finite = torch.isfinite(H)
    if not bool(finite.all()):
        row = int((~finite).any(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"{name} must have finite entries (no NaN or inf); row {row} is not finite"
        )
    return H


def _check_num_classes(num_classes: Any) -> int:
    c = check_positive_int("num_classes", num_classes)
    if c < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    return c


def check_label_range(name: str, y: torch.Tensor, c: int) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"{name}: labels must lie in 0..{c - 1} (num_classes={c}); got {bad}")


def infer_num_classes(num_classes: int | None, *labels: torch.Tensor) -> int:
    if num_classes is not None:
        return _check_num_classes(num_classes)
    top = max(int(y.max()) for y in labels if y.numel())
    if top < 1:
        raise ValueError(
            f"num_classes: the labels hold a single class ({top}); need at least 2 classes"
        )
    return top + 1


def _check_classifier(classifier: Any, c: int, d: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept W, (W,) or (W, b) with W (C, d) and b (C,) or None."""
    if isinstance(classifier, torch.Tensor):
        W, b = classifier, None
    elif isinstance(classifier, (tuple, list)) and len(classifier) in (1, 2):
        W = classifier[0]
        b = classifier[1] if len(classifier) == 2 else None
    else:
        raise ValueError(
            "classifier must be a (C, d) weight tensor W or a tuple (W, b) with b of shape (C,) "
            f"or None; got {type(classifier).__name__}"
        )
    W = check_tensor("classifier W", W, ndim=2, shape_hint=f"({c}, {d})")
    if tuple(W.shape) != (c, d):
        raise ValueError(f"classifier W must have shape ({c}, {d}); got {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("classifier W must have finite entries")
    if float(W.detach().abs().max()) == 0.0:
        raise ValueError("classifier W must not be all zeros (NC3 normalizes it)")
    if b is not None:
        b = check_tensor("classifier b", b, ndim=1, shape_hint=f"({c},)")
        if tuple(b.shape) != (c,):
            raise ValueError(f"classifier b must have shape ({c},); got {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError("classifier b must have finite entries")
    return W, b


# --------------------------------------------------------------------------------------------
# the streaming accumulator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometryStats:
    """Finalized first and second moments (all float64, on the accumulator's device).

    Attributes:
        counts: (C,) int64 class counts n_c.
        class_means: (C, d) mu_c.
        global_mean: (d,) mu_G = (1/N) sum_i h_i.
        sigma_w: (d, d) within-class covariance Sigma_W (1/N normalization).
        sigma_b: (d, d) between-class covariance Sigma_B (1/C normalization, centred at mu_G).
        covariance: (d, d) embedding covariance Sigma_T (1/N normalization).
        second_moment: (d, d) uncentered (1/N) sum_i h_i h_i^T.
        within_sq_dist: (C,) mean_{i in c} ||h_i - mu_c||^2.
    """

    counts: torch.Tensor
    class_means: torch.Tensor
    global_mean: torch.Tensor
    sigma_w: torch.Tensor
    sigma_b: torch.Tensor
    covariance: torch.Tensor
    second_moment: torch.Tensor
    within_sq_dist: torch.Tensor

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def dim(self) -> int:
        return int(self.class_means.shape[1])


class GeometryAccumulator:
    """One-pass accumulator of the sufficient statistics of (H, y), in float64.

    Usage::

        acc = GeometryAccumulator(num_classes=10)
        for H_batch, y_batch in loader:
            acc.update(H_batch, y_batch)
        report = acc.report()            # or stats = acc.finalize()

    It keeps the class counts, the class means, the pooled within-class scatter matrix
    sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T and the per-class scalar scatter, merged batch by
    batch with the pairwise update of Chan, Golub & LeVeque (1979) (each batch is centred at its
    own class means first, so there is no cancellation: zero within-class spread gives zero).
    The total covariance and the uncentered second moment follow exactly from these at
    :meth:`finalize`. Memory is O(C d + d^2) whatever the number of samples; batches may arrive
    in any order (statistics live on the device of the first batch).
    """

    def __init__(self, num_classes: int, dim: int | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.dim = None if dim is None else check_positive_int("dim", dim)
        self._counts: torch.Tensor | None = None
        self._means: torch.Tensor | None = None
        self._scatter: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        """Number of samples seen so far."""
        return 0 if self._counts is None else int(self._counts.sum())

    def update(self, H_batch: torch.Tensor, y_batch: torch.Tensor) -> None:
        """Add a batch: H_batch (n, d) floating, y_batch (n,) integer labels in 0..C-1."""
        H = check_embeddings("H_batch", H_batch)
        y = check_labels("y_batch", y_batch, H.shape[0])
        check_label_range("y_batch", y, self.num_classes)
        self._update(H, y)

    def _update(self, H: torch.Tensor, y: torch.Tensor) -> None:
        """:meth:`update` without the input checks (for callers that made them)."""
        if self.dim is None:
            self.dim = int(H.shape[1])
        elif H.shape[1] != self.dim:
            raise ValueError(f"H_batch must have {self.dim} columns (dim); got {H.shape[1]}")
        c, d = self.num_classes, self.dim
        if self._counts is None:
            dev = H.device
            self._counts = torch.zeros(c, dtype=torch.int64, device=dev)
            self._means = torch.zeros(c, d, dtype=_F64, device=dev)
            self._scatter = torch.zeros(d, d, dtype=_F64, device=dev)
            self._m2 = torch.zeros(c, dtype=_F64, device=dev)
        assert self._means is not None and self._scatter is not None and self._m2 is not None
        dev = self._counts.device
        X = H.detach().to(device=dev, dtype=_F64)
        y = y.to(device=dev, dtype=torch.int64)
        # the batch's own statistics, centred at its class means
        nb = torch.bincount(y, minlength=c)
        nb_f = nb.to(_F64)
        mb = torch.zeros(c, d, dtype=_F64, device=dev).index_add_(0, y, X)
        mb /= nb_f.clamp(min=1.0)[:, None]
        D = X - mb[y]
        m2b = torch.zeros(c, dtype=_F64, device=dev).index_add_(0, y, (D * D).sum(dim=1))
        # pairwise merge (Chan, Golub & LeVeque)
        na_f = self._counts.to(_F64)
        n_f = na_f + nb_f
        safe = n_f.clamp(min=1.0)
        delta = mb - self._means
        w = na_f * nb_f / safe  # 0 for a class new to this batch or absent from it
        self._means += delta * (nb_f / safe)[:, None]
        self._scatter.addmm_(D.T, D)
        self._scatter.addmm_(delta.T * w, delta)
        self._m2 += m2b + w * (delta * delta).sum(dim=1)
        self._counts += nb

    def finalize(self) -> GeometryStats:
        """The moments of everything seen so far (the accumulator stays usable)."""
        c = self.num_classes
        if self._counts is None:
            raise ValueError("H: no samples were accumulated (call update() first)")
        assert self._means is not None and self._scatter is not None and self._m2 is not None
        n_total = self.num_samples
        if n_total < c:
            raise ValueError(
                f"H: need at least num_classes={c} samples (N >= C); got N={n_total}"
            )
        missing = (self._counts == 0).nonzero().flatten().tolist()
        if missing:
            shown = ", ".join(str(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(
                f"y: every class 0..{c - 1} needs at least one sample (labels must cover the "
                f"classes); missing: {shown}"
            )
        n = self._counts.to(_F64)
        means = self._means.clone()
        gmean = (n / n_total) @ means
        mc = means - gmean
        sigma_w = _sym(self._scatter / n_total)
        sigma_b = _sym(mc.T @ mc / c)
        cov = _sym(sigma_w + (mc.T * (n / n_total)) @ mc)
        second = _sym(cov + torch.outer(gmean, gmean))
        return GeometryStats(
            counts=self._counts.clone(),
            class_means=means,
            global_mean=gmean,
            sigma_w=sigma_w,
            sigma_b=sigma_b,
            covariance=cov,
            second_moment=second,
            within_sq_dist=self._m2 / n,
        )

    def report(
        self,
        classifier: Any = None,
        rank_tol: float = 1e-6,
        collapse_threshold: float = 1e-5,
    ) -> GeometryReport:
        """:func:`geometry_from_stats` of :meth:`finalize` (NC4 stays None: it needs a 2nd pass)."""
        return geometry_from_stats(
            self.finalize(),
            classifier=classifier,
            rank_tol=rank_tol,
            collapse_threshold=collapse_threshold,
        )


def _sym(A: torch.Tensor) -> torch.Tensor:
    return (A + A.T) / 2


# --------------------------------------------------------------------------------------------
# metrics on spectra and configurations
# --------------------------------------------------------------------------------------------


def _spectrum(name: str, values: torch.Tensor, all_zero: str = "") -> tuple[torch.Tensor, float]:
    """The checked spectrum (finite nonnegative values with a positive entry; ``all_zero`` is
    appended to the message of the last check) in float64, and its sum."""
    s = check_tensor(name, values, ndim=1).detach().to(_F64)
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} must hold finite nonnegative values")
    total = float(s.sum())
    if total <= 0.0:
        raise ValueError(f"{name} must have a positive entry{all_zero}")
    return s, total


def effective_rank(spectrum: torch.Tensor) -> float:
    """Roy & Vetterli (2007): exp of the Shannon entropy of p_i = s_i / sum_j s_j.

    ``spectrum`` is a vector of nonnegative values (singular values or eigenvalues); zeros
    contribute nothing (0 log 0 = 0). Between 1 and the number of positive entries.
    """
    s, total = _spectrum("spectrum", spectrum, " (all zeros: rank undefined)")
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def rankme(singular_values: torch.Tensor, eps: float = _RANKME_EPS) -> float:
    """RankMe (Garrido et al. 2023): exp(-sum p_k log p_k), p_k = sigma_k / ||sigma||_1 + eps.

    ``singular_values`` are those of the (uncentered) N x d embedding matrix.
    """
    s, total = _spectrum("singular_values", singular_values)
    p = s / total + check_positive("eps", eps)
    return math.exp(float(-(p * p.log()).sum()))


def etf_distance(class_means: torch.Tensor, center: bool = True) -> float:
    """Distance of a (C, d) configuration to the nearest simplex ETF (rotation/scale-free).

    ``|| G / ||G||_F - (I - 11^T/C) / sqrt(C - 1) ||_F`` with G the Gram matrix of the class means,
    centred at their unweighted centroid when ``center`` (then also translation-free). 0 exactly
    for a simplex ETF of any radius and orientation; at most 2. See the module docstring.
    """
    M = check_tensor("class_means", class_means, ndim=2, shape_hint="(C, d)").detach().to(_F64)
    c = M.shape[0]
    if c < 2:
        raise ValueError(f"class_means must have at least 2 rows (C >= 2); got {c}")
    if not bool(torch.isfinite(M).all()):
        raise ValueError("class_means must have finite entries")
    if center:
        M = M - M.mean(dim=0)
    G = M @ M.T
    g = float(torch.linalg.matrix_norm(G))
    if g == 0.0:
        what = "all coincide" if center else "are all zero"
        raise ValueError(f"class_means {what}: the distance to an ETF is undefined")
    P = torch.eye(c, dtype=_F64, device=M.device) - 1.0 / c
    return float(torch.linalg.matrix_norm(G / g - P / math.sqrt(c - 1)))


def _cosines(M: torch.Tensor) -> tuple[torch.Tensor, bool]:
    norms = M.norm(dim=1)
    zero = norms == 0
    safe = torch.where(zero, torch.ones_like(norms), norms)
    U = M / safe[:, None]
    return U @ U.T, bool(zero.any())


def _std(x: torch.Tensor) -> float:
    """Sample standard deviation (ddof = 1); 0 for a single value."""
    return float(x.std()) if x.numel() > 1 else 0.0


@serial_when_small
def nc4_disagreements(
    H: torch.Tensor,
    class_means: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor | None = None,
    batch_size: int = 65536,
) -> int:
    """Number of rows h of H with argmax_c (w_c^T h + b_c) != argmin_c ||h - mu_c|| (NC4 counts).

    Sum it over batches and divide by N for a streamed NC4. Computed in float64 in chunks.
    """
    H = check_embeddings("H", H)
    M = check_tensor("class_means", class_means, ndim=2, shape_hint="(C, d)")
    c, d = M.shape
    if H.shape[1] != d:
        raise ValueError(f"H must have {d} columns like class_means; got {H.shape[1]}")
    Wc, bc = _check_classifier((W, b), c, d)
    bs = check_positive_int("batch_size", batch_size)
    dev = H.device
    M64 = M.detach().to(device=dev, dtype=_F64)
    W64 = Wc.detach().to(device=dev, dtype=_F64)
    b64 = None if bc is None else bc.detach().to(device=dev, dtype=_F64)
    half_sq = (M64 * M64).sum(dim=1) / 2
    count = 0
    for start in range(0, H.shape[0], bs):
        X = H[start : start + bs].detach().to(_F64)
        logits = X @ W64.T
        if b64 is not None:
            logits = logits + b64
        # argmin ||h - mu_c||^2 = argmax (h^T mu_c - ||mu_c||^2 / 2)
        ncc = (X @ M64.T - half_sq).argmax(dim=1)
        count += int((logits.argmax(dim=1) != ncc).sum())
    return count


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class GeometryReport:
    """Neural- and dimensional-collapse measures of one representation (see module docstring).

    ``to_dict()`` gives a JSON-serializable dict of every field but ``stats`` (the float64
    moments, kept for further analysis).
    """

    num_samples: int
    num_classes: int
    dim: int
    class_counts: list[int]
    nc1: float
    trace_within: float
    trace_between: float
    nc2_equinorm: float
    nc2_equiangularity: float
    nc2_max_angle: float
    unit_norm_error: float
    zero_sum_norm: float
    equiangularity_mean: float
    equiangularity_max: float
    within_class_rms: float
    etf_distance: float
    etf_distance_uncentered: float
    nc3: float | None
    nc4: float | None
    cosine: list[list[float]]
    cosine_centered: list[list[float]]
    covariance_spectrum: list[float]
    class_mean_spectrum: list[float]
    effective_rank: float
    class_mean_effective_rank: float
    numerical_rank: int
    rank_tol: float
    rankme: float
    collapse_threshold: float
    collapsed_dims: int
    dimensionally_collapsed: bool
    dims_99: int
    notes: list[str] = field(default_factory=list)
    stats: GeometryStats | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field except ``stats``, as plain Python numbers, lists and strings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name != "stats":
                out[f.name] = getattr(self, f.name)
        return out

    def to_text(self, spectrum_head: int = 10) -> str:
        """A readable two-column table of the scalar measures and the leading spectra."""
        k = min(spectrum_head, self.dim)
        total = sum(self.covariance_spectrum) or 1.0
        frac = ", ".join(f"{v / total:.3g}" for v in self.covariance_spectrum[:k])
        cm_total = sum(self.class_mean_spectrum) or 1.0
        cm_frac = ", ".join(f"{v / cm_total:.3g}" for v in self.class_mean_spectrum[:k])
        etf_cos = -1.0 / (self.num_classes - 1)
        rows: list[tuple[str, str]] = [
            ("samples / classes / dim", f"{self.num_samples} / {self.num_classes} / {self.dim}"),
            ("class counts (min..max)", f"{min(self.class_counts)}..{max(self.class_counts)}"),
            ("NC1 = tr(Sw Sb^+)/C", _fmt(self.nc1)),
            ("tr Sigma_W / tr Sigma_B", f"{_fmt(self.trace_within)} / {_fmt(self.trace_between)}"),
            ("NC2 equinorm (centered)", _fmt(self.nc2_equinorm)),
            ("NC2 equiangularity (centered)", _fmt(self.nc2_equiangularity)),
            ("NC2 mean |cos + 1/(C-1)| (centered)", _fmt(self.nc2_max_angle)),
            ("unit-norm error (uncentered)", _fmt(self.unit_norm_error)),
            ("zero-sum norm (uncentered)", _fmt(self.zero_sum_norm)),
            ("|cos + 1/(C-1)| mean / max (unc.)",
             f"{_fmt(self.equiangularity_mean)} / {_fmt(self.equiangularity_max)}"),
            ("within-class RMS distance", _fmt(self.within_class_rms)),
            ("ETF distance (centered / uncentered)",
             f"{_fmt(self.etf_distance)} / {_fmt(self.etf_distance_uncentered)}"),
            ("ETF cosine -1/(C-1)", _fmt(etf_cos)),
            ("NC3 (classifier vs means)", "-" if self.nc3 is None else _fmt(self.nc3)),
            ("NC4 (classifier vs NCC)", "-" if self.nc4 is None else _fmt(self.nc4)),
            ("effective rank (covariance)", _fmt(self.effective_rank)),
            ("effective rank (class means)", _fmt(self.class_mean_effective_rank)),
            (f"numerical rank (tol {self.rank_tol:g})", str(self.numerical_rank)),
            ("RankMe", _fmt(self.rankme)),
            (f"dims with < {self.collapse_threshold:g} of variance", str(self.collapsed_dims)),
            ("dimensionally collapsed", "yes" if self.dimensionally_collapsed else "no"),
            ("dims holding 99% of variance", str(self.dims_99)),
            (f"covariance spectrum / total (top {k})", frac),
            (f"class-mean spectrum / total (top {k})", cm_frac),
        ]
        text = measure_table("geometry", rows)
        if self.notes:
            text += "\n" + "\n".join(f"note: {n}" for n in self.notes)
        return text


def _fmt(x: float) -> str:
    return f"{x:.6g}"


class _Angles(NamedTuple):
    """The NC2 and cosine measures of :func:`geometry_from_stats` (phase 2)."""

    nc2_equinorm: float
    nc2_equiangularity: float
    nc2_max_angle: float
    cos_u: torch.Tensor  # cosines of the uncentered class means
    cos_c: torch.Tensor  # cosines of the centred class means
    dev_u: torch.Tensor  # |cos + 1/(C-1)| off the diagonal, uncentered


class _Spectra(NamedTuple):
    """The spectra of :func:`geometry_from_stats` (phase 3)."""

    evals: torch.Tensor  # covariance eigenvalues, decreasing, clamped at 0
    cm_spec: torch.Tensor  # class-mean spectrum, padded with zeros to d
    raw: torch.Tensor  # singular values of the uncentered N x d embedding matrix
    dims_99: int
    collapsed: int


def _nc1(stats: GeometryStats, Mc: torch.Tensor) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C from the centred class means ``Mc`` (phase 1); raises
    when all class means coincide."""
    _, s, Vh = torch.linalg.svd(Mc, full_matrices=False)
    if float(s[0]) == 0.0:
        raise ValueError(
            "H: all class means coincide (between-class covariance is zero); NC1, NC2 and the "
            "ETF distance are undefined"
        )
    keep = s * s > _PINV_RTOL * float(s[0]) ** 2
    V = Vh[keep]
    proj = ((V @ stats.sigma_w) * V).sum(dim=1)  # v_k^T Sigma_W v_k
    return max(float((proj / (s[keep] ** 2)).sum()), 0.0)


def _angles(stats: GeometryStats, Mc: torch.Tensor, notes: list[str]) -> _Angles:
    """NC2 (equinorm, equiangularity, max-angle) of the centred class means ``Mc`` and the
    cosines of both the class means and ``Mc`` (phase 2); a note when a class mean is zero."""
    M, c = stats.class_means, stats.num_classes
    norms_c = Mc.norm(dim=1)
    nc2_equinorm = _std(norms_c) / float(norms_c.mean())
    off = ~torch.eye(c, dtype=torch.bool, device=M.device)
    upper = torch.triu(torch.ones(c, c, dtype=torch.bool, device=M.device), diagonal=1)
    cos_c, zero_c = _cosines(Mc)
    shift = 1.0 / (c - 1)
    nc2_equiangularity = _std(cos_c[upper])
    nc2_max_angle = float((cos_c[upper] + shift).abs().mean())
    cos_u, zero_u = _cosines(M)
    if zero_c or zero_u:
        notes.append("a class mean (or centred class mean) is zero: its cosines are set to 0")
    dev_u = (cos_u[off] + shift).abs()
    return _Angles(nc2_equinorm, nc2_equiangularity, nc2_max_angle, cos_u, cos_c, dev_u)


def _spectra(stats: GeometryStats, collapse_threshold: float) -> _Spectra:
    """The class-mean and covariance spectra, the singular values of the embedding matrix and
    the dimensional-collapse counts (phase 3)."""
    M, c, d, n_total = stats.class_means, stats.num_classes, stats.dim, stats.num_samples
    Mbar = M - M.mean(dim=0)
    _, s_bar, _ = torch.linalg.svd(Mbar, full_matrices=False)
    cm_spec = torch.zeros(d, dtype=_F64, device=M.device)
    cm_spec[: s_bar.shape[0]] = s_bar**2 / (c - 1)

    evals = torch.linalg.eigvalsh(stats.covariance).flip(0).clamp(min=0.0)
    total_var = float(evals.sum())
    if total_var <= 0.0:  # pragma: no cover - excluded by the coinciding-means check
        raise ValueError("H: the embeddings have zero variance")
    frac = evals / total_var
    raw = torch.linalg.eigvalsh(stats.second_moment * n_total).flip(0).clamp(min=0.0).sqrt()
    cum = torch.cumsum(frac, dim=0)
    dims_99 = min(int((cum < 0.99 - 1e-12).sum()) + 1, d)
    collapsed = int((frac < collapse_threshold).sum())
    return _Spectra(evals, cm_spec, raw, dims_99, collapsed)


def _nc3(classifier: Any, stats: GeometryStats, Mc: torch.Tensor) -> float:
    """NC3: || W / ||W||_F - Mc / ||Mc||_F ||_F for the classifier's weight W (phase 4)."""
    W, _ = _check_classifier(classifier, stats.num_classes, stats.dim)
    W64 = W.detach().to(device=Mc.device, dtype=_F64)
    diff = W64 / torch.linalg.matrix_norm(W64) - Mc / torch.linalg.matrix_norm(Mc)
    return float(torch.linalg.matrix_norm(diff))


def geometry_from_stats(
    stats: GeometryStats,
    classifier: Any = None,
    rank_tol: float = 1e-6,
    collapse_threshold: float = 1e-5,
) -> GeometryReport:
    """Every measure of the module docstring from finalized moments (NC4 left None).

    In phases: the argument checks; NC1 (:func:`_nc1`); NC2 and the cosines
    (:func:`_angles`); the spectra (:func:`_spectra`); NC3 with a classifier (:func:`_nc3`);
    the report (:func:`_assemble_geometry`, which computes the remaining scalar measures).

    Args:
        stats: from :meth:`GeometryAccumulator.finalize`.
        classifier: None, a (C, d) weight tensor W, or (W, b): gives NC3.
        rank_tol: relative eigenvalue threshold of the numerical rank, in [0, 1).
        collapse_threshold: fraction of the total variance below which a direction counts as
            collapsed, in [0, 1).
    """
    if not isinstance(stats, GeometryStats):
        raise ValueError(f"stats must be a GeometryStats; got {type(stats).__name__}")
    rank_tol = check_unit_interval("rank_tol", rank_tol)
    collapse_threshold = check_unit_interval("collapse_threshold", collapse_threshold)
    notes: list[str] = []
    Mc = stats.class_means - stats.global_mean
    nc1 = _nc1(stats, Mc)
    angles = _angles(stats, Mc, notes)
    spectra = _spectra(stats, collapse_threshold)
    nc3 = None if classifier is None else _nc3(classifier, stats, Mc)
    return _assemble_geometry(stats, nc1, angles, spectra, nc3, rank_tol, collapse_threshold,
                              notes)


def _assemble_geometry(
    stats: GeometryStats,
    nc1: float,
    angles: _Angles,
    spectra: _Spectra,
    nc3: float | None,
    rank_tol: float,
    collapse_threshold: float,
    notes: list[str],
) -> GeometryReport:
    """The :class:`GeometryReport` of :func:`geometry_from_stats` (last phase): the measures of
    the earlier phases plus the traces, the uncentered-mean measures, the ETF distances, the
    effective ranks, the numerical rank and RankMe."""
    M, evals = stats.class_means, spectra.evals
    return GeometryReport(
        num_samples=stats.num_samples,
        num_classes=stats.num_classes,
        dim=stats.dim,
        class_counts=[int(v) for v in stats.counts.tolist()],
        nc1=nc1,
        trace_within=float(torch.trace(stats.sigma_w).clamp(min=0.0)),
        trace_between=float(torch.trace(stats.sigma_b)),
        nc2_equinorm=angles.nc2_equinorm,
        nc2_equiangularity=angles.nc2_equiangularity,
        nc2_max_angle=angles.nc2_max_angle,
        unit_norm_error=float((M.norm(dim=1) - 1.0).abs().mean()),
        zero_sum_norm=float(M.mean(dim=0).norm()),
        equiangularity_mean=float(angles.dev_u.mean()),
        equiangularity_max=float(angles.dev_u.max()),
        within_class_rms=float(stats.within_sq_dist.sqrt().mean()),
        etf_distance=etf_distance(M, center=True),
        etf_distance_uncentered=etf_distance(M, center=False),
        nc3=nc3,
        nc4=None,
        cosine=angles.cos_u.cpu().tolist(),
        cosine_centered=angles.cos_c.cpu().tolist(),
        covariance_spectrum=evals.cpu().tolist(),
        class_mean_spectrum=spectra.cm_spec.cpu().tolist(),
        effective_rank=effective_rank(evals),
        class_mean_effective_rank=effective_rank(spectra.cm_spec),
        numerical_rank=int((evals > rank_tol * float(evals[0])).sum()),
        rank_tol=rank_tol,
        rankme=rankme(spectra.raw),
        collapse_threshold=collapse_threshold,
        collapsed_dims=spectra.collapsed,
        dimensionally_collapsed=spectra.collapsed > 0,
        dims_99=spectra.dims_99,
        notes=notes,
        stats=stats,
    )


@serial_when_small
def geometry_report(
    H: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None = None,
    classifier: Any = None,
    batch_size: int | None = None,
    rank_tol: float = 1e-6,
    collapse_threshold: float = 1e-5,
) -> GeometryReport:
    """Neural- and dimensional-collapse report of embeddings H (N, d) with labels y (N,).

    Args:
        H: (N, d) floating embeddings (any dtype/device; statistics in float64).
        y: (N,) integer labels in 0..C-1; every class must occur.
        num_classes: C (default: max(y) + 1).
        classifier: None, W (C, d) or (W, b): adds NC3 and NC4.
        batch_size: accumulate in batches of this many rows (bounds the float64 copies);
            None: one batch.
        rank_tol: relative threshold of the numerical rank.
        collapse_threshold: variance fraction below which a direction counts as collapsed.
    """
    H = check_embeddings("H", H)
    y = check_labels("y", y, H.shape[0])
    c = infer_num_classes(num_classes, y)
    check_label_range("y", y, c)
    bs = H.shape[0] if batch_size is None else check_positive_int("batch_size", batch_size)
    acc = GeometryAccumulator(c, dim=H.shape[1])
    for start in range(0, H.shape[0], bs):
        acc._update(H[start : start + bs], y[start : start + bs])
    report = geometry_from_stats(
        acc.finalize(),
        classifier=classifier,
        rank_tol=rank_tol,
        collapse_threshold=collapse_threshold,
    )
    if classifier is not None:
        W, b = _check_classifier(classifier, c, H.shape[1])
        assert report.stats is not None
        miss = nc4_disagreements(H, report.stats.class_means, W, b, batch_size=bs)
        report.nc4 = miss / H.shape[0]
    return report

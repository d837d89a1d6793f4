"""A small deterministic L-BFGS for smooth objectives on flat float64 numpy vectors.

Nocedal & Wright, *Numerical Optimization* (2nd ed., 2006): the two-loop recursion
(Algorithm 7.4) for the search direction, with the initial Hessian scaling
gamma = s^T y / y^T y (eq. 7.20), and a line search satisfying the strong Wolfe conditions
(Algorithms 3.5 and 3.6, c1 = 1e-4, c2 = 0.9) with safeguarded cubic interpolation in the zoom
(eq. 3.59). The first step is scaled to min(1, 1 / ||g||_1), as in torch's L-BFGS.

Why not scipy's L-BFGS-B: its compact-form updates call BLAS/LAPACK on vectors and small
matrices, and OpenBLAS splits those reductions by thread count for long vectors, so the iterates
(and the optimum to the last bits) depended on ``OMP_NUM_THREADS``. Here every inner product is
``numpy.sum(a * b)`` (pairwise summation, never threaded): the same input gives the same bits
for any thread count.

Stopping: the largest gradient entry is <= ``gtol`` (torch's ``tolerance_grad``), or
``max_iter`` iterations, or no progress (the line search finds no decrease, or the step is below
1e-16 in every coordinate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]
Point = tuple[float, float, float]  # a trial step of the line search: (step, f, slope)
C1, C2 = 1e-4, 0.9
MAX_EVALS_PER_SEARCH = 25


@dataclass(frozen=True)
class LbfgsResult:
    """The last iterate ``x``, its value and gradient, and the iterations done."""

    x: np.ndarray
    value: float
    grad: np.ndarray
    iterations: int


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """The inner product by pairwise summation (no BLAS: independent of the thread count)."""
    return float(np.sum(a * b))


def two_loop(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """H g for the L-BFGS inverse-Hessian H of the (s, y, 1 / y^T s) ``pairs`` (N&W Alg. 7.4)."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * dot(s, q)
        alphas.append(a)
        q -= a * y
    if pairs:
        s, y, _ = pairs[-1]
        q *= dot(s, y) / dot(y, y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        q += (a - rho * dot(y, q)) * s
    return q


def cubic_min(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float:
    """Minimizer of the cubic interpolating (f, f') at a and b (N&W eq. 3.59), safeguarded to
    the middle 80% of the interval (bisection when the cubic has no minimizer there)."""
    lo, hi = min(a, b), max(a, b)
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    t = 0.5 * (a + b)
    if disc >= 0.0:
        d2 = np.sign(b - a) * np.sqrt(disc)
        denom = db - da + 2.0 * d2
        if denom != 0.0:
            t = b - (b - a) * (db + d2 - d1) / denom
    margin = 0.1 * (hi - lo)
    return float(min(max(t, lo + margin), hi - margin))


def strong_wolfe(
    fun: Objective, x: np.ndarray, f0: float, d0: float, direction: np.ndarray, step: float
) -> tuple[float, float, np.ndarray] | None:
    """(step, f, g) at a step satisfying the strong Wolfe conditions (N&W Alg. 3.5/3.6), or the
    best Armijo step found within the budget, or None when no decrease was found."""
    prev: Point = (0.0, f0, d0)
    best: tuple[float, float, np.ndarray] | None = None
    lo: Point | None = None
    hi: Point | None = None
    for i in range(MAX_EVALS_PER_SEARCH):
        if lo is not None and hi is not None:
            if abs(hi[0] - lo[0]) <= 1e-12 * max(lo[0], hi[0]):
                break  # the bracket shrank to rounding: no better step to find
            step = cubic_min(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2])
        f, g = fun(x + step * direction)
        slope = dot(g, direction)
        armijo = f <= f0 + C1 * step * d0
        if armijo and (best is None or f < best[1]):
            best = (step, f, g)
        if armijo and abs(slope) <= -C2 * d0:
            return step, f, g
        point = (step, f, slope)
        if lo is None:  # bracketing phase (Alg. 3.5)
            if not armijo or (i > 0 and f >= prev[1]):
                lo, hi = prev, point
            elif slope >= 0.0:
                lo, hi = point, prev
            else:
                prev, step = point, 2.0 * step
        elif not armijo or f >= lo[1]:  # zoom phase (Alg. 3.6)
            hi = point
        else:
            assert hi is not None
            if slope * (hi[0] - lo[0]) >= 0.0:
                hi = lo
            lo = point
    return best


def minimize_lbfgs(
    fun: Objective, x0: np.ndarray, max_iter: int, gtol: float, history: int = 10
) -> LbfgsResult:
    """Minimize ``fun`` (value and gradient) from ``x0`` (module docstring)."""
    x = np.array(x0, dtype=np.float64)
    f, g = fun(x)
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    it = 0
    while it < max_iter and float(np.abs(g).max()) > gtol:
        direction = -two_loop(g, pairs)
        d0 = dot(g, direction)
        if d0 >= 0.0:  # not a descent direction: forget the curvature pairs
            pairs, direction = [], -g
            d0 = -dot(g, g)
        step = min(1.0, 1.0 / float(np.abs(g).sum())) if not pairs else 1.0
        found = strong_wolfe(fun, x, f, d0, direction, step)
        if found is None or found[1] >= f:
            break
        t, f_new, g_new = found
        s, y = t * direction, g_new - g
        sy = dot(s, y)
        if sy > 1e-12 * dot(y, y):
            pairs = [*pairs, (s, y, 1.0 / sy)][-history:]
        x, f, g = x + s, f_new, g_new
        it += 1
        if float(np.abs(s).max()) <= 1e-16:
            break
    return LbfgsResult(x, f, g, it)

"""Float32 precision of the tiled kernels against the dense paths (issue 14).

For one case (a kernel, B, beta, t, the input norm, the normalization) the loss and the gradient
of every input are computed three ways: the dense path in float64 (the reference), the dense path
in float32, and the tiled kernel in float32 (``tiled=True``, or the kernel function itself). The
errors are relative: ``|l - l_ref| / |l_ref|`` for the loss, ``||g - g_ref|| / ||g_ref||`` for the
gradients of all inputs together.

**The dense float32 error is a rounding noise, so it is measured as one.** Where a row's
gradient is ill-conditioned (two logits of magnitude 10^4-10^5 within a few units of each other;
the debiasing numerator of Chuang et al. near its cancellation) one or two rows carry the whole
error of either path, and the error of one evaluation is a draw: the dense path can be 10 times
more (or less) accurate than its own typical error on one input. The dense error is therefore the
largest over :data:`ROUNDINGS` evaluations of the *same* problem rounded differently: the feature
coordinates permuted (dot products, norms and every result are unchanged in exact arithmetic, but
float32 accumulates in another order). The tiled kernel is evaluated once, on the original order.

The criterion (:func:`within`): ``tiled_err <= 3 * dense_err + FLOOR`` for the loss and for the
gradient, ``FLOOR = 1e-6`` (where the dense path is exact to a few ulps). :func:`ratio` reports
``tiled_err / (dense_err + FLOOR / 3)`` (<= 3 passes).

Inputs (float64, then cast): two correlated views ``z2 = z1 + noise`` with row norms in
[0.5, 1.5] * norm (so ``ball`` projects some rows and not others), d = 16, labels ``i % 10``.

Run ``python -m tests.losses.precision`` for the table of the worst ratio per kernel over the
full grid (B in {64, 600, 2048}, beta in {0, 1, 30}, t in {0.05, 0.5}, norms {1, 100}, every
normalization; the exact Jiang losses at B = 64); the test (``test_tiled_precision.py``) runs
a subset.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

import contrastlab.losses as L
from contrastlab.losses import kernels as T
from contrastlab.losses.kernels import engine as E
from contrastlab.losses.kernels import jiang as TJ
from contrastlab.losses.kernels.indexed import tiled_nce_indexed

F64 = torch.float64
D = 16
FLOOR = 1e-6
FACTOR = 3.0
ROUNDINGS = 3  # the original feature order and two permutations

Fn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Case:
    kernel: str
    b: int
    beta: float
    t: float
    norm: float
    normalize: str

    @property
    def id(self) -> str:
        return (
            f"{self.kernel}-B{self.b}-beta{self.beta:g}-t{self.t:g}-norm{self.norm:g}-"
            f"{self.normalize}"
        )


def _rows(shape: tuple[int, ...], seed: int, norm: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64)
    radius = 0.5 + torch.rand((*shape[:-1], 1), generator=g, dtype=F64)
    return x / x.norm(dim=-1, keepdim=True) * radius * norm


def _views(b: int, seed: int, norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    z1 = _rows((b, D), seed, norm)
    return z1, z1 + _rows((b, D), seed + 1, norm)


@contextlib.contextmanager
def _method(module: object, name: str, value: str) -> Iterator[None]:
    """Temporarily set a module-level switch (the self-similarity / plug-in tilings)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _in_batch(name: str, c: Case) -> tuple[Fn, tuple[torch.Tensor, ...]]:
    z1, z2 = _views(c.b, 1, c.norm)
    lab = torch.arange(c.b) % 10
    base = name.split("/")[0]

    def fn(x1: torch.Tensor, x2: torch.Tensor, tiled: bool) -> torch.Tensor:
        if base == "info_nce":
            return L.info_nce(x1, x2, c.t, c.normalize, tiled=tiled)
        if base == "supcon":
            return L.supcon(x1, x2, lab, c.t, c.normalize, tiled=tiled)
        if base == "supcon-unlabeled":
            return L.supcon(x1, x2, None, c.t, c.normalize, tiled=tiled)
        return L.debiased_hard(x1, x2, c.t, 0.1, c.beta, c.normalize, tiled=tiled)

    if name.endswith("/rows"):
        def rows_fn(x1: torch.Tensor, x2: torch.Tensor, tiled: bool) -> torch.Tensor:
            with _method(E, "SELF_SIMILARITY_METHOD", "rows"):
                return fn(x1, x2, tiled)

        return rows_fn, (z1, z2)
    return fn, (z1, z2)


def _nce(name: str, c: Case) -> tuple[Fn, tuple[torch.Tensor, ...]]:
    a, p = _views(c.b, 4, c.norm)
    if name.startswith("nce_indexed"):
        pool = _rows((2 * c.b, D), 6, c.norm)
        g = torch.Generator().manual_seed(7)
        idx = torch.randint(0, 2 * c.b, (c.b, 32), generator=g)
        method = name.split("/")[1]

        def fn_idx(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor, tiled: bool) -> torch.Tensor:
            if tiled:
                return tiled_nce_indexed(x, y, n, idx, "infonce", c.t, c.normalize, method=method)
            return L.nce_loss(x, y, n, "infonce", c.t, c.normalize, tiled=False,
                              negative_index=idx)

        return fn_idx, (a, p, pool)
    negs = _rows((c.b, D), 6, c.norm)
    loss = "infonce" if name == "nce" else "infonce-mean"

    def fn(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor, tiled: bool) -> torch.Tensor:
        if tiled and name.endswith("/blocks"):  # the block engine (not the one-block path)
            return T.tiled_nce_loss(x, y, n, loss, c.t, c.normalize, block_rows=48)
        return L.nce_loss(x, y, n, loss, c.t, c.normalize, tiled=tiled)

    return fn, (a, p, negs)


def _jiang(name: str, c: Case) -> tuple[Fn, tuple[torch.Tensor, ...]]:
    z = _views(c.b, 11, c.norm)[1]
    lab = torch.arange(c.b) % 10
    family, _, variant = name.partition("/")
    negatives = "other-class" if family in ("scl", "hscl") else "marginal"
    beta = c.beta if family in ("hscl", "hucl") else 0.0
    exact: bool | str = True if variant == "exact" else "mean"

    def fn(x: torch.Tensor, tiled: bool) -> torch.Tensor:
        return L.hard_contrastive(x, lab, negatives, beta, 16, c.t, c.normalize, exact,
                                  tiled=tiled)

    if variant == "rows":
        def rows_fn(x: torch.Tensor, tiled: bool) -> torch.Tensor:
            with _method(TJ, "PLUG_IN_METHOD", "rows"):
                return fn(x, tiled)

        return rows_fn, (z,)
    return fn, (z,)


#: kernel name -> (its default normalization, whether it has a hardness beta, the builder)
KERNELS: dict[str, tuple[str, bool, Callable[[str, Case], tuple[Fn, tuple[torch.Tensor, ...]]]]]
KERNELS = {
    "info_nce": ("sphere", False, _in_batch),
    "info_nce/rows": ("sphere", False, _in_batch),
    "supcon": ("sphere", False, _in_batch),
    "supcon-unlabeled": ("sphere", False, _in_batch),
    "debiased_hard": ("sphere", True, _in_batch),
    "debiased_hard/rows": ("sphere", True, _in_batch),
    "nce": ("sphere", False, _nce),
    "nce/mean": ("sphere", False, _nce),
    "nce/blocks": ("sphere", False, _nce),
    "nce_indexed/bank": ("sphere", False, _nce),
    "nce_indexed/gather": ("sphere", False, _nce),
    "scl": ("ball", False, _jiang),
    "hscl": ("ball", True, _jiang),
    "ucl": ("ball", False, _jiang),
    "hucl": ("ball", True, _jiang),
    "hscl/rows": ("ball", True, _jiang),
    "hucl/rows": ("ball", True, _jiang),
    "hscl/exact": ("ball", True, _jiang),
    "hucl/exact": ("ball", True, _jiang),
}
NORMALIZATIONS = ("sphere", "ball", "none")


@dataclass(frozen=True)
class Errors:
    dense: tuple[float, float]  # (loss, gradient), the largest over ROUNDINGS
    tiled: tuple[float, float]


def errors(case: Case, roundings: int = ROUNDINGS) -> Errors:
    """The relative errors of the dense and the tiled float32 paths (module docstring); the
    dense error is the largest over ``roundings`` feature orders."""
    fn, inputs = KERNELS[case.kernel][2](case.kernel, case)

    def run(dtype: torch.dtype, tiled: bool, perm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xs = [x.to(dtype).detach().requires_grad_(True) for x in inputs]
        out = fn(*(x[..., perm] for x in xs), tiled=tiled)
        grads = torch.autograd.grad(out, xs)
        return out.detach().to(F64), torch.cat([g.to(F64).flatten() for g in grads])

    def rel(got: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        loss = float((got[0] - ref[0]).abs() / ref[0].abs().clamp_min(1e-300))
        grad = float((got[1] - ref[1]).norm() / ref[1].norm().clamp_min(1e-300))
        return loss, grad

    ident = torch.arange(D)
    ref = run(F64, False, ident)
    gen = torch.Generator().manual_seed(123)
    perms = [ident] + [torch.randperm(D, generator=gen) for _ in range(roundings - 1)]
    dense = [rel(run(torch.float32, False, p)) for p in perms]
    tiled = rel(run(torch.float32, True, ident))
    return Errors((max(e[0] for e in dense), max(e[1] for e in dense)), tiled)


def ratio(err: Errors) -> tuple[float, float]:
    """(loss, gradient): tiled error / (dense error + FLOOR / FACTOR); <= FACTOR passes."""
    return tuple(  # type: ignore[return-value]
        err.tiled[i] / (err.dense[i] + FLOOR / FACTOR) for i in range(2)
    )


def within(err: Errors) -> bool:
    return all(err.tiled[i] <= FACTOR * err.dense[i] + FLOOR for i in range(2))


def grid(
    kernel: str,
    batches: tuple[int, ...] = (64, 600, 2048),
    temperatures: tuple[float, ...] = (0.05, 0.5),
    norms: tuple[float, ...] = (1.0, 100.0),
    normalizations: tuple[str, ...] | None = None,
    betas: tuple[float, ...] = (0.0, 1.0, 30.0),
) -> list[Case]:
    """The cases of one kernel (beta only where the kernel has one; the exact Jiang losses at
    B = 64 only: their quadrature is O(B^2 Q / C) per anchor block, minutes at B = 600)."""
    default, has_beta, _ = KERNELS[kernel]
    norms_ = normalizations or NORMALIZATIONS
    if kernel.startswith(("hscl", "hucl")):
        betas = tuple(b for b in betas if b > 0) or (1.0,)  # beta = 0: scl / ucl
    elif not has_beta:
        betas = (0.0,)
    out = []
    for b, beta, t, norm, nz in itertools.product(batches, betas, temperatures, norms, norms_):
        if kernel.endswith("/exact") and b > 64:
            continue
        out.append(Case(kernel, b, beta, t, norm, nz))
    # the default normalization first
    return sorted(out, key=lambda c: c.normalize != default)


def report(kernels: list[str]) -> None:
    """Print the worst ratio per kernel over its full grid, and every failing case."""
    print(f"{'kernel':20s} {'cases':>5s} {'worst loss':>10s} {'worst grad':>10s}  worst case "
          "(tiled / dense f32 error vs float64)")
    for name in kernels:
        t0 = time.perf_counter()
        worst: dict[int, tuple[float, Case, Errors]] = {}
        cases = grid(name)
        for case in cases:
            err = errors(case)
            r = ratio(err)
            for i in range(2):
                if i not in worst or r[i] > worst[i][0]:
                    worst[i] = (r[i], case, err)
            if not within(err):
                print(f"  FAIL {case.id}: dense {err.dense}, tiled {err.tiled}")
        rg, cg, eg = worst[1]
        print(f"{name:20s} {len(cases):5d} {worst[0][0]:10.2f} {rg:10.2f}  {cg.id}: grad "
              f"{eg.tiled[1]:.2e} / {eg.dense[1]:.2e} ({time.perf_counter() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    report(sys.argv[1:] or list(KERNELS))

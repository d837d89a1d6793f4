"""Global negatives across processes (``torch.distributed``): gather the batch, keep the gradient.

With data parallelism each of the W processes (ranks) holds a slice of the global batch. For a
contrastive loss the negatives of an anchor are the other rows of the batch, so the loss on the
local slices is *not* the loss on the global batch. :func:`gathered` fixes this: every batch
tensor argument of the loss is replaced by its global version (the slices of all ranks
concatenated in rank order) before the loss is called, so every rank computes

    L = loss(global batch)                   the single-process loss on the concatenated batch,
                                             identical on every rank.

Gradient (exact, not approximate). Features are gathered by :func:`all_gather_with_grad`, whose
backward all-reduces (sums) the incoming gradient over the ranks and returns this rank's slice.
Every rank computed the same L, so the sum is W copies of the same gradient and the gradient that
reaches this rank's local features x_r is::

    grad_r = W * dL/dx_r

DistributedDataParallel averages the parameter gradients over the ranks (a sum times 1/W), so::

    (1/W) sum_r W * dL/dx_r * dx_r/dtheta = sum_r dL/dx_r * dx_r/dtheta = dL/dtheta,

exactly the single-process gradient of the loss on the concatenated batch. A tensor that is *not*
gathered (e.g. a shared negative pool replicated on every rank, ``"per-anchor"`` below) gets the
plain gradient dL/dP on every rank; DDP's average of W identical values is again dL/dP. Without
DDP (plain autograd) the local gradients are W times too large: divide by W yourself.

Cost: every rank computes the whole loss on the N_global rows (the tiled kernels keep the memory
at O(N d); the time is that of the single-process loss, not 1/W of it) plus one all_gather per
batch tensor forward and one all_reduce of the N_global x d gradient per feature tensor backward.

Randomness: losses that draw negatives (``scl``/``hscl``/``ucl``/``hucl`` with ``exact=False``)
must draw the *same* negatives on every rank, or the ranks compute different losses and the
gradient above is wrong. Pass a ``torch.Generator`` seeded identically on every rank (and used
identically since); with ``gather=True`` the wrappers here check that its state is the same on
every rank and raise ``ValueError`` when it is not, or when the loss samples without one.

Uneven batches: the slices must have the same size on every rank (``all_gather`` needs equal
sizes); the sizes are gathered first and an uneven final batch raises a one-line ``ValueError``
naming them (use ``drop_last=True``).

Usage (this module holds the gathering utilities and imports no loss; the library's losses take
``gather=True`` themselves, and :mod:`contrastlab.losses.gathered` has them as wrapped functions)::

    from contrastlab import distributed as D, losses as L
    loss = L.info_nce(z1_local, z2_local, temperature=0.5, gather=True)
    loss = L.scl(z_local, y_local, k=64, generator=g_same_seed_on_every_rank, gather=True)
    my_loss = D.gathered(my_loss, {"z": "features", "y": "labels"})   # any loss function

When ``torch.distributed`` is not initialized (or W = 1) ``gather=True`` is a no-op.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "BATCH_ARGS",
    "GATHER_KINDS",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "call_gathered",
    "check_even_sizes",
    "gathered",
    "init_from_env",
    "rank_and_world",
    "same_generator_state",
    "samples_negatives",
]

GATHER_KINDS = ("features", "labels", "per-anchor")
"""How a batch argument is gathered: ``features`` (all_gather with gradient), ``labels`` (no
gradient: labels, indices), ``per-anchor`` (features gathered only when they carry a batch
dimension of per-anchor rows, ndim >= 3 as nce_loss's (B, k, d) negatives; a 2-D shared pool is
left as is, i.e. treated as replicated: it must then be the same on every rank)."""

Group = Any  # torch.distributed.ProcessGroup | None


def _active(group: Group = None) -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world(group: Group = None) -> tuple[int, int]:
    """(rank, world size) in ``group`` (default: the global group); (0, 1) when
    ``torch.distributed`` is not initialized."""
    if not _active(group):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def init_from_env(backend: str = "gloo") -> tuple[int, int, bool]:
    """(rank, world, whether this call created the process group). An initialized process
    group is used as is; otherwise, when torchrun's environment says ``WORLD_SIZE`` > 1 (with
    ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), one is started with ``backend`` (``gloo`` for
    CPU tensors, the training loop's case; ``nccl`` for CUDA tensors). (0, 1, False) otherwise.
    The caller that created the group should ``destroy_process_group()`` when done."""
    if not dist.is_available():
        return 0, 1, False
    if dist.is_initialized():
        rank, world = rank_and_world()
        return rank, world, False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend)
        rank, world = rank_and_world()
        return rank, world, True
    return 0, 1, False


def _gather_sizes(tensors: list[torch.Tensor], group: Group) -> list[list[int]]:
    """sizes[r][i] = dim 0 of tensor i on rank r (one small all_gather for all tensors)."""
    _, world = rank_and_world(group)
    local = torch.tensor([int(t.shape[0]) for t in tensors], dtype=torch.int64)
    device = tensors[0].device if tensors else torch.device("cpu")
    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    local = local.to(device)
    out = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(out, local, group=group)
    return [o.tolist() for o in out]


def check_even_sizes(
    tensors: list[torch.Tensor], group: Group = None, names: list[str] | None = None
) -> None:
    """Raise ``ValueError`` (on every rank) unless each tensor has the same dim 0 on every rank."""
    if not tensors or rank_and_world(group)[1] == 1:
        return
    sizes = _gather_sizes(tensors, group)
    for i in range(len(tensors)):
        per_rank = [s[i] for s in sizes]
        if len(set(per_rank)) > 1:
            what = f" ({names[i]})" if names else ""
            raise ValueError(
                f"uneven batch across ranks{what}: sizes {per_rank}; use drop_last=True"
            )


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all_gather equal-size slices, concatenated in rank order along dim 0.
    Backward: all_reduce (SUM) the gradient of the global tensor, return this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Group) -> torch.Tensor:
        rank, world = rank_and_world(group)
        ctx.group = group
        ctx.rank = rank
        ctx.n = x.shape[0]
        x = x.contiguous()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x, group=group)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def all_gather_with_grad(
    x: torch.Tensor, group: Group = None, check_sizes: bool = True
) -> torch.Tensor:
    """The global tensor (the W slices concatenated in rank order along dim 0), differentiable:
    the gradient of this rank's slice is the sum over the ranks of their gradients of it (module
    docstring). Identity when not distributed. ``check_sizes``: gather the sizes first and raise
    a one-line ``ValueError`` if they differ (otherwise the caller guarantees it)."""
    if rank_and_world(group)[1] == 1:
        return x
    if check_sizes:
        check_even_sizes([x], group)
    out: torch.Tensor = _AllGatherWithGrad.apply(x, group)
    return out


def all_gather_no_grad(
    x: torch.Tensor, group: Group = None, check_sizes: bool = True
) -> torch.Tensor:
    """The global tensor without gradient (labels, indices); identity when not distributed."""
    if rank_and_world(group)[1] == 1:
        return x
    if check_sizes:
        check_even_sizes([x], group)
    x = x.detach().contiguous()
    out = [torch.empty_like(x) for _ in range(rank_and_world(group)[1])]
    dist.all_gather(out, x, group=group)
    return torch.cat(out, dim=0)


def _state_digest(generator: torch.Generator) -> torch.Tensor:
    state = generator.get_state().to(torch.int64)
    weights = torch.arange(1, state.numel() + 1, dtype=torch.int64)
    return torch.stack([state.sum(), (state * weights).sum(), (state * weights * weights).sum()])


def same_generator_state(generator: torch.Generator, group: Group = None) -> bool:
    """Whether ``generator`` has the same state on every rank (a digest is all-gathered)."""
    _, world = rank_and_world(group)
    if world == 1:
        return True
    digest = _state_digest(generator)
    if dist.get_backend(group) == "nccl":
        digest = digest.to(torch.device("cuda", torch.cuda.current_device()))
    out = [torch.empty_like(digest) for _ in range(world)]
    dist.all_gather(out, digest, group=group)
    return all(bool(torch.equal(o, out[0])) for o in out)


def call_gathered(
    loss_fn: Callable[..., torch.Tensor],
    batch_args: Mapping[str, str],
    *args: Any,
    group: Group = None,
    samples: Callable[[inspect.BoundArguments], bool] | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """``loss_fn(*args, **kwargs)`` with the arguments named in ``batch_args`` replaced by their
    global versions (kinds: :data:`GATHER_KINDS`; ``None`` arguments are left as is).

    Conventions: every rank computes the loss of the whole gathered batch (the same value on
    every rank); features are gathered with :func:`all_gather_with_grad`, labels without
    gradient, so each rank's input gradient is ``world * dL/dx_local`` and DDP's average is
    exactly the single-process gradient of the concatenated batch.

    ``samples(bound)``: whether this call draws random negatives; if so the call needs a
    ``generator`` argument whose state is the same on every rank (checked; ``ValueError``
    otherwise). A ``generator`` that is given is always checked.

    This is the one-line route for a loss with a ``gather`` flag::

        if gather:
            return call_gathered(info_nce, BATCH_ARGS["info_nce"], z1, z2, temperature=...)
    """
    for name, kind in batch_args.items():
        if kind not in GATHER_KINDS:
            raise ValueError(f"batch_args[{name!r}] must be one of {GATHER_KINDS}; got {kind!r}")
    _, world = rank_and_world(group)
    if world == 1:
        return loss_fn(*args, **kwargs)
    bound = inspect.signature(loss_fn).bind(*args, **kwargs)
    bound.apply_defaults()
    selected: list[tuple[str, str, torch.Tensor]] = []
    for name, kind in batch_args.items():
        if name not in bound.arguments:
            raise ValueError(f"batch_args: {loss_fn.__name__} has no argument {name!r}")
        value = bound.arguments[name]
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name}: a batch argument must be a tensor; got "
                             f"{type(value).__name__}")
        if kind == "per-anchor" and value.ndim < 3:
            continue  # a shared pool: replicated, not gathered
        selected.append((name, kind, value))
    check_even_sizes([v for _, _, v in selected], group, [n for n, _, _ in selected])
    if "generator" in bound.arguments:
        gen = bound.arguments["generator"]
        if gen is None and samples is not None and samples(bound):
            raise ValueError(
                f"{loss_fn.__name__} with gather samples negatives from the global batch: pass "
                "generator=torch.Generator().manual_seed(s) with the same seed on every rank"
            )
        if gen is not None and not same_generator_state(gen, group):
            raise ValueError(
                "generator: its state differs across ranks; seed it identically on every rank "
                "so that every rank draws the same negatives"
            )
    for name, kind, value in selected:
        if kind == "labels":
            bound.arguments[name] = all_gather_no_grad(value, group, check_sizes=False)
        else:
            bound.arguments[name] = all_gather_with_grad(value, group, check_sizes=False)
    return loss_fn(*bound.args, **bound.kwargs)


def gathered(
    loss_fn: Callable[..., torch.Tensor],
    batch_args: Mapping[str, str],
    samples: Callable[[inspect.BoundArguments], bool] | None = None,
) -> Callable[..., torch.Tensor]:
    """Wrap ``loss_fn`` so that ``gather=True`` (or ``group=...``) computes it on the global batch.

    Args:
        loss_fn: any loss ``(tensors..., options...) -> tensor``.
        batch_args: parameter name -> kind (:data:`GATHER_KINDS`): which arguments are batch
            slices (explicit: a tensor is never guessed to be a batch from its shape).
        samples: ``bound_arguments -> bool``, whether a call draws random negatives (then a
            ``generator`` argument with the same state on every rank is required).

    The wrapper's signature is ``(*args, gather=False, group=None, **kwargs)``; without
    ``gather``/``group`` it calls ``loss_fn`` unchanged. See the module docstring for the value
    (the single-process loss on the concatenated batch, identical on every rank) and the
    gradient (W x dL/dx_local per rank; DDP's 1/W average gives exactly dL/dtheta).
    """
    for name, kind in batch_args.items():
        if kind not in GATHER_KINDS:
            raise ValueError(f"batch_args[{name!r}] must be one of {GATHER_KINDS}; got {kind!r}")
    spec = dict(batch_args)

    @functools.wraps(loss_fn)
    def wrapper(*args: Any, gather: bool = False, group: Group = None,
                **kwargs: Any) -> torch.Tensor:
        if not gather and group is None:
            return loss_fn(*args, **kwargs)
        return call_gathered(loss_fn, spec, *args, group=group, samples=samples, **kwargs)

    return wrapper


def samples_negatives(bound: inspect.BoundArguments) -> bool:
    """The ``samples`` predicate of scl/hscl/ucl/hucl: they draw negatives when exact is False."""
    exact = bound.arguments.get("exact", False)
    return exact is False


BATCH_ARGS: dict[str, dict[str, str]] = {
    "info_nce": {"z1": "features", "z2": "features"},
    "supcon": {"z1": "features", "z2": "features", "labels": "labels"},
    "debiased_hard": {"z1": "features", "z2": "features"},
    "nce_loss": {"anchor": "features", "positive": "features", "negatives": "per-anchor",
                 "negative_index": "labels"},
    "hard_contrastive": {"z": "features", "labels": "labels"},
    "scl": {"z": "features", "labels": "labels"},
    "hscl": {"z": "features", "labels": "labels"},
    "ucl": {"z": "features", "labels": "labels"},
    "hucl": {"z": "features", "labels": "labels"},
}
"""The batch arguments of the library's losses (for :func:`call_gathered`). ``nce_loss``: per-anchor
(B, k, d) negatives are gathered with the anchors; a shared (k, d) pool is replicated (the same
on every rank, e.g. a memory bank); to use a pool sharded over the ranks instead, gather it
first with :func:`all_gather_with_grad`. A (B, k) ``negative_index`` into an (M, d) pool is
gathered with the anchors (no gradient, rank order), the pool replicated: the global row b keeps
its own negatives ``pool[index[b]]``."""

"""Small helpers shared by the losses: batch reduction, the two-view layout, the argument checks
that several losses share, and the entry of every public loss (:func:`loss_inputs`: finite
embeddings, float32 compute for low-precision inputs; :func:`gathers`: the ``gather`` / ``group``
route to the batch gathered over the processes)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import torch
import torch.nn.functional as F

from contrastlab._validation import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_same_shape,
    check_tensor,
    check_unit_interval,
)

REDUCTIONS = ("mean", "sum", "none")
#: Input dtypes that the losses compute in float32 (and whose loss is float32).
LOW_PRECISION = (torch.float16, torch.bfloat16)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise a one-line ValueError naming ``x`` if it holds NaN or inf: one
    ``torch.isfinite(x).all()`` (the count of bad entries only on failure)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} contains NaN or inf values ({bad} of {x.numel()} entries); pass "
            "check_finite=False to skip this check"
        )


def _autocast_device(x: torch.Tensor) -> str | None:
    """The device type of ``x`` if autocast is on for it, else None."""
    try:
        return x.device.type if torch.is_autocast_enabled(x.device.type) else None
    except (RuntimeError, ValueError):  # a device type without autocast
        return None


def loss_inputs(*names: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator of a public loss function whose embedding arguments are ``names`` (it must also
    take ``check_finite: bool = True``). On every call, before the function runs:

    - unless ``check_finite=False``: each named tensor must be finite (:func:`check_finite`, one
      ``isfinite(x).all()`` per input), so NaN or inf embeddings fail with one line naming the
      tensor, not with a NaN loss or an error from deep inside torch (e.g. ``multinomial``);
    - float16 / bfloat16 named tensors are cast to float32 (differentiably: their gradients come
      back in their own dtype) and autocast is turned off inside the loss, so the dense and the
      tiled paths both compute in float32 and both return a **float32** loss (float64 inputs:
      float64).

    Arguments that are not tensors are left to the function's own validation.
    """

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        params = list(inspect.signature(fn).parameters)
        if "check_finite" not in params:
            raise TypeError(f"{fn.__name__} must take a check_finite argument")
        where = [(name, params.index(name)) for name in names]
        flag_pos = params.index("check_finite")
        call = cast(Callable[..., _R], fn)

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            pos = list(args)
            flag = kwargs.get("check_finite", pos[flag_pos] if flag_pos < len(pos) else True)
            device: str | None = None
            for name, i in where:
                x = pos[i] if i < len(pos) else kwargs.get(name)
                if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                    continue
                if flag:
                    check_finite(name, x)
                if x.dtype in LOW_PRECISION:
                    if i < len(pos):
                        pos[i] = x.float()
                    else:
                        kwargs[name] = x.float()
                device = device or _autocast_device(x)
            if device is None:
                return call(*pos, **kwargs)
            with torch.autocast(device_type=device, enabled=False):
                return call(*pos, **kwargs)

        return wrapper

    return decorate


def call_on_gathered(
    loss_fn: Callable[..., torch.Tensor],
    name: str,
    *args: Any,
    group: Any,
    samples: Callable[[inspect.BoundArguments], bool] | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """``loss_fn(*args, **kwargs)`` on the batch gathered over the processes of ``group``:
    :func:`contrastlab.distributed.call_gathered` with the batch arguments ``BATCH_ARGS[name]``
    and ``check_finite=False`` (the caller has checked the embeddings)."""
    from contrastlab.distributed import BATCH_ARGS, call_gathered

    return call_gathered(loss_fn, BATCH_ARGS[name], *args, group=group, samples=samples,
                         check_finite=False, **kwargs)


def gathers(
    name: str, local: Callable[..., torch.Tensor] | None = None,
) -> Callable[[Callable[_P, torch.Tensor]], Callable[_P, torch.Tensor]]:
    """Decorator of a public loss that takes ``gather`` and ``group`` (placed under
    :func:`loss_inputs`): with ``gather=True`` or a process ``group``, the call returns the loss
    of the batch gathered over the processes, :func:`call_on_gathered` of the loss itself with
    its batch arguments ``BATCH_ARGS[name]``; otherwise the function runs as written.

    ``gather="local"``: ``local`` (:mod:`contrastlab.losses.sharded`), called with the loss's
    arguments (but ``tiled``) and ``group``, computes this process's own anchors against the
    gathered batch; a loss without one refuses it (ValueError)."""

    def decorate(fn: Callable[_P, torch.Tensor]) -> Callable[_P, torch.Tensor]:
        sig = inspect.signature(fn)
        params = list(sig.parameters)
        at_gather, at_group = params.index("gather"), params.index("group")
        call = cast(Callable[..., torch.Tensor], fn)

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> torch.Tensor:
            gather = kwargs.get("gather", args[at_gather] if at_gather < len(args) else False)
            group = kwargs.get("group", args[at_group] if at_group < len(args) else None)
            if gather not in (True, False, "local"):
                raise ValueError(f"gather must be True, False or 'local'; got {gather!r}")
            if not gather and group is None:
                return call(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            for flag in ("gather", "group", "check_finite"):
                bound.arguments.pop(flag, None)
            if gather == "local":
                return _call_local(name, local, bound, group)
            return call_on_gathered(wrapper, name, *bound.args, group=group, **bound.kwargs)

        return wrapper

    return decorate


def _call_local(name: str, local: Callable[..., torch.Tensor] | None,
                bound: inspect.BoundArguments, group: Any) -> torch.Tensor:
    """``gather="local"`` of loss ``name`` (:func:`gathers`)."""
    if local is None:
        raise ValueError(f"gather='local' (each process computes its own anchors) is available "
                         f"for info_nce, supcon and debiased_hard; {name} takes gather=True")
    bound.apply_defaults()  # (restores the flags removed by the caller: dropped again here)
    options = {k: v for k, v in bound.arguments.items()
               if k not in ("tiled", "gather", "group", "check_finite")}
    return local(**options, group=group)


def reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a vector of per-anchor (or per-pair) losses: ``mean``, ``sum`` or ``none``."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    return per_item


def check_two_views(z1: torch.Tensor, z2: torch.Tensor, min_batch: int = 1) -> int:
    """Validate two view batches of shape (B, d); return B."""
    check_tensor("z1", z1, ndim=2, shape_hint="(B, d)")
    check_tensor("z2", z2, ndim=2, shape_hint="(B, d)")
    check_same_shape("z1", z1, "z2", z2)
    if z1.shape[0] < min_batch:
        raise ValueError(f"z1: the batch size B must be >= {min_batch}; got {z1.shape[0]}")
    return int(z1.shape[0])


def check_anchor_positive(anchor: torch.Tensor, positive: torch.Tensor) -> None:
    """Validate the (B, d) anchors and their (B, d) positives of an explicit-k loss."""
    check_tensor("anchor", anchor, ndim=2, shape_hint="(B, d)")
    check_tensor("positive", positive, ndim=2, shape_hint="(B, d)")
    if positive.shape != anchor.shape:
        raise ValueError(
            f"positive must have the anchor's shape {tuple(anchor.shape)}; got "
            f"{tuple(positive.shape)}"
        )


def check_feature_dim(name: str, x: torch.Tensor, d: int) -> None:
    """Require the last dimension of ``x`` (the feature dimension) to be the anchors' ``d``."""
    if x.shape[-1] != d:
        raise ValueError(f"{name} must have feature dimension d = {d}; got {x.shape[-1]}")


def check_debiased_args(
    temperature: float, tau_plus: float, beta: float
) -> tuple[float, float, float]:
    """Validate the options of the debiased / hard loss (Chuang et al. 2020; Robinson et al.
    2021): t > 0, tau_plus in [0, 1), beta >= 0; return them as floats."""
    t = check_positive("temperature", temperature)
    tau = check_unit_interval("tau_plus", tau_plus)
    return t, tau, check_nonnegative("beta", beta)


def base_temperature_factor(t: float, base_temperature: float | None) -> float:
    """SupCon's ``t / base_temperature`` factor (the reference code of Khosla et al. 2020), with
    ``base_temperature > 0`` checked; 1 when ``base_temperature`` is None (the paper's eq. (2))."""
    if base_temperature is None:
        return 1.0
    return t / check_positive("base_temperature", base_temperature)


def view_positive_index(batch: int, device: torch.device) -> torch.Tensor:
    """Index of each row's other view in the stacked 2B layout [z1; z2]: i <-> i + B."""
    idx = torch.arange(2 * batch, device=device)
    return (idx + batch) % (2 * batch)


def debiased_anchor_loss(
    log_reweight: torch.Tensor, s_pos: torch.Tensor, t: float, tau: float, log_n: float
) -> torch.Tensor:
    """Per-anchor debiased / hard loss ``log(1 + Ng / e^{s_pos})`` in log space (Chuang et al.
    2020, Eq. 6; Robinson et al. 2021, Eq. 3, as in their code):
    ``Ng = max((reweight - tau N e^{s_pos}) / (1 - tau), N e^{-1/t})``.

    ``log_reweight`` is ``log`` of the (importance-reweighted) sum over the N negatives,
    ``s_pos`` the positive logit, ``log_n = log N``. A non-positive numerator (the clamp is
    then active) is handled without taking the log of a negative number.
    """
    if tau > 0.0:
        log_sub = math.log(tau) + log_n + s_pos
        gap = log_sub - log_reweight  # raw numerator > 0  <=>  gap < 0
        safe_gap = gap.clamp(max=-1e-30)
        log_raw = torch.where(
            gap < 0,
            log_reweight + torch.log(-torch.expm1(safe_gap)),
            torch.full_like(gap, float("-inf")),
        )
        log_ng = log_raw - math.log1p(-tau)
    else:
        log_ng = log_reweight
    log_ng = torch.maximum(log_ng, torch.full_like(log_ng, log_n - 1.0 / t))
    return F.softplus(log_ng - s_pos)

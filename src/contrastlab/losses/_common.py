"""Small helpers shared by the losses: batch reduction, the two-view layout, and the entry
checks of every public loss (:func:`loss_inputs`: finite embeddings, float32 compute for
low-precision inputs; :func:`check_generator`)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import torch
import torch.nn.functional as F

from contrastlab._validation import check_choice, check_same_shape, check_tensor

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


def check_generator(generator: Any) -> torch.Generator | None:
    """Require a ``torch.Generator`` or None (a one-line ValueError otherwise)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None; got {type(generator).__name__}"
        )
    return generator


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

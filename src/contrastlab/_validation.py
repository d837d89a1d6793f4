"""Input checks that fail early with one clear line naming the argument and what is allowed.

Every public function of contrastlab validates its arguments with these helpers, so that bad input
raises ``ValueError("<name>: ...")`` instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported by the checks of tensors only: the others stay light
    import torch


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise a ValueError listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {shown}; got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    """Require a finite real number > 0."""
    if not _is_real(value) or not (float(value) > 0.0) or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    """Require a finite real number >= 0."""
    if not _is_real(value) or not (float(value) >= 0.0) or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> float:
    """Require 0 <= value < 1 (or <= 1 with ``closed_right``)."""
    ok = _is_real(value) and float(value) >= 0.0
    ok = ok and (float(value) <= 1.0 if closed_right else float(value) < 1.0)
    if not ok:
        bound = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must lie in {bound}; got {value!r}")
    return float(value)


def check_positive_int(name: str, value: int) -> int:
    """Require an integer >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return value


def as_index(name: str, value: Any, expected: str) -> int:
    """``operator.index(value)``: an integer of any integer type (Python, NumPy, 0-d torch) as a
    Python int; bools and floats are refused with ``ValueError("<name> must be <expected>; got
    <value!r>")``. The caller checks the range (with the same message)."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {expected}; got {value!r}") from None


def as_positive_int(name: str, value: Any) -> int:
    """Require an integer >= 1 of any integer type (Python, NumPy, 0-d torch) and return it as a
    Python int; bools and floats are refused (:func:`check_positive_int` takes Python ints
    only)."""
    return check_positive_int(name, as_index(name, value, "an integer >= 1"))


def check_generator(generator: Any) -> torch.Generator | None:
    """Require a ``torch.Generator`` or None."""
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None; got {type(generator).__name__}"
        )
    return generator


def check_tensor(
    name: str,
    x: Any,
    ndim: int | Sequence[int],
    *,
    floating: bool = True,
    shape_hint: str = "",
) -> torch.Tensor:
    """Require a torch tensor with the given number of dimensions (and a floating dtype)."""
    import torch

    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    hint = f" {shape_hint}" if shape_hint else ""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor{hint}; got {type(x).__name__}")
    if x.ndim not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(
            f"{name} must have {want} dimensions{hint}; got shape {tuple(x.shape)}"
        )
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype; got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty; got shape {tuple(x.shape)}")
    return x


def as_float64_vector(name: str, value: Any, *, items: str, vector: str) -> torch.Tensor:
    """``value`` (a tensor, an array or a sequence of numbers) as a non-empty 1-D float64 CPU
    tensor; otherwise ``ValueError("<name> must be a 1-D <items>; ...")`` when it is not
    numeric, ``"<name> must be a non-empty 1-D <vector>; got shape ..."`` when it has the wrong
    shape."""
    import torch

    try:
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a 1-D {items}; got {type(value).__name__}") from None
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D {vector}; got shape {tuple(t.shape)}")
    return t


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Require two tensors of identical shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the same shape as {name_a} {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def check_labels(name: str, labels: Any, n: int) -> torch.Tensor:
    """Require an integer label vector of length ``n``."""
    import torch

    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer class labels, shape ({n},)")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},); got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels; got dtype {labels.dtype}")
    return labels


def _is_real(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        f = float(value)
    except (TypeError, ValueError):
        return False
    return f == f  # not NaN

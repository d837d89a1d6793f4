"""The shared input checks and helpers of the downstream evaluations
(:mod:`contrastlab.evaluation`)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from contrastlab._validation import (
    check_choice,
    check_labels,
    check_unit_interval,
)
from contrastlab.data.base import class_holdout
from contrastlab.geometry import (
    check_embeddings,
    check_label_range,
    infer_num_classes,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# input checks and helpers
# --------------------------------------------------------------------------------------------


class Split(NamedTuple):
    """A checked train / test split: the features and int64 labels on the training features'
    device, and the number of classes."""

    Htr: torch.Tensor
    ytr: torch.Tensor
    Hte: torch.Tensor
    yte: torch.Tensor
    c: int


def check_split(
    H_train: Any, y_train: Any, H_test: Any, y_test: Any, num_classes: int | None
) -> Split:
    Htr = check_embeddings("H_train", H_train)
    ytr = check_labels("y_train", y_train, Htr.shape[0])
    Hte = check_embeddings("H_test", H_test)
    yte = check_labels("y_test", y_test, Hte.shape[0])
    if Hte.shape[1] != Htr.shape[1]:
        raise ValueError(
            f"H_test must have the dimension of H_train ({Htr.shape[1]}); got {Hte.shape[1]}"
        )
    if num_classes is None and yte.numel() and ytr.numel() and int(yte.max()) > int(ytr.max()):
        raise ValueError(
            f"y_test: label {int(yte.max())} exceeds every training label (max "
            f"{int(ytr.max())}); fix the labels or pass num_classes"
        )
    c = infer_num_classes(num_classes, ytr, yte)
    check_label_range("y_train", ytr, c)
    check_label_range("y_test", yte, c)
    check_coverage(ytr, c)
    yte = yte.to(device=Htr.device, dtype=torch.int64)
    return Split(Htr, ytr.to(device=Htr.device, dtype=torch.int64), Hte.to(Htr.device), yte, c)


def check_coverage(y: torch.Tensor, c: int, name: str = "y_train") -> None:
    n = y.shape[0]
    if n < c:
        raise ValueError(f"{name}: need at least num_classes={c} training samples; got {n}")
    counts = torch.bincount(y.to(torch.int64), minlength=c)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        shown = ", ".join(str(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{name}: every class 0..{c - 1} needs at least one training sample (labels must "
            f"cover the classes); missing: {shown}"
        )


def check_dtype(dtype: Any) -> torch.dtype:
    return check_choice("dtype", dtype, (torch.float32, torch.float64))


def to_plain(value: Any) -> Any:
    """Dataclasses / dicts / lists to JSON-ready Python values, dropping tensor fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not isinstance(getattr(value, f.name), torch.Tensor) and f.name != "stats"
        }
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class PlainResult:
    """The base of the evaluation results (dataclasses): :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready Python values, without its tensor fields."""
        return to_plain(self)


def holdout_split(
    y: torch.Tensor, fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held_out), each sorted, of the stratified hold-out of
    :func:`contrastlab.data.base.class_holdout` (``round(fraction * n_c)`` samples of each class
    c, halves rounded up; at least one sample of every class stays in ``kept``), with a
    ``torch.Generator`` seeded with ``seed``: the validation split of the linear probe and the
    test split of ``contrastlab geometry`` on a file without one."""
    if not isinstance(y, torch.Tensor) or y.ndim != 1:
        raise ValueError("y must be a 1-D torch.Tensor of integer class labels")
    y = check_labels("y", y, y.shape[0])
    frac = check_unit_interval("fraction", fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    yc = y.detach().cpu().to(torch.int64)
    held = class_holdout(yc - int(yc.min()) if yc.numel() else yc, frac,
                         torch.Generator().manual_seed(seed))
    return (~held).nonzero().flatten().to(y.device), held.nonzero().flatten().to(y.device)


def cross_entropy_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logp = torch.log_softmax(logits.to(F64), dim=1)
    ce = float(-logp.gather(1, y[:, None]).mean())
    acc = float((logits.argmax(dim=1) == y).to(F64).mean())
    return acc, ce

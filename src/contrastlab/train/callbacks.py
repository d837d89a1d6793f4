"""Callbacks of the training loop, in the manner of Lightning's: a :class:`Callback` base whose
hooks do nothing, the :class:`FitState` they are shown, and :class:`CallbackList`, which calls
every hook of a list of callbacks in order.

:func:`contrastlab.train.train` calls, on rank 0 only (like its ``on_epoch`` keyword):

- ``on_fit_start(fit)`` once the model is built and any checkpoint resumed (``fit.start_epoch``
  epochs are done, their metrics in ``fit.history``);
- ``on_step(step, loss)`` after every optimizer step: ``step`` counts the optimizer steps of the
  run from 1 (resumed epochs included), ``loss`` is the step's training loss as a float when
  some callback of the run sets :attr:`Callback.wants_step_loss`, else None (so that no
  callback costs a device synchronization per step unless it asks for one);
- ``on_epoch(epoch, metrics, seconds)`` after every epoch (1-based; its metrics, as in
  :attr:`contrastlab.train.TrainResult.epochs`; its wall time), before the epoch's checkpoint;
- ``on_fit_end(fit)`` when the call ends, ``fit.status`` set: ``done``, ``nan``, ``stopped``
  (``stop_after``) or ``failed`` (an exception, re-raised after the hooks).

A callback must not change the training: it reads ``metrics`` and ``fit`` and never draws from
torch's random generators. The loggers of ``train.loggers`` are callbacks
(:mod:`contrastlab.train.loggers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from contrastlab.train.config import ExperimentConfig

__all__ = ["Callback", "CallbackList", "EpochFunction", "FitState"]


@dataclass
class FitState:
    """What the hooks of a call of :func:`contrastlab.train.train` are shown.

    Attributes:
        cfg: the resolved config of the run.
        run_id: its run id.
        start_epoch: the epochs done before this call (resumed from a checkpoint; 0: fresh).
        steps_per_epoch: the optimizer steps of an epoch.
        model: the encoder being trained.
        history: the per-epoch metrics so far (those of the resumed epochs first); the loop
            appends to it.
        status: ``running``, then ``done``, ``nan``, ``stopped`` or ``failed``.
        reports: the final reports (``done`` only).
        error: what stopped a ``nan`` or ``failed`` run.
    """

    cfg: ExperimentConfig
    run_id: str
    start_epoch: int
    steps_per_epoch: int
    model: nn.Module
    history: list[dict[str, Any]]
    status: str = "running"
    reports: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Callback:
    """The base of every callback: hooks that do nothing (the module docstring says when they
    are called). ``wants_step_loss``: True to receive the step's loss as a float in
    :meth:`on_step` (a device synchronization per step on an accelerator)."""

    wants_step_loss: bool = False

    def on_fit_start(self, fit: FitState) -> None:
        """The run starts (or resumes, after ``fit.start_epoch`` epochs)."""

    def on_step(self, step: int, loss: float | None) -> None:
        """Optimizer step ``step`` (1-based, over the run) is done; its loss when asked for."""

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        """Epoch ``epoch`` (1-based) is done: its metrics and wall time."""

    def on_fit_end(self, fit: FitState) -> None:
        """The call ends (``fit.status``), normally or by an exception."""


class EpochFunction(Callback):
    """A function ``fn(epoch, metrics, seconds)`` as a callback: the ``on_epoch`` keyword of
    :func:`contrastlab.train.train`."""

    def __init__(self, fn: Callable[[int, dict[str, Any], float], None]) -> None:
        self.fn = fn

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        self.fn(epoch, metrics, seconds)


class CallbackList(Callback):
    """Callbacks called in order, each hook of each; a callback that is not a
    :class:`Callback` is refused with one line."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks[{i}] must be a contrastlab.train.Callback; got "
                                 f"{type(cb).__name__}")
        self.wants_step_loss = any(cb.wants_step_loss for cb in self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def on_fit_start(self, fit: FitState) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(fit)

    def on_step(self, step: int, loss: float | None) -> None:
        for cb in self.callbacks:
            cb.on_step(step, loss)

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        for cb in self.callbacks:
            cb.on_epoch(epoch, metrics, seconds)

    def on_fit_end(self, fit: FitState) -> None:
        """Every callback's ``on_fit_end``, even when one of them raises (the first error is
        raised after all were called): each closes what it opened."""
        first: BaseException | None = None
        for cb in self.callbacks:
            try:
                cb.on_fit_end(fit)
            except Exception as exc:  # every callback must be closed
                first = first or exc
        if first is not None:
            raise first

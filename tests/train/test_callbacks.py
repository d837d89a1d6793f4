"""Callbacks of the training loop (issue 18, item 1): the hooks are called in order with what
they promise (the step losses only when asked for), across a resume, after an exception and for
a NaN run; the ``on_epoch`` keyword still works; a callback never changes the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.data.registry import load_dataset
from contrastlab.train.callbacks import CallbackList, FitState
from contrastlab.train.config import parse_config

STEPS = 4


def _cfg(**over: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 3, "dim": 4, "n_train": 64,
                                                  "n_test": 32}},
        "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 8}},
        "loss": {"name": "ucl", "k": 4},
        "optim": {"lr": 0.01},
        "train": {"epochs": 3, "batch_size": 16, "steps_per_epoch": STEPS, "progress": False,
                  "threads": 1},
        "eval": {"every": 2, "final_lsup": False, "final_knn": False, "max_train": 64,
                 "max_test": 32},
    }
    for key, value in over.items():
        raw[key] = {**raw[key], **value}
    return parse_config(raw)


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("synthetic", seed=0, classes=3, dim=4, n_train=64, n_test=32)


class Recorder(T.Callback):
    """Records every hook call (copies of what it is shown)."""

    def __init__(self, wants: bool = False) -> None:
        self.wants_step_loss = wants
        self.calls: list[tuple[Any, ...]] = []

    def on_fit_start(self, fit: FitState) -> None:
        self.calls.append(("start", fit.start_epoch, fit.steps_per_epoch, len(fit.history),
                           fit.status, fit.run_id))

    def on_step(self, step: int, loss: float | None) -> None:
        self.calls.append(("step", step, loss))

    def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        self.calls.append(("epoch", epoch, dict(metrics), seconds))

    def on_fit_end(self, fit: FitState) -> None:
        self.calls.append(("end", fit.status, fit.error, list(fit.history), dict(fit.reports)))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


def test_the_hooks_are_called_in_order_with_what_they_promise(data: Any) -> None:
    cfg = _cfg()
    plain, rec = Recorder(), Recorder(wants=True)
    result = T.train(cfg, data, callbacks=[plain, rec])
    assert result.status == "done"
    for r in (plain, rec):
        kinds = [c[0] for c in r.calls]
        assert kinds == ["start"] + (["step"] * STEPS + ["epoch"]) * 3 + ["end"]
        assert r.calls[0] == ("start", 0, STEPS, 0, "running", result.run_id)
        assert [c[1] for c in r.of("step")] == list(range(1, 3 * STEPS + 1))
        assert [c[2] for c in r.of("epoch")] == result.epochs
        assert [c[1] for c in r.of("epoch")] == [1, 2, 3]
        end = r.of("end")[0]
        assert end[1:4] == ("done", None, result.epochs) and end[4] == result.reports
    # asked for by one callback, the step losses (floats) are shown to all; they make up
    # train_loss exactly
    losses = [c[2] for c in rec.of("step")]
    assert [c[2] for c in plain.of("step")] == losses
    assert all(isinstance(v, float) for v in losses)
    for e, metrics in enumerate(result.epochs):
        part = losses[e * STEPS : (e + 1) * STEPS]
        assert sum(part) / STEPS == metrics["train_loss"]


def test_callbacks_do_not_change_the_numbers(data: Any) -> None:
    cfg = _cfg()
    plain = Recorder()
    bare = T.train(cfg, data, callbacks=[plain])
    # no callback asks for the step losses: none is made a float (no device sync per step)
    assert len(plain.of("step")) == 3 * STEPS and all(c[2] is None for c in plain.of("step"))
    with_cb = T.train(cfg, data, callbacks=[Recorder(wants=True)], on_epoch=lambda *a: None)
    assert with_cb.epochs == bare.epochs
    for a, b in zip(bare.model.state_dict().values(), with_cb.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_the_on_epoch_keyword_is_called_first_and_still_works(data: Any) -> None:
    order: list[str] = []
    seen: list[tuple[int, dict[str, Any]]] = []

    class Last(T.Callback):
        def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
            order.append(f"callback {epoch}")

    def on_epoch(epoch: int, metrics: dict[str, Any], seconds: float) -> None:
        assert seconds >= 0
        order.append(f"on_epoch {epoch}")
        seen.append((epoch, metrics))

    result = T.train(_cfg(), data, on_epoch=on_epoch, callbacks=[Last()])
    assert order == [f"{who} {e}" for e in (1, 2, 3) for who in ("on_epoch", "callback")]
    assert seen == list(enumerate(result.epochs, start=1))


def test_a_resumed_run_shows_its_history_and_counts_steps_on(data: Any, tmp_path: Path) -> None:
    cfg = _cfg()
    first, second = Recorder(), Recorder()
    part = T.train(cfg, data, checkpoint_dir=tmp_path, stop_after=1, callbacks=[first])
    assert part.status == "stopped"
    assert first.of("end")[0][1] == "stopped"
    done = T.train(cfg, data, checkpoint_dir=tmp_path, callbacks=[second])
    assert second.calls[0][:4] == ("start", 1, STEPS, 1)
    assert [c[1] for c in second.of("step")] == list(range(STEPS + 1, 3 * STEPS + 1))
    assert [c[1] for c in second.of("epoch")] == [2, 3]
    assert second.of("end")[0][3] == done.epochs


def test_an_exception_ends_the_fit_and_every_callback_is_closed(
        data: Any, capsys: pytest.CaptureFixture[str]) -> None:
    closed: list[str] = []

    class Boom(T.Callback):
        def on_epoch(self, epoch: int, metrics: dict[str, Any], seconds: float) -> None:
            if epoch == 2:
                raise RuntimeError("boom")

    class Closer(T.Callback):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_fit_end(self, fit: FitState) -> None:
            closed.append(f"{self.name} {fit.status} {fit.error}")
            if self.name == "a":
                raise OSError("cannot close a")

    with pytest.raises(RuntimeError, match="boom"):  # the run's error, not the closing's
        T.train(_cfg(), data, callbacks=[Closer("a"), Boom(), Closer("b")])
    assert closed == ["a failed RuntimeError: boom", "b failed RuntimeError: boom"]
    assert "on_fit_end failed after the run failed: OSError: cannot close a" in (
        capsys.readouterr().err)
    closed.clear()  # without a failure of the run, a failure to close is raised
    with pytest.raises(OSError, match="cannot close a"):
        T.train(_cfg(train={"epochs": 1}), data, callbacks=[Closer("a"), Closer("b")])
    assert closed == ["a done None", "b done None"]


def test_a_nan_run_ends_with_status_nan(data: Any) -> None:
    rec = Recorder()
    result = T.train(_cfg(optim={"lr": 1e30}, loss={"temperature": 1e-6}), data,
                     callbacks=[rec])
    assert result.status == "nan"
    end = rec.of("end")[0]
    assert end[1] == "nan" and end[2] == result.error and end[4] == {}


def test_a_callback_must_be_a_callback() -> None:
    with pytest.raises(ValueError, match=r"^callbacks\[1\] must be a contrastlab.train.Callback"):
        CallbackList([T.Callback(), lambda *a: None])  # type: ignore[list-item]
    assert not CallbackList() and not CallbackList([T.Callback()]).wants_step_loss

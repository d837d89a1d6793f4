"""Verified checkpoints: every kind of damage is detected, set aside (kept) and named in one line,
and the run resumes from the previous checkpoint or from scratch and ends ``done`` with the
metrics of an uninterrupted run, bit for bit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastlab import checkpoint as C
from contrastlab.experiments.runner import _dataset, execute_run, prepare_run, run_dir
from contrastlab.experiments.store import ResultStore
from contrastlab.train import train
from contrastlab.train.config import run_config_dict, run_id
from tests.experiments.helpers import snapshot

CONFIG: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "synthetic", "seed": 0,
             "options": {"classes": 3, "dim": 4, "n_train": 48, "n_test": 24}},
    "model": {"encoder": "mlp", "out_dim": 3, "options": {"hidden": 8}},
    "loss": {"name": "ucl", "k": 4},
    "optim": {"lr": 0.01},
    "train": {"epochs": 3, "batch_size": 16, "steps_per_epoch": 2, "threads": 1,
              "progress": False},
    "eval": {"final_lsup": False, "final_knn": False, "max_train": 48, "max_test": 24},
}
CFG = prepare_run(CONFIG)
RID = run_id(CFG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    """The uninterrupted run's database snapshot."""
    out = tmp_path_factory.mktemp("reference")
    assert execute_run(CFG, out) == (RID, "done")
    return snapshot(out)


def _interrupted(out: Path, epochs: int = 2) -> Path:
    """A run killed after ``epochs`` epochs (what execute_run leaves): the database holds those
    epochs and ``running``; checkpoint.pt holds the last epoch, checkpoint.prev.pt the one
    before. Returns the run directory."""
    rdir = run_dir(out, RID)
    with ResultStore(out) as store:
        store.add_runs([(RID, run_config_dict(CFG))])
        store.mark_running(RID)
        res = train(CFG, _dataset(CFG), checkpoint_dir=rdir, stop_after=epochs,
                    on_epoch=lambda e, m, s: store.record_epoch(RID, e, m, s))
    assert res.status == ("stopped" if epochs < CFG.train.epochs else "done")
    return rdir


def _resave(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit a checkpoint's state and write it back with a valid checksum."""
    state = C.read(path)
    edit(state)
    C.write(path, state)


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 500] = torch.randint(0, 256, (500,), generator=torch.Generator()
                                          .manual_seed(1), dtype=torch.uint8).numpy().tobytes()
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _plain_torch_save(path: Path) -> None:
    torch.save(C.read(path), path)  # an older contrastlab's checkpoint: no checksum


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "truncated"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "garbled-500-bytes": (_garble, "checksum mismatch"),
    "one-flipped-bit": (_flip_bit, "checksum mismatch"),
    "edited-epoch": (lambda p: _resave(p, lambda s: s.update(epoch=3)),
                     "epoch 3 but a history of 2 epochs"),
    "epoch-out-of-range": (lambda p: _resave(p, lambda s: s.update(epoch=7)),
                           "epoch 7 outside 1..3"),
    "missing-model": (lambda p: _resave(p, lambda s: s.pop("model")), "missing key model"),
    "wrong-type": (lambda p: _resave(p, lambda s: s.update(model=[1, 2])), "model is a list"),
    "wrong-run-id": (lambda p: _resave(p, lambda s: s.update(run_id="0" * 16)),
                     "checkpoint of run '0000000000000000'"),
    "replaced-by-other-file": (lambda p: p.write_bytes(b"hello\n" * 100),
                               "not a contrastlab checkpoint"),
    "plain-torch-save": (_plain_torch_save, "plain torch.save file"),
}


def _finish(out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert execute_run(CFG, out) == (RID, "done")
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("checkpoint:")]


def _damaged(rdir: Path) -> list[Path]:
    return sorted(rdir.glob("*.damaged-*"))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    damage, reason = DAMAGE[case]
    rdir = _interrupted(tmp_path)
    latest = rdir / C.LATEST
    damage(latest)
    bad = latest.read_bytes()
    lines = _finish(tmp_path, capsys)
    assert snapshot(tmp_path) == reference  # done, every epoch's metrics and reports, exactly
    (aside,) = _damaged(rdir)
    assert aside.name.startswith("checkpoint.pt.damaged-") and aside.read_bytes() == bad
    assert len(lines) == 2, lines
    assert f"rejected {latest}: " in lines[0] and reason in lines[0], lines[0]
    assert aside.name in lines[0]
    assert "resuming from checkpoint.prev.pt at epoch 1" in lines[1]
    assert C.read(latest)["epoch"] == 3 and C.read(rdir / C.PREVIOUS)["epoch"] == 2


def test_both_checkpoints_damaged_start_from_scratch(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rdir = _interrupted(tmp_path)
    _flip_bit(rdir / C.LATEST)
    _truncate(rdir / C.PREVIOUS)
    lines = _finish(tmp_path, capsys)
    assert snapshot(tmp_path) == reference
    assert [p.name.split(".damaged-")[0] for p in _damaged(rdir)] == [C.PREVIOUS, C.LATEST]
    assert len(lines) == 3, lines
    assert str(rdir / C.LATEST) in lines[0] and "checksum mismatch" in lines[0]
    assert str(rdir / C.PREVIOUS) in lines[1] and "truncated" in lines[1]
    assert "starting from scratch" in lines[2]


def test_damaged_previous_checkpoint_is_set_aside_not_overwritten(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rdir = _interrupted(tmp_path)
    _garble(rdir / C.PREVIOUS)
    lines = _finish(tmp_path, capsys)
    assert snapshot(tmp_path) == reference
    assert len(_damaged(rdir)) == 1 and len(lines) == 2
    assert str(rdir / C.PREVIOUS) in lines[0] and "checksum mismatch" in lines[0]
    assert "resuming from checkpoint.pt at epoch 2" in lines[1]


def test_checkpoint_ahead_of_or_disagreeing_with_the_store_is_refused(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rdir = _interrupted(tmp_path)
    with ResultStore(tmp_path) as store:  # the store lost epoch 2, and epoch 1 differs
        with store.transaction() as c:
            c.execute("DELETE FROM epochs WHERE run_id = ? AND epoch = 2", (RID,))
        m = store.epochs(RID)[0]
        store.record_epoch(RID, 1, {**m, "train_loss": m["train_loss"] + 1.0})
    lines = _finish(tmp_path, capsys)
    assert snapshot(tmp_path) == reference
    assert len(_damaged(rdir)) == 2 and len(lines) == 3, lines
    assert "ahead of the results store (epochs recorded up to 1)" in lines[0]
    assert "epoch 1's metrics differ from the results store's" in lines[1]
    assert "starting from scratch" in lines[2]


def test_kill_between_store_and_checkpoint_resumes_silently(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop records an epoch, then checkpoints it: a kill in between leaves the store one
    epoch ahead; the epoch is trained again and recorded once more, identically."""
    rdir = _interrupted(tmp_path)
    with ResultStore(tmp_path) as store:
        store.record_epoch(RID, 3, reference[RID][1][2], 1.0)
    assert _finish(tmp_path, capsys) == []
    assert snapshot(tmp_path) == reference and not _damaged(rdir)


def test_kill_between_the_two_renames_resumes_from_the_previous(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rdir = _interrupted(tmp_path)
    os.replace(rdir / C.LATEST, rdir / C.PREVIOUS)  # the state after save's first rename
    lines = _finish(tmp_path, capsys)
    assert snapshot(tmp_path) == reference and not _damaged(rdir)
    assert len(lines) == 2 and "is missing" in lines[0]
    assert "resuming from checkpoint.prev.pt at epoch 2" in lines[1]


def test_format_and_rotation(tmp_path: Path, one_thread: None) -> None:
    rdir = _interrupted(tmp_path, epochs=3)
    head = (rdir / C.LATEST).read_bytes().split(b"\n", 1)[0]
    assert head.startswith(b"contrastlab-checkpoint v1 sha256=")
    assert C.read(rdir / C.LATEST)["epoch"] == 3 and C.read(rdir / C.PREVIOUS)["epoch"] == 2
    assert sorted(p.name for p in rdir.iterdir()) == [C.PREVIOUS, C.LATEST]
    C.remove(rdir)
    assert not list(rdir.iterdir())


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_a_kill_at_any_step_of_a_save_leaves_a_valid_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """Crash at the first rename, the second rename or the directory fsync of a save: the
    newest complete checkpoint is found, and nothing is reported as damaged."""
    C.save(tmp_path, {"epoch": 1})
    C.save(tmp_path, {"epoch": 2})
    calls = {"n": 0}
    real_replace, real_fsync = os.replace, C._fsync_dir

    class Killed(BaseException):
        pass

    def step() -> None:
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Killed

    def replace(a: Any, b: Any) -> None:
        step()
        real_replace(a, b)

    def fsync(d: Path) -> None:
        step()
        real_fsync(d)

    monkeypatch.setattr(C.os, "replace", replace)
    monkeypatch.setattr(C, "_fsync_dir", fsync)
    with pytest.raises(Killed):
        C.save(tmp_path, {"epoch": 3})
    monkeypatch.undo()
    said: list[str] = []
    found = C.load(tmp_path, say=said.append)
    assert found is not None
    assert found[1]["epoch"] == {1: 2, 2: 2, 3: 3}[crash_at]
    assert not _damaged(tmp_path) and not any("rejected" in s for s in said)

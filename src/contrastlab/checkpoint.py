"""Verified training checkpoints: a checksummed file format, two generations, damage set aside.

Format (version 1). A checkpoint file is one ASCII header line followed by the payload::

    contrastlab-checkpoint v1 sha256=<64 hex digits> bytes=<payload length>\\n
    <payload: the state dict as written by torch.save>

The payload is read back with ``torch.load(..., weights_only=True)`` (tensors, numbers, strings,
lists and dicts only: loading a checkpoint never runs code) and only after its length and its
SHA-256 match the header; ``head -1 checkpoint.pt`` shows the header.

Writing (:func:`save`). The file is written to ``checkpoint.pt.tmp-<host>-<pid>`` and fsynced;
then the current ``checkpoint.pt`` is renamed to ``checkpoint.prev.pt`` (replacing the older
one), the new file is renamed to ``checkpoint.pt``, and the directory is fsynced. Each rename is
atomic, so a process killed at any instant leaves at least one complete, verifiable checkpoint:
before the first rename ``checkpoint.pt`` (epoch e - 1) is intact, between the two renames
``checkpoint.prev.pt`` holds it, after the second ``checkpoint.pt`` holds epoch e and
``checkpoint.prev.pt`` epoch e - 1. (A temporary file left by a killed writer of this host is
removed by the next :func:`load`.)

Reading (:func:`load`). ``checkpoint.pt`` is tried first, then ``checkpoint.prev.pt``. A file is
rejected when it is empty, truncated or longer than its header says, not in this format (e.g. a
plain ``torch.save`` file), of a newer format version, fails the checksum, does not load, or
fails the caller's check of its content (:func:`check_training_state` for the training loop:
missing keys, wrong types or shapes, epoch out of range, a metric history whose length is not
the epoch, another run's id, disagreement with the results store). A rejected file is never
deleted or overwritten: it is renamed to ``<name>.damaged-<UTC time>[-n]`` next to it and named
in one line on stderr (its path and the reason), and the outcome is said in one more line —
``resuming ... from checkpoint.prev.pt at epoch 4`` or ``... starting from scratch``. Rejection
is decided on rank 0 only (the training loop broadcasts what rank 0 loaded).

Guarantees, with the training loop (:func:`contrastlab.train.loop.train`) writing one checkpoint
after each epoch: a bit flip, truncation, garbling or replacement of a checkpoint is detected
(up to SHA-256 collisions), never used and never silently discarded; the run resumes from the
newest verified checkpoint, or from scratch, and, training being deterministic on the CPU,
ends with the same metrics, bit for bit, as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "LATEST",
    "PREVIOUS",
    "CheckpointError",
    "Expected",
    "check_training_state",
    "dumps",
    "load",
    "loads",
    "move_aside",
    "read",
    "remove",
    "save",
    "write",
]

FORMAT_VERSION = 1
LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
_MAGIC = b"contrastlab-checkpoint v"
_HEADER = re.compile(rb"contrastlab-checkpoint v(\d+) sha256=([0-9a-f]{64}) bytes=(\d+)\n")
_MAX_HEADER = 160
_TRAINING_KEYS = ("run_id", "epoch", "model", "optimizer", "scheduler", "g_data", "g_neg", "rng",
                  "history")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is the reason (one line)."""


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _say(message: str) -> None:
    print(f"checkpoint: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the file format
# --------------------------------------------------------------------------------------------


def dumps(state: Mapping[str, Any]) -> bytes:
    """The bytes of a checkpoint file holding ``state`` (header line + torch.save payload)."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    header = f"contrastlab-checkpoint v{FORMAT_VERSION} sha256={digest} bytes={len(payload)}\n"
    return header.encode("ascii") + payload


def _payload(data: bytes) -> bytes:
    """The payload of a checkpoint file's bytes once header, length and checksum are verified."""
    if not data:
        raise CheckpointError("empty file (0 bytes)")
    if not data.startswith(_MAGIC):
        if data.startswith(b"PK\x03\x04"):
            raise CheckpointError("a plain torch.save file without checksum, not this format "
                                  "(written by an older contrastlab?)")
        raise CheckpointError(f"not a contrastlab checkpoint (starts with {data[:16]!r})")
    version = re.match(rb"contrastlab-checkpoint v(\d+)[ \n]", data[:_MAX_HEADER])
    if version is not None and int(version.group(1)) > FORMAT_VERSION:
        raise CheckpointError(f"format version {int(version.group(1))}, newer than this "
                              f"contrastlab's {FORMAT_VERSION}")
    end = data.find(b"\n", 0, _MAX_HEADER)
    m = _HEADER.fullmatch(data[: end + 1]) if end >= 0 else None
    if m is None or int(m.group(1)) != FORMAT_VERSION:
        raise CheckpointError(f"malformed header {data[: end if end >= 0 else 64]!r}")
    size = int(m.group(3))
    payload = data[end + 1 :]
    if len(payload) < size:
        raise CheckpointError(f"truncated: {len(payload)} of {size} payload bytes")
    if len(payload) > size:
        raise CheckpointError(f"{len(payload) - size} bytes after the {size}-byte payload")
    digest, want = hashlib.sha256(payload).hexdigest(), m.group(2).decode("ascii")
    if digest != want:
        raise CheckpointError(f"checksum mismatch: the payload's sha256 is {digest[:16]}..., "
                              f"the header says {want[:16]}...")
    return payload


def loads(data: bytes) -> dict[str, Any]:
    """The state of a checkpoint file's bytes, verified; CheckpointError says what is wrong."""
    payload = _payload(data)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # verified bytes that torch cannot load (a foreign writer)
        raise CheckpointError(f"payload does not load ({_one_line(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"payload is a {type(state).__name__}, not a dict")
    return state


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError("not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"unreadable ({exc.strerror or exc})") from None


def read(path: str | Path) -> dict[str, Any]:
    """The verified state of the checkpoint file ``path`` (CheckpointError if unusable)."""
    return loads(_read_bytes(Path(path)))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _tmp_name(name: str) -> str:
    return f"{name}.tmp-{socket.gethostname()}-{os.getpid()}"


def _write_tmp(path: Path, state: Mapping[str, Any]) -> Path:
    tmp = path.with_name(_tmp_name(path.name))
    data = dumps(state)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (tmp file, fsync, rename, directory fsync)."""
    p = Path(path)
    tmp = _write_tmp(p, state)
    os.replace(tmp, p)
    _fsync_dir(p.parent)


def save(directory: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` as ``directory/checkpoint.pt``, the former one becoming
    ``checkpoint.prev.pt`` (module docstring: at every instant one of them is complete).
    Returns the path written."""
    d = Path(directory)
    latest = d / LATEST
    tmp = _write_tmp(latest, state)
    if latest.exists():
        os.replace(latest, d / PREVIOUS)
    os.replace(tmp, latest)
    _fsync_dir(d)
    return latest


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``<name>.damaged-<UTC time>[-n]`` (never replacing a file); returns
    the new path."""
    p = Path(path)
    stem = f"{p.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    target = p.with_name(stem)
    n = 1
    while target.exists():
        n += 1
        target = p.with_name(f"{stem}-{n}")
    os.replace(p, target)
    _fsync_dir(p.parent)
    return target


def remove(directory: str | Path) -> None:
    """Delete the two checkpoints of ``directory`` (a finished run); files set aside as damaged
    are kept."""
    for name in (LATEST, PREVIOUS):
        (Path(directory) / name).unlink(missing_ok=True)


def _remove_stale_tmp(directory: Path) -> None:
    """Remove temporary files left by killed writers of this host (their pid is gone)."""
    prefix = f"{LATEST}.tmp-{socket.gethostname()}-"
    for tmp in directory.glob(f"{LATEST}.tmp-*"):
        pid = tmp.name[len(prefix):] if tmp.name.startswith(prefix) else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        except OSError:  # alive under another user, or cannot tell
            pass


def load(
    directory: str | Path,
    check: Callable[[dict[str, Any]], None] | None = None,
    say: Callable[[str], None] | None = _say,
) -> tuple[Path, dict[str, Any]] | None:
    """The newest usable checkpoint of ``directory`` as ``(path, state)``, or None.

    ``checkpoint.pt`` is tried, then ``checkpoint.prev.pt``; each must pass :func:`read` and
    ``check(state)`` (which raises CheckpointError to refuse it; any other exception it raises
    refuses the file too, as content too odd to check). Every rejected file is moved
    aside (:func:`move_aside`) and reported through ``say`` in one line with its path and the
    reason; if anything was reported, or ``checkpoint.pt`` is missing while
    ``checkpoint.prev.pt`` exists, one more line says where the run resumes from. When the
    previous checkpoint is not needed it is only verified (header, length, checksum), so that a
    damaged one is set aside rather than overwritten by the next :func:`save`.
    """
    d = Path(directory)
    tell = say or (lambda _m: None)
    if not d.is_dir():
        return None
    _remove_stale_tmp(d)
    chosen: tuple[Path, dict[str, Any]] | None = None
    spoke = False
    for name in (LATEST, PREVIOUS):
        path = d / name
        if not os.path.lexists(path):
            if name == LATEST and os.path.lexists(d / PREVIOUS):
                tell(f"{path} is missing (a save was interrupted?)")
                spoke = True
            continue
        try:
            if chosen is None:
                state = read(path)
                if check is not None:
                    try:
                        check(state)
                    except CheckpointError:
                        raise
                    except Exception as exc:  # content too odd for the check itself
                        raise CheckpointError(f"unexpected content ({_one_line(exc)})") from None
                chosen = (path, state)
            else:
                _payload(_read_bytes(path))
        except CheckpointError as exc:
            aside = move_aside(path)
            tell(f"rejected {path}: {exc}; kept as {aside.name}")
            spoke = True
    if spoke:
        if chosen is None:
            tell(f"no usable checkpoint in {d}; starting from scratch")
        else:
            epoch = chosen[1].get("epoch")
            where = f" at epoch {epoch}" if isinstance(epoch, int) else ""
            tell(f"resuming from {chosen[0].name}{where} ({d})")
    return chosen


# --------------------------------------------------------------------------------------------
# the training loop's state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a checkpoint of one training run must hold (:func:`check_training_state`).

    Attributes:
        run_id: the run's id (hash of its resolved config).
        epochs: the run's number of epochs (a checkpoint's epoch is in 1..epochs).
        steps_per_epoch: optimizer steps per epoch (the scheduler's step count is
            ``epoch * steps_per_epoch``).
        model, optimizer: the freshly built model and optimizer of the run, whose state the
            checkpoint's must fit (same parameter names, shapes, dtypes and groups).
        recorded: the per-epoch metrics the results store holds for the run (epoch -> metrics),
            or None when there is no store to agree with.
    """

    run_id: str
    epochs: int
    steps_per_epoch: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    recorded: Mapping[int, Mapping[str, Any]] | None = None


def _canonical(metrics: Any) -> str:
    return json.dumps(metrics, sort_keys=True, separators=(",", ":"), default=repr)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_rng(name: str, value: Any) -> None:
    size = torch.Generator().get_state().numel()
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or \
            value.numel() != size:
        raise CheckpointError(f"{name} is not a CPU generator state ({size} bytes)")


def _check_model(state: Any, model: nn.Module) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"model is a {type(state).__name__}, not a state dict")
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(f"model state does not fit the model (missing {missing[:3]}, "
                              f"unexpected {extra[:3]})")
    for key, ref in want.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != ref.shape or got.dtype != ref.dtype:
            shown = (f"{tuple(got.shape)} {got.dtype}" if isinstance(got, torch.Tensor)
                     else type(got).__name__)
            raise CheckpointError(f"model.{key} is {shown}, expected {tuple(ref.shape)} "
                                  f"{ref.dtype}")


def _check_optimizer(state: Any, opt: torch.optim.Optimizer) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) or \
            not isinstance(state.get("param_groups"), list):
        raise CheckpointError("optimizer is not an optimizer state dict")
    want = opt.state_dict()["param_groups"]
    groups = state["param_groups"]
    if len(groups) != len(want) or any(
            not isinstance(g, dict) or g.get("params") != w["params"] or set(g) != set(w)
            for g, w in zip(groups, want, strict=False)):
        raise CheckpointError("optimizer param groups do not fit the model's parameters")
    shapes = [p.shape for g in opt.param_groups for p in g["params"]]
    for pid, per_param in state["state"].items():
        if not _is_int(pid) or not 0 <= pid < len(shapes) or not isinstance(per_param, dict):
            raise CheckpointError(f"optimizer state has an entry {pid!r} for no parameter")
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != shapes[pid]:
                raise CheckpointError(f"optimizer state {pid}.{key} has shape "
                                      f"{tuple(value.shape)}, the parameter "
                                      f"{tuple(shapes[pid])}")


def check_training_state(state: dict[str, Any], expected: Expected) -> None:
    """Raise CheckpointError unless ``state`` is a consistent checkpoint of the run described by
    ``expected``: every key of the training loop present with its type; the run id; ``epoch``
    in 1..epochs; a metric history of exactly ``epoch`` entries numbered 1..epoch; the
    scheduler at step ``epoch * steps_per_epoch``; model and optimizer states that fit the run's
    model; generator states of the right size; and, given the results store's records, no
    epoch the store has not recorded (the loop records an epoch before checkpointing it, so a
    checkpoint is never legitimately ahead of the store) and the same metrics for every epoch
    both hold (a checkpoint behind the store is fine: the epochs after it are trained again and
    reproduce what the store holds)."""
    missing = [k for k in _TRAINING_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"missing key{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(missing)}")
    rid = state["run_id"]
    if rid != expected.run_id:
        raise CheckpointError(f"checkpoint of run {rid!r}, not of this run {expected.run_id!r}")
    epoch = state["epoch"]
    if not _is_int(epoch):
        raise CheckpointError(f"epoch is a {type(epoch).__name__}, not an int")
    if not 1 <= epoch <= expected.epochs:
        raise CheckpointError(f"epoch {epoch} outside 1..{expected.epochs}")
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CheckpointError("history is not a list of per-epoch metric dicts")
    if len(history) != epoch:
        raise CheckpointError(f"epoch {epoch} but a history of {len(history)} epochs")
    for i, h in enumerate(history):
        if h.get("epoch") != i + 1:
            raise CheckpointError(f"history entry {i} is for epoch {h.get('epoch')!r}, not "
                                  f"{i + 1}")
    sched = state["scheduler"]
    step = sched.get("last_epoch") if isinstance(sched, dict) else None
    if not _is_int(step):
        raise CheckpointError("scheduler is not a scheduler state dict")
    if step != epoch * expected.steps_per_epoch:
        raise CheckpointError(f"scheduler at step {step}, but epoch {epoch} ends at step "
                              f"{epoch * expected.steps_per_epoch}")
    _check_model(state["model"], expected.model)
    _check_optimizer(state["optimizer"], expected.optimizer)
    for name in ("g_data", "g_neg", "rng"):
        _check_rng(name, state[name])
    if expected.recorded is not None:
        _check_store(history, expected.recorded)


def _check_store(history: list[dict[str, Any]], recorded: Mapping[int, Mapping[str, Any]]) -> None:
    last = max(recorded, default=0)
    if len(history) > last:
        raise CheckpointError(f"checkpoint at epoch {len(history)} is ahead of the results "
                              f"store (epochs recorded up to {last})")
    for h in history:
        e = int(h["epoch"])
        if e not in recorded:
            raise CheckpointError(f"epoch {e} of the checkpoint is not in the results store")
        if _canonical(h) != _canonical(dict(recorded[e])):
            raise CheckpointError(f"epoch {e}'s metrics differ from the results store's")


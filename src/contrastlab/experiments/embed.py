"""Embeddings of a finished run, saved for ``contrastlab geometry``: ``contrastlab embed RUN_DIR``.

:func:`embed_run` reads a run directory (``<out>/runs/<run_id>/``, :mod:`contrastlab.experiments.
plan`): its resolved ``config.yaml`` and its final ``checkpoint.pt`` (verified, read only; it must
be of that run and at its last epoch). It rebuilds the encoder, loads the run's data set as the
run evaluated it (the same registry call and seed; the shuffled-label control applied when the
run used it) and embeds **every** sample of the chosen split exactly as the run's evaluation did
(:func:`contrastlab.train.embed`: eval mode, ``eval.features``, ``eval.batch_size``, float32, the
run's thread count; on the run's device when this machine has it, else on the CPU).

The ``.npz`` is the format ``contrastlab geometry`` reads (:mod:`contrastlab.evaluation`):
``H_train`` (N, d) float32 and ``y_train`` (N,) int64 hold the chosen split — the samples
``geometry`` computes its report on — plus ``provenance``, a 0-d unicode array holding JSON
(``run_id``, ``split``, ``n``, ``dataset``, ``features``, ``epoch``, ``eval_n``: the size of the
run's evaluation subset of that split, ``eval_cap``: ``eval.max_train`` / ``eval.max_test``),
which ``geometry`` ignores and :func:`read_provenance` reads back. Nothing needs pickle.

Bad input (a missing directory, a directory that is not a run's, an unknown split, a run without
its final checkpoint) is one ``ValueError`` line naming the argument, before any work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from contrastlab.experiments.store import DB_NAME

__all__ = ["SPLITS", "Embedded", "check_run_dir", "embed_run", "embed_split", "read_provenance",
           "write_embeddings"]

#: the splits ``contrastlab embed --split`` accepts
SPLITS = ("train", "test")
PROVENANCE_KEY = "provenance"


class Embedded(NamedTuple):
    """The embeddings of one split of a run: ``H`` (N, d) float32, ``y`` (N,) int64 and their
    ``provenance`` (module docstring)."""

    H: np.ndarray
    y: np.ndarray
    provenance: dict[str, Any]


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, refused in one line (naming ``RUN_DIR``) unless it is a run
    directory: it holds ``config.yaml`` and ``checkpoint.pt``."""
    p = Path(run_dir).expanduser()
    if not p.exists():
        raise ValueError(f"RUN_DIR: no such directory: {str(p)!r}")
    if not p.is_dir():
        raise ValueError(f"RUN_DIR: {str(p)!r} is not a directory; expected a run directory "
                         "OUT/runs/<run_id> of `contrastlab run` or `sweep`")
    if not (p / "config.yaml").is_file():
        if (p / DB_NAME).is_file() and (p / "runs").is_dir():
            ids = sorted(d.name for d in (p / "runs").iterdir() if d.is_dir())
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise ValueError(f"RUN_DIR: {str(p)!r} is an output directory, not a run directory; "
                             f"pass one of its runs: {p / 'runs'}/<run_id> ({shown or 'none'})")
        raise ValueError(f"RUN_DIR: {str(p)!r} is not a run directory (no config.yaml); expected "
                         "OUT/runs/<run_id> of `contrastlab run` or `sweep`")
    if not (p / "checkpoint.pt").is_file():
        raise ValueError(f"RUN_DIR: {str(p)!r} has no checkpoint.pt (the run has not trained, or "
                         "it ran with output.keep_checkpoints=false or train.checkpoint=false)")
    return p


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def _device_here(device: str) -> str:
    """The run's device when this machine has it, else ``cpu``."""
    import torch

    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return device if torch.cuda.is_available() and index < torch.cuda.device_count() \
            else "cpu"
    if device == "mps":
        return device if torch.backends.mps.is_available() else "cpu"
    return device


def _load_config(rdir: Path) -> tuple[Any, bool]:
    """The run's resolved config from ``config.yaml`` (its device replaced by ``cpu`` when this
    machine lacks it) and whether the device was kept."""
    from contrastlab._yaml import load_yaml_file
    from contrastlab.train.config import parse_config

    try:
        raw = load_yaml_file(rdir / "config.yaml")
    except ValueError as exc:
        raise ValueError(f"RUN_DIR: {rdir / 'config.yaml'}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"RUN_DIR: {rdir / 'config.yaml'} is not a run's config (not a mapping)")
    train = raw.get("train") if isinstance(raw.get("train"), dict) else None
    kept = True
    if train is not None and isinstance(train.get("device"), str):
        here = _device_here(train["device"])
        kept = here == train["device"]
        raw = {**raw, "train": {**train, "device": here}}
    try:
        return parse_config(raw), kept
    except ValueError as exc:
        raise ValueError(f"RUN_DIR: {rdir / 'config.yaml'}: {str(exc).splitlines()[0]}") from None


def _final_state(rdir: Path, cfg: Any, check_id: bool) -> dict[str, Any]:
    """The verified state of ``checkpoint.pt``, refused unless it is of this run (the config's
    run id, when the device was kept) and at its last epoch."""
    from contrastlab import checkpoint
    from contrastlab.train.config import run_id

    try:
        state = checkpoint.read(rdir / checkpoint.LATEST)
    except checkpoint.CheckpointError as exc:
        raise ValueError(f"RUN_DIR: {rdir / checkpoint.LATEST} is unusable ({exc})") from None
    rid, epoch = state.get("run_id"), state.get("epoch")
    if not isinstance(rid, str) or not isinstance(epoch, int) or "model" not in state:
        raise ValueError(f"RUN_DIR: {rdir / checkpoint.LATEST} is not a training checkpoint")
    if check_id and rid != run_id(cfg):
        raise ValueError(f"RUN_DIR: config.yaml (run {run_id(cfg)}) and checkpoint.pt (run {rid}) "
                         f"are of different runs in {str(rdir)!r}")
    if epoch != cfg.train.epochs:
        raise ValueError(f"RUN_DIR: run {rid} is not finished: its checkpoint is at epoch {epoch} "
                         f"of {cfg.train.epochs}; finish it with `contrastlab run` first")
    return state


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch computes with ``n`` threads inside (the run's count), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_data(cfg: Any) -> Any:
    """The data set as the run's training loop saw it (:func:`contrastlab.train.train`)."""
    from contrastlab.train.build import as_train_data, load_data, shuffled_labels

    data = as_train_data(load_data(cfg))
    if cfg.data.shuffle_labels:
        data = shuffled_labels(data, cfg.seed if cfg.data.seed is None else cfg.data.seed)
    return data


def embed_split(run_dir: str | Path, split: str = "train") -> Embedded:
    """Every sample of ``split`` (``train`` or ``test``) of a finished run's data set, embedded by
    its final encoder as the run's evaluation embeds (module docstring)."""
    from contrastlab.train import build_model, embed, run_threads

    split = _check_split(split)
    rdir = check_run_dir(run_dir)
    cfg, kept = _load_config(rdir)
    state = _final_state(rdir, cfg, kept)
    data = _run_data(cfg)
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    with _threads(run_threads(cfg)):
        model = build_model(cfg, data.input_shape)
        model.load_state_dict(state["model"])
        model.to(cfg.train.device)
        H = embed(model, x, cfg.eval.features, cfg.eval.batch_size)
    cap = cfg.eval.max_train if split == "train" else cfg.eval.max_test
    n = int(y.shape[0])
    provenance = {"run_id": state["run_id"], "split": split, "n": n, "dataset": cfg.data.name,
                  "features": cfg.eval.features, "epoch": int(state["epoch"]),
                  "eval_n": n if cap is None else min(int(cap), n), "eval_cap": cap}
    return Embedded(H.numpy().astype(np.float32), y.numpy().astype(np.int64), provenance)


def write_embeddings(path: str | Path, emb: Embedded) -> Path:
    """Write ``emb`` to the ``.npz`` ``path`` (module docstring), atomically: a temporary file of
    this process renamed over it."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        arrays: dict[str, Any] = {
            "H_train": emb.H, "y_train": emb.y,
            PROVENANCE_KEY: np.array(json.dumps(emb.provenance, sort_keys=True)),
        }
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance of a ``.npz`` written by :func:`write_embeddings`, or None (another file,
    or no readable provenance)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if PROVENANCE_KEY not in data.files:
                return None
            value = json.loads(str(data[PROVENANCE_KEY][()]))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def embed_run(run_dir: str | Path, split: str = "train",
              out: str | Path | None = None) -> tuple[Path, Embedded]:
    """Embed ``split`` of the finished run in ``run_dir`` and write the ``.npz`` to ``out``
    (default ``RUN_DIR/embeddings-<split>.npz``); returns its path and the embeddings. Every
    argument is checked (one-line ValueError) before any work."""
    from contrastlab._paths import check_output_file

    _check_split(split)
    rdir = check_run_dir(run_dir)
    path = check_output_file(rdir / f"embeddings-{split}.npz" if out is None else out, "--out",
                             (".npz",))
    emb = embed_split(rdir, split)
    return write_embeddings(path, emb), emb

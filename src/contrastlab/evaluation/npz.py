"""The ``contrastlab geometry`` command's evaluation of a saved ``.npz`` of embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastlab._validation import (
    check_labels,
)
from contrastlab.evaluation.checks import holdout_split
from contrastlab.evaluation.report import DownstreamReport, downstream_report
from contrastlab.geometry import (
    GeometryReport,
    geometry_report,
)


def _load_array(data: Any, key: str, path: str) -> np.ndarray:
    if key not in data.files:
        raise ValueError(f"path: {path} has no array {key!r} (keys: {', '.join(data.files)})")
    return np.asarray(data[key])


def _embeddings_from_numpy(arr: np.ndarray, key: str) -> torch.Tensor:
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating)
                             or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{key} must be a 2-D numeric array (N, d); got {arr.dtype} {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _labels_from_numpy(arr: np.ndarray, key: str) -> torch.Tensor:
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{key} must be a 1-D integer array (N,); got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


#: The most classes ``contrastlab geometry`` accepts (the C x C and C x d reports grow with C).
MAX_GEOMETRY_CLASSES = 100_000


def _class_labels(num_classes: int | None, n_train: int, labels: dict[str, np.ndarray]
                  ) -> tuple[int, dict[str, np.ndarray], str | None]:
    """``(C, labels in 0..C-1, note)``. With ``num_classes`` the labels must lie in
    ``0..C-1``; without, C is the number of distinct labels (train and test together), mapped
    in increasing order to ``0..C-1`` when they are not already (the note says so). Absurd
    sizes (C > :data:`MAX_GEOMETRY_CLASSES`, or more classes than half the training samples)
    are refused before anything of size C is allocated."""
    every = np.concatenate([v.reshape(-1) for v in labels.values()])
    if num_classes is not None:
        if isinstance(num_classes, bool) or not 2 <= num_classes <= MAX_GEOMETRY_CLASSES:
            raise ValueError(f"--num-classes must be an integer in [2, {MAX_GEOMETRY_CLASSES}]; "
                             f"got {num_classes!r}")
        for key, y in labels.items():
            if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise ValueError(f"{key} holds labels in [{int(y.min())}, {int(y.max())}], "
                                 f"outside 0..{num_classes - 1} (--num-classes {num_classes})")
        return num_classes, labels, None
    uniq = np.unique(every)
    c = int(uniq.size)
    if c < 2:
        raise ValueError(f"y_train: the labels hold a single class ({uniq.tolist()}); need at "
                         "least 2 classes")
    if c > MAX_GEOMETRY_CLASSES or c > n_train // 2:
        raise ValueError(f"y_train: {c} distinct labels for {n_train} training samples; at most "
                         f"min({MAX_GEOMETRY_CLASSES}, N/2) classes (each needs >= 2 samples); "
                         "are these labels?")
    if np.array_equal(uniq, np.arange(c)):
        return c, labels, None
    mapped = {k: np.searchsorted(uniq, y).astype(np.int64) for k, y in labels.items()}
    shown = ", ".join(str(int(u)) for u in uniq[:4]) + (", ..." if c > 4 else "")
    return c, mapped, (f"the {c} distinct labels ({shown}) are numbered 0..{c - 1} in "
                       "increasing order (pass --num-classes to use them as they are)")


def _open_npz(path: str) -> Any:
    """The open ``.npz`` archive at ``path``; one clear error for anything else."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"path: {path} is a directory; an .npz file is expected")
    if not p.is_file():
        raise ValueError(f"path: no such file: {path}")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # any unreadable file is one clear error
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"path: cannot read {path} as .npz ({first})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"path: {path} is a single .npy array, not an .npz archive; save one "
                         "with np.savez(path, H_train=..., y_train=...[, H_test=..., "
                         "y_test=...])")
    return data


def _read_npz(data: Any, path: str
              ) -> tuple[torch.Tensor, dict[str, np.ndarray], torch.Tensor | None]:
    """(H_train, the raw label arrays by key, H_test or None) of the archive, then closed."""
    H_test: torch.Tensor | None = None
    with data:
        H_all = _embeddings_from_numpy(_load_array(data, "H_train", path), "H_train")
        ys = {"y_train": _load_array(data, "y_train", path)}
        has_h, has_y = "H_test" in data.files, "y_test" in data.files
        if has_h != has_y:
            raise ValueError(f"path: {path} must hold both H_test and y_test, or neither")
        if has_h:
            H_test = _embeddings_from_numpy(_load_array(data, "H_test", path), "H_test")
            ys["y_test"] = _load_array(data, "y_test", path)
    return H_all, ys, H_test


def _npz_classes(H_all: torch.Tensor, ys: dict[str, np.ndarray], num_classes: int | None,
                 notes: list[str]) -> tuple[int, dict[str, np.ndarray]]:
    """The label checks and (C, labels in 0..C-1) of :func:`_class_labels`, its note added."""
    for key, arr in ys.items():
        _labels_from_numpy(arr, key)  # the type and shape checks
    if H_all.shape[0] != ys["y_train"].shape[0]:
        raise ValueError(
            f"y_train must have {H_all.shape[0]} labels like H_train; got {ys['y_train'].shape[0]}"
        )
    num_classes, ys, note = _class_labels(num_classes, int(H_all.shape[0]), ys)
    if note:
        notes.append(note)
    return num_classes, ys


def _hold_out_test(H_all: torch.Tensor, y_all: torch.Tensor, notes: list[str]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(checked y_all, H_train, y_train, H_test, y_test): 20% of each class held out as the
    test set (stratified, seed 0), with a note."""
    y_all = check_labels("y_train", y_all, H_all.shape[0])
    kept, held = holdout_split(y_all, 0.2, seed=0)
    if held.numel() == 0:
        raise ValueError(
            "path: no test split in the file and too few samples per class to hold out "
            "20%; add H_test and y_test"
        )
    notes.append(
        f"no test split in the file: held out 20% of each class of the training set "
        f"(stratified, seed 0) as the test set ({held.numel()} of {y_all.shape[0]})"
    )
    return y_all, H_all[kept], y_all[kept], H_all[held], y_all[held]


def geometry_command_output(path: str, as_json: bool, num_classes: int | None = None) -> str:
    """The printed output of ``contrastlab geometry EMBEDDINGS.npz``: both reports.

    The ``.npz`` holds ``H_train`` (N, d) and ``y_train`` (N,) and optionally ``H_test`` and
    ``y_test`` (both or neither). C is ``num_classes`` (labels in 0..C-1) or the number of
    distinct labels (:func:`_class_labels`). Without a test split, 20% of each class of the
    training set is held out as the test set (:func:`holdout_split`, seed 0), and the output
    says so. The geometry report is computed on all of ``H_train`` with the with-bias linear
    probe as the classifier of NC3/NC4; the downstream report on the split. Returns a readable
    text table, or JSON (``as_json``) with keys ``input``, ``geometry``, ``downstream`` and
    ``notes``.

    In phases: reading (:func:`_open_npz`, :func:`_read_npz`), the labels
    (:func:`_npz_classes`), the split (:func:`_hold_out_test` without a test split), both
    reports, the output (:func:`_geometry_output`).
    """
    data = _open_npz(path)
    notes: list[str] = []
    H_all, ys, H_file_test = _read_npz(data, path)
    num_classes, ys = _npz_classes(H_all, ys, num_classes, notes)
    y_all = _labels_from_numpy(ys["y_train"], "y_train")
    if H_file_test is not None:
        y_test = _labels_from_numpy(ys["y_test"], "y_test")
        H_train, y_train, H_test = H_all, y_all, H_file_test
    else:
        y_all, H_train, y_train, H_test, y_test = _hold_out_test(H_all, y_all, notes)
    down = downstream_report(H_train, y_train, H_test, y_test, num_classes)
    probe = down.linear_probe.get("bias") or down.linear_probe.get("bias-free")
    classifier = None if probe is None else (probe.weight, probe.bias_vector)
    geo: GeometryReport = geometry_report(H_all, y_all, num_classes, classifier=classifier)
    notes.append("geometry on all of H_train; NC3/NC4 use the with-bias linear probe")
    info = {
        "path": str(path),
        "n_train": int(H_train.shape[0]),
        "n_test": int(H_test.shape[0]),
        "dim": int(H_all.shape[1]),
        "num_classes": num_classes,
        "test_split": "file" if H_file_test is not None else "held-out 20% (stratified, seed 0)",
    }
    return _geometry_output(info, geo, down, notes, as_json)


def _geometry_output(info: dict[str, Any], geo: GeometryReport, down: DownstreamReport,
                     notes: list[str], as_json: bool) -> str:
    """The text (or JSON) of :func:`geometry_command_output`."""
    if as_json:
        return json.dumps(
            {"input": info, "geometry": geo.to_dict(), "downstream": down.to_dict(),
             "notes": notes},
            indent=2,
        )
    head = (f"{info['path']}: {info['n_train']} train / {info['n_test']} test embeddings, "
            f"d={info['dim']}, C={info['num_classes']}")
    parts = [head, *(f"note: {n}" for n in notes), "", geo.to_text(), "", down.to_text()]
    return "\n".join(parts)

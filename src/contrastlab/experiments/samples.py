"""Which samples each stored metric was computed on, and the lines that say so.

A run evaluates (:func:`contrastlab.train.evaluate`) on two fixed subsets, drawn once from its
seed and the same at every epoch: at most ``eval.max_train`` samples of the training split and at
most ``eval.max_test`` of the test split (2000 each by default; the whole split when it is
smaller). Each stored metric belongs to one sample set (:data:`METRIC_SPLITS`):

- ``train``, the training split's evaluation subset: the geometry scalars (``nc1``, the NC2
  measures, ``etf_distance``, the ranks, ...), ``nc3`` / ``nc4`` and ``lsup``;
- ``test``, the test split's evaluation subset: the downstream accuracies and cross-entropies
  (mean classifiers, linear probes and kNN, fit on the train subset and scored on the test
  subset), ``heldout_loss`` and ``converged`` (decided on the held-out loss);
- ``train batches``, the epoch's training steps: ``train_loss`` and ``distinct_negatives``.

The sizes of the two subsets are read from a run's final reports (``geometry.num_samples``,
``downstream.n_train`` and ``downstream.n_test``), so they are known for finished runs.
:func:`samples_lines` writes what ``contrastlab results`` prints under its table, and
:func:`geometry_output` adds the ``samples:`` statement to the output of ``contrastlab
geometry`` (what the ``.npz`` holds, and, for a file of ``contrastlab embed``, which run and split
it comes from).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "METRIC_SPLITS",
    "SAMPLE_SETS",
    "geometry_output",
    "metric_samples",
    "sample_sizes",
    "samples_lines",
    "subset_text",
]

_TRAIN_METRICS = (
    "nc1", "nc2_equinorm", "nc2_equiangularity", "etf_distance", "etf_distance_uncentered",
    "unit_norm_error", "zero_sum_norm", "equiangularity_mean", "within_class_rms",
    "effective_rank", "class_mean_effective_rank", "numerical_rank", "rankme", "collapsed_dims",
    "nc3", "nc4", "lsup",
)
_TEST_METRICS = (
    "mc_acc", "mc_ce", "mc_normalized_acc", "mc_normalized_ce", "mc_cosine_acc", "mc_cosine_ce",
    "probe_acc", "probe_ce", "probe_bias_acc", "probe_bias_ce", "knn_acc", "heldout_loss",
    "converged",
)
_BATCH_METRICS = ("train_loss", "distinct_negatives")

#: metric name -> the sample set it is computed on (module docstring)
METRIC_SPLITS: dict[str, str] = {
    **dict.fromkeys(_TRAIN_METRICS, "train"),
    **dict.fromkeys(_TEST_METRICS, "test"),
    **dict.fromkeys(_BATCH_METRICS, "train batches"),
}

#: sample set -> how the output describes it
SAMPLE_SETS = {
    "train": "train split (evaluation subset, at most eval.max_train)",
    "test": "test split (evaluation subset, at most eval.max_test; classifiers fit on the train "
            "subset)",
    "train batches": "training batches of the epoch",
}


def sample_sizes(reports: Mapping[str, Any]) -> dict[str, int | None]:
    """The sizes of a run's two evaluation subsets, ``{"train": n, "test": n}``, from its final
    reports (None where the run has none, e.g. it did not finish)."""
    geo = reports.get("geometry") or {}
    down = reports.get("downstream") or {}
    n_train = geo.get("num_samples", down.get("n_train"))
    n_test = down.get("n_test")
    return {"train": n_train if isinstance(n_train, int) else None,
            "test": n_test if isinstance(n_test, int) else None}


def metric_samples(metric: str, reports: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """``(sample set, n)`` of ``metric`` in a run with these final reports: the set of
    :data:`METRIC_SPLITS` (None for a value that is not a measurement on samples, e.g. ``lr``)
    and its size (None when unknown, and for the training batches)."""
    split = METRIC_SPLITS.get(metric)
    if split is None:
        return None, None
    return split, sample_sizes(reports).get(split)


def _span(values: Iterable[int | None]) -> str:
    """``n=240``, ``n=120..240`` over runs, or ``n unknown``."""
    known = sorted({v for v in values if v is not None})
    if not known:
        return "n unknown"
    return f"n={known[0]}" if len(known) == 1 else f"n={known[0]}..{known[-1]}"


def _caps(records: Sequence[Mapping[str, Any]], key: str) -> str:
    caps = sorted({str(r.get(key)) for r in records})
    return f"{key}={'/'.join(caps)}"


def samples_lines(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """The lines stating the sample set of each of ``metrics`` over ``records`` (flat records
    with their ``reports``, :func:`contrastlab.experiments.records.load_records` with details):
    one line per sample set with its size over the finished runs, and the metrics on it."""
    done = [r for r in records if r.get("status") == "done"] or list(records)
    by_set: dict[str, list[str]] = {}
    for m in metrics:
        split = METRIC_SPLITS.get(m)
        if split is not None:
            by_set.setdefault(split, []).append(m)
    if not by_set:
        return []
    lines = ["samples of the metrics (each run's fixed evaluation subsets; `contrastlab embed` "
             "embeds whole splits):"]
    for split in ("train", "test", "train batches"):
        if split not in by_set:
            continue
        if split == "train batches":
            where = "training batches of each epoch"
        else:
            n = _span(sample_sizes(r.get("reports") or {})[split] for r in done)
            cap = _caps(done, f"eval.max_{split}")
            fit = "; classifiers fit on the train subset" if split == "test" else ""
            where = f"{split} split, {n} ({cap}{fit})"
        lines.append(f"  {where}: {', '.join(by_set[split])}")
    return lines


def _rows_of(path: str) -> int:
    """The number of rows of ``H_train`` in the (already checked) ``.npz`` at ``path``."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return int(data["y_train"].shape[0])


def subset_text(source: Mapping[str, Any]) -> str:
    """How the samples of a ``contrastlab embed`` file (its ``source``, the provenance of
    :func:`contrastlab.experiments.embed.read_provenance`) relate to the run's stored metrics:
    all of them, or more than the fixed evaluation subset the run measured on."""
    split, n, eval_n = source["split"], source["n"], source["eval_n"]
    cap = f"eval.max_{split}={source['eval_cap']}"
    if eval_n >= n:
        text = f"the run stored its {split}-split metrics on all of them too ({cap})"
    else:
        text = (f"the run stored its {split}-split metrics on a fixed subset of {eval_n} of them "
                f"({cap}): expect different values")
    if split == "test":
        text += "; its geometry metrics (nc1, ...) are on the train split"
    return text


def _statement(path: str) -> dict[str, Any]:
    """What the geometry of ``path`` is computed on: its rows and, for a file of ``contrastlab
    embed``, where they come from (:func:`contrastlab.experiments.embed.read_provenance`)."""
    from contrastlab.experiments.embed import read_provenance

    n = _rows_of(path)
    source = read_provenance(path)
    text = f"geometry on all {n} rows of H_train"
    if source is None:
        text += " (the file does not say which samples they are)"
    else:
        text += (f" = all {source['n']} samples of the {source['split']} split of run "
                 f"{source['run_id']} (data set {source['dataset']}, features "
                 f"{source['features']}, epoch {source['epoch']}); {subset_text(source)}")
    return {"rows": n, "source": source, "text": text}


def geometry_output(path: str, as_json: bool, num_classes: int | None = None) -> str:
    """``contrastlab geometry``: :func:`contrastlab.evaluation.geometry_command_output` with the
    sample set stated, as a ``samples:`` line after the first line of the text, or a
    ``samples`` entry of the JSON (``rows``, ``source``: the provenance of a ``contrastlab
    embed`` file or null, ``text``)."""
    from contrastlab.evaluation import geometry_command_output

    out = geometry_command_output(path, as_json, num_classes)  # checks the file first
    samples = _statement(path)
    if as_json:
        data = json.loads(out)
        data["samples"] = samples
        return json.dumps(data, indent=2)
    head, _, rest = out.partition("\n")
    return f"{head}\nsamples: {samples['text']}\n{rest}"

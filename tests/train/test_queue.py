"""The queue of negatives and the in-batch source (issue 16, item 3): loss.negatives_from
``queue`` (MoCo v2, optional momentum key encoder) and ``batch``, against the data-set pool."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.data.registry import load_dataset
from contrastlab.train.build import build_model
from contrastlab.train.config import ConfigError, parse_config, run_id
from contrastlab.train.queue import NegativeQueue
from contrastlab.train.step import fill_queue, step_inputs, step_loss


def _cfg(loss: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
         **train: Any) -> Any:
    return parse_config({
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 4, "dim": 8, "n_train": 256,
                                                  "n_test": 128}},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 32}, **(model or {})},
        "loss": {"name": "hucl", "k": 16, "beta": 1.0, **(loss or {})},
        "optim": {"lr": 0.003},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "threads": 1,
                  "device": "cpu", **train},
        "eval": {"every": 0, "final_lsup": False, "final_knn": False, "final_probes": [],
                 "geometry": False, "linear_probe": False},
    })


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("synthetic", seed=0, classes=4, dim=8, n_train=256, n_test=128)


def test_the_queue_is_first_in_first_out() -> None:
    q = NegativeQueue(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64),
                      torch.zeros(5, dtype=torch.int64))
    for step in range(3):  # 3 pushes of 2 keys into 5 slots: the oldest is overwritten
        keys = torch.full((2, 2), float(step + 1))
        q.push(keys, torch.tensor([step, step]), torch.tensor([10 * step, 10 * step + 1]))
    assert q.keys[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0] and q.ptr == 1
    assert q.ids.tolist() == [21, 1, 10, 11, 20]
    q.push(torch.full((7, 2), 9.0), torch.arange(7), torch.arange(7))  # more than the slots
    assert q.keys[:, 0].tolist() == [9.0] * 5 and sorted(q.ids.tolist()) == [2, 3, 4, 5, 6]
    other = NegativeQueue(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64),
                          torch.zeros(5, dtype=torch.int64))
    other.load_state_dict(q.state_dict())
    assert torch.equal(other.keys, q.keys) and other.ptr == q.ptr
    with pytest.raises(ValueError, match="queue: the checkpoint holds"):
        NegativeQueue(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64),
                      torch.zeros(4, dtype=torch.int64)).load_state_dict(q.state_dict())


def test_the_source_of_the_negatives_resolves_and_is_checked() -> None:
    cfg = _cfg({"negatives_from": "queue"})
    assert (cfg.loss.queue_size, cfg.loss.pool_size) == (32, None)  # max(k, batch)
    assert _cfg({"negatives_from": "queue", "queue_size": 4096}).loss.queue_size == 4096
    batch = _cfg({"negatives_from": "batch", "pool_size": 99})
    assert (batch.loss.pool_size, batch.loss.queue_size) == (None, None)
    plain = _cfg()
    assert run_id(plain) == run_id(_cfg({"negatives_from": "dataset"}))
    assert run_id(plain) != run_id(_cfg({"negatives_from": "queue"}))
    inbatch = _cfg({"name": "infonce", "k": None, "negatives_from": "queue"})
    assert inbatch.loss.negatives_from == "dataset"  # not applicable: neutral
    with pytest.raises(ConfigError, match=r"^loss\.queue_size must be >= loss\.k \(64\)"):
        _cfg({"negatives_from": "queue", "k": 64, "queue_size": 32})
    with pytest.raises(ConfigError, match=r"the 2 x train\.batch_size views"):
        _cfg({"negatives_from": "batch", "k": 65})
    with pytest.raises(ConfigError, match=r"^model\.momentum \(0\.9\) is the key encoder"):
        _cfg(model={"momentum": 0.9})
    with pytest.raises(ConfigError, match=r"^model\.momentum must lie in \[0, 1\)"):
        _cfg({"negatives_from": "queue"}, model={"momentum": 1.0})
    with pytest.raises(ConfigError, match=r"^loss\.negatives_from must be one of"):
        _cfg({"negatives_from": "bank"})


@pytest.mark.parametrize(("loss", "model"), [
    ({"negatives_from": "queue", "queue_size": 96}, {}),
    ({"negatives_from": "queue", "queue_size": 96}, {"momentum": 0.99}),
    ({"negatives_from": "batch"}, {}),
    ({"negatives_from": "queue", "name": "nce", "sampler": "other-class", "k": 8}, {}),
])
def test_training_from_a_queue_or_the_batch(data: Any, loss: dict, model: dict) -> None:
    result = T.train(_cfg(loss, model), data)
    assert result.status == "done"
    assert all(math.isfinite(e["train_loss"]) for e in result.epochs)
    distinct = result.epochs[0]["distinct_negatives"]
    if loss["negatives_from"] == "queue":  # k distinct entries of the queue (distinct samples:
        assert distinct == loss.get("k", 16)  # the first fill holds distinct samples)
    else:  # k distinct views of the batch; the two views of a sample count as one sample
        assert 0.75 * 16 <= distinct <= 16


def test_a_queue_run_resumes_exactly(data: Any, tmp_path: Path) -> None:
    cfg = _cfg({"negatives_from": "queue", "queue_size": 96}, {"momentum": 0.9}, epochs=3)
    full = T.train(cfg, data, checkpoint_dir=tmp_path / "a")
    part = T.train(cfg, data, checkpoint_dir=tmp_path / "b", stop_after=1)
    assert part.status == "stopped"
    resumed = T.train(cfg, data, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 1 and resumed.epochs == full.epochs


def test_on_frozen_features_the_queue_and_the_pool_agree_in_expectation(data: Any) -> None:
    """A fixed encoder: the mean loss over many steps with negatives from the data-set pool and
    from the queue (filled, then fed by each step's keys) agree within their standard errors:
    both hold embeddings of samples of the training marginal."""
    torch.manual_seed(0)
    frozen = build_model(_cfg(), data.input_shape).state_dict()
    losses: dict[str, list[float]] = {"dataset": [], "queue": []}
    for source in losses:
        cfg = _cfg({"negatives_from": source, "exact": True, "k": 32, "pool_size": None,
                    "queue_size": 64} if source == "queue" else
                   {"exact": True, "k": 32, "pool_size": 64}, batch_size=32)
        model = build_model(cfg, data.input_shape)
        model.load_state_dict(frozen)
        g = torch.Generator().manual_seed(1)
        queue = (fill_queue(cfg, model, data.x_train, data.y_train, None, g)
                 if source == "queue" else None)
        with torch.no_grad():
            for _ in range(150):
                idx = torch.randperm(256, generator=g)[:32]
                inputs, labels, pool_labels, pool_ids = step_inputs(
                    cfg, data.x_train, data.y_train, idx, g, None)
                loss = step_loss(cfg, model, inputs, labels, pool_labels, g, pool_ids=pool_ids,
                                 queue=queue, batch_ids=idx)
                losses[source].append(float(loss))
    a, b = torch.tensor(losses["dataset"]), torch.tensor(losses["queue"])
    se = math.sqrt(float(a.var()) / a.numel() + float(b.var()) / b.numel())
    assert abs(float(a.mean()) - float(b.mean())) < 4 * se
    assert float(a.std()) > 0 and float(b.std()) > 0

"""train.local_loss (issue 16, item 4): refused for a loss without a sharded form, in the run id
only when true, no effect in a single process. The two-process equality with the single-process
run is in tests/test_distributed_training.py; the sharded losses in tests/losses/test_sharded.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.train.config import ConfigError, parse_config, run_id


def _cfg(loss: dict[str, Any], **train: Any) -> Any:
    return parse_config({
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 4, "dim": 8, "n_train": 128,
                                                  "n_test": 64}},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 16}},
        "loss": loss,
        "train": {"epochs": 1, "batch_size": 32, "steps_per_epoch": 2, "progress": False,
                  "threads": 1, **train},
        "eval": {"every": 0, "final_lsup": False, "final_knn": False, "final_probes": [],
                 "geometry": False, "linear_probe": False},
    })


@pytest.mark.parametrize("name", ["hucl", "nce", "scl"])
def test_pool_losses_are_refused_with_one_line(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg({"name": name, "k": 8}, local_loss=True)
    msg = str(info.value)
    assert "train.local_loss" in msg and "debiased-hard, infonce, supcon" in msg
    assert repr(name) in msg and "\n" not in msg


def test_in_the_run_id_only_when_true() -> None:
    loss = {"name": "infonce"}
    assert run_id(_cfg(loss)) == run_id(_cfg(loss, local_loss=False))
    assert run_id(_cfg(loss, local_loss=True)) != run_id(_cfg(loss))


@pytest.mark.parametrize("name", ["infonce", "supcon", "debiased-hard"])
def test_no_effect_in_a_single_process(name: str) -> None:
    a = T.train(_cfg({"name": name}))
    b = T.train(_cfg({"name": name}, local_loss=True))
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                         strict=True):
        assert torch.equal(v, w), k

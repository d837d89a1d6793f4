"""Data at speed (issue 16, item 2): a step is planned (every draw, in step order) and then built
(no draw) wherever the batches are built: on the training device (the training set moved there
once) or in DataLoader worker processes (``data.workers``). The numbers are those of the path of
earlier versions, bitwise, for any worker count; CUDA tests are marked ``cuda``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.data.base import Dataset
from contrastlab.data.pairs import apply_augment, augmenter, make_views, negative_pool
from contrastlab.losses.registry import get_loss
from contrastlab.train import feed as feed_module
from contrastlab.train.config import ConfigError, hashed_config, parse_config, run_id
from contrastlab.train.feed import BatchFeed, builds_on_device
from contrastlab.train.step import build_inputs, plan_step, step_inputs

HAS_CUDA = torch.cuda.is_available()
SHAPES = {"image": (3, 12, 12), "signal": (2, 24), "vector": (10,)}


def _data(kind: str = "image", n: int = 96) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, *SHAPES[kind]), generator=g)
    y = torch.arange(n) % 4
    return Dataset("t", x, y, x[:32].clone(), y[:32].clone(), 4, kind)


def _cfg(pairs: str = "augment", loss: dict[str, Any] | None = None,
         augment: dict[str, Any] | None = None, **data: Any) -> Any:
    return parse_config({
        "seed": 1,
        "data": {"name": "synthetic", "pairs": pairs, "augment": augment or {}, **data},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 16}},
        "loss": loss or {"name": "hucl", "k": 8, "pool_size": 16},
        "train": {"epochs": 2, "batch_size": 16, "steps_per_epoch": 3, "progress": False,
                  "device": "cpu"},
        "eval": {"every": 1, "final_lsup": False, "final_knn": False, "final_probes": [],
                 "max_train": 64, "max_test": 32},
    })


def _drawn_as_it_goes(cfg: Any, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                      g: torch.Generator, aug: Any) -> torch.Tensor:
    """The inputs of a step as earlier versions built them: every augmentation drawing as it
    goes (a plain callable takes make_views' draw-as-you-go path)."""
    plain = None if aug is None else (lambda t, gen: aug(t, gen))
    x1, x2 = make_views(x, y, idx, cfg.data.pairs, g, augment=plain)
    parts = [x1, x2]
    if get_loss(cfg.loss.name).explicit_k:
        pool = negative_pool(y, cfg.loss.pool_size, g, anchor_labels=y[idx],
                             supervised=False, replace=cfg.loss.replacement)
        parts.append(x[pool] if plain is None else apply_augment(plain, x[pool], g))
    return torch.cat(parts)


@pytest.mark.parametrize("kind,engine,pairs", [
    ("image", "loop", "augment"), ("image", "batched", "augment"), ("image", "loop", "latent"),
    ("signal", "loop", "augment"), ("vector", "loop", "augment")])
def test_a_planned_step_is_the_step_drawn_as_it_goes(kind: str, engine: str,
                                                     pairs: str) -> None:
    data = _data(kind)
    cfg = _cfg(pairs, augment={"engine": engine, "strength": 0.7})
    aug = augmenter(kind, 0.7, engine) if pairs == "augment" else None
    idx = torch.randperm(96, generator=torch.Generator().manual_seed(3))[:16]
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    want = _drawn_as_it_goes(cfg, data.x_train, data.y_train, idx, ga, aug)
    got, labels, pool_labels, pool_ids = step_inputs(cfg, data.x_train, data.y_train, idx, gb,
                                                     aug)
    assert torch.equal(got, want)
    assert torch.equal(ga.get_state(), gb.get_state())  # the same draws, no more
    assert torch.equal(labels, data.y_train[idx]) and pool_ids is not None
    assert pool_labels is not None and torch.equal(pool_labels, data.y_train[pool_ids])


def test_a_plan_pickles_and_builds_the_same_inputs_elsewhere() -> None:
    data, cfg = _data(), _cfg()
    aug = augmenter("image", 1.0)
    plan = plan_step(cfg, data.x_train.shape, data.y_train, torch.arange(16),
                     torch.Generator().manual_seed(0), aug)
    sent, sent_aug = pickle.loads(pickle.dumps((plan, aug)))
    assert torch.equal(build_inputs(sent, data.x_train.clone(), sent_aug),
                       build_inputs(plan, data.x_train, aug))


def test_batches_are_built_on_the_device_for_latent_pairs_and_the_batched_engine() -> None:
    assert builds_on_device(_cfg("latent"))
    assert builds_on_device(_cfg(augment={"engine": "batched"}))
    assert not builds_on_device(_cfg())  # the per-sample engine: on the host
    data = _data()
    feed = BatchFeed(_cfg("latent", workers=2), data, None)
    assert feed.workers == 0 and feed.x is data.x_train  # cpu: the tensor itself, no copy
    assert BatchFeed(_cfg(workers=2), data, augmenter("image")).workers == 2


@pytest.mark.parametrize("pairs,engine", [("latent", "loop"), ("augment", "batched")])
def test_the_device_path_gives_the_same_run_bitwise(monkeypatch: pytest.MonkeyPatch,
                                                    pairs: str, engine: str) -> None:
    """The device path exercised with the device cpu: the training inputs 'moved' (a copy in
    other memory) once, every batch indexed and augmented there: the run of earlier versions
    (the golden runs pin the latent path too)."""
    data, cfg = _data(), _cfg(pairs, augment={"engine": engine})
    before = T.train(cfg, data)
    moves: list[str] = []
    init = BatchFeed.__init__

    def moved(self: BatchFeed, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        moves.append(str(self.x.device))
        self.x = self.x.clone()  # as if on another device: other memory

    monkeypatch.setattr(BatchFeed, "__init__", moved)
    after = T.train(cfg, data)
    assert moves == ["cpu"]  # once per run, not per batch
    assert after.epochs == before.epochs
    for p, q in zip(before.model.state_dict().values(), after.model.state_dict().values(),
                    strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind,loss", [
    ("image", {"name": "hucl", "k": 8, "pool_size": 16}),
    ("vector", {"name": "infonce"}),
    ("signal", {"name": "ucl", "k": 8, "negatives_from": "queue", "queue_size": 32})])
def test_workers_give_bitwise_the_same_run(kind: str, loss: dict[str, Any]) -> None:
    """The hard rule: a run is a function of its config, whatever ``data.workers``."""
    data = _data(kind)
    runs = {w: T.train(_cfg(loss=loss, workers=w), data) for w in (0, 2)}
    assert run_id(_cfg(loss=loss, workers=2)) == run_id(_cfg(loss=loss, workers=0))
    assert runs[0].status == runs[2].status == "done"
    assert runs[2].epochs == runs[0].epochs
    for p, q in zip(runs[0].model.state_dict().values(), runs[2].model.state_dict().values(),
                    strict=True):
        assert torch.equal(p, q)


def test_a_run_with_workers_resumes_exactly(tmp_path: Path) -> None:
    """The epoch's plans are all drawn by its end: the data generator in the checkpoint is the
    one of a run without workers."""
    data = _data()
    full = T.train(_cfg(workers=0), data)
    part = T.train(_cfg(workers=2), data, checkpoint_dir=tmp_path, stop_after=1)
    assert part.status == "stopped"
    resumed = T.train(_cfg(workers=2), data, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 1 and resumed.epochs == full.epochs


def test_workers_build_in_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    data, cfg = _data(), _cfg(workers=2)
    feed = BatchFeed(cfg, data, augmenter("image"))
    built_by: list[int] = []
    real = feed_module._Builder.__getitem__

    def spy(self: Any, plan: Any) -> Any:
        out = real(self, plan)
        return out._replace(batch_ids=torch.cat([out.batch_ids, torch.tensor([os.getpid()])]))

    monkeypatch.setattr(feed_module._Builder, "__getitem__", spy)
    order = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    for batch in feed.epoch(order, 4, torch.Generator().manual_seed(1)):
        built_by.append(int(batch.batch_ids[-1]))
    assert len(built_by) == 4 and os.getpid() not in built_by


def test_data_workers_and_pin_memory_are_checked_and_not_in_the_run_id() -> None:
    cfg = _cfg(workers=3)
    assert cfg.data.workers == 3 and cfg.data.pin_memory is False  # cpu: auto is off
    hashed = hashed_config(cfg)["data"]
    assert "workers" not in hashed and "pin_memory" not in hashed
    assert run_id(cfg) == run_id(_cfg(pin_memory=False))
    for bad, msg in ((-1, r"^data\.workers must be an integer >= 0; got -1"),
                     (True, r"^data\.workers must be an integer")):
        with pytest.raises(ConfigError, match=msg):
            _cfg(workers=bad)
    with pytest.raises(ConfigError, match=r"^data\.pin_memory: true needs a CUDA train\.device"
                                          r" .*got train\.device 'cpu'"):
        _cfg(pin_memory=True)


def test_bad_data_workers_exit_2_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from contrastlab.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("data: {name: synthetic, workers: -2}\n")
    res = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "data.workers must be an integer >= 0; got -2" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("pairs,engine", [("latent", "loop"), ("augment", "batched")])
def test_cuda_training_set_lives_on_the_device(pairs: str, engine: str) -> None:
    data = _data()
    cfg = parse_config({**_cfg(pairs, augment={"engine": engine}).model_dump(mode="json"),
                        "train": {**_cfg().train.model_dump(mode="json"), "device": "cuda"}})
    feed = BatchFeed(cfg, data, augmenter("image", engine=engine) if pairs == "augment"
                     else None)
    assert feed.x.device.type == "cuda" and feed.workers == 0
    order = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    cpu = BatchFeed(_cfg(pairs, augment={"engine": engine}), data, feed.augment)
    for a, b in zip(feed.epoch(order, 3, torch.Generator().manual_seed(1)),
                    cpu.epoch(order, 3, torch.Generator().manual_seed(1)), strict=True):
        assert a.inputs.device.type == "cuda"
        torch.testing.assert_close(a.inputs.cpu(), b.inputs, atol=1e-4, rtol=0)
    assert T.train(cfg, data).status == "done"


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_workers_pin_and_give_the_same_run() -> None:
    data = _data()
    raw = _cfg().model_dump(mode="json")
    runs = {}
    for w in (0, 2):
        cfg = parse_config({**raw, "data": {**raw["data"], "workers": w, "pin_memory": None},
                            "train": {**raw["train"], "device": "cuda"}})
        assert cfg.data.pin_memory is True
        runs[w] = T.train(cfg, data)
    assert runs[0].epochs == runs[2].epochs


def test_the_workers_persist_across_epochs_and_end_with_the_run() -> None:
    import multiprocessing

    data, cfg = _data(), _cfg(workers=2)
    feed = BatchFeed(cfg, data, augmenter("image"))
    order = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    pids = []
    for _ in range(2):
        assert len(list(feed.epoch(order, 3, g))) == 3
        pids.append(sorted(p.pid for p in multiprocessing.active_children()))
    assert len(pids[0]) == 2 and pids[0] == pids[1]  # the same two workers
    feed.close()
    for p in multiprocessing.active_children():
        p.join(timeout=10)
    assert not set(pids[0]) & {p.pid for p in multiprocessing.active_children()}
    before = {p.pid for p in multiprocessing.active_children()}
    assert T.train(_cfg(workers=2), data).status == "done"
    assert {p.pid for p in multiprocessing.active_children()} <= before  # ended with the run


def test_inputs_too_large_for_the_device_are_refused_in_one_line():
    from contrastlab.train.feed import DEVICE_DATA_FRACTION, check_fits_on_device

    gib = 2 ** 30
    check_fits_on_device(int(DEVICE_DATA_FRACTION * 10 * gib), 10 * gib, "cuda")  # at the limit
    with pytest.raises(ValueError) as err:
        check_fits_on_device(6 * gib, 10 * gib, "cuda:1")
    msg = str(err.value)
    assert "\n" not in msg and "train.device 'cuda:1'" in msg and "6.00 GiB" in msg
    assert "data.augment.engine: loop" in msg

"""train.device and train.precision (issue 16, item 1): the device is resolved once and checked,
bf16 / fp16 autocast trains finite and close to float32, resumes exactly (the fp16 scaler in the
checkpoint), and the run ids of float32 CPU runs do not change. CUDA tests are marked ``cuda``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import contrastlab.train as T
from contrastlab.data.registry import load_dataset
from contrastlab.train.config import (
    ConfigError,
    expand_sweep,
    for_gpu_workers,
    gpu_workers,
    hashed_config,
    parse_config,
    run_id,
)
from contrastlab.train.step import encode

HAS_CUDA = torch.cuda.is_available()


def _cfg(**train: Any) -> Any:
    return parse_config({
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 4, "dim": 8, "n_train": 256,
                                                  "n_test": 128}},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 32}},
        "loss": {"name": "hucl", "k": 16, "beta": 1.0},
        "optim": {"lr": 0.003},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "threads": 1, **train},
        "eval": {"every": 0, "final_lsup": False, "final_knn": False, "final_probes": [],
                 "geometry": False, "linear_probe": False},
    })


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("synthetic", seed=0, classes=4, dim=8, n_train=256, n_test=128)


def test_the_device_is_resolved_once_and_checked() -> None:
    cfg = _cfg()
    assert cfg.train.device == ("cuda" if HAS_CUDA else "cpu")
    assert _cfg(device="cpu").train.device == "cpu"
    for bad, msg in (("gpu", "train.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
                     ("cuda:99", "train.device 'cuda:99' is not available"),
                     ("fp8", None)):
        if msg is None:
            with pytest.raises(ConfigError, match=r"^train\.precision must be one of"):
                _cfg(precision=bad)
            continue
        with pytest.raises(ConfigError, match=msg):
            _cfg(device=bad)
    if not HAS_CUDA:
        with pytest.raises(ConfigError, match=r"train\.device 'cuda' is not available"):
            _cfg(device="cuda")


def test_runs_for_ray_gpu_workers_resolve_auto_to_cuda_here() -> None:
    """--gpus-per-run (issue 16, item 5): the driver plans the runs for the GPUs Ray assigns,
    whatever its own devices; the worker checks its own when it parses the run's config."""
    here = _cfg()
    gpu = for_gpu_workers(here)
    assert gpu.train.device == "cuda"
    assert for_gpu_workers(_cfg(device="cpu")).train.device == "cpu"  # an explicit cpu stays
    raw = here.model_dump(mode="json")
    raw["train"]["device"] = "cuda:1"
    assert for_gpu_workers(raw).train.device == "cuda:1"  # not looked for on this machine
    with gpu_workers():
        points = expand_sweep(parse_config({**gpu.model_dump(mode="json"),
                                            "sweep": {"seed": [0, 1]}}))
    assert [p.train.device for p in points] == ["cuda", "cuda"]
    if not HAS_CUDA:
        assert run_id(gpu) != run_id(here)  # the device enters the id (cpu is its default)
        with pytest.raises(ConfigError, match=r"train\.device 'cuda' is not available"):
            parse_config(gpu.model_dump(mode="json"))  # outside: checked on this machine


def test_float32_cpu_runs_keep_their_ids_and_precision_enters_the_id() -> None:
    plain = _cfg(device="cpu")
    assert "device" not in hashed_config(plain)["train"]
    assert "precision" not in hashed_config(plain)["train"]
    assert run_id(_cfg(device="cpu", precision="fp32")) == run_id(plain)
    assert run_id(_cfg(device="cpu", precision="bf16")) != run_id(plain)
    assert hashed_config(_cfg(device="cpu", precision="bf16"))["train"]["precision"] == "bf16"


def test_encode_autocasts_the_forward_and_returns_float32() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(10, 8)
    want = model(x)
    assert torch.equal(encode(model, x, "fp32"), want)
    for precision in ("bf16", "fp16"):
        z = encode(model, x, precision)
        assert z.dtype == torch.float32
        torch.testing.assert_close(z, want, atol=0.05, rtol=0.05)
        assert not torch.equal(z, want)  # computed in low precision


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_trains_close_to_float32_and_deterministically(
    data: Any, precision: str
) -> None:
    ref = T.train(_cfg(device="cpu"), data)
    low = T.train(_cfg(device="cpu", precision=precision), data)
    again = T.train(_cfg(device="cpu", precision=precision), data)
    assert low.status == "done" and low.epochs == again.epochs
    for a, b in zip(ref.epochs, low.epochs, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.03 * a["train_loss"]
        assert a["train_loss"] != b["train_loss"]


def test_fp16_resumes_exactly_with_its_gradient_scaler(data: Any, tmp_path: Path) -> None:
    cfg = _cfg(device="cpu", precision="fp16", epochs=3)
    full = T.train(cfg, data, checkpoint_dir=tmp_path / "a")
    part = T.train(cfg, data, checkpoint_dir=tmp_path / "b", stop_after=1)
    assert part.status == "stopped"
    from contrastlab.checkpoint import read as read_checkpoint

    state = read_checkpoint(tmp_path / "b" / T.CHECKPOINT_NAME)
    assert "scaler" in state and state["scaler"]["scale"] > 0
    resumed = T.train(cfg, data, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 1 and resumed.epochs == full.epochs


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_run_matches_the_cpu_run(data: Any, precision: str) -> None:
    cpu = T.train(_cfg(device="cpu", precision=precision), data)
    gpu = T.train(_cfg(device="cuda", precision=precision), data)
    assert gpu.status == "done"
    assert next(gpu.model.parameters()).device.type == "cuda"
    for a, b in zip(cpu.epochs, gpu.epochs, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.03 * a["train_loss"]
    print(f"peak CUDA memory ({precision}): {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")


def test_compile_trains_the_same_model_close_to_eager(data: Any) -> None:
    eager = T.train(_cfg(device="cpu", epochs=1), data)
    compiled_cfg = _cfg(device="cpu", epochs=1, compile=True)
    assert run_id(compiled_cfg) != run_id(_cfg(device="cpu", epochs=1))
    assert "compile" not in hashed_config(_cfg(device="cpu"))["train"]
    compiled = T.train(compiled_cfg, data)
    assert compiled.status == "done"
    assert abs(compiled.epochs[0]["train_loss"] - eager.epochs[0]["train_loss"]) < 1e-4 * abs(
        eager.epochs[0]["train_loss"])
    assert not hasattr(compiled.model, "_orig_mod")  # the plain module is returned and saved


def _cnn_cfg(**train: Any) -> Any:
    return parse_config({
        "seed": 0,
        "data": {"name": "digits"},
        "model": {"encoder": "cnn28", "out_dim": 9},
        "loss": {"name": "ucl", "k": 16},
        "train": {"epochs": 1, "batch_size": 128, "steps_per_epoch": 4, "progress": False,
                  "threads": 1, "device": "cpu", **train},
        "eval": {"every": 0, "final_lsup": False, "final_knn": False, "final_probes": [],
                 "geometry": False, "linear_probe": False},
    })


def test_channels_last_computes_the_same_cnn_and_enters_the_id() -> None:
    import copy

    from contrastlab.train.build import build_model

    plain, last = _cnn_cfg(), _cnn_cfg(channels_last=True)
    assert run_id(plain) == run_id(_cnn_cfg(channels_last=False)) != run_id(last)
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    # float64: the batch-norm backward cancels, so float32 round-off shows at the 1e-3 level
    model = build_model(plain, tuple(data.x_train.shape[1:])).double()
    other = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = data.x_train[:64].double()
    za, zb = model(x), other(x)  # the same weights, another layout: the same math
    assert torch.allclose(za, zb, rtol=1e-10, atol=1e-12)
    w = torch.randn(za.shape, generator=torch.Generator().manual_seed(1))
    (za * w).sum().backward()  # (the outputs lie on the sphere: a random direction, not |z|^2)
    (zb * w).sum().backward()
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12)
    res = T.train(last, data)  # the trainer keeps the layout through training
    conv = next(p for p in res.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(bool(torch.isfinite(p).all()) for p in res.model.parameters())
    with pytest.raises(ConfigError, match=r"^train\.channels_last applies to the 2-D image "):
        _cfg(channels_last=True)  # an MLP


def test_channels_last_inputs_give_the_default_outputs_and_loss() -> None:
    """``train.channels_last`` puts the input batches in the channels-last layout too
    (:func:`encode`): the outputs and a training step's loss of the default layout, to float32
    tolerance."""
    import copy

    from contrastlab.train.build import build_model
    from contrastlab.train.step import step_inputs, step_loss

    plain, last = _cnn_cfg(), _cnn_cfg(channels_last=True)
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model(plain, tuple(data.x_train.shape[1:]))
    other = copy.deepcopy(model).to(memory_format=torch.channels_last)
    seen: list[bool] = []
    other.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = data.x_train[:64]
    torch.testing.assert_close(encode(other, x, channels_last=True), encode(model, x),
                               rtol=1e-4, atol=1e-5)
    assert seen == [True]
    inputs, labels, pool_labels, pool_ids = step_inputs(
        plain, data.x_train, data.y_train, torch.arange(128), torch.Generator().manual_seed(0),
        None)
    losses = [float(step_loss(c, m, inputs, labels, pool_labels,
                              torch.Generator().manual_seed(1), pool_ids=pool_ids).detach())
              for c, m in ((plain, model), (last, other))]
    assert seen[-1] is True
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])


def test_channels_last_auto_is_on_for_image_cnns_on_cuda_only() -> None:
    auto = _cnn_cfg(channels_last="auto")
    assert auto.train.channels_last is False  # cpu
    assert run_id(auto) == run_id(_cnn_cfg())
    raw = _cnn_cfg().model_dump(mode="json")
    raw["train"].update(device="auto", channels_last="auto")
    mlp = _cfg().model_dump(mode="json")
    mlp["train"].update(device="auto", channels_last="auto")
    with gpu_workers():  # as planned for GPU workers: auto is cuda
        assert parse_config(raw).train.channels_last is True
        assert parse_config(mlp).train.channels_last is False  # not an image CNN
    for bad in ("yes", 1):
        with pytest.raises(ConfigError, match=r"^train\.channels_last must be one of False, "
                                              r"True, 'auto'; got"):
            _cnn_cfg(channels_last=bad)


def test_sync_batchnorm_is_refused_off_cuda_and_enters_the_id_when_true(tmp_path: Path) -> None:
    """torch's SyncBatchNorm runs on GPUs only (tests/test_distributed_training.py checks it
    on CPU under gloo): refused off CUDA when the config is parsed, exit 2 in one line."""
    with pytest.raises(ConfigError, match=r"^train\.sync_batchnorm: true needs train\.device "
                                          r"'cuda' or 'cuda:N' .*got train\.device 'cpu'"):
        _cnn_cfg(sync_batchnorm=True)
    raw = _cnn_cfg().model_dump(mode="json")
    raw["train"]["device"] = "cuda"
    with gpu_workers():
        off = parse_config(raw)
        on = parse_config({**raw, "train": {**raw["train"], "sync_batchnorm": True}})
    assert "sync_batchnorm" not in hashed_config(off)["train"]
    assert hashed_config(on)["train"]["sync_batchnorm"] is True and run_id(on) != run_id(off)
    from typer.testing import CliRunner

    from contrastlab.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("train: {device: cpu, sync_batchnorm: true}\n")
    res = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "train.sync_batchnorm: true needs train.device 'cuda'" in res.output


def test_sync_batchnorm_converts_the_batchnorm_layers_of_a_data_parallel_run() -> None:
    from contrastlab.train.build import build_model, sync_batchnorm

    raw = _cnn_cfg().model_dump(mode="json")
    raw["train"].update(device="cuda", sync_batchnorm=True)
    with gpu_workers():
        cfg = parse_config(raw)
    shape = (1, 8, 8)
    torch.manual_seed(0)
    single = sync_batchnorm(cfg, build_model(cfg, shape), world=1)
    torch.manual_seed(0)
    ranks = sync_batchnorm(cfg, build_model(cfg, shape), world=2)
    kinds = {type(m).__name__ for m in ranks.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in single.modules())
    a, b = single.state_dict(), ranks.state_dict()  # checkpoints keep their keys and values
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_channels_last_trains_close_to_the_default() -> None:
    data = load_dataset("digits", seed=0)
    runs = [T.train(_cnn_cfg(device="cuda", channels_last=v), data) for v in (False, True)]
    assert all(r.status == "done" for r in runs)
    conv = next(p for p in runs[1].model.parameters() if p.dim() == 4)
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    a, b = (r.epochs[-1]["train_loss"] for r in runs)
    assert abs(a - b) < 1e-3 * abs(a)

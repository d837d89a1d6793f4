"""Data-parallel training: two spawned gloo processes calling train() follow the single-process
run on the same global batch (same final parameters to float tolerance). One spawn per module;
the first run starts the process group from torchrun's environment variables (WORLD_SIZE, RANK,
MASTER_ADDR, MASTER_PORT), the others reuse a group the worker initialized itself."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import contrastlab.train as T
from contrastlab.train.config import parse_config
from tests.spawn import free_port, spawn_results

WORLD = 2

CASES: dict[str, dict[str, Any]] = {
    "infonce": {"name": "infonce", "temperature": 0.5},
    "supcon": {"name": "supcon", "temperature": 0.5},
    "debiased-hard": {"name": "debiased-hard", "temperature": 0.5, "tau_plus": 0.1, "beta": 1.0},
    # pool of 32 (divisible by 2): sharded over the ranks; sampled negatives (shared generator)
    "hucl-sampled": {"name": "hucl", "k": 8, "beta": 1.0, "pool_size": 32},
    "scl-exact": {"name": "scl", "k": 8, "exact": True, "pool_size": 32},
    # pool of 33: replicated on both ranks
    "nce-replicated-pool": {"name": "nce", "k": 8, "pool_size": 33},
}
#: train.local_loss: each rank its own anchors (contrastlab.losses.sharded); the single-process
#: reference is the same loss without it
LOCAL_CASES = ("infonce", "supcon", "debiased-hard")


def _cfg(loss: dict[str, Any], batch_size: int = 32, local_loss: bool = False) -> Any:
    return parse_config({
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 4, "dim": 8, "n_train": 256,
                                                  "n_test": 64}},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 16}},
        "loss": loss,
        "optim": {"lr": 0.01},
        "train": {"epochs": 2, "batch_size": batch_size, "steps_per_epoch": 3,
                  "progress": False, "threads": 1, "local_loss": local_loss},
        "eval": {"every": 0, "linear_probe": False, "final_lsup": False, "final_knn": False,
                 "max_train": 128, "max_test": 64},
    })


def _params(model: torch.nn.Module) -> dict[str, Any]:
    """Numpy copies (tensors sent through a torch.multiprocessing queue share memory with a
    process that exits)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _worker(rank: int, ports: tuple[int, int], ckpt_root: str, queue: Any) -> None:
    out: dict[str, Any] = {}
    try:
        torch.set_num_threads(1)
        names = list(CASES)
        # 1. torchrun's environment: train() starts (and ends) the process group itself
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[0]),
               "WORLD_SIZE": str(WORLD), "RANK": str(rank), "LOCAL_RANK": str(rank)}
        os.environ.update(env)
        first = names[0]
        res = T.train(_cfg(CASES[first]), checkpoint_dir=Path(ckpt_root) / first)
        out[first] = (res.status, _params(res.model), [e["train_loss"] for e in res.epochs],
                      sorted(res.reports))
        out["group_destroyed"] = not dist.is_initialized()
        for key in env:
            del os.environ[key]
        # 2. a process group initialized by the caller
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[1]}", rank=rank,
                                world_size=WORLD)
        for name in names[1:]:
            res = T.train(_cfg(CASES[name]))
            out[name] = (res.status, _params(res.model), [e["train_loss"] for e in res.epochs],
                         sorted(res.reports))
        for name in LOCAL_CASES:
            res = T.train(_cfg(CASES[name], local_loss=True))
            out[f"{name}-local"] = (res.status, _params(res.model),
                                    [e["train_loss"] for e in res.epochs], sorted(res.reports))
        # 3. resume: stop after epoch 1 (rank 0 writes the checkpoint), then resume
        cfg = _cfg(CASES["hucl-sampled"])
        resume_dir = Path(ckpt_root) / "resume"
        stopped = T.train(cfg, checkpoint_dir=resume_dir, stop_after=1)
        res = T.train(cfg, checkpoint_dir=resume_dir)
        out["resume"] = (stopped.status, res.resumed_from, _params(res.model))
        try:
            T.train(_cfg(CASES["infonce"], batch_size=33))
            out["indivisible"] = "<no error>"
        except ValueError as exc:
            out["indivisible"] = str(exc)
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - reported to the parent
        out["error"] = traceback.format_exc()
    queue.put((rank, out))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    root = tmp_path_factory.mktemp("ddp")
    got = spawn_results(_worker, WORLD, ((free_port(), free_port()), str(root)))
    got[-1] = {"root": root}
    return got


@pytest.mark.parametrize("case", [*CASES, *(f"{n}-local" for n in LOCAL_CASES)])
def test_two_process_run_matches_single_process(
    results: dict[int, dict[str, Any]], case: str, one_thread: None
) -> None:
    single = T.train(_cfg(CASES[case.removesuffix("-local")]))
    ref = _params(single.model)
    ref_losses = [e["train_loss"] for e in single.epochs]
    for rank in range(WORLD):
        status, params, losses, reports = results[rank][case]
        assert status == "done"
        for key, value in ref.items():
            err = float(abs(params[key] - value).max())
            assert err < 1e-5, (rank, key, err)
        assert losses == pytest.approx(ref_losses, abs=1e-5)
        # evaluation and reports on rank 0 only
        assert reports == (sorted(single.reports) if rank == 0 else [])


def test_torchrun_env_group_is_created_and_destroyed_and_rank0_checkpoints(
    results: dict[int, dict[str, Any]],
) -> None:
    assert all(results[r]["group_destroyed"] for r in range(WORLD))
    root = results[-1]["root"]
    assert (root / "infonce" / T.CHECKPOINT_NAME).is_file()
    assert not list((root / "infonce").glob("*.tmp*"))


def test_resume_from_rank0_checkpoint_matches_uninterrupted_single_process(
    results: dict[int, dict[str, Any]], one_thread: None
) -> None:
    ref = _params(T.train(_cfg(CASES["hucl-sampled"])).model)
    for rank in range(WORLD):
        status, resumed_from, params = results[rank]["resume"]
        assert status == "stopped" and resumed_from == 1
        for key, value in ref.items():
            assert float(abs(params[key] - value).max()) < 1e-5, (rank, key)


def test_batch_size_must_be_divisible_by_world(results: dict[int, dict[str, Any]]) -> None:
    for rank in range(WORLD):
        msg = results[rank]["indivisible"]
        assert "train.batch_size 33 must be divisible by the world size 2" in msg, msg


TINY_YAML = """\
seed: 0
data:
  name: synthetic
  options: {classes: 4, dim: 8, n_train: 256, n_test: 64}
model: {encoder: mlp, out_dim: 4, options: {hidden: 16}}
loss: {name: hucl, k: 8, beta: 1.0, pool_size: 32}
optim: {lr: 0.01}
train: {epochs: 2, batch_size: 32, steps_per_epoch: 3, progress: false, threads: 1}
eval: {every: 0, linear_probe: false, final_lsup: false, final_knn: false}
"""


@pytest.mark.slow
def test_torchrun_cli_run_matches_single_process(tmp_path: Path) -> None:
    """The README's command: ``torchrun --nproc_per_node=2 -m contrastlab run CONFIG`` records
    the same results as ``python -m contrastlab run CONFIG`` (rank 0 writes; ~10 s)."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed next to this python")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)

    def table(out: str) -> list[str]:
        return [line for line in out.splitlines() if line.startswith("hucl")]

    single = subprocess.run([sys.executable, "-m", "contrastlab", "run", str(config), "--out",
                             str(tmp_path / "single")], capture_output=True, text=True,
                            timeout=300, check=True)
    ddp = subprocess.run([torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1",
                          f"--master_port={free_port()}", "-m", "contrastlab", "run",
                          str(config), "--out", str(tmp_path / "ddp")], capture_output=True,
                         text=True, timeout=300, check=True)
    assert table(single.stdout) and table(ddp.stdout) == table(single.stdout)
    assert "rank 1 done (results recorded by rank 0)" in ddp.stdout


def _sync_batchnorm_worker(rank: int, port: int, queue: Any) -> None:
    out: dict[str, Any] = {}
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD)
        try:
            torch.nn.SyncBatchNorm(3)(torch.randn(4, 3, 2, 2))
            out["cpu"] = "ran"
        except ValueError as exc:
            out["cpu"] = str(exc)
        dist.destroy_process_group()
    except Exception:
        out["error"] = traceback.format_exc()
    queue.put((rank, out))


def test_torch_sync_batchnorm_does_not_run_on_cpu_under_gloo() -> None:
    """Why ``train.sync_batchnorm`` is refused off CUDA when the config is parsed: torch's
    SyncBatchNorm raises on CPU tensors in a process group. Should a torch version lift this,
    this test fails: then allow it on the CPU."""
    got = spawn_results(_sync_batchnorm_worker, WORLD, (free_port(),))
    for out in got.values():
        assert "SyncBatchNorm expected input tensor to be on GPU" in out["cpu"]


def _sync_batchnorm_cuda_worker(rank: int, port: int, queue: Any) -> None:
    out: dict[str, Any] = {}
    try:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                           "WORLD_SIZE": str(WORLD), "RANK": str(rank),
                           "LOCAL_RANK": str(rank)})
        res = T.train(_bn_cfg())
        out["run"] = (res.status, _params(res.model))
    except Exception:
        out["error"] = traceback.format_exc()
    queue.put((rank, out))


def _bn_cfg() -> Any:
    return parse_config({
        "seed": 0, "data": {"name": "digits"},
        "model": {"encoder": "cnn28", "out_dim": 9},
        "loss": {"name": "infonce", "temperature": 0.5},
        "optim": {"lr": 0.01},
        "train": {"epochs": 1, "batch_size": 64, "steps_per_epoch": 3, "progress": False,
                  "threads": 1, "device": "cuda", "sync_batchnorm": True},
        "eval": {"every": 0, "linear_probe": False, "final_lsup": False, "final_knn": False},
    })


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < WORLD,
                    reason="needs 2 CUDA devices")
def test_cuda_sync_batchnorm_follows_the_single_process_run() -> None:
    """Two nccl ranks with SyncBatchNorm: batch statistics over the global batch, so the run
    follows the single-process run (whose BatchNorm sees the whole batch) to float tolerance."""
    single = T.train(_bn_cfg())
    got = spawn_results(_sync_batchnorm_cuda_worker, WORLD, (free_port(),))
    want = _params(single.model)
    for out in got.values():
        status, params = out["run"]
        assert status == "done"
        for key, value in want.items():
            assert abs(params[key] - value).max() < 1e-4, key

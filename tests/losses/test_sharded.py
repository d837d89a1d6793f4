"""contrastlab.losses.sharded: each rank its own anchors, two gloo processes (one spawn for the
module), against the single-process loss on the concatenated batch.

Relations checked on every rank r (module docstring of contrastlab.losses.sharded):

- value: ``mean`` returns the mean of rank r's 2n per-anchor losses, so the mean over the ranks is
  the single-process loss; ``sum`` returns W x the local sum; ``none`` the rank's per-anchor
  losses (its z1 rows, then its z2 rows) equal to the single-process ones;
- gradient: d/dx_local == W * dL_single/dx_r (what ``gather=True`` gives), so DDP's average is
  the single-process parameter gradient (checked on a linear encoder);
- single process (W = 1): ``gather="local"`` equals the plain loss.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import pytest
import torch
import torch.distributed as dist

from tests.spawn import free_port, spawn_results

WORLD = 2
N_LOCAL = 5
N = WORLD * N_LOCAL
D = 6
TOL = 1e-9


def _batch(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 3])
    return z1.to(dtype), z2.to(dtype), labels


def _local(loss: Any) -> Any:
    """The public loss with ``gather="local"``."""

    def call(*args: Any, **kwargs: Any) -> torch.Tensor:
        return loss(*args, **kwargs, gather="local")

    return call


def _pairs() -> list[tuple[str, Any, Any, dict[str, Any]]]:
    from contrastlab import losses as L

    _, _, y = _batch()
    return [
        ("info_nce", L.info_nce, _local(L.info_nce), {"temperature": 0.5}),
        ("info_nce_none", L.info_nce, _local(L.info_nce),
         {"temperature": 0.2, "normalize": "none"}),
        ("supcon_labels", L.supcon, _local(L.supcon), {"labels": y, "temperature": 0.1}),
        ("supcon_base_t", L.supcon, _local(L.supcon),
         {"labels": y, "temperature": 0.3, "base_temperature": 0.07, "normalize": "ball"}),
        ("supcon_no_labels", L.supcon, _local(L.supcon), {"temperature": 0.5}),
        ("debiased_beta0", L.debiased_hard, _local(L.debiased_hard),
         {"beta": 0.0, "tau_plus": 0.1}),
        ("debiased_beta1", L.debiased_hard, _local(L.debiased_hard),
         {"beta": 1.0, "tau_plus": 0.05, "temperature": 0.2}),
    ]


def _one(rank: int, plain: Any, sharded: Any, kw: dict[str, Any], reduction: str,
         dtype: torch.dtype) -> dict[str, float]:
    """Errors of the rank's sharded loss against the single-process float64 dense loss."""
    z1, z2, _ = _batch()
    lo, hi = rank * N_LOCAL, (rank + 1) * N_LOCAL
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ref = plain(r1, r2, reduction="none", tiled=False, **kw)
    ref_red = {"mean": ref.mean(), "sum": ref.sum(), "none": ref.sum()}[reduction]
    ref_red.backward()
    assert r1.grad is not None and r2.grad is not None
    skw = dict(kw)
    if "labels" in skw:
        skw["labels"] = skw["labels"][lo:hi]
    a = z1[lo:hi].to(dtype).requires_grad_()
    b = z2[lo:hi].to(dtype).requires_grad_()
    out = sharded(a, b, reduction=reduction, **skw)
    (out.sum() if reduction == "none" else out).backward()
    assert a.grad is not None and b.grad is not None
    mine = torch.cat([ref[lo:hi], ref[N + lo : N + hi]])
    if reduction == "none":
        value_err = float((out.double() - mine).abs().max())
        scale = 1.0 / WORLD  # unscaled rows: the ranks' sums add up to the single-process sum
    else:
        total = out.detach().double().clone()
        dist.all_reduce(total)
        value_err = abs(float(total) / WORLD - float(ref_red))
        local = mine.mean() if reduction == "mean" else WORLD * mine.sum()
        value_err = max(value_err, abs(float(out) - float(local)))
        scale = 1.0
    return {
        "value": value_err,
        "grad_z1": float((a.grad.double() - WORLD * scale * r1.grad[lo:hi]).abs().max()),
        "grad_z2": float((b.grad.double() - WORLD * scale * r2.grad[lo:hi]).abs().max()),
    }


def _ddp_average(rank: int) -> float:
    """The DDP average of a linear encoder's parameter gradients under the sharded loss equals
    the single-process gradient."""
    from contrastlab import losses as L

    z1, z2, _ = _batch()
    torch.manual_seed(0)
    lin = torch.nn.Linear(D, 3).double()
    ref = torch.nn.Linear(D, 3).double()
    ref.load_state_dict(lin.state_dict())
    L.info_nce(ref(z1), ref(z2), temperature=0.5, tiled=False).backward()
    lo, hi = rank * N_LOCAL, (rank + 1) * N_LOCAL
    L.info_nce(lin(z1[lo:hi]), lin(z2[lo:hi]), temperature=0.5, gather="local").backward()
    errs = []
    for p, q in zip(lin.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        g = p.grad.clone()
        dist.all_reduce(g)
        errs.append(float((g / WORLD - q.grad).abs().max()))
    return max(errs)


def _worker(rank: int, port: int, queue: Any) -> None:
    out: dict[str, Any] = {}
    try:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        for name, plain, sharded, kw in _pairs():
            for reduction in ("mean", "sum", "none"):
                out[f"{name}-{reduction}"] = _one(rank, plain, sharded, kw, reduction,
                                                  torch.float64)
            out[f"{name}-float32"] = _one(rank, plain, sharded, kw, "mean", torch.float32)
        out["ddp_average"] = _ddp_average(rank)
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - reported to the parent
        out["error"] = traceback.format_exc()
    queue.put((rank, out))


@pytest.fixture(scope="module")
def results() -> dict[int, dict[str, Any]]:
    return spawn_results(_worker, WORLD, (free_port(),), timeout=120)


CASES = [f"{name}-{red}" for name in ("info_nce", "info_nce_none", "supcon_labels",
                                       "supcon_base_t", "supcon_no_labels", "debiased_beta0",
                                       "debiased_beta1")
         for red in ("mean", "sum", "none", "float32")]


@pytest.mark.parametrize("case", CASES)
def test_sharded_loss_and_gradient_match_single_process(
    results: dict[int, dict[str, Any]], case: str
) -> None:
    tol = 2e-5 if case.endswith("float32") else TOL
    for rank in range(WORLD):
        errs = results[rank][case]
        assert set(errs) == {"value", "grad_z1", "grad_z2"}
        for key, e in errs.items():
            assert e < tol, (rank, case, key, errs)


def test_ddp_average_of_sharded_gradients_is_single_process_gradient(
    results: dict[int, dict[str, Any]],
) -> None:
    for rank in range(WORLD):
        assert results[rank]["ddp_average"] < TOL


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_single_process_equals_the_plain_loss(reduction: str) -> None:
    for _, plain, sharded, kw in _pairs():
        z1, z2, _ = _batch()
        a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        ref = plain(a1, a2, reduction=reduction, tiled=False, **kw)
        out = sharded(b1, b2, reduction=reduction, **kw)
        ref.sum().backward()
        out.sum().backward()
        assert torch.allclose(out, ref, rtol=0, atol=1e-12)
        assert a1.grad is not None and b1.grad is not None
        assert torch.allclose(b1.grad, a1.grad, rtol=0, atol=1e-12)


def test_local_anchor_rows() -> None:
    from contrastlab.losses.sharded import local_anchor_rows

    assert local_anchor_rows(1, 3, 2).tolist() == [2, 3, 8, 9]
    assert local_anchor_rows(0, 1, 3).tolist() == [0, 1, 2, 3, 4, 5]


def test_bad_input_is_one_line() -> None:
    from contrastlab import losses as L

    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        L.debiased_hard(z, z, gather="local")
    with pytest.raises(ValueError, match="temperature"):
        L.info_nce(z, z, temperature=0.0, gather="local")
    with pytest.raises(ValueError, match="reduction"):
        L.info_nce(z, z, reduction="avg", gather="local")
    with pytest.raises(ValueError, match="gather must be True, False or 'local'; got 'yes'"):
        L.info_nce(z, z, gather="yes")
    with pytest.raises(ValueError, match="nce_loss takes gather=True"):
        L.nce_loss(z, z, torch.randn(3, 4), gather="local")


def test_local_rows_in_several_blocks_equal_the_plain_loss() -> None:
    """The engine's row blocks with their own self / positive masks (``row_ids``)."""
    from contrastlab import losses as L
    from contrastlab.losses.sharded import local_debiased_hard, local_info_nce

    z1, z2, _ = _batch()
    for plain, local, kw in ((L.info_nce, local_info_nce, {"temperature": 0.3}),
                             (L.debiased_hard, local_debiased_hard,
                              {"temperature": 0.3, "tau_plus": 0.1, "beta": 1.5})):
        ref = plain(z1, z2, reduction="none", tiled=False, **kw)
        out = local(z1, z2, normalize="sphere", reduction="none", block_rows=3, **kw)
        assert torch.allclose(out, ref, rtol=0, atol=1e-12)

"""contrastlab.distributed: two gloo processes on one machine, one spawn for the whole module.

Every check runs inside the two workers (each holds its contiguous slice of a fixed global
batch); the workers send their measured errors back through a queue and the tests assert on
them. The relation checked for every loss L computed with ``gather=True``:

- value: L on each rank == the single-process loss on the concatenated batch;
- gradient: d/dx_local on rank r == W * dL_single/dx_r (every rank computes the same global L
  and the backward all_reduce sums the W identical gradients), so DDP's average
  (1/W) sum_r W dL/dx_r dx_r/dtheta is exactly the single-process dL/dtheta (checked on a
  linear encoder too); a replicated shared pool gets the plain dL/dP on every rank.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist

from tests.spawn import free_port, spawn_results

WORLD = 2
B_LOCAL = 4
B = WORLD * B_LOCAL
D = 5
K = 6
TOL = 1e-6


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {
        "z1": torch.randn(B, D, generator=g, dtype=torch.float64),
        "z2": torch.randn(B, D, generator=g, dtype=torch.float64),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        "pool": torch.randn(K, D, generator=g, dtype=torch.float64),
        "neg": torch.randn(B, K, D, generator=g, dtype=torch.float64),
        # per-anchor indices into the (replicated) pool, repeats included
        "idx": torch.randint(0, K, (B, 5), generator=torch.Generator().manual_seed(99)),
    }


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _check(
    rank: int,
    fn: Callable[..., torch.Tensor],
    global_args: dict[str, torch.Tensor],
    batch_names: tuple[str, ...],
    reference: Callable[..., torch.Tensor],
    kwargs: dict[str, Any],
    make_kwargs: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Value and gradient errors of fn(local slices, gather=True) against the reference."""
    lo, hi = rank * B_LOCAL, (rank + 1) * B_LOCAL
    ref_in = {n: (v.clone().requires_grad_(v.is_floating_point())) for n, v in
              global_args.items()}
    extra = make_kwargs() if make_kwargs else {}
    ref = reference(**ref_in, **kwargs, **extra)
    ref.backward()
    loc_in = {}
    for n, v in global_args.items():
        part = v[lo:hi] if n in batch_names else v
        loc_in[n] = part.clone().requires_grad_(v.is_floating_point())
    extra = make_kwargs() if make_kwargs else {}
    out = fn(**loc_in, **kwargs, **extra, gather=True)
    out.backward()
    errs = {"value": abs(float(out) - float(ref))}
    for n, v in loc_in.items():
        if not v.is_floating_point():
            continue
        g_ref = ref_in[n].grad
        assert g_ref is not None and v.grad is not None
        if n in batch_names:
            errs[f"grad_{n}"] = _err(v.grad, WORLD * g_ref[lo:hi])
        else:  # replicated (not gathered): plain dL/dP on every rank
            errs[f"grad_{n}"] = _err(v.grad, g_ref)
    return errs


def _info_nce_with_gather_flag(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = False,
    group: Any = None,
) -> torch.Tensor:
    """The planned one-line change for the losses package: a ``gather`` flag that routes the
    call through :func:`contrastlab.distributed.call_gathered` (with itself as the loss)."""
    from contrastlab import distributed as Dm
    from contrastlab.losses import info_nce

    if gather or group is not None:
        return Dm.call_gathered(_info_nce_with_gather_flag, Dm.BATCH_ARGS["info_nce"], z1, z2,
                                temperature, group=group)
    return info_nce(z1, z2, temperature)


def _module_info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
                     gather: bool) -> torch.Tensor:
    from contrastlab.losses.modules import InfoNCELoss

    return InfoNCELoss(temperature, gather=gather)(z1, z2)


def _module_hucl(z: torch.Tensor, labels: torch.Tensor, k: int, exact: bool, beta: float,
                 generator: torch.Generator, gather: bool) -> torch.Tensor:
    from contrastlab.losses.modules import HardContrastiveLoss

    return HardContrastiveLoss("marginal", beta, k, exact=exact, gather=gather)(z, labels,
                                                                              generator)


def _cases() -> list[tuple[str, Any, dict[str, torch.Tensor], tuple[str, ...], Any,
                           dict[str, Any], Any]]:
    import contrastlab.losses.gathered as Gm
    from contrastlab import losses as L

    gb = _global_batch()
    two = {"z1": gb["z1"], "z2": gb["z2"]}
    cases: list[Any] = [
        ("info_nce", Gm.info_nce, two, ("z1", "z2"), L.info_nce, {"temperature": 0.5}, None),
        ("info_nce_gather_flag", _info_nce_with_gather_flag, two, ("z1", "z2"), L.info_nce,
         {"temperature": 0.5}, None),
        # the library's own ``gather=True`` flag
        ("flag_info_nce", functools.partial(L.info_nce, gather=True), two, ("z1", "z2"),
         L.info_nce, {"temperature": 0.5}, None),
        ("flag_supcon", functools.partial(L.supcon, gather=True),
         {**two, "labels": gb["labels"]}, ("z1", "z2", "labels"), L.supcon,
         {"temperature": 0.2}, None),
        ("flag_debiased", functools.partial(L.debiased_hard, gather=True), two, ("z1", "z2"),
         L.debiased_hard, {"tau_plus": 0.1, "beta": 1.0}, None),
        ("flag_nce_per_anchor", functools.partial(L.nce_loss, gather=True),
         {"anchor": gb["z1"], "positive": gb["z2"], "negatives": gb["neg"]},
         ("anchor", "positive", "negatives"), L.nce_loss,
         {"temperature": 0.5, "normalize": "sphere"}, None),
        ("flag_hucl_sampled", functools.partial(L.hucl, gather=True),
         {"z": gb["z1"], "labels": gb["labels"]}, ("z", "labels"), L.hucl,
         {"k": 3, "exact": False, "beta": 1.0},
         lambda: {"generator": torch.Generator().manual_seed(7)}),
        ("module_info_nce", _module_info_nce, two, ("z1", "z2"), L.info_nce,
         {"temperature": 0.5}, None),
        ("module_hucl_sampled", _module_hucl, {"z": gb["z1"], "labels": gb["labels"]},
         ("z", "labels"), L.hucl, {"k": 3, "exact": False, "beta": 1.0},
         lambda: {"generator": torch.Generator().manual_seed(7)}),
        ("flag_scl_exact", functools.partial(L.scl, gather=True),
         {"z": gb["z1"], "labels": gb["labels"]}, ("z", "labels"), L.scl,
         {"k": 3, "exact": True}, None),
        ("info_nce_tiled", Gm.info_nce, two, ("z1", "z2"), L.info_nce,
         {"temperature": 0.5, "tiled": True}, None),
        ("supcon_labels", Gm.supcon, {**two, "labels": gb["labels"]}, ("z1", "z2", "labels"),
         L.supcon, {"temperature": 0.2}, None),
        ("supcon_none", Gm.supcon, two, ("z1", "z2"), L.supcon, {"temperature": 0.2}, None),
        ("debiased_beta0", Gm.debiased_hard, two, ("z1", "z2"), L.debiased_hard,
         {"tau_plus": 0.1, "beta": 0.0}, None),
        ("debiased_beta1", Gm.debiased_hard, two, ("z1", "z2"), L.debiased_hard,
         {"tau_plus": 0.1, "beta": 1.0}, None),
        ("nce_shared_pool", Gm.nce_loss,
         {"anchor": gb["z1"], "positive": gb["z2"], "negatives": gb["pool"]},
         ("anchor", "positive"), L.nce_loss, {"temperature": 0.5, "normalize": "sphere"}, None),
        ("nce_per_anchor", Gm.nce_loss,
         {"anchor": gb["z1"], "positive": gb["z2"], "negatives": gb["neg"]},
         ("anchor", "positive", "negatives"), L.nce_loss,
         {"temperature": 0.5, "normalize": "sphere"}, None),
        # an indexed pool: the index is gathered with the anchors, the pool replicated
        ("nce_indexed_pool", Gm.nce_loss,
         {"anchor": gb["z1"], "positive": gb["z2"], "negatives": gb["pool"],
          "negative_index": gb["idx"]},
         ("anchor", "positive", "negative_index"), L.nce_loss,
         {"temperature": 0.5, "normalize": "sphere"}, None),
        ("flag_nce_indexed_tiled", functools.partial(L.nce_loss, gather=True),
         {"anchor": gb["z1"], "positive": gb["z2"], "negatives": gb["pool"],
          "negative_index": gb["idx"]},
         ("anchor", "positive", "negative_index"), L.nce_loss,
         {"temperature": 0.5, "normalize": "sphere", "tiled": True}, None),
    ]
    single = {"z": gb["z1"], "labels": gb["labels"]}
    for name in ("scl", "hscl", "ucl", "hucl"):
        wrapped, ref = getattr(Gm, name), getattr(L, name)
        beta = {"beta": 1.0} if name.startswith("h") else {}
        cases.append((f"{name}_exact", wrapped, single, ("z", "labels"), ref,
                      {"k": 3, "exact": True, **beta}, None))
        cases.append((f"{name}_sampled", wrapped, single, ("z", "labels"), ref,
                      {"k": 3, "exact": False, **beta},
                      lambda: {"generator": torch.Generator().manual_seed(7)}))
        # the loss's own gather flag (positional call_gathered, ``tiled`` included) with the
        # tiled kernel, against the dense single-process loss
        cases.append((f"flag_{name}_mean_tiled", functools.partial(ref, gather=True), single,
                      ("z", "labels"), _dense(ref), {"k": 3, "exact": "mean", "tiled": True,
                                                     **beta}, None))
    cases.append(("flag_hucl_loss_tiled", functools.partial(L.hucl, gather=True), single,
                  ("z", "labels"), _dense(L.hucl),
                  {"k": 3, "exact": True, "beta": 1.0, "tiled": True}, None))
    cases.append(("module_hscl_mean_tiled", _module_hscl_tiled, single, ("z", "labels"),
                  _dense(L.hscl), {"exact": "mean", "beta": 1.0, "tiled": True}, None))
    return cases


def _dense(loss: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The single-process reference on the dense path (whatever ``tiled`` the case asks)."""

    def call(**kwargs: Any) -> torch.Tensor:
        return loss(**{**kwargs, "tiled": False})

    return call


def _module_hscl_tiled(z: torch.Tensor, labels: torch.Tensor, exact: str, beta: float,
                       tiled: bool, gather: bool) -> torch.Tensor:
    from contrastlab.losses.modules import HardContrastiveLoss

    return HardContrastiveLoss("other-class", beta, exact=exact, tiled=tiled,
                               gather=gather)(z, labels)


def _expect_error(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except ValueError as exc:
        return str(exc)
    return "<no error>"


def _worker(rank: int, port: int, queue: Any) -> None:
    out: dict[str, Any] = {}
    try:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        import contrastlab.distributed as Dm
        import contrastlab.losses.gathered as Gm
        from contrastlab import losses as L

        out["rank_and_world"] = Dm.rank_and_world()
        for name, fn, args, batch, ref, kw, mk in _cases():
            out[name] = _check(rank, fn, args, batch, ref, kw, mk)

        # labels without gradient, in rank order
        lab = torch.arange(B_LOCAL) + 100 * rank
        out["labels_gathered"] = Dm.all_gather_no_grad(lab).tolist()

        # DDP's average of the parameter gradients == the single-process gradient
        torch.manual_seed(0)
        lin = torch.nn.Linear(D, 3).double()
        gb = _global_batch()
        ref_lin = torch.nn.Linear(D, 3).double()
        ref_lin.load_state_dict(lin.state_dict())
        L.info_nce(ref_lin(gb["z1"]), ref_lin(gb["z2"]), temperature=0.5).backward()
        lo, hi = rank * B_LOCAL, (rank + 1) * B_LOCAL
        Gm.info_nce(lin(gb["z1"][lo:hi]), lin(gb["z2"][lo:hi]), temperature=0.5,
                    gather=True).backward()
        errs = []
        for p, q in zip(lin.parameters(), ref_lin.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None
            g = p.grad.clone()
            dist.all_reduce(g)
            errs.append(_err(g / WORLD, q.grad))
        out["ddp_average"] = max(errs)

        # an uneven final batch: a clear one-line error on every rank
        n = 4 if rank == 0 else 3
        zz = torch.randn(n, D)
        out["uneven"] = _expect_error(lambda: Gm.info_nce(zz, zz + 1, gather=True))
        out["uneven_raw"] = _expect_error(lambda: Dm.all_gather_with_grad(zz))
        # sampled negatives: a generator is required, and must agree across ranks
        z, y = gb["z1"][lo:hi], gb["labels"][lo:hi]
        out["no_generator"] = _expect_error(lambda: Gm.ucl(z, y, k=3, gather=True))
        g_bad = torch.Generator().manual_seed(rank)
        out["bad_generator"] = _expect_error(
            lambda: Gm.ucl(z, y, k=3, generator=g_bad, gather=True))
        # without gather the wrapper is the plain loss on the local slice
        out["no_gather"] = abs(float(Gm.info_nce(gb["z1"][lo:hi], gb["z2"][lo:hi]))
                               - float(L.info_nce(gb["z1"][lo:hi], gb["z2"][lo:hi])))
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - reported to the parent
        out["error"] = traceback.format_exc()
    queue.put((rank, out))


@pytest.fixture(scope="module")
def results() -> dict[int, dict[str, Any]]:
    return spawn_results(_worker, WORLD, (free_port(),), timeout=120)


CASE_NAMES = [
    "info_nce", "info_nce_gather_flag", "flag_info_nce", "flag_supcon", "flag_debiased",
    "flag_nce_per_anchor", "flag_hucl_sampled", "flag_scl_exact", "module_info_nce",
    "module_hucl_sampled", "info_nce_tiled",
    "supcon_labels", "supcon_none",
    "debiased_beta0", "debiased_beta1", "nce_shared_pool", "nce_per_anchor",
    "nce_indexed_pool", "flag_nce_indexed_tiled",
    *[f"{n}_{m}" for n in ("scl", "hscl", "ucl", "hucl") for m in ("exact", "sampled")],
    *[f"flag_{n}_mean_tiled" for n in ("scl", "hscl", "ucl", "hucl")],
    "flag_hucl_loss_tiled", "module_hscl_mean_tiled",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_gathered_loss_and_gradient_match_single_process(
    results: dict[int, dict[str, Any]], case: str
) -> None:
    for rank in range(WORLD):
        errs = results[rank][case]
        assert errs["value"] < TOL, (rank, errs)
        assert len(errs) > 1
        for key, e in errs.items():
            assert e < TOL, (rank, key, errs)


def test_rank_and_world_and_label_gather(results: dict[int, dict[str, Any]]) -> None:
    for rank in range(WORLD):
        assert results[rank]["rank_and_world"] == (rank, WORLD)
        assert results[rank]["labels_gathered"] == [0, 1, 2, 3, 100, 101, 102, 103]
        assert results[rank]["no_gather"] < 1e-12


def test_ddp_average_of_parameter_gradients_is_single_process_gradient(
    results: dict[int, dict[str, Any]],
) -> None:
    for rank in range(WORLD):
        assert results[rank]["ddp_average"] < TOL


def test_uneven_batch_raises_clear_error(results: dict[int, dict[str, Any]]) -> None:
    for rank in range(WORLD):
        for key in ("uneven", "uneven_raw"):
            msg = results[rank][key]
            assert "uneven batch across ranks" in msg and "sizes [4, 3]" in msg, msg
            assert "drop_last=True" in msg and "\n" not in msg


def test_sampled_losses_need_the_same_generator(results: dict[int, dict[str, Any]]) -> None:
    for rank in range(WORLD):
        assert "generator" in results[rank]["no_generator"]
        assert "differs across ranks" in results[rank]["bad_generator"]


def test_single_process_is_a_no_op() -> None:
    import contrastlab.distributed as Dm
    import contrastlab.losses.gathered as Gm
    from contrastlab import losses as L

    assert Dm.rank_and_world() == (0, 1)
    gb = _global_batch()
    x = gb["z1"].clone().requires_grad_(True)
    assert Dm.all_gather_with_grad(x) is x
    a = Gm.info_nce(gb["z1"], gb["z2"], gather=True)
    assert float(a) == float(L.info_nce(gb["z1"], gb["z2"]))
    with pytest.raises(ValueError, match="batch_args"):
        Dm.gathered(L.info_nce, {"z1": "feature"})

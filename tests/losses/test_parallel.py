"""contrastlab.losses.kernels.parallel: the tiled kernels' strips shared out between torch's
threads. With 2 threads every tiled path (symmetric strips, full-row blocks, row log-sum-exps)
equals the float64 dense loss (values and gradients), repeats bit for bit, and leaves torch's
thread count as it was; with 1 thread the loop is the one-loop kernel, bit for bit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from contrastlab import losses as L
from contrastlab.losses.kernels.parallel import deal, one_loop, run_shared, strip_threads
from contrastlab.losses.sharded import local_info_nce


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_deal_is_a_balanced_snake_that_keeps_order() -> None:
    assert deal([0, 1, 2, 3, 4, 5, 6], 2) == [[0, 3, 4], [1, 2, 5, 6]]
    assert deal(list(range(7)), 3) == [[0, 5, 6], [1, 4], [2, 3]]
    assert deal([0, 256], 1) == [[0, 256]]
    widths = [4096 - 256 * i for i in range(16)]  # the symmetric strips' widths
    shares = deal(list(range(16)), 2)
    work = [sum(widths[i] for i in share) for share in shares]
    assert abs(work[0] - work[1]) / sum(work) < 0.05


def test_strip_threads() -> None:
    x = torch.zeros(2)
    with _threads(2):
        assert strip_threads(x, 8) == 2 and strip_threads(x, 3) == 1
    with _threads(1):
        assert strip_threads(x, 64) == 1


def test_run_shared_order_grad_mode_errors_and_thread_count() -> None:
    with _threads(2):
        with torch.no_grad():
            out = run_shared([lambda: (torch.is_grad_enabled(), torch.get_num_threads())] * 3)
        assert out == [(False, 1)] * 3
        assert torch.get_num_threads() == 2
        assert run_shared([lambda: 1, lambda: 2]) == [1, 2]

        def boom() -> int:
            raise ValueError("in a worker")

        with pytest.raises(ValueError, match="in a worker"):
            run_shared([lambda: 0, boom])
        assert torch.get_num_threads() == 2
        assert run_shared([torch.get_num_threads]) == [2]  # one task: untouched


def _batch(n: int, d: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64), \
        torch.arange(n) % 5


_POOL = torch.randn(2000, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

CASES: dict[str, Callable[..., torch.Tensor]] = {
    "info_nce": lambda a, b, y, **kw: L.info_nce(a, b, temperature=0.2, **kw),
    "supcon": lambda a, b, y, **kw: L.supcon(a, b, y, temperature=0.3, **kw),
    "debiased_hard": lambda a, b, y, **kw: L.debiased_hard(a, b, beta=2.0, **kw),
    # a shared pool of 2000: 150 x 2000 pairs, above the one-block size (row blocks)
    "nce_pool": lambda a, b, y, **kw: L.nce_loss(a, b, _POOL.to(a.dtype), **kw),
    "sharded_info_nce": lambda a, b, y, **kw: local_info_nce(
        a, b, 0.2, "sphere", block_rows=16, **{k: v for k, v in kw.items() if k != "tiled"}),
}


def _run(fn: Callable[..., torch.Tensor], z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor,
         dtype: torch.dtype, **kw: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = z1.detach().to(dtype).clone().requires_grad_()
    b = z2.detach().to(dtype).clone().requires_grad_()
    out = fn(a, b, y, **kw)
    out.backward()
    assert a.grad is not None and b.grad is not None
    return out.detach(), a.grad, b.grad


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_two_threads_equal_the_dense_loss_and_repeat_bitwise(name: str, reduction: str) -> None:
    z1, z2, y = _batch(150)  # 300 rows: several strips / row blocks of 64
    fn = CASES[name]
    kw: dict[str, Any] = {"reduction": reduction}
    if name == "nce_pool":
        kw["tiled"] = True
        ref = _run(lambda a, b, y_, **k: fn(a, b, y_, **{**k, "tiled": False}).sum(), z1, z2, y,
                   torch.float64, reduction=reduction)
    elif name.startswith("sharded"):
        ref = _run(lambda a, b, y_, **k: L.info_nce(a, b, temperature=0.2, tiled=False,
                                                    **k).sum(), z1, z2, y, torch.float64, **kw)
    else:
        ref = _run(lambda a, b, y_, **k: fn(a, b, y_, tiled=False, **k).sum(), z1, z2, y,
                   torch.float64, **kw)
    if not name.startswith("sharded") and name != "nce_pool":
        kw["tiled"] = True

    def summed(a: torch.Tensor, b: torch.Tensor, y_: torch.Tensor, **k: Any) -> torch.Tensor:
        return fn(a, b, y_, **k).sum()

    from contrastlab.losses.kernels import engine

    saved, shared = engine.default_block_rows, engine.run_shared
    widths: list[int] = []

    def spy(tasks: Any) -> Any:
        widths.append(len(tasks))
        return shared(tasks)

    engine.default_block_rows = lambda rows, cols, d=128: 32  # type: ignore[assignment]
    engine.run_shared = spy  # type: ignore[assignment]
    try:
        with _threads(2):
            first = _run(summed, z1, z2, y, torch.float32, **kw)
            again = _run(summed, z1, z2, y, torch.float32, **kw)
            assert widths and max(widths) == 2  # the strips were shared out
            with one_loop():
                loop = _run(summed, z1, z2, y, torch.float32, **kw)
    finally:
        engine.default_block_rows, engine.run_shared = saved, shared
    for x, r in zip(first, ref, strict=True):
        scale = float(r.abs().max())
        assert float((x.double() - r).abs().max()) <= 2e-6 * max(scale, 1.0)
    assert all(torch.equal(x, y_) for x, y_ in zip(first, again, strict=True))
    for x, r in zip(first, loop, strict=True):  # shared out or one loop: round-off apart
        assert float((x - r).abs().max()) <= 2e-6 * max(float(r.abs().max()), 1.0)

"""Random inputs shared by the tiled-kernel tests."""

from __future__ import annotations

import torch

F64 = torch.float64


def rows(
    shape: tuple[int, ...], seed: int, dtype: torch.dtype = F64, scale: float = 1.0
) -> torch.Tensor:
    """Random vectors along the last dim with norms in [0.5, 1.5] * scale (some inside the unit
    ball, some outside), drawn in float64, cast to ``dtype``, requiring a gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64)
    x = x / x.norm(dim=-1, keepdim=True) * (0.5 + torch.rand((*shape[:-1], 1), generator=g))
    return (x * scale).to(dtype).requires_grad_(True)


def labels(n: int, n_classes: int, seed: int) -> torch.Tensor:
    """n random labels in range(n_classes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_classes, (n,), generator=g)

"""Sharded data-parallel in-batch losses: each rank computes the loss of its **own anchors** only,
against the negatives of the whole gathered batch (open_clip's ``local_loss``; Radford et al.
2021's CLIP training, where each GPU computes its rows of the N x N logits).

Setting. W processes (ranks) each hold a slice of n = N / W samples (both views) of a global
batch of N samples. :func:`contrastlab.distributed.call_gathered` (``gather=True`` on a loss)
has every rank compute the *whole* global loss: the same value on every rank, W times the work.
Here rank r gathers the features (with gradient) and computes only its 2n anchor rows — the z1
rows ``r n .. (r+1) n - 1`` of the stacked 2N views and the z2 rows ``N + r n ..`` — each against
all 2N columns, with exactly the masks and positives of the single-process loss::

    L_r = (1 / 2n) sum_{i in anchors(r)} l_i          (reduction="mean": the local mean)

so the global loss is the mean of the L_r over the ranks (equal slices), and the rank's share of
the N x N work is 1/W.

Gradient (exact, the same convention as ``gather=True``). The features are gathered by
:func:`contrastlab.distributed.all_gather_with_grad`, whose backward sums the gradients of the
gathered copy over the ranks. Rank r's local features therefore receive
``sum_r' dL_r'/dx_r = W dL/dx_r`` with L = (1/W) sum_r' L_r' the global mean, exactly what a
``gather=True`` rank receives; DistributedDataParallel's average over the ranks then gives the
single-process gradient dL/dtheta. ``reduction="sum"`` returns ``W * (local sum)`` for the same
reason (the sum over the ranks of what they return is W times the global sum, as with
``gather=True``, where every rank returns the global sum); ``"none"`` the (2n,) per-anchor losses
of this rank's anchors (z1 rows first), unscaled.

Use: ``info_nce(z1, z2, gather="local")`` (likewise :func:`~contrastlab.losses.supcon` and
:func:`~contrastlab.losses.debiased_hard`) with this rank's slices ``z1``, ``z2`` (and labels);
``group=`` picks a process group. The functions here are what that calls, with the public
loss's arguments already checked for finiteness and cast (its docstring gives the paper, the
equation and the conventions). Not distributed (W = 1), each equals the public loss. They run
on the tiled engine (:mod:`contrastlab.losses.kernels.engine`: full-row blocks of the rank's
anchors against the 2N gathered rows, O(n N d) time, O(N d + block N) memory) on every device;
float16 / bfloat16 inputs are computed in float32.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastlab._validation import check_labels, check_positive
from contrastlab.distributed import all_gather_no_grad, all_gather_with_grad, rank_and_world
from contrastlab.losses._common import base_temperature_factor, check_debiased_args
from contrastlab.losses.kernels._inputs import check_views, mean_positive_logits
from contrastlab.losses.kernels.engine import (
    compute_dtype,
    head_debiased,
    head_logaddexp,
    head_lse_minus_side,
    loss_dtype,
    rows_normalized,
    run_blocks,
)

__all__ = ["local_anchor_rows", "local_debiased_hard", "local_info_nce", "local_supcon"]

Tensor = torch.Tensor


def local_anchor_rows(rank: int, world: int, n_local: int, device: Any = None) -> Tensor:
    """The stacked-view rows (indices into the 2N rows ``[z1; z2]`` of the global batch, N = W n)
    of rank ``rank``'s anchors: its z1 rows, then its z2 rows."""
    own = torch.arange(rank * n_local, (rank + 1) * n_local, device=device)
    return torch.cat([own, own + world * n_local])


class _Views:
    """The gathered, normalized 2N stacked views and this rank's anchor rows of them."""

    def __init__(self, z1: Tensor, z2: Tensor, normalize: str, reduction: str, min_batch: int,
                 group: Any) -> None:
        n = check_views(z1, z2, reduction, 1)
        self.rank, self.world = rank_and_world(group)
        self.n_local, self.n = n, n * self.world
        if self.n < min_batch:
            raise ValueError(f"z1 and z2 must hold at least {min_batch} samples in the global "
                             f"batch; got {self.n}")
        dt = compute_dtype(z1)
        g1 = all_gather_with_grad(z1.to(dt), group)
        g2 = all_gather_with_grad(z2.to(dt), group)
        self.z = rows_normalized(torch.cat([g1, g2], dim=0), normalize)
        self.rows = local_anchor_rows(self.rank, self.world, n, self.z.device)
        self.q = self.z.index_select(0, self.rows)
        self.reduction, self.out_dtype = reduction, loss_dtype(z1)

    def positive_logits(self, t: float) -> Tensor:
        """s_{i, pos(i)} / t of this rank's anchors (float64, O(n d))."""
        pos = (self.rows + self.n) % (2 * self.n)
        return torch.linalg.vecdot(self.q.double(), self.z.index_select(0, pos).double(),
                                   dim=1) / t

    def run(self, side: Tensor, t: float, scales: tuple[float, ...], mask_shift: int | None,
            head: Any, factor: float, block_rows: int | None) -> Tensor:
        """The rank's share of the loss (module docstring: local mean, W x local sum, rows)."""
        if self.reduction == "sum":
            factor = factor * self.world
        return run_blocks(self.q, self.z, side.unsqueeze(0), t=t, scales=scales, mask_self=True,
                          mask_shift=mask_shift, head=head, reduction=self.reduction,
                          factor=factor, block_rows=block_rows, out_dtype=self.out_dtype,
                          row_ids=self.rows)


def local_info_nce(z1: Tensor, z2: Tensor, temperature: float, normalize: str, reduction: str,
                   group: Any = None, block_rows: int | None = None) -> Tensor:
    """SimCLR NT-Xent (Chen et al. 2020, eq. (1)) of this rank's anchors:
    ``info_nce(..., gather="local")``."""
    t = check_positive("temperature", temperature)
    v = _Views(z1, z2, normalize, reduction, 1, group)
    return v.run(v.positive_logits(t), t, (1.0,), v.n, head_logaddexp(0.0), 1.0, block_rows)


def local_supcon(z1: Tensor, z2: Tensor, labels: Tensor | None, temperature: float,
                 normalize: str, base_temperature: float | None, reduction: str,
                 group: Any = None, block_rows: int | None = None) -> Tensor:
    """SupCon L_out (Khosla et al. 2020, eq. (2)) of this rank's anchors:
    ``supcon(..., gather="local")``. The positive term of anchor i,
    ``z_i^T (C_{y_i} - z_i) / (t |P(i)|)``, takes the class sums C_c of all 2N gathered rows
    (O(N d)); ``labels=None``: each sample its own class (NT-Xent)."""
    t = check_positive("temperature", temperature)
    factor = base_temperature_factor(t, base_temperature)
    v = _Views(z1, z2, normalize, reduction, 1, group)
    if labels is None:
        return v.run(v.positive_logits(t), t, (1.0,), v.n, head_logaddexp(0.0), factor,
                     block_rows)
    lab = all_gather_no_grad(check_labels("labels", labels, v.n_local).to(v.z.device), group)
    side = mean_positive_logits(v.z, torch.cat([lab, lab]), t, rows=v.rows, q=v.q)
    return v.run(side, t, (1.0,), None, head_lse_minus_side, factor, block_rows)


def local_debiased_hard(z1: Tensor, z2: Tensor, temperature: float, tau_plus: float,
                        beta: float, normalize: str, reduction: str, group: Any = None,
                        block_rows: int | None = None) -> Tensor:
    """The debiased (Chuang et al. 2020 eq. (7), beta = 0) and hard (Robinson et al. 2021
    eq. (5)) loss of this rank's anchors, N = 2B - 2 negatives of the global batch:
    ``debiased_hard(..., gather="local")``."""
    t, tau, beta = check_debiased_args(temperature, tau_plus, beta)
    v = _Views(z1, z2, normalize, reduction, 2, group)
    scales = (1.0,) if beta == 0.0 else (1.0 + beta, beta)
    head = head_debiased(t, tau, math.log(2 * v.n - 2))
    return v.run(v.positive_logits(t), t, scales, v.n, head, 1.0, block_rows)

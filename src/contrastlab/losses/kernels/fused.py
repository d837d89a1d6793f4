"""Fused GPU (Triton) forms of the tiled losses: the row log-sum-exps of the similarity matrix and
their gradient in two Triton kernels (:mod:`contrastlab.losses.kernels.triton_lse`: online
log-sum-exp over column blocks in the forward, the gradient rebuilt block by block from the saved
row log-sum-exps in the backward, FlashAttention-style; Dao et al. 2022, Cheng et al. 2024), no
N x N (or B x k) matrix in memory.

Functions (same conventions, arguments and results as the dense and tiled ones):

- :func:`fused_info_nce`: SimCLR NT-Xent (Chen et al. 2020, eq. (1)), as
  :func:`contrastlab.losses.info_nce` (2B anchors, the 2B - 2 negatives summed, the positive in
  the denominator, the anchor never its own negative, the mean over 2B anchors);
- :func:`fused_nce_loss`: explicit-k NCE with a (k, d) pool shared by the anchors (Arora et al.
  2019 eq. (2)), as :func:`contrastlab.losses.nce_loss` (``infonce``, ``infonce-mean``,
  ``logistic``);
- :func:`fused_supcon`: SupCon L_out (Khosla et al. 2020, eq. (2)), as
  :func:`contrastlab.losses.supcon`;
- :func:`fused_debiased_hard`: Chuang et al. 2020 eq. (7) / Robinson et al. 2021 eq. (5), as
  :func:`contrastlab.losses.debiased_hard` (two log-sum-exps per row when beta > 0);
- :func:`fused_row_lse`: the differentiable masked row log-sum-exp they are built on
  (:class:`FusedRowLSE`).

The loss is assembled as in :mod:`contrastlab.losses.kernels.inbatch`: the normalization is done
in torch (float32, autograd), the kernels see normalized rows and the temperature (folded into
the logits' scale with log2(e): base-2 exponentials); they return the masked row log-sum-exps in
float32; the O(N) heads of :mod:`contrastlab.losses.kernels.engine` (``softplus(L_neg - s_pos)``
for NT-Xent and NCE: the positive masked in the kernel and its logit a float64 dot product;
``L - side`` for SupCon; the debiasing head in log space) run in float64.

**Dtypes.** float32, bfloat16 and float16 inputs (float64 stays on the torch paths); the loss is
float32 and the gradients come back in the inputs' dtype. The kernels' operands (``precision``):
``None`` (default) takes the inputs' dtype: bfloat16 / float16 inputs are normalized in float32
and the normalized rows rounded to that dtype for the products (tensor cores, float32
accumulation); float32 inputs use full-float32 products (``"ieee"``), or TF32 when
``torch.get_float32_matmul_precision()`` is not ``"highest"``. ``"bf16"``, ``"fp16"``, ``"tf32"``,
``"ieee"`` force one. Through the tiled entry points (:func:`~contrastlab.losses.tiled_info_nce`
etc., whose inputs :func:`~contrastlab.losses._common.loss_inputs` has already cast to float32)
the products are float32; call the functions here with 16-bit inputs for 16-bit products.

**Dispatch.** :func:`use_fused`: CUDA tensors of those dtypes when triton imports and
:data:`USE_TRITON` is True; the tiled torch functions call it first. CPU tensors keep the torch
path; on CPU these functions run only under Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is imported: the tests).

Memory: O((N + k) d) (the inputs, their normalized float32 copies and operand copies, the
gradients) plus O(N) log-sum-exps. Differentiable once.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from contrastlab._validation import check_choice, check_labels, check_positive, check_tensor
from contrastlab.losses._common import (
    base_temperature_factor,
    check_debiased_args,
    check_finite,
)
from contrastlab.losses.family import lse_scale
from contrastlab.losses.kernels._inputs import (
    check_nce_options,
    check_shared_pool,
    check_views,
    mean_positive_logits,
    nce_rows,
    stacked_views,
    view_positive_logits,
)
from contrastlab.losses.kernels.engine import (
    LOG2E,
    Head,
    autograd_head,
    head_debiased,
    head_logaddexp,
    head_lse_minus_side,
    reduce_rows,
)

#: Route CUDA tensors of the tiled entry points to the Triton kernels (when triton imports).
#: Module-level so that a benchmark or a test can compare with the tiled torch path.
USE_TRITON = True
#: The operand precisions of the kernels' products (``None``: from the inputs, see above).
PRECISIONS = ("bf16", "fp16", "tf32", "ieee")
#: The input dtypes the kernels take.
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the Triton kernels import (triton installed and importable)."""
    try:
        importlib.import_module("contrastlab.losses.kernels.triton_lse")
    except Exception:  # no triton, or a triton that fails to import: the torch path
        return False
    return True


def use_fused(*xs: Any) -> bool:
    """The dispatch rule of the tiled entry points: every argument a CUDA tensor of a dtype in
    :data:`FUSED_DTYPES`, :data:`USE_TRITON` set and triton importable (anything else: the
    torch path, which also reports invalid arguments)."""
    if not USE_TRITON:
        return False
    ok = (isinstance(x, torch.Tensor) and x.is_cuda and x.dtype in FUSED_DTYPES for x in xs)
    if not all(ok):
        return False
    return triton_available()


def _kernels() -> Any:
    return importlib.import_module("contrastlab.losses.kernels.triton_lse")


def operand_dtype(x: torch.Tensor, precision: str | None) -> tuple[torch.dtype, bool]:
    """(the dtype of the kernels' operands, whether float32 products use TF32) for inputs like
    ``x`` and a ``precision`` (module docstring)."""
    if precision is not None:
        check_choice("precision", precision, PRECISIONS)
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        return dt, precision == "tf32"
    if x.dtype not in FUSED_DTYPES:
        raise ValueError(
            f"the fused kernels take float32, bfloat16 or float16 inputs; got {x.dtype} (float64: "
            "use the tiled torch functions)"
        )
    if x.dtype != torch.float32:
        return x.dtype, False
    return torch.float32, torch.get_float32_matmul_precision() != "highest"


class FusedRowLSE(torch.autograd.Function):
    """Masked row log-sum-exps ``L_i = log sum_{j unmasked} exp(a x_i . y_j / t)`` (float32,
    natural log) of float32 x (rows) and y (columns; None: y = x, the self-similarity), by the
    Triton kernels on operands cast to ``op_dtype`` (the cast is transparent to the gradient,
    which is returned in float32). ``scale2 = a log2(e) / t``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor | None, scale2: float, masks: Any,
                op: tuple[torch.dtype, bool], cfg: Any) -> torch.Tensor:
        k = _kernels()
        xo = x.detach().to(op[0]).contiguous()
        yo = xo if y is None else y.detach().to(op[0]).contiguous()
        lse2 = k.row_lse2(xo, yo, scale2, masks, cfg, op[1])
        ctx.setup = (scale2, masks, cfg, op[1], y is None)
        ctx.save_for_backward(xo, None if y is None else yo, lse2)
        return lse2 * math.log(2.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        scale2, masks, cfg, tf32, self_sim = ctx.setup
        xo, yo, lse2 = ctx.saved_tensors
        k = _kernels()
        c = g.float().contiguous()
        if self_sim:
            dx = k.row_lse2_grad(xo, xo, (lse2, c), (lse2, c), scale2, masks, cfg, tf32)
            return dx, None, None, None, None, None
        dx = dy = None
        if ctx.needs_input_grad[0]:
            dx = k.row_lse2_grad(xo, yo, (lse2, c), None, scale2, masks, cfg, tf32)
        if ctx.needs_input_grad[1]:
            dy = k.row_lse2_grad(yo, xo, None, (lse2, c), scale2, k.Masks(), cfg, tf32)
        return dx, dy, None, None, None, None


def fused_row_lse(
    x: torch.Tensor,
    y: torch.Tensor | None,
    temperature: float,
    scale: float = 1.0,
    mask_self: bool = False,
    mask_shift: int | None = None,
    precision: str | None = None,
    config: Any = None,
) -> torch.Tensor:
    """The differentiable (n,) float32 masked row log-sum-exps of ``scale * x y^T / t`` (y None:
    ``x x^T``, masks allowed: column i and column (i + mask_shift) mod n of row i), by the
    Triton kernels. x, y: (n, d), (m, d) float32 / bfloat16 / float16; ``config``: a
    :class:`~contrastlab.losses.kernels.triton_lse.KernelConfig` (default: by d)."""
    t = check_positive("temperature", temperature)
    check_tensor("x", x, ndim=2, shape_hint="(n, d)")
    if y is not None:
        check_tensor("y", y, ndim=2, shape_hint="(m, d)")
    k = _kernels()
    op = operand_dtype(x, precision)
    cfg = config or k.default_config(x.shape[1])
    masks = k.Masks(mask_self, mask_shift)
    return FusedRowLSE.apply(x.float(), None if y is None else y.float(),
                             scale * LOG2E / t, masks, op, cfg)


@contextlib.contextmanager
def _exact(names: str, *xs: torch.Tensor, check: bool) -> Iterator[None]:
    """The inputs' finiteness check (unless ``check`` is False; ``names``: theirs, comma
    separated) and autocast off inside, as :func:`~contrastlab.losses._common.loss_inputs`."""
    if check:
        for name, x in zip(names.split(","), xs, strict=True):
            check_finite(name, x)
    with torch.autocast(device_type=xs[0].device.type, enabled=False):
        yield


def _view_loss(z: torch.Tensor, b: int, t: float, scales: tuple[float, ...], head: Head,
               reduction: str, factor: float, op: tuple[torch.dtype, bool],
               cfg: Any) -> torch.Tensor:
    """``head`` of the 2B stacked normalized rows whose negatives are the 2B - 2 others (the
    anchor and its positive masked), one log-sum-exp per scale, the positive logit beside:
    NT-Xent (``softplus(L_neg - s_pos)``) and the debiased / hard loss."""
    lse = torch.cat([_lse(z, None, t, a, True, b, op, cfg) for a in scales])
    per_row = autograd_head(head, lse, view_positive_logits(z, b, t).unsqueeze(0))
    return reduce_rows(per_row, reduction, factor, torch.float32)


def _lse(x: torch.Tensor, y: torch.Tensor | None, t: float, a: float, mask_self: bool,
         shift: int | None, op: tuple[torch.dtype, bool], cfg: Any) -> torch.Tensor:
    """(1, n) float64 row log-sum-exps (the engine's heads work in float64)."""
    masks = _kernels().Masks(mask_self, shift)
    lse = FusedRowLSE.apply(x, y, a * LOG2E / t, masks, op, cfg)
    return lse.double().unsqueeze(0)


def _setup(z1: torch.Tensor, precision: str | None, config: Any) -> tuple[Any, Any]:
    op = operand_dtype(z1, precision)
    return op, config or _kernels().default_config(z1.shape[1])


def fused_info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    normalize: str = "sphere",
    reduction: str = "mean",
    check_finite: bool = True,
    precision: str | None = None,
    config: Any = None,
) -> torch.Tensor:
    """SimCLR NT-Xent (Chen et al. 2020, eq. (1)) by the Triton kernels; equal to
    :func:`contrastlab.losses.info_nce` (arguments and conventions of
    :func:`contrastlab.losses.tiled_info_nce`). ``precision``: the products' operands (module
    docstring); ``config``: tile sizes (a ``KernelConfig``; default by d)."""
    t = check_positive("temperature", temperature)
    b = check_views(z1, z2, reduction, min_batch=1)
    op, cfg = _setup(z1, precision, config)
    with _exact("z1,z2", z1, z2, check=check_finite):
        z = stacked_views(z1, z2, normalize, torch.float32)
        return _view_loss(z, b, t, (1.0,), head_logaddexp(0.0), reduction, 1.0, op, cfg)


def fused_supcon(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    normalize: str = "sphere",
    base_temperature: float | None = None,
    reduction: str = "mean",
    check_finite: bool = True,
    precision: str | None = None,
    config: Any = None,
) -> torch.Tensor:
    """SupCon L_out (Khosla et al. 2020, eq. (2)) by the Triton kernels; equal to
    :func:`contrastlab.losses.supcon` (the anchor not its own positive, every other row in the
    denominator; the mean positive logit from the class sums, O(N d), as
    :func:`contrastlab.losses.tiled_supcon`)."""
    t = check_positive("temperature", temperature)
    b = check_views(z1, z2, reduction, min_batch=1)
    factor = base_temperature_factor(t, base_temperature)
    op, cfg = _setup(z1, precision, config)
    with _exact("z1,z2", z1, z2, check=check_finite):
        z = stacked_views(z1, z2, normalize, torch.float32)
        if labels is None:  # each sample its own class: NT-Xent
            return _view_loss(z, b, t, (1.0,), head_logaddexp(0.0), reduction, factor, op, cfg)
        lab = check_labels("labels", labels, b).to(z.device)
        side = mean_positive_logits(z, torch.cat([lab, lab]), t)
        lse = _lse(z, None, t, 1.0, True, None, op, cfg)
        per_row = autograd_head(head_lse_minus_side, lse, side.unsqueeze(0))
        return reduce_rows(per_row, reduction, factor, torch.float32)


def fused_debiased_hard(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    normalize: str = "sphere",
    reduction: str = "mean",
    check_finite: bool = True,
    precision: str | None = None,
    config: Any = None,
) -> torch.Tensor:
    """Chuang et al. 2020 eq. (7) (beta = 0) / Robinson et al. 2021 eq. (5) (beta > 0) by the
    Triton kernels; equal to :func:`contrastlab.losses.debiased_hard` (N = 2B - 2 negatives: the
    anchor and its positive masked; the published clamp). Per row ``L_{1+beta}`` and ``L_beta``
    over the negatives (two kernel passes), ``log reweight = log N + L_{1+beta} - L_beta``, the
    head in float64 log space (:func:`~contrastlab.losses.kernels.engine.head_debiased`)."""
    t, tau, beta = check_debiased_args(temperature, tau_plus, beta)
    b = check_views(z1, z2, reduction, min_batch=2)
    op, cfg = _setup(z1, precision, config)
    with _exact("z1,z2", z1, z2, check=check_finite):
        z = stacked_views(z1, z2, normalize, torch.float32)
        scales = (1.0,) if beta == 0.0 else (1.0 + beta, beta)
        head = head_debiased(t, tau, math.log(2 * b - 2))
        return _view_loss(z, b, t, scales, head, reduction, 1.0, op, cfg)


def fused_nce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    loss: str = "infonce",
    temperature: float = 1.0,
    normalize: str = "none",
    reduction: str = "mean",
    check_finite: bool = True,
    precision: str | None = None,
    config: Any = None,
) -> torch.Tensor:
    """Explicit-k NCE (Arora et al. 2019 eq. (2); Awasthi et al. 2022 eq. (1)) with k negatives
    shared by the B anchors, by the Triton kernels; equal to :func:`contrastlab.losses.nce_loss`
    with (k, d) negatives (``infonce``: summed; ``infonce-mean``: averaged, a shift by log k;
    ``logistic``: t = 1; the positive in the denominator): ``softplus(L - shift - s_pos)`` with L
    the row log-sum-exp over the pool (no B x k matrix)."""
    temperature = check_nce_options(loss, temperature, reduction)
    check_shared_pool(anchor, positive, negatives)
    t, shift = lse_scale(loss, temperature, negatives.shape[0])
    op, cfg = _setup(anchor, precision, config)
    with _exact("anchor,positive,negatives", anchor, positive, negatives, check=check_finite):
        a, p, n = nce_rows(anchor, positive, negatives, normalize, torch.float32)
        lse = _lse(a, n, t, 1.0, False, None, op, cfg)
        s_pos = torch.linalg.vecdot(a.double(), p.double()) / t
        per_row = autograd_head(head_logaddexp(shift), lse, s_pos.unsqueeze(0))
        return reduce_rows(per_row, reduction, 1.0, torch.float32)

"""The tiled kernels: one engine and the losses built on it (no N x N or B x k tensor in memory).

- :mod:`~contrastlab.losses.kernels.engine`: the engine: block plans (:class:`BlockPlan`), masked
  row log-sum-exps over full-row blocks and symmetric strips (:class:`SymLSE`), the fused loss
  blocks, the autograd heads, the dtype rules and the dispatch thresholds
  (:data:`TILED_MIN_ROWS`, :data:`TILED_MIN_PAIRS`, :func:`use_tiled`,
  :func:`default_block_rows`); its docstring has the method, the precision and the memory;
- :mod:`~contrastlab.losses.kernels.inbatch`: InfoNCE, SupCon, the debiased / hard loss on the
  2B stacked views and NCE with a shared (k, d) pool;
- :mod:`~contrastlab.losses.kernels.indexed`: NCE with per-anchor negatives given by an index
  into an (M, d) pool (no (B, k, d) gather);
- :mod:`~contrastlab.losses.kernels.jiang`: the exact forms of SCL / HSCL / UCL / HUCL (anchor
  blocks; the plug-in on the symmetric strips);
- :mod:`~contrastlab.losses.kernels.fused`: the fused GPU forms (Triton; the jit kernels in
  :mod:`~contrastlab.losses.kernels.triton_lse`, imported lazily: the package imports without
  triton) of InfoNCE, NCE with a shared pool, SupCon and the debiased / hard loss: online row
  log-sum-exps, the gradient rebuilt block by block from them (FlashAttention-style), 16-bit
  operands with float32 accumulation. The tiled functions of
  :mod:`~contrastlab.losses.kernels.inbatch` route CUDA tensors there (:func:`use_fused`);
  CPU tensors keep the torch kernels.

The dense functions of :mod:`contrastlab.losses` dispatch here (``tiled=None``: by size); every
kernel is checked against a float64 dense reference, values and gradients (tests/losses/; the
Triton kernels under Triton's interpreter on CPU, tests/losses/test_fused.py).
"""

from contrastlab.losses.kernels.engine import (
    BLOCK_ELEMENTS,
    ONE_BLOCK_PAIRS,
    TILED_MIN_PAIRS,
    TILED_MIN_ROWS,
    TILED_NCE_LOSSES,
    BlockPlan,
    SymLSE,
    default_block_rows,
    use_tiled,
)
from contrastlab.losses.kernels.fused import (
    fused_debiased_hard,
    fused_info_nce,
    fused_nce_loss,
    fused_row_lse,
    fused_supcon,
    triton_available,
    use_fused,
)
from contrastlab.losses.kernels.inbatch import (
    tiled_debiased_hard,
    tiled_info_nce,
    tiled_nce_loss,
    tiled_supcon,
)
from contrastlab.losses.kernels.indexed import tiled_nce_indexed
from contrastlab.losses.kernels.jiang import tiled_hard_contrastive

__all__ = [
    "BLOCK_ELEMENTS",
    "ONE_BLOCK_PAIRS",
    "TILED_MIN_PAIRS",
    "TILED_MIN_ROWS",
    "TILED_NCE_LOSSES",
    "BlockPlan",
    "SymLSE",
    "default_block_rows",
    "fused_debiased_hard",
    "fused_info_nce",
    "fused_nce_loss",
    "fused_row_lse",
    "fused_supcon",
    "tiled_debiased_hard",
    "tiled_hard_contrastive",
    "tiled_info_nce",
    "tiled_nce_indexed",
    "tiled_nce_loss",
    "tiled_supcon",
    "triton_available",
    "use_fused",
    "use_tiled",
]

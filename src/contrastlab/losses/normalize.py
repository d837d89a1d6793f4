"""Feature normalization: the sphere, the unit ball, or none.

- ``sphere``: f <- f / ||f||, the convention of SimCLR, Awasthi et al. (2022) and Bao et al. (2022).
- ``ball``: f <- f * min(1, 1/||f||), the projection onto the unit ball used by Jiang et al. (2023)
  (``rjiang03/HCL`` ``model.py``): vectors inside the ball are left as they are.
- ``none``: the identity.
"""

from __future__ import annotations

import torch

from contrastlab._validation import check_choice, check_tensor

NORMALIZATIONS = ("sphere", "ball", "none")


def normalize(z: torch.Tensor, kind: str = "sphere", eps: float = 1e-12) -> torch.Tensor:
    """Normalize the rows (last dimension) of ``z``.

    Args:
        z: features of shape (..., d).
        kind: ``"sphere"``, ``"ball"`` or ``"none"``.
        eps: floor on the norm for ``sphere`` so that a zero vector maps to zero, not NaN.

    Returns:
        A tensor of the same shape; differentiable (the gradient of the ball projection is the
        identity strictly inside the ball and the sphere's Jacobian outside).
    """
    check_choice("normalize", kind, NORMALIZATIONS)
    check_tensor("z", z, ndim=(1, 2, 3, 4), shape_hint="(..., d)")
    if kind == "none":
        return z
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    if kind == "sphere":
        return z / norm.clamp_min(eps)
    return z / norm.clamp_min(1.0)

"""Has a run converged? A test on its held-out loss curve.

A run is called converged when its held-out contrastive loss (the training loss on a fixed
test subset with fixed draws, ``heldout_loss``; :func:`contrastlab.train.metrics.heldout_loss`)
has stopped falling over the last ``window`` (default 20 %) of its epochs: with ``L_a`` the loss at
the last evaluation at or before epoch ``(1 - window) E`` and ``L_b`` the loss at the final
epoch ``E``, the relative decrease ``(L_a - L_b) / |L_a|`` is at most ``tol`` (default 1 %).
A rising loss (over-fitting) counts as converged: more epochs would not lower it.

The test needs an evaluation at or before ``(1 - window) E`` besides the final one (set
``eval.every`` so that one falls there); without one the run is reported as not converged,
with the reason. Under a schedule that decays the learning rate to zero the last epochs move
little by construction, so the test is then a necessary condition, not a sufficient one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_TOL", "DEFAULT_WINDOW", "convergence"]

DEFAULT_WINDOW = 0.2
DEFAULT_TOL = 0.01


def convergence(history: Sequence[Mapping[str, Any]], epochs: int,
                window: float = DEFAULT_WINDOW, tol: float = DEFAULT_TOL,
                metric: str = "heldout_loss") -> dict[str, Any]:
    """The convergence test of the module docstring on a run's per-epoch ``history`` (dicts
    with ``epoch`` and, at evaluated epochs, ``metric``) of a run of ``epochs`` epochs.

    Returns ``{"converged": bool, "relative_decrease": float | None, "from_epoch": int | None,
    "to_epoch": int | None, "window": window, "tol": tol, "reason": str}``.
    """
    if not 0.0 < window < 1.0:
        raise ValueError(f"window must be in (0, 1); got {window!r}")
    if not (isinstance(tol, int | float) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
    points = [(int(h["epoch"]), float(h[metric])) for h in history
              if h.get(metric) is not None and math.isfinite(float(h[metric]))]
    out: dict[str, Any] = {"converged": False, "relative_decrease": None, "from_epoch": None,
                           "to_epoch": None, "window": window, "tol": tol}
    if not points or points[-1][0] != epochs:
        out["reason"] = f"no {metric} at the final epoch {epochs}"
        return out
    cut = (1.0 - window) * epochs
    before = [p for p in points if p[0] <= cut]
    if not before:
        out["reason"] = (f"no {metric} evaluated at or before epoch {cut:g} (set eval.every so "
                         "that one falls there)")
        return out
    (ea, la), (eb, lb) = before[-1], points[-1]
    rel = (la - lb) / abs(la) if la != 0 else (0.0 if lb >= la else math.inf)
    out.update(relative_decrease=rel, from_epoch=ea, to_epoch=eb, converged=rel <= tol)
    out["reason"] = (f"{metric} fell {100 * rel:.2f} % from epoch {ea} to {eb} "
                     f"({'<=' if rel <= tol else '>'} {100 * tol:g} %)")
    return out

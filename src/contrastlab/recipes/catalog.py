"""The catalog of recipe runners: the one list of the modules that define them.

Each runner module registers its runners in :data:`contrastlab.recipes.runners.RUNNERS` when it
is imported; :func:`all_runners` imports every one of them (on first use, so that importing
:mod:`contrastlab.recipes` stays light) and returns the full registry. A new runner module is
added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

from contrastlab.recipes.runners import RUNNERS, Runner

__all__ = ["all_runners"]


def all_runners() -> Mapping[str, Runner]:
    """Every registered runner by name (the ``runner:`` field of a recipe file)."""
    from contrastlab.recipes import (  # noqa: F401  (imported to register their runners)
        awasthi,
        bao,
        conjecture_scale,
        jiang,
        lemma1,
        lower_bounds,
        nc_optimal,
    )

    return RUNNERS

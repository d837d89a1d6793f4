"""The catalog of recipe runners: the one list of the modules that define them.

Each runner module registers its runners in :data:`contrastlab.recipes.runners.RUNNERS` when it
is imported. :data:`RUNNER_MODULES` names the module of every runner, so that
:func:`all_runners` hands out a registry that imports a runner's module only when the runner is
looked up: loading a recipe, or running one, imports what that recipe runs and nothing else
(not torch for a recipe that does not need it in this process). A new runner is added to its
module and to :data:`RUNNER_MODULES`; ``tests/recipes/test_spec.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from contrastlab.recipes.runners import RUNNERS, Runner

__all__ = ["RUNNER_MODULES", "all_runners"]

#: the module of :mod:`contrastlab.recipes` that registers each runner
RUNNER_MODULES: dict[str, str] = {
    "awasthi_balanced_etf": "awasthi",
    "awasthi_unbalanced": "awasthi",
    "awasthi_k_sweep": "awasthi",
    "awasthi_conjecture_scale": "conjecture_scale",
    "awasthi_lemma1": "lemma1",
    "bao_bounds": "bao",
    "jiang_nc_vs_dc": "jiang",
    "jiang_lower_bounds": "lower_bounds",
    "jiang_nc_optimal": "nc_optimal",
    "nozawa_k_sweep": "nozawa",
    "robinson_beta_sweep": "robinson",
}


class RunnerCatalog(Mapping[str, Runner]):
    """Every runner by name (the keys of :data:`RUNNER_MODULES`); looking one up imports its
    module, which registers it."""

    def __getitem__(self, name: str) -> Runner:
        module = RUNNER_MODULES[name]  # KeyError for a name that is not a runner
        importlib.import_module(f"contrastlab.recipes.{module}")
        return RUNNERS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(RUNNER_MODULES)

    def __len__(self) -> int:
        return len(RUNNER_MODULES)

    def __contains__(self, name: object) -> bool:
        return name in RUNNER_MODULES


def all_runners() -> Mapping[str, Runner]:
    """Every runner by name (the ``runner:`` field of a recipe file), each imported on first
    lookup."""
    return RunnerCatalog()

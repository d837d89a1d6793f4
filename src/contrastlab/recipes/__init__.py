"""Recipes: one runnable YAML file per claim of the seed documents (``recipes/*.yaml``).

``contrastlab repro --list`` lists them, ``contrastlab repro NAME [--profile quick|full]`` runs
one and ends by printing PASS or FAIL with the figures behind it. See :mod:`.spec` for the file
format, :mod:`.runners` for how a claim is measured (:mod:`.catalog` lists the modules of the
runners) and :mod:`.repro` for what is written.
"""

from contrastlab.recipes.checks import Check, CheckResult, evaluate_checks
from contrastlab.recipes.params import parse_params
from contrastlab.recipes.repro import RecipeResult, run_recipe
from contrastlab.recipes.spec import PROFILES, Recipe, list_recipes, load_recipe

__all__ = ["PROFILES", "Check", "CheckResult", "Recipe", "RecipeResult", "evaluate_checks",
           "list_recipes", "load_recipe", "parse_params", "run_recipe"]

"""Recipe files: one YAML file per claim of the seed documents.

A recipe states the claim, its source, the runner that measures it, the profiles (``quick``: the
same experiment sized for 2 CPU cores in under 3 minutes, used by the tests; ``full``: sized for a
GPU or a long CPU run) and the checks that decide PASS or FAIL::

    name: awasthi-balanced-etf
    title: ...
    claim: >
      ...
    source: Awasthi, Dikkala & Kamath (2022), "Balanced class distribution"
    runner: awasthi_balanced_etf
    corruption: unconverged        # the deliberately wrong result that must FAIL
    profiles:
      quick: {params: {...}}
      full:  {params: {...}, thresholds: {etf: 1.0e-6}}
    checks:
      - {name: etf, kind: claim, metric: max_etf_cosine_error, op: "<=", value: 1.0e-4,
         why: ...}

Each check has a kind (``claim``, ``sanity`` or ``formula``: :mod:`contrastlab.recipes.checks`);
a recipe needs at least one claim check.

A recipe may also define a ``gpu`` profile: the paper's own experiment at the paper's scale,
judged against its published numbers. Besides ``params``, ``thresholds`` and ``about`` it may
name what it ``requires`` (``cuda``: a CUDA device; ``data.root``: the data set's files, which
are never downloaded) and add ``checks`` of its own (appended to the recipe's)::

      gpu:
        requires: [cuda, data.root]
        params: {...}
        checks:
          - {name: published, kind: claim, metric: published_max_abs_gap, op: "<=", value: 0.05}

A missing requirement is refused before any work (:func:`unmet_requirement`).

Recipes are looked up in ``$CONTRASTLAB_RECIPES`` (a directory), then in the files shipped with
the package (``contrastlab/recipes/specs``, which the repository's ``recipes/`` links to); a
path to a ``.yaml`` file also works as a name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastlab._yaml import YamlError, load_yaml_file
from contrastlab.recipes.checks import Check

__all__ = ["OPTIONAL_PROFILES", "PROFILES", "REQUIREMENTS", "Recipe", "list_recipes",
           "load_recipe", "recipe_dirs", "unmet_requirement"]

#: the profiles every recipe defines
PROFILES = ("quick", "full")
#: the profiles a recipe may define (the paper's own experiment on a GPU)
OPTIONAL_PROFILES = ("gpu",)
#: what a profile may require: a CUDA device, the data set's files (``data.root``)
REQUIREMENTS = ("cuda", "data.root")
_PROFILE_FIELDS = {"params", "thresholds", "about", "requires", "checks"}
#: a recipe name: it becomes a directory under --out, so no '/', '..' or spaces
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_FIELDS = {"name", "title", "claim", "source", "runner", "corruption", "profiles", "checks",
           "notes"}


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file (module docstring)."""

    name: str
    title: str
    claim: str
    source: str
    runner: str
    corruption: str
    profiles: dict[str, dict[str, Any]]
    checks: list[Check]
    notes: str = ""
    path: Path | None = field(default=None, compare=False)

    def params(self, profile: str) -> dict[str, Any]:
        """The runner's parameters for ``profile``."""
        return dict(self._profile(profile).get("params") or {})

    def checks_for(self, profile: str) -> list[Check]:
        """The checks, with the profile's own checks appended and the thresholds it overrides."""
        body = self._profile(profile)
        over = body.get("thresholds") or {}
        checks = self.checks + list(body.get("checks") or [])
        return [c.with_value(over[c.name]) if c.name in over else c for c in checks]

    def requires(self, profile: str) -> list[str]:
        """What ``profile`` needs (:data:`REQUIREMENTS`)."""
        return list(self._profile(profile).get("requires") or [])

    def _profile(self, profile: str) -> dict[str, Any]:
        if profile not in self.profiles:
            raise ValueError(f"profile must be one of {', '.join(map(repr, self.profiles))} for "
                             f"recipe {self.name!r}; got {profile!r}")
        return self.profiles[profile]


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up, in order."""
    dirs = []
    env = os.environ.get("CONTRASTLAB_RECIPES")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parent / "specs")
    return dirs


def _files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in reversed(recipe_dirs()):  # earlier directories win
        if d.is_dir():
            out.update({p.stem: p for p in sorted(d.glob("*.yaml"))})
    return dict(sorted(out.items()))


def list_recipes() -> list[Recipe]:
    """Every recipe found, sorted by name."""
    return [load_recipe(p) for p in _files().values()]


def load_recipe(name: str | Path) -> Recipe:
    """Load a recipe by name (see :func:`list_recipes`) or from a YAML file path.

    Raises ValueError (one line, naming the field) for an unknown name or a malformed file.
    """
    from contrastlab.recipes.catalog import all_runners

    runners = all_runners()
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        files = _files()
        if str(name) not in files:
            raise ValueError(f"recipe must be one of {', '.join(map(repr, files))}; got {name!r}")
        path = files[str(name)]
    elif not path.is_file():
        raise ValueError(f"recipe file {str(path)!r} does not exist")
    try:
        data = load_yaml_file(path)
    except YamlError as exc:
        raise ValueError(f"recipe file {exc}") from None
    where = path.name
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must hold a mapping of recipe fields")
    unknown = set(data) - _FIELDS
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(_FIELDS))}")
    for key in ("name", "title", "claim", "source", "runner", "corruption"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{where}: {key} must be a non-empty string; got {data.get(key)!r}")
    if not _NAME.fullmatch(data["name"].strip()):
        raise ValueError(f"{where}: name must match [a-z0-9][a-z0-9-]* (it names the output "
                         f"directory); got {data['name']!r}")
    if data["runner"] not in runners:
        raise ValueError(f"{where}: runner must be one of {', '.join(map(repr, runners))}; got "
                         f"{data['runner']!r}")
    profiles = data.get("profiles")
    if (not isinstance(profiles, Mapping) or not set(PROFILES) <= set(profiles)
            or set(profiles) - set(PROFILES) - set(OPTIONAL_PROFILES)):
        raise ValueError(f"{where}: profiles must define {', '.join(PROFILES)} and may define "
                         f"{', '.join(OPTIONAL_PROFILES)}; got "
                         f"{sorted(profiles) if isinstance(profiles, Mapping) else profiles!r}")
    checks_raw = data.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise ValueError(f"{where}: checks must be a non-empty list")
    checks = [Check.from_dict(c, f"{where}: checks[{i}]") for i, c in enumerate(checks_raw)]
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: check names must be unique; got {names}")
    if not any(c.kind == "claim" for c in checks):
        raise ValueError(f"{where}: at least one check must be of kind 'claim' (the seed's "
                         "statement); the others are 'sanity' or 'formula'")
    parsed = {prof: _profile_body(body, f"{where}: profiles.{prof}", names)
              for prof, body in profiles.items()}
    return Recipe(
        name=data["name"].strip(), title=data["title"].strip(),
        claim=" ".join(data["claim"].split()),
        source=" ".join(data["source"].split()), runner=data["runner"],
        corruption=data["corruption"].strip(), profiles=parsed, checks=checks,
        notes=" ".join(str(data.get("notes") or "").split()), path=path,
    )


def _profile_body(body: Any, where: str, names: list[str]) -> dict[str, Any]:
    """One profile's mapping, validated; its own ``checks`` parsed into :class:`Check`."""
    if not isinstance(body, Mapping) or set(body) - _PROFILE_FIELDS:
        raise ValueError(f"{where} must be a mapping with {', '.join(sorted(_PROFILE_FIELDS))}")
    if not isinstance(body.get("params") or {}, Mapping):
        raise ValueError(f"{where}.params must be a mapping")
    requires = body.get("requires") or []
    if not isinstance(requires, list) or set(requires) - set(REQUIREMENTS):
        raise ValueError(f"{where}.requires must be a list of {', '.join(REQUIREMENTS)}; got "
                         f"{requires!r}")
    own_raw = body.get("checks") or []
    if not isinstance(own_raw, list):
        raise ValueError(f"{where}.checks must be a list of checks")
    own = [Check.from_dict(c, f"{where}.checks[{i}]") for i, c in enumerate(own_raw)]
    every = names + [c.name for c in own]
    if len(set(every)) != len(every):
        raise ValueError(f"{where}.checks: check names must be unique; got {every}")
    for cname, v in (body.get("thresholds") or {}).items():
        if cname not in every:
            raise ValueError(f"{where}.thresholds.{cname} names no check; checks: "
                             f"{', '.join(every)}")
        Check.from_dict({"metric": "x", "op": "<=", "value": v, "kind": "claim"},
                        f"{where}.thresholds.{cname}")
    return {**body, "checks": own, "requires": list(requires)}


def unmet_requirement(recipe: Recipe, profile: str, params: Mapping[str, Any]) -> str | None:
    """The one line that says what ``profile`` of ``recipe`` needs and this machine or these
    ``params`` lack (None when nothing is missing): checked before any work."""
    needs = recipe.requires(profile)
    if "cuda" in needs:
        import torch

        if not torch.cuda.is_available():
            return (f"profile {profile!r} of recipe {recipe.name!r} needs a CUDA device, and "
                    "this machine has none (run it on a GPU machine, or use --profile quick or "
                    "full)")
    if "data.root" in needs:
        config = params.get("config") or {}
        root = (params.get("set") or {}).get("data.root",
                                             (config.get("data") or {}).get("root"))
        if not root:
            return (f"profile {profile!r} of recipe {recipe.name!r} needs the data set's files "
                    "(never downloaded): --param set.data.root=DIR")
    return None

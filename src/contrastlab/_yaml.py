"""Reading YAML safely and strictly: the one loader of every YAML file contrastlab reads
(configs, recipes, ``--set`` / ``--param`` values).

``safe_load`` semantics (no Python objects), plus: numbers in exponent notation without a dot
(``1e-3``) are floats, as in YAML 1.2 (PyYAML's YAML 1.1 reads them as strings); a mapping that
repeats a key is an error (a plain ``yaml.safe_load`` silently keeps the last value, so
``loss: {k: 1, k: 64}`` would run with k = 64 without a word); a file that is not UTF-8 text,
or is not YAML, is named in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["YamlError", "load_yaml_file", "load_yaml_text"]


class YamlError(ValueError):
    """A YAML text or file that cannot be read; one line."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # the base constructor reports unhashable keys
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


# YAML 1.2 floats: PyYAML (YAML 1.1) reads `lr: 1e-3` as the string "1e-3" (its floats need a
# dot); here it is the number 0.001, as a reader of the config means
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))

_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _construct_mapping)


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{at}: {problem}"


def load_yaml_text(text: str, where: str = "") -> Any:
    """Parse ``text`` (duplicate keys refused). Raises :class:`YamlError` (one line, prefixed by
    ``where``: e.g. a file name) on bad YAML."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise YamlError(f"{where}{': ' if where else ''}{_one_line(exc)}") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file; one-line :class:`YamlError` naming the file when it is
    missing, a directory, unreadable, not UTF-8 text, or not valid YAML."""
    p = Path(path)
    if not p.exists():
        raise YamlError(f"file not found: {str(p)!r}")
    if p.is_dir():
        raise YamlError(f"{str(p)!r} is a directory, not a YAML file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise YamlError(f"{str(p)!r} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{p}: not a UTF-8 text file (byte {exc.start}); a YAML file "
                        "is expected") from None
    if "\x00" in text:
        raise YamlError(f"{p}: a binary file (it holds NUL bytes); a YAML file is expected")
    return load_yaml_text(text, str(p))

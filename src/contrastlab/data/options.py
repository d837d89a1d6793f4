"""Typed options: how a data set, an encoder or an augmenter declares the options it takes.

Each declares a pydantic model derived from :class:`OptionsModel` (strict types: a boolean is not
an integer, a string is not a number; unknown names are refused), and parses what it is given
with :func:`parse_options`. The config (:func:`contrastlab.train.config.parse_config`)
validates ``data.options``, ``model.options`` and ``data.augment`` against the same models, so a
bad option fails before any work, with one line naming the field path and what is allowed::

    data.options.classes must be an integer >= 2; got 1
    data.options.foo is not an option of data set 'synthetic'; allowed: classes, dim, ...

This module depends on pydantic only; the loaders, :mod:`contrastlab.models` and
:mod:`contrastlab.data.pairs` import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["TYPE_WORDS", "OptionsModel", "format_validation_error", "parse_options"]

M = TypeVar("M", bound="OptionsModel")


class OptionsModel(BaseModel):
    """Base of every options model: strict, closed (unknown names refused), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


#: pydantic error type -> the words of a one-line message (shared with the run config)
TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "none_required": "null",
}
_BOUND_WORDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}


def format_validation_error(exc: ValidationError, prefix: str, owner: str,
                            model: type[BaseModel]) -> str:
    """One line for the first error of ``exc``: the field path (``prefix`` + the field), what
    is allowed and what was given; ``owner`` names what declares the options (e.g. ``data set
    'synthetic'``), ``model`` the options model."""
    fields = list(model.model_fields)
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)][:1]  # no union-member tags
    name = loc[0] if loc else ""
    path = ".".join(p for p in (prefix, name) if p) or "options"
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        return (f"{path} is not an option of {owner}; allowed: "
                f"{', '.join(fields) if fields else '(none)'}")
    if kind in _BOUND_WORDS:
        bound = next(iter(err.get("ctx", {}).values()), "?")
        info = model.model_fields.get(name)
        integer = info is not None and "int" in str(info.annotation) and not isinstance(
            given, float)
        msg = (f"{path} must be {'an integer' if integer else 'a number'} "
               f"{_BOUND_WORDS[kind]} {bound}; got {given!r}")
    elif kind in TYPE_WORDS:
        msg = f"{path} must be {TYPE_WORDS[kind]}; got {given!r}"
    elif kind == "value_error":
        text = str(err.get("ctx", {}).get("error", err["msg"]))
        # a model validator's message starts with the field it is about: "prior must ..."
        head = text.split(" ", 1)[0].rstrip(":")
        msg = (".".join(p for p in (prefix, text) if p) if not name and head in fields
               else f"{path}: {text}")
    elif kind == "finite_number":
        msg = f"{path} must be a finite number; got {given!r}"
    else:
        msg = f"{path}: {err['msg']}; got {given!r}"
    return f"{msg} ({owner})"


def parse_options(model: type[M], options: Mapping[str, Any] | None, owner: str,
                  prefix: str = "") -> M:
    """Validate ``options`` against ``model``; a one-line ValueError (see
    :func:`format_validation_error`) otherwise. ``None`` values mean "the default"."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValueError(f"{prefix or 'options'} must be a mapping of option names to values; got "
                         f"{type(options).__name__}")
    given = {k: v for k, v in options.items() if v is not None or _nullable(model, k)}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, prefix, owner, model)) from None


def _nullable(model: type[OptionsModel], name: str) -> bool:
    """Whether the field ``name`` of ``model`` takes None as a value (otherwise None means the
    default and is dropped)."""
    info = model.model_fields.get(name)
    if info is None:
        return True  # an unknown name: keep it so it is reported
    return info.default is None

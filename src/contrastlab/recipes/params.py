"""Reading a recipe profile's parameters: one-line errors naming the parameter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["check_keys", "class_problems", "ks_list", "parse_params", "take"]


def check_keys(where: str, params: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse parameters a runner does not know (a typo must not be silently ignored)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{where} has unknown parameter(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(allowed)}")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["ks=[1,16]", "set.train.epochs=5"]`` -> ``{"ks": [1, 16], "set": {"train.epochs":
    5}}`` (values parsed as YAML)."""
    from contrastlab._yaml import YamlError, load_yaml_text

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param must be KEY=VALUE; got {item!r}")
        try:
            value = load_yaml_text(raw)
        except YamlError:
            raise ValueError(f"--param {key}: the value is not valid YAML: {raw!r}") from None
        key = key.strip()
        if key.startswith("set."):
            out.setdefault("set", {})[key[4:]] = value
        else:
            out[key] = value
    return out


def ks_list(name: str, spec: Any) -> list[int]:
    """A list of k: a YAML list of integers >= 1, ``"a..b"`` (every integer from a to b) or
    ``"2^a..2^b"`` (the powers of two), or several of these joined by ``+``."""
    if isinstance(spec, list) and spec and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in spec):
        return sorted(set(spec))
    if isinstance(spec, str):
        out: set[int] = set()
        for part in spec.split("+"):
            m = re.fullmatch(r"\s*(2\^)?(\d+)\s*\.\.\s*(2\^)?(\d+)\s*", part)
            if not m or bool(m.group(1)) != bool(m.group(3)) or int(m.group(2)) > int(m.group(4)):
                break
            a, b = int(m.group(2)), int(m.group(4))
            out |= {2**e for e in range(a, b + 1)} if m.group(1) else set(range(a, b + 1))
        else:
            if out and min(out) >= 1:
                return sorted(out)
    raise ValueError(f"{name} must be a list of integers >= 1, 'a..b' or '2^a..2^b' (joined by "
                     f"'+'); got {spec!r}")


def take(params: Mapping[str, Any], name: str, default: Any, kind: type | tuple[type, ...]
         ) -> Any:
    """``params[name]`` (or ``default``), checked to be of ``kind``."""
    value = params.get(name, default)
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ValueError(f"params.{name} must be {getattr(kind, '__name__', kind)}; got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"params.{name} must be {names}; got {value!r}")
    return value


def _prior(spec: Any, c: int) -> tuple[str, torch.Tensor]:
    from contrastlab.data.latent import parse_prior

    if not isinstance(spec, str):
        raise ValueError(f"params.problems[].prior must be a prior spec string; got {spec!r}")
    return spec, parse_prior(spec, c)


def class_problems(params: Mapping[str, Any], default: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """The ``problems`` parameter of the free-embedding recipes (``awasthi-lemma1``,
    ``jiang-nc-optimal``): a list of ``{classes, per_class, dim, prior}`` (``dim`` defaults to
    C - 1, ``prior`` to ``balanced``: a spec of :func:`contrastlab.data.latent.parse_prior`),
    returned as ``{"C", "n", "d", "prior" (the spec), "rho" (the prior's tensor)}``."""
    probs = take(params, "problems", default, list)
    out = []
    for i, p in enumerate(probs):
        if not isinstance(p, Mapping):
            raise ValueError(f"params.problems[{i}] must be a mapping; got {p!r}")
        check_keys(f"params.problems[{i}]", p, ("classes", "per_class", "dim", "prior"))
        c = int(take(p, "classes", 4, int))
        n = int(take(p, "per_class", 3, int))
        if c < 2 or n < 2:
            raise ValueError(f"params.problems[{i}]: classes and per_class must be >= 2")
        d = int(take(p, "dim", c - 1, int))
        name, rho = _prior(p.get("prior", "balanced"), c)
        out.append({"C": c, "n": n, "d": d, "prior": name, "rho": rho})
    return out

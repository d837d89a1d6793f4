"""Checkable conditions of a recipe: ``metric op value``, evaluated on the recipe's measured
figures.

A check is data (from the recipe's YAML), so the expected outcome of a claim is stated in the
recipe file, next to the claim, and is the same for every profile unless a profile overrides the
threshold. A metric that is missing or not finite fails its check (a run that produced nothing
never passes).

Every check has a ``kind``:

- ``claim``: the seed's statement itself, measured; it can fail when the claim does not hold
  (and fails on the recipe's deliberately wrong variant, which the tests assert for every recipe);
- ``sanity``: the pipeline measured what it should (e.g. the encoders learned, a theorem that
  holds for every representation is observed to hold); failing it voids the measurement;
- ``formula``: a property of closed-form expressions, independent of any training.

A recipe PASSes when every check passes and it has at least one claim check.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "OPS", "Check", "CheckResult", "evaluate_checks"]

KINDS = ("claim", "sanity", "formula")

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Check:
    """``metric op value``: e.g. ``max_etf_cosine_error <= 1e-4``; ``why`` says where the
    threshold comes from; ``kind`` is one of :data:`KINDS` (module docstring)."""

    name: str
    metric: str
    op: str
    value: float
    why: str = ""
    kind: str = "claim"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> Check:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a mapping with metric, op, value; got {d!r}")
        unknown = set(d) - {"name", "metric", "op", "value", "why", "kind"}
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: name, "
                             "metric, op, value, why, kind")
        metric = d.get("metric")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"{where}.metric must be a metric name; got {metric!r}")
        op = d.get("op")
        if op not in OPS:
            raise ValueError(f"{where}.op must be one of {', '.join(map(repr, OPS))}; got {op!r}")
        value = d.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError(f"{where}.value must be a finite number; got {value!r}")
        kind = d.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{where}.kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return cls(str(d.get("name") or metric), metric, str(op), float(value),
                   str(d.get("why") or ""), str(kind))

    def with_value(self, value: float) -> Check:
        return Check(self.name, self.metric, self.op, float(value), self.why, self.kind)

    def text(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class CheckResult:
    check: Check
    observed: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.check.name, "kind": self.check.kind,
                "condition": self.check.text(),
                "observed": self.observed, "passed": self.passed, "why": self.check.why}


def evaluate_checks(checks: list[Check], metrics: Mapping[str, Any]) -> list[CheckResult]:
    """Evaluate every check on ``metrics``; a missing, boolean-free non-number or non-finite
    metric fails."""
    out = []
    for c in checks:
        v = metrics.get(c.metric)
        observed = None
        if not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v):
            observed = float(v)
        passed = observed is not None and OPS[c.op](observed, c.value)
        out.append(CheckResult(c, observed, passed))
    return out

import math

import pytest

from contrastlab.recipes.checks import Check, evaluate_checks


def test_check_ops_and_missing_metrics_fail():
    checks = [Check("a", "x", "<=", 1.0), Check("b", "y", ">", 0.0), Check("c", "z", "==", 0.0),
              Check("d", "missing", "<=", 1.0), Check("e", "nan", "<=", 1.0),
              Check("f", "flag", "<=", 1.0)]
    res = evaluate_checks(checks, {"x": 1.0, "y": 0.0, "z": 0, "nan": math.nan, "flag": True})
    assert [r.passed for r in res] == [True, False, True, False, False, False]
    assert res[0].observed == 1.0 and res[3].observed is None
    assert res[1].to_dict()["condition"] == "y > 0"


@pytest.mark.parametrize(("raw", "match"), [
    ({"metric": "x", "op": "~", "value": 1}, "op must be one of"),
    ({"metric": "", "op": "<=", "value": 1}, "metric must be"),
    ({"metric": "x", "op": "<=", "value": "1"}, "value must be a finite number"),
    ({"metric": "x", "op": "<=", "value": 1, "extra": 2}, "unknown field"),
    ({"metric": "x", "op": "<=", "value": 1}, "kind must be one of claim, sanity, formula"),
    ({"metric": "x", "op": "<=", "value": 1, "kind": "vibe"}, "kind must be one of"),
])
def test_check_from_dict_errors_name_the_field(raw, match):
    with pytest.raises(ValueError, match=match):
        Check.from_dict(raw, "checks[0]")

import pytest

from contrastlab.recipes.params import ks_list, take


def test_ks_list_forms():
    assert ks_list("ks", [4, 1, 4]) == [1, 4]
    assert ks_list("ks", "1..4") == [1, 2, 3, 4]
    assert ks_list("ks", "2^0..2^3") == [1, 2, 4, 8]
    assert ks_list("ks", "1..3+2^3..2^4") == [1, 2, 3, 8, 16]


@pytest.mark.parametrize("bad", [[], [0], "4..1", "2^1..3", "x", 3, [True]])
def test_ks_list_rejects(bad):
    with pytest.raises(ValueError, match="ks must be"):
        ks_list("ks", bad)


def test_take_checks_type():
    assert take({"a": 2}, "a", 1, int) == 2
    assert take({}, "a", 1, int) == 1
    with pytest.raises(ValueError, match=r"params\.a must be int"):
        take({"a": "2"}, "a", 1, int)
    with pytest.raises(ValueError, match=r"params\.a must be"):
        take({"a": True}, "a", 1, int)


def test_parse_params():
    from contrastlab.recipes import parse_params

    assert parse_params(["ks=[1, 16]", "set.train.epochs=5", "seeds=[0]"]) == {
        "ks": [1, 16], "seeds": [0], "set": {"train.epochs": 5}}
    with pytest.raises(ValueError, match="--param must be KEY=VALUE"):
        parse_params(["ks"])
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_params(["ks=[1,"])

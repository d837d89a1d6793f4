"""What the recipe runners share (recipes.runners)."""

from contrastlab.recipes.runners import unconverged_note


def test_unconverged_note_names_every_run_or_says_nothing():
    assert unconverged_note([]) == []
    assert unconverged_note(["k=1 seed 0", "k=4 seed 2"]) == [
        "not converged (held-out loss still falling over the last 20 % of epochs): "
        "k=1 seed 0, k=4 seed 2"]

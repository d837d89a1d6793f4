"""A loss plugin as a user writes one: importing it registers its loss (named by
$CONTRASTLAB_PLUGINS for the command line; tests/losses/test_registry.py)."""

from contrastlab.losses import LossSpec, register_loss
from tests.losses.toy_losses import align_uniform

SPEC = register_loss(LossSpec("align-uniform", align_uniform, "in-batch", ("z1", "z2"),
                              {"temperature": "temperature"}, defaults={"temperature": 2.0},
                              reference="Wang & Isola 2020, eq. (4)-(5)"))

"""The library's losses over the batch gathered from every process (``torch.distributed``).

Each is :func:`contrastlab.distributed.gathered` of the loss with its batch arguments
(:data:`contrastlab.distributed.BATCH_ARGS`): ``info_nce(z1, z2, ..., gather=True)`` is the
single-process loss on the concatenated global batch, identical on every rank, with the exact
gradient (see :mod:`contrastlab.distributed` for the value, the gradient and the generator rule
of the sampling losses). The losses also take ``gather=True`` themselves; these are the same
route, kept as functions for code that wraps a loss. They live here, not in
:mod:`contrastlab.distributed`, so that the gathering utilities import no loss.
"""

from __future__ import annotations

from contrastlab.distributed import BATCH_ARGS, gathered, samples_negatives
from contrastlab.losses.debiased import debiased_hard as plain_debiased_hard
from contrastlab.losses.infonce import info_nce as plain_info_nce
from contrastlab.losses.nce import nce_loss as plain_nce_loss
from contrastlab.losses.scl import hscl as plain_hscl
from contrastlab.losses.scl import hucl as plain_hucl
from contrastlab.losses.scl import scl as plain_scl
from contrastlab.losses.scl import ucl as plain_ucl
from contrastlab.losses.supcon import supcon as plain_supcon

__all__ = ["debiased_hard", "hscl", "hucl", "info_nce", "nce_loss", "scl", "supcon", "ucl"]

info_nce = gathered(plain_info_nce, BATCH_ARGS["info_nce"])
supcon = gathered(plain_supcon, BATCH_ARGS["supcon"])
debiased_hard = gathered(plain_debiased_hard, BATCH_ARGS["debiased_hard"])
nce_loss = gathered(plain_nce_loss, BATCH_ARGS["nce_loss"])
scl = gathered(plain_scl, BATCH_ARGS["scl"], samples=samples_negatives)
hscl = gathered(plain_hscl, BATCH_ARGS["hscl"], samples=samples_negatives)
ucl = gathered(plain_ucl, BATCH_ARGS["ucl"], samples=samples_negatives)
hucl = gathered(plain_hucl, BATCH_ARGS["hucl"], samples=samples_negatives)

"""Thin ``nn.Module`` wrappers over the pure loss functions (arguments are checked at
construction, so a bad configuration fails before the first batch).

Every module takes ``gather`` (True or False: no process ``group`` and no ``"local"`` here) and
``check_finite`` (the common arguments of :mod:`contrastlab.losses`), passed to its loss."""

from __future__ import annotations

import torch
from torch import nn

from contrastlab._validation import (
    check_choice,
    check_generator,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from contrastlab.losses._common import REDUCTIONS, check_debiased_args
from contrastlab.losses.debiased import debiased_hard
from contrastlab.losses.family import LOSSES
from contrastlab.losses.hard_pairs import EXACT_MODES, NEGATIVE_REDUCTIONS, check_tiled
from contrastlab.losses.infonce import info_nce
from contrastlab.losses.nce import nce_loss
from contrastlab.losses.normalize import NORMALIZATIONS
from contrastlab.losses.scl import family_loss
from contrastlab.losses.supcon import supcon


def _check_bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


class InfoNCELoss(nn.Module):
    """Module form of :func:`contrastlab.losses.info_nce` (SimCLR NT-Xent)."""

    def __init__(self, temperature: float = 0.5, normalize: str = "sphere",
                 gather: bool = False, check_finite: bool = True) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.gather = _check_bool("gather", gather)
        self.check_finite = _check_bool("check_finite", check_finite)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return info_nce(z1, z2, self.temperature, self.normalize, gather=self.gather,
                        check_finite=self.check_finite)


class SupConLoss(nn.Module):
    """Module form of :func:`contrastlab.losses.supcon` (Khosla et al. L_out)."""

    def __init__(
        self,
        temperature: float = 0.1,
        normalize: str = "sphere",
        base_temperature: float | None = None,
        gather: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.base_temperature = base_temperature
        self.gather = _check_bool("gather", gather)
        self.check_finite = _check_bool("check_finite", check_finite)

    def forward(
        self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return supcon(z1, z2, labels, self.temperature, self.normalize, self.base_temperature,
                      gather=self.gather, check_finite=self.check_finite)


class DebiasedHardLoss(nn.Module):
    """Module form of :func:`contrastlab.losses.debiased_hard` (Chuang / Robinson et al.)."""

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        normalize: str = "sphere",
        gather: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.check_finite = _check_bool("check_finite", check_finite)
        self.temperature, self.tau_plus, self.beta = check_debiased_args(
            temperature, tau_plus, beta
        )
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.gather = _check_bool("gather", gather)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return debiased_hard(z1, z2, self.temperature, self.tau_plus, self.beta, self.normalize,
                             gather=self.gather, check_finite=self.check_finite)


class NCELoss(nn.Module):
    """Module form of :func:`contrastlab.losses.nce_loss` (explicit k negatives)."""

    def __init__(
        self,
        loss: str = "infonce",
        temperature: float = 1.0,
        normalize: str = "none",
        reduction: str = "mean",
        gather: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.check_finite = _check_bool("check_finite", check_finite)
        self.loss = check_choice("loss", loss, LOSSES)
        self.temperature = check_positive("temperature", temperature)
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.gather = _check_bool("gather", gather)

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor,
        negative_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``negatives``: (B, k, d), a shared (k, d) pool, or an (M, d) pool indexed per anchor
        by ``negative_index`` (B, k) (see :func:`contrastlab.losses.nce_loss`)."""
        return nce_loss(
            anchor, positive, negatives, self.loss, self.temperature, self.normalize,
            self.reduction, gather=self.gather, negative_index=negative_index,
            check_finite=self.check_finite,
        )


class HardContrastiveLoss(nn.Module):
    """Module form of the SCL / HSCL / UCL / HUCL family (:func:`hard_contrastive`).

    ``negatives="other-class"`` with ``beta=0`` is SCL, with ``beta>0`` HSCL;
    ``negatives="marginal"`` gives UCL / HUCL. ``tiled``: as :func:`hard_contrastive`
    (``tiled=True`` with ``exact=False`` is refused here, at construction).
    """

    def __init__(
        self,
        negatives: str = "other-class",
        beta: float = 0.0,
        k: int = 256,
        temperature: float = 1.0,
        normalize: str = "ball",
        exact: bool | str = False,
        negatives_reduction: str = "mean",
        tiled: bool | None = None,
        gather: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.gather = _check_bool("gather", gather)
        self.check_finite = _check_bool("check_finite", check_finite)
        self.negatives = check_choice("negatives", negatives, ("other-class", "marginal"))
        self.beta = check_nonnegative("beta", beta)
        self.k = check_positive_int("k", k)
        self.temperature = check_positive("temperature", temperature)
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.exact = check_choice("exact", exact, EXACT_MODES)
        self.negatives_reduction = check_choice(
            "negatives_reduction", negatives_reduction, NEGATIVE_REDUCTIONS
        )
        self.tiled = check_tiled(tiled, "sampled" if self.exact is False else "exact")

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        check_generator(generator)
        return family_loss(
            z, labels, self.negatives, self.beta, self.k, self.temperature, self.normalize,
            self.exact, self.negatives_reduction, "mean", generator, self.tiled, self.gather, None,
            self.check_finite,
        )


def SCLLoss(**kwargs: object) -> HardContrastiveLoss:
    """SCL as a module: :class:`HardContrastiveLoss` with other-class negatives and beta = 0."""
    return HardContrastiveLoss(negatives="other-class", beta=0.0, **kwargs)  # type: ignore[arg-type]


def HSCLLoss(beta: float = 1.0, **kwargs: object) -> HardContrastiveLoss:
    """HSCL as a module: other-class negatives tilted by exp(beta s)."""
    return HardContrastiveLoss(negatives="other-class", beta=beta, **kwargs)  # type: ignore[arg-type]


def UCLLoss(**kwargs: object) -> HardContrastiveLoss:
    """UCL as a module: negatives from the marginal (the whole batch), beta = 0."""
    return HardContrastiveLoss(negatives="marginal", beta=0.0, **kwargs)  # type: ignore[arg-type]


def HUCLLoss(beta: float = 1.0, **kwargs: object) -> HardContrastiveLoss:
    """HUCL as a module: marginal negatives tilted by exp(beta s)."""
    return HardContrastiveLoss(negatives="marginal", beta=beta, **kwargs)  # type: ignore[arg-type]

"""Extending contrastlab: a data set, an encoder and a loss of your own, trained together by
contrastlab's trainer.

Run it: ``python docs/examples/extending.py`` (CPU, a few seconds).
"""

import math

import torch
from pydantic import Field
from torch import nn

import contrastlab.train as T
from contrastlab.data import Dataset, DatasetInfo, register_dataset
from contrastlab.data.options import OptionsModel
from contrastlab.losses import LossSpec, register_loss
from contrastlab.models import register_encoder


# --8<-- [start:dataset]
class RingsOptions(OptionsModel):
    """The typed options of ``rings``: checked by the config before any work."""

    classes: int = Field(3, ge=2)
    n_train: int = Field(300, ge=1)
    n_test: int = Field(150, ge=1)
    noise: float = Field(0.05, gt=0)


def load_rings(*, root: str | None, seed: int, **options: object) -> Dataset:
    """C concentric rings in the plane, class c at radius c + 1 (float32 inputs, int64 labels)."""
    opts = RingsOptions(**options)
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, opts.classes, (n,), generator=g)
        angle = 2 * math.pi * torch.rand(n, generator=g)
        x = (y + 1).unsqueeze(1) * torch.stack([angle.cos(), angle.sin()], dim=1)
        return x + opts.noise * torch.randn(n, 2, generator=g), y

    (x_train, y_train), (x_test, y_test) = split(opts.n_train), split(opts.n_test)
    return Dataset("rings", x_train, y_train, x_test, y_test, opts.classes, "vector")


register_dataset(
    "rings", load_rings,
    DatasetInfo("rings", "concentric rings in the plane", "vector", num_classes=None,
                sizes="generated (300 + 150)", requires="-", options=RingsOptions, root="none",
                train_size=lambda opts: opts.n_train),
    replace=True,  # the example may run twice in one process
)
# --8<-- [end:dataset]


# --8<-- [start:encoder]
class WidthOptions(OptionsModel):
    width: int = Field(32, ge=1)


@register_encoder("rff", "random Fourier features + a linear map", kinds=("vector",),
                  options=WidthOptions)
def build_rff(input_shape: tuple[int, ...], out_dim: int, width: int = 32) -> nn.Module:
    """A backbone: ``(input_shape, out_dim, **options) -> nn.Module``, last layer linear."""

    class RFF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.randn(input_shape[0], width))
            self.out = nn.Linear(2 * width, out_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x @ self.w
            return self.out(torch.cat([h.cos(), h.sin()], dim=1))

    return RFF()
# --8<-- [end:encoder]


# --8<-- [start:loss]
def align_uniform(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Wang & Isola 2020, eq. (4)-(5): alignment of the positives + uniformity of the 2B views
    (an in-batch loss; the features arrive normalized by the encoder)."""
    z = torch.cat([z1, z2])
    sq = torch.pdist(z).pow(2)  # the 2B(2B - 1)/2 pairs
    uniform = torch.logsumexp(-temperature * sq, 0) - math.log(sq.numel())
    return (z1 - z2).pow(2).sum(1).mean() + uniform


register_loss(
    LossSpec("align-uniform", align_uniform, family="in-batch", batch=("z1", "z2"),
             params={"temperature": "temperature"}, defaults={"temperature": 2.0},
             reference="Wang & Isola 2020, eq. (4)-(5)"),
    replace=True,
)
# --8<-- [end:loss]


# --8<-- [start:train]
def main(epochs: int = 3) -> dict[str, float]:
    cfg = T.parse_config({
        "seed": 0,
        "data": {"name": "rings", "options": {"classes": 3, "n_train": 300}},
        "model": {"encoder": "rff", "out_dim": 2, "options": {"width": 32}},
        # temperature: the spec's default, 2.0; the encoder normalizes onto the sphere
        "loss": {"name": "align-uniform", "normalize": "sphere"},
        "optim": {"lr": 0.01},
        "train": {"epochs": epochs, "batch_size": 60, "progress": False},
        "eval": {"final_lsup": False, "final_knn": False, "final_probes": []},
    })
    result = T.train(cfg)
    last = result.epochs[-1]
    print(f"{result.status}: loss.temperature={cfg.loss.temperature}, "
          f"train_loss {last['train_loss']:.4f}, "
          f"mean-classifier accuracy {last['mc_acc']:.3f}, linear probe {last['probe_acc']:.3f}")
    return last
# --8<-- [end:train]


if __name__ == "__main__":
    main()

"""A lightly-style SimCLR model (backbone + lightly's projection head) trained with contrastlab
losses in place of lightly's NTXentLoss.

Needs lightly (``pip install lightly``; not a dependency of contrastlab). Run it:
``python docs/examples/lightly_model.py`` (CPU, a few seconds).
"""

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

import contrastlab.losses as L


class SimCLR(nn.Module):
    """lightly's SimCLR model: a backbone and its projection head g."""

    def __init__(self, backbone: nn.Module, feature_dim: int, out_dim: int = 16) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, feature_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def main(steps: int = 20, batch_size: int = 64, dim: int = 32) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, dim, generator=g)
    backbone = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64))
    model = SimCLR(backbone, feature_dim=64)

    # 1. a drop-in replacement: contrastlab's info_nce is lightly's NTXentLoss (same t)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    torch.testing.assert_close(L.info_nce(z0, z1, temperature=0.5),
                               NTXentLoss(temperature=0.5)(z0, z1), rtol=1e-5, atol=1e-5)

    # 2. train with hard negatives instead (Robinson et al. 2021; beta = 0: Chuang et al.'s
    #    debiased loss; beta = 0 and tau_plus = 0: NT-Xent again)
    criterion = L.DebiasedHardLoss(temperature=0.5, tau_plus=0.1, beta=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    for step in range(steps):
        x = centers[torch.randint(0, 4, (batch_size,), generator=g)]
        x = x + 0.5 * torch.randn(batch_size, dim, generator=g)
        x0 = x + 0.1 * torch.randn(batch_size, dim, generator=g)  # two "augmented" views
        x1 = x + 0.1 * torch.randn(batch_size, dim, generator=g)
        loss = criterion(model(x0), model(x1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == steps - 1:
            print(f"step {step:2d}  debiased_hard {loss.item():.4f}")
    return loss.item()


if __name__ == "__main__":
    main()

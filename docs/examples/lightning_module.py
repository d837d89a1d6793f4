"""A PyTorch Lightning module whose training_step calls a contrastlab loss.

Needs Lightning (``pip install lightning``; not a dependency of contrastlab). Run it:
``python docs/examples/lightning_module.py`` (CPU, a few seconds).
"""

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import contrastlab.losses as L


class HardNegativeSimCLR(pl.LightningModule):
    """An encoder trained with hard negatives (Robinson et al. 2021; contrastlab's
    ``debiased_hard``); ``beta=0`` gives Chuang et al.'s debiased loss, ``beta=0`` and
    ``tau_plus=0`` SimCLR's NT-Xent."""

    def __init__(self, dim_in: int = 32, dim_out: int = 16, temperature: float = 0.5,
                 tau_plus: float = 0.1, beta: float = 1.0, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(dim_in, 64), nn.ReLU(), nn.Linear(64, dim_out))
        # the module form of contrastlab.losses.debiased_hard; gather=True would compute the
        # loss on the batch gathered over every DDP process (all of their negatives)
        self.criterion = L.DebiasedHardLoss(temperature=temperature, tau_plus=tau_plus,
                                            beta=beta)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x1, x2 = batch
        loss = self.criterion(self.encoder(x1), self.encoder(x2))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def random_views(n: int = 512, dim: int = 32, seed: int = 0) -> TensorDataset:
    """Two noisy views of n samples of 4 random classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, dim, generator=g)[torch.randint(0, 4, (n,), generator=g)]
    x = x + 0.5 * torch.randn(n, dim, generator=g)
    return TensorDataset(x + 0.1 * torch.randn(n, dim, generator=g),
                         x + 0.1 * torch.randn(n, dim, generator=g))


def main(epochs: int = 2) -> float:
    pl.seed_everything(0, verbose=False)
    loader = DataLoader(random_views(), batch_size=64, shuffle=True)
    model = HardNegativeSimCLR()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, loader)
    loss = float(trainer.callback_metrics["train_loss"])
    print(f"train_loss after {epochs} epochs: {loss:.4f}")
    return loss


if __name__ == "__main__":
    main()

"""The quickstart: a latent-class model, an encoder, and losses with an explicit k.

Run it: ``python docs/examples/quickstart.py`` (CPU, a few seconds).
"""

# --8<-- [start:imports]
import torch

import contrastlab.losses as L
from contrastlab.data import gaussian_mixture

# --8<-- [end:imports]


def main() -> None:
    # --8<-- [start:main]
    model = gaussian_mixture(C=10, dim=32, seed=0)  # latent-class model, balanced prior
    x, y = model.sample(256, generator=torch.Generator().manual_seed(0))
    z = torch.nn.Linear(32, 9)(x)  # any encoder
    # Jiang et al.'s HSCL: k = 256 negatives per (anchor, positive) pair, sampled
    print("hscl  sampled", L.hscl(z, y, beta=5.0, k=256).item())
    # HUCL, the exact expectation over the sampling of the k negatives (no sampling noise)
    print("hucl  exact  ", L.hucl(z, y, beta=5.0, k=256, exact=True).item())
    # contrastive tuples (x, x+, x_1..x_k^-) with k = 4096 != batch size
    t = model.sample_tuples(256, k=4096, negatives="marginal")
    print("tuples       ", {name: tuple(v.shape) for name, v in vars(t).items()
                            if isinstance(v, torch.Tensor)})
    # explicit-k InfoNCE: 8 anchors, 8 positives, 4096 negatives each
    loss = L.nce_loss(z[:8], z[8:16], torch.randn(8, 4096, 9), loss="infonce", temperature=0.1)
    print("nce_loss     ", loss.item())
    # --8<-- [end:main]


if __name__ == "__main__":
    main()

"""contrastlab: a laboratory for contrastive representation learning.

Its question: do more negative samples necessarily hurt, and what do hard negatives do?

Subpackages:
- :mod:`contrastlab.losses`: the contrastive loss library (k, sampler, hardness beta and
  normalization are explicit arguments);
- :mod:`contrastlab.data`: the latent-class data model and synthetic class samplers.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

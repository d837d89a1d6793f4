"""contrastlab.theory — the theory engine (population losses, optimal geometry, bounds).

So far: the simplex ETF (:mod:`contrastlab.theory.etf`).
"""

from contrastlab.theory.etf import etf_cosine, simplex_etf

__all__ = ["etf_cosine", "simplex_etf"]

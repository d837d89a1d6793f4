"""contrastlab.theory — the theory engine.

- :mod:`~contrastlab.theory.population`: exact population losses of class-collapsed
  representations (any prior, any k, every loss of the family, marginal / other-class / tilted
  negatives) and of free per-sample embeddings, with exact gradients;
- :mod:`~contrastlab.theory.etf`: the simplex ETF and its closed-form losses (SPEC A7);
- :mod:`~contrastlab.theory.optimize`: the optimal geometry for any prior and k, with restarts and
  diagnostics; Awasthi et al.'s Lemma 1 on per-sample embeddings;
- :mod:`~contrastlab.theory.study`: the unbalanced-prior monotonicity study.
"""

from contrastlab.theory.etf import etf_cosine, etf_loss, simplex_etf
from contrastlab.theory.optimize import (
    PerSampleOptimum,
    PopulationOptimum,
    optimize_per_sample,
    optimize_population,
)
from contrastlab.theory.population import negative_log_law, population_loss, sample_level_loss
from contrastlab.theory.study import (
    StudyResult,
    Violation,
    default_priors,
    monotonicity_study,
    parse_prior,
    two_level_prior,
)

__all__ = [
    "PerSampleOptimum",
    "PopulationOptimum",
    "StudyResult",
    "Violation",
    "default_priors",
    "etf_cosine",
    "etf_loss",
    "monotonicity_study",
    "negative_log_law",
    "optimize_per_sample",
    "optimize_population",
    "parse_prior",
    "population_loss",
    "sample_level_loss",
    "simplex_etf",
    "two_level_prior",
]

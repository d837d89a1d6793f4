"""contrastlab.theory — the theory engine.

- :mod:`~contrastlab.theory.population`: exact population losses of class-collapsed
  representations (any prior, any k, every loss of the family, marginal / other-class / tilted
  negatives) and of free per-sample embeddings, with exact gradients;
- :mod:`~contrastlab.theory.etf`: the simplex ETF and its closed-form losses;
- :mod:`~contrastlab.theory.optimize`: the optimal geometry for any prior and k, with restarts and
  diagnostics; Awasthi et al.'s Lemma 1 on per-sample embeddings;
- :mod:`~contrastlab.theory.downstream`: downstream quality of class vectors (R_mu-supv, mean
  classifier accuracy, L_sup by a certified convex solve);
- :mod:`~contrastlab.theory.study`: the unbalanced-prior monotonicity study;
- :mod:`~contrastlab.theory.bounds`: every bound of the area as a function of K (collision,
  coverage, Arora, Nozawa-Sato, Ash, Bao upper and lower), idealized or from a measurement.
"""

from contrastlab.data.latent import parse_prior, two_level_prior  # the one prior grammar
from contrastlab.theory.bounds import (
    COVERAGE_METHODS,
    BoundsTable,
    CoverageEstimate,
    arora_bound,
    ash_bound,
    bao_delta_lower,
    bao_delta_upper,
    bao_lower_bound,
    bao_upper_bound,
    bounds_from_measurement,
    collision_probability,
    collision_term,
    coverage_estimate,
    coverage_probability,
    harmonic_number,
    idealized_bounds,
    idealized_contrastive_minimum,
    idealized_supervised_minimum,
    nozawa_sato_bound,
)
from contrastlab.theory.bounds_plot import bounds_figure, plot_bounds
from contrastlab.theory.downstream import (
    SupervisedLossResult,
    downstream_report,
    mean_classifier_accuracy,
    mean_classifier_loss,
    supervised_loss,
    supervised_objective,
)
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
)

__all__ = [
    "COVERAGE_METHODS",
    "BoundsTable",
    "CoverageEstimate",
    "PerSampleOptimum",
    "PopulationOptimum",
    "StudyResult",
    "SupervisedLossResult",
    "Violation",
    "arora_bound",
    "ash_bound",
    "bao_delta_lower",
    "bao_delta_upper",
    "bao_lower_bound",
    "bao_upper_bound",
    "bounds_figure",
    "bounds_from_measurement",
    "collision_probability",
    "collision_term",
    "coverage_estimate",
    "coverage_probability",
    "default_priors",
    "downstream_report",
    "etf_cosine",
    "etf_loss",
    "harmonic_number",
    "idealized_bounds",
    "idealized_contrastive_minimum",
    "idealized_supervised_minimum",
    "mean_classifier_accuracy",
    "mean_classifier_loss",
    "monotonicity_study",
    "negative_log_law",
    "nozawa_sato_bound",
    "optimize_per_sample",
    "optimize_population",
    "parse_prior",
    "plot_bounds",
    "population_loss",
    "sample_level_loss",
    "simplex_etf",
    "supervised_loss",
    "supervised_objective",
    "two_level_prior",
]

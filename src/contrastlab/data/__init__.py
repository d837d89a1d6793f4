"""Data: the latent-class model (SPEC A1) and synthetic class samplers (SPEC B2).

- :mod:`contrastlab.data.latent`: priors, the :class:`LatentClassModel` (anchors, positives and k
  negatives, marginal or other-class) and its exact collision statistics.
- :mod:`contrastlab.data.synthetic`: Gaussian and spherical-cap classes (optionally with disjoint
  supports), Gaussian mixtures, and Bao et al.'s circle toy.
"""

from contrastlab.data.latent import (
    NEGATIVES,
    ClassSampler,
    ContrastiveTuples,
    LatentClassModel,
    balanced_prior,
    binomial_pmf,
    check_prior,
    dirichlet_prior,
    make_generator,
    zipf_prior,
)
from contrastlab.data.synthetic import (
    CircleClass,
    GaussianClass,
    SphericalCapClass,
    circle_toy,
    circle_toy_dataset,
    gaussian_mixture,
)

__all__ = [
    "NEGATIVES",
    "CircleClass",
    "ClassSampler",
    "ContrastiveTuples",
    "GaussianClass",
    "LatentClassModel",
    "SphericalCapClass",
    "balanced_prior",
    "binomial_pmf",
    "check_prior",
    "circle_toy",
    "circle_toy_dataset",
    "dirichlet_prior",
    "gaussian_mixture",
    "make_generator",
    "zipf_prior",
]
from contrastlab.data.pairs import (
    augmenter,
    make_views,
    negative_pool,
    positive_indices,
)
from contrastlab.data.registry import (
    Dataset,
    DatasetInfo,
    datasets_table,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ += [
    "Dataset",
    "DatasetInfo",
    "augmenter",
    "datasets_table",
    "list_datasets",
    "load_dataset",
    "make_views",
    "negative_pool",
    "positive_indices",
    "register_dataset",
]

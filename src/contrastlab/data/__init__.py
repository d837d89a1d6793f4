"""Data: the latent-class model (Arora et al. 2019), synthetic class samplers and data sets.

- :mod:`contrastlab.data.latent`: priors, the :class:`LatentClassModel` (anchors, positives and k
  negatives, marginal or other-class) and its exact collision statistics.
- :mod:`contrastlab.data.synthetic`: Gaussian and spherical-cap classes (optionally with disjoint
  supports), Gaussian mixtures, and Bao et al.'s circle toy.
- :mod:`contrastlab.data.base`: the :class:`Dataset` type and the helpers its loaders share;
  :mod:`contrastlab.data.registry`: the data-set registry (:func:`load_dataset`), whose built-ins
  are in :mod:`contrastlab.data.generated`, :mod:`contrastlab.data.real` and
  :mod:`contrastlab.data.text`; :mod:`contrastlab.data.pairs`: positive pairs and augmentations.
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
from contrastlab.data.base import Dataset, DatasetInfo
from contrastlab.data.pairs import (
    augmenter,
    make_views,
    negative_pool,
    positive_indices,
)
from contrastlab.data.registry import (
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

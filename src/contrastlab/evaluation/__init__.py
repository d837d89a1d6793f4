"""Downstream evaluation of a representation from train/test embeddings and labels.

What a representation is worth to a classifier on top of it, measured four ways:

- :func:`mean_classifier`: the mean classifier of Arora et al. (2019): class means mu_c of the
  *training* features, logits f(x)^T mu_c / t on the test features, top-1 accuracy of the argmax
  and the mean cross-entropy -log softmax, which is Bao et al. (2022)'s R_mu-supv (at t = 1 it is
  exactly their convention; see "Temperature" below). Conventions (``normalize_features`` /
  ``normalize_means``):

  * ``raw`` (False / False): features as given, means not normalized. Arora et al.; Bao et al.
    with ``normalize=False``; the Jiang et al. accuracy (on unit-ball outputs as given).
  * ``normalized`` (True / False): features L2-normalized (train and test), mu_c the mean of the
    normalized training features, not renormalized: Bao et al.'s ``normalize=True``.
  * ``cosine`` (True / True): the same with unit-norm means, i.e. logits cos(f(x), mu_c) / t.

- :func:`linear_probe`: multinomial logistic regression on the features as given, bias-free or with
  a bias, minimizing mean cross-entropy + (lambda / 2) ||W||_F^2 (the bias is not penalized), fit
  to convergence by full-batch L-BFGS, preconditioned by (kappa Sigma_2 + lambda I)^{-1} (Sigma_2 =
  E[h h^T], kappa = 1/C; the iteration count then barely depends on the conditioning of the
  features), until the gradient is below ``tol``: max |dF/dW| <= tol * r and max |dF/db| <= tol,
  with r = sqrt(E||h||^2) (a scale-free test; r = 1 for unit-norm features; default 1e-6, in
  float64; scikit-learn's lbfgs stops at 1e-4). A tight tolerance matters on (nearly) separable
  data, where the objective is flat and a loose one stops far from the minimizer (visible in NC3).
  lambda is chosen on a stratified validation split of the training set (``val_fraction``, fixed
  ``seed``) over a grid *relative to the feature scale*, lambda = w E||h||^2 for w in
  ``weight_decays`` (features scaled by a scale the optimal W by 1/a, so lambda must scale by a^2:
  then the selected probe, its accuracy and its cross-entropy do not change when the embeddings are
  rescaled), walked from large to small lambda with warm starts; the walk stops after ``patience``
  lambdas in a row that improve neither the best validation accuracy nor the best validation
  cross-entropy. ``select="accuracy"`` (default; the usual linear-evaluation protocol) takes the
  highest validation accuracy, ties to the lower validation cross-entropy;
  ``select="cross_entropy"`` the lowest validation cross-entropy (a proper, smooth score; it can
  prefer weakly regularized probes that are slightly less accurate, while the accuracy rule can pick
  heavily regularized, badly calibrated ones). The probe is then refit on the whole training set at
  that lambda, warm started, and reports test accuracy and test cross-entropy; the probe of the
  other rule on the same walk is refit and reported too (``other_selection``).

- :func:`unit_norm_supervised_loss`: the L_sup of Awasthi et al.'s slides on the data itself,
  ``inf_{||w_c|| = 1} mean_i l({h_i^T (w_{y_i} - w_c')}_{c' != y_i})`` with l from
  :func:`contrastlab.losses.family.score_loss` (logistic, infonce, infonce-mean; the empirical
  class frequencies play the role of the prior). The convex relaxation ||w_c|| <= 1 is solved by
  spectral projected gradient (Birgin, Martinez & Raydan 2000: Barzilai-Borwein steps, non-monotone
  Armijo search, projection onto the product of unit balls) to a Frank-Wolfe duality gap ``sum_c
  (g_c^T w_c + ||g_c||) <= tol``, which certifies the relaxed value to ``tol``. The relaxation is
  *tight* (equal to the unit-norm infimum) when every ||w_c|| = 1 at the optimum, or when the
  embeddings span a proper subspace of R^d (dimensional collapse: the short w_c are lifted along a
  null direction without changing any score), or when a local solve on the product of spheres from
  the renormalized relaxed optimum reaches the relaxed value (within ``max(10 tol, gap)``).
  Otherwise that local solve gives the reported value (an upper bound on the unit-norm infimum) and
  ``relaxed_value`` is a lower bound. The same quantity for class-collapsed representations is
  :func:`contrastlab.theory.downstream.supervised_loss`.

- :func:`knn_classifier`: weighted k-nearest neighbours as in SSL papers (Wu et al. 2018, DINO):
  cosine similarity s between L2-normalized test and training features, the k most similar
  training points vote for their class with weight exp(s / t) (default k = 200, t = 0.07);
  prediction = argmax of the summed votes. Chunked matrix products and ``topk``.

- :func:`nozawa_sato_report`: Nozawa & Sato (2021)'s lower bound on the self-supervised
  InfoNCE loss at K + 1 = the batch size, term by term as their code evaluates it (the
  single-view L_Info, upsilon, the mean classifier's full and class-restricted cross-entropies,
  the collision term, d(f)) from two augmented views, the augmentation means and the training
  class means; the CURL variant beside it. The trainer computes it with
  ``eval.final_nozawa_sato``.

Temperature. R_mu-supv (:func:`mean_classifier`) and L_sup (:func:`unit_norm_supervised_loss`)
both take an explicit ``temperature`` t dividing their scores (the logits f(x)^T mu_c / t, and
the margins f(x)^T (w_y - w_c) / t of the loss family), both defaulting to t = 1, and
:func:`downstream_report` takes one ``temperature`` for both (``mean_temperature`` /
``lsup_temperature`` override it). The convention, shared with
:mod:`contrastlab.theory.downstream`: evaluate them at the temperature of the
contrastive loss that trained the representation, so that R_cont, R_mu-supv and L_sup are on one
score scale; for a loss given by its score function and t that is
:func:`contrastlab.theory.downstream.downstream_temperature` (t for the InfoNCE forms, 1 for
``logistic`` and ``hinge``). Bao et al.'s bounds relate R_cont and R_mu-supv at t = 1 on
unit-sphere features (b = 1), which is what the Bao recipes train and evaluate; Nozawa & Sato
use t = 0.5 for both. ``logistic`` L_sup ignores t (it is InfoNCE at t = 1).

:func:`downstream_report` runs them all and returns a :class:`DownstreamReport`;
:func:`geometry_command_output` prints both reports of a saved ``.npz`` of embeddings (the
``contrastlab geometry`` command). Natural logarithms throughout. Bad input raises a one-line
``ValueError`` naming the argument.

One module per evaluation: :mod:`~contrastlab.evaluation.mean_classifier`,
:mod:`~contrastlab.evaluation.probe` (with its solver :mod:`~contrastlab.evaluation.logreg`),
:mod:`~contrastlab.evaluation.lsup`, :mod:`~contrastlab.evaluation.knn`,
:mod:`~contrastlab.evaluation.nozawa_sato`,
:mod:`~contrastlab.evaluation.report` (all of them in one call) and
:mod:`~contrastlab.evaluation.npz` (the ``contrastlab geometry`` command); the shared input checks
in :mod:`~contrastlab.evaluation.checks`.
"""

from contrastlab.evaluation.checks import holdout_split
from contrastlab.evaluation.knn import KNNResult, knn_classifier
from contrastlab.evaluation.lsup import LSUP_LOSSES, LsupResult, unit_norm_supervised_loss
from contrastlab.evaluation.mean_classifier import (
    MEAN_CLASSIFIERS,
    MeanClassifierResult,
    mean_classifier,
)
from contrastlab.evaluation.nozawa_sato import NozawaSatoReport, nozawa_sato_report
from contrastlab.evaluation.npz import geometry_command_output
from contrastlab.evaluation.probe import (
    DEFAULT_WEIGHT_DECAYS,
    PROBE_SELECTION,
    PROBES,
    LinearProbeResult,
    linear_probe,
)
from contrastlab.evaluation.report import DownstreamReport, downstream_report

__all__ = [
    "DEFAULT_WEIGHT_DECAYS",
    "LSUP_LOSSES",
    "MEAN_CLASSIFIERS",
    "PROBES",
    "PROBE_SELECTION",
    "DownstreamReport",
    "KNNResult",
    "LinearProbeResult",
    "LsupResult",
    "MeanClassifierResult",
    "NozawaSatoReport",
    "downstream_report",
    "geometry_command_output",
    "holdout_split",
    "knn_classifier",
    "linear_probe",
    "mean_classifier",
    "nozawa_sato_report",
    "unit_norm_supervised_loss",
]

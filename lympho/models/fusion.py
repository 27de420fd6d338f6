"""Fusion of clinical and image evidence, and the patient records the experts read.

**Early fusion** concatenates the clinical columns and the pooled image columns into one
table for one classifier (``lympho.experiment.design_matrix`` on a plain matrix). **Late
fusion** (:class:`LateFusion`) keeps a clinical expert and one or more image experts, each
its own pipeline fitted on the training patients, and combines their probabilities: by
their ``mean``; by the mean of their log-odds (``logit``: a logarithmic opinion pool, in
which an expert sure of its call is not diluted to 0.5 by an unsure one, as independent
evidence adds up in Bayes' rule), either mean optionally weighted per expert (``weights``,
as in scikit-learn's ``VotingClassifier``: a weaker expert counts for less); or
``stacked``: a logistic regression on the experts' logits, fitted on out-of-fold
predictions of an inner cross-validation of the training patients (so the combiner never
sees a prediction made on a patient the expert was trained on): the original paper's
mixture-of-experts idea.

Late fusion reads **patient records**: one dict per patient with ``clinical`` (the
clinical row), ``bag`` (the instance features, when an encoder is used) and ``images``
(the image paths, for the cell CNN), in a 1-D object array (:func:`records`), so that
cross-validation indexes patients as usual. :class:`PatientView` is the first step of each
expert: it picks the expert's part of the records.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from lympho.models import COMBINES
from lympho.models.base import BinaryClassifier, encode_binary_target
from lympho.pooling import pool_bags

PARTS = ("clinical", "pooled", "bags", "images")


def records(clinical: np.ndarray, bags=None, images=None) -> np.ndarray:
    """One record per patient (1-D object array of dicts)."""
    out = np.empty(len(clinical), dtype=object)
    out[:] = [{"clinical": np.asarray(row, dtype=np.float64),
               "bag": None if bags is None else np.asarray(bags[i], dtype=np.float32),
               "images": () if images is None else tuple(str(p) for p in images[i])}
              for i, row in enumerate(clinical)]
    return out


def _object_array(items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


class PatientView(TransformerMixin, BaseEstimator):
    """The part of each patient record an expert reads: ``clinical`` (a matrix),
    ``pooled`` (the bag pooled by ``pooling``: a matrix), ``bags`` (the instance features,
    one array per patient) or ``images`` (the image paths, one tuple per patient)."""

    def __init__(self, part="clinical", pooling="mean"):
        self.part, self.pooling = part, pooling

    def fit(self, X, y=None):
        if self.part not in PARTS:
            raise ValueError(f"unknown part {self.part!r}; choose one of {', '.join(PARTS)}")
        self.n_features_in_ = 1
        return self

    def transform(self, X):
        check_is_fitted(self, "n_features_in_")
        if self.part == "clinical":
            return np.stack([r["clinical"] for r in X])
        if self.part in ("pooled", "bags") and any(r["bag"] is None for r in X):
            raise ValueError("these patient records carry no instance features")
        if self.part == "pooled":
            return pool_bags([r["bag"] for r in X], self.pooling)
        return _object_array([r["bag"] if self.part == "bags" else r["images"] for r in X])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class LateFusion(BinaryClassifier):
    """Experts fitted separately on the same patients; their probabilities combined.

    ``experts``: a list of ``(name, estimator)``; each estimator reads patient records
    (typically a pipeline starting with :class:`PatientView`). ``combine``: ``mean`` of
    the probabilities, ``logit``: the mean of their log-odds, or ``stacked``: logistic
    regression (``C``, class-weighted) on the experts' logits from an inner
    ``inner_folds``-fold cross-validation of the training patients. ``weights``: one
    non-negative weight per expert for the two means (None: equal); stacking learns its own.
    Fitted state: ``experts_`` (the fitted experts) and, when stacked, ``stack_coef_`` and
    ``stack_intercept_`` (plain arrays).
    """

    def __init__(self, experts=(), combine="mean", weights=None, inner_folds=3, C=1.0, random_state=0):
        self.experts, self.combine, self.weights, self.inner_folds, self.C, self.random_state = \
            experts, combine, weights, inner_folds, C, random_state

    def fit(self, X, y):
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; choose one of {', '.join(COMBINES)}")
        if not self.experts:
            raise ValueError("LateFusion needs at least one expert")
        self._check_weights()
        y_index = encode_binary_target(self, np.asarray(y))
        X = _object_array(list(X))
        if self.combine == "stacked":
            self._fit_stacker(X, y_index)
        self.experts_ = [(name, clone(expert).fit(X, y_index)) for name, expert in self.experts]
        return self

    def _check_weights(self) -> None:
        if self.weights is None:
            return
        if self.combine == "stacked":
            raise ValueError("weights apply to combine='mean' or 'logit'; stacking learns its own")
        weights = np.asarray(self.weights, dtype=float)
        if weights.shape != (len(self.experts),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {len(self.experts)} non-negative numbers, not all zero "
                             f"(one per expert), got {list(self.weights)}")

    def _fit_stacker(self, X, y) -> None:
        """Logistic regression on inner out-of-fold expert logits."""
        from sklearn.linear_model import LogisticRegression

        folds = StratifiedKFold(n_splits=self.inner_folds, shuffle=True, random_state=self.random_state)
        inner = np.zeros((len(y), len(self.experts)))
        for train, test in folds.split(np.zeros(len(y)), y):
            for j, (_, expert) in enumerate(self.experts):
                inner[test, j] = clone(expert).fit(X[train], y[train]).predict_proba(X[test])[:, 1]
        stacker = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000).fit(_logit(inner), y)
        self.stack_coef_, self.stack_intercept_ = stacker.coef_[0].copy(), float(stacker.intercept_[0])

    def expert_probabilities(self, X) -> dict[str, np.ndarray]:
        """Each expert's probability of malignancy per patient, by expert name."""
        check_is_fitted(self, "experts_")
        X = _object_array(list(X))
        return {name: expert.predict_proba(X)[:, 1] for name, expert in self.experts_}

    def predict_proba(self, X) -> np.ndarray:
        """Combined probabilities for ``classes_``, shape (n_patients, 2)."""
        positive = self.combined(self.expert_probabilities(X))
        return np.column_stack([1 - positive, positive])

    def combined(self, experts: dict[str, np.ndarray]) -> np.ndarray:
        """The probability of malignancy from the experts' own (:meth:`expert_probabilities`),
        so that a caller showing both computes the experts once."""
        check_is_fitted(self, "experts_")
        probabilities = np.column_stack(list(experts.values()))
        if self.combine == "mean":
            return np.average(probabilities, axis=1, weights=self.weights)
        if self.combine == "logit":
            return expit(np.average(_logit(probabilities), axis=1, weights=self.weights))
        return expit(_logit(probabilities) @ self.stack_coef_ + self.stack_intercept_)

    def instance_weights(self, X) -> list[np.ndarray] | None:
        """Per patient, per cell: the weights of the first image expert that has them
        (attention or top-k MIL, cell CNN); None when no expert weighs cells."""
        check_is_fitted(self, "experts_")
        X = _object_array(list(X))
        for _, expert in self.experts_:
            weights = instance_weights(expert, X)
            if weights is not None:
                return weights
        return None


def instance_weights(model, X) -> list[np.ndarray] | None:
    """Per-cell weights of a fitted model (a MIL estimator, a pipeline ending in one, or a
    late fusion holding one); None when the model does not weigh cells."""
    steps = getattr(model, "steps", None)
    if steps:
        final = steps[-1][1]
        if not hasattr(final, "instance_weights"):
            return None
        for _, step in steps[:-1]:
            X = step.transform(X)
        return final.instance_weights(X)
    return model.instance_weights(X) if hasattr(model, "instance_weights") else None

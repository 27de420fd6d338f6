"""What every two-class estimator of :mod:`lympho.models` shares: the binary target,
class weights, and scikit-learn's tags.

Its own module so that the tabular classifiers, the MLP, the MIL models, the cell CNN and
fusion all build on it without importing one another.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets


def check_choice(name, value, choices):
    """Raise a ValueError naming the valid choices when ``value`` is not one."""
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}.")


def balanced_weights(class_weight, y, sample_weight):
    """Per-sample weights n / (n_classes * n_c) for "balanced", times ``sample_weight``."""
    check_choice("class_weight", class_weight, (None, "balanced"))
    weights = np.ones(len(y)) if class_weight is None else compute_sample_weight("balanced", y)
    return weights if sample_weight is None else weights * np.asarray(sample_weight, dtype=float)


def encode_binary_target(estimator, y):
    """Set ``classes_`` and return ``y`` as 0/1 indices into it (binary problems only)."""
    check_classification_targets(y)
    estimator.classes_, y_index = np.unique(y, return_inverse=True)
    if len(estimator.classes_) != 2:
        raise ValueError(
            f"Only binary classification is supported; y has {len(estimator.classes_)} class(es): "
            f"{estimator.classes_.tolist()}."
        )
    return y_index


class BinaryClassifier(ClassifierMixin, BaseEstimator):
    """Base for the two-class estimators here; the tag tells scikit-learn tools.

    ``predict`` is the project's one decision rule, ``probability >= 0.5``, derived from
    each subclass's ``predict_proba``, so no estimator can decide by a rule of its own.
    """

    def predict(self, X):
        """Positive class where its probability is >= 0.5 (the project's one decision rule)."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

"""Patient-level classifiers for reactive (0) vs malignant (1) lymphocytosis.

Each patient is one row: image features pooled over that patient's cells
(multiple-instance learning with per-patient labels) plus clinical features.
The cohort is small and imbalanced, so every model is wrapped in a pipeline
that scales features and then handles the imbalance either with class weights
or with SMOTE. Both live inside the pipeline so that, under cross-validation,
they are fitted on training folds only and never see the test patients.

Everything is deterministic for a given ``random_state``.
"""

from typing import Sequence

import numpy as np
from imblearn.over_sampling import SMOTE, SMOTENC
from imblearn.pipeline import Pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted, validate_data
from xgboost import XGBClassifier

from lympho.models import CLASSIFIERS, IMBALANCE
from lympho.models.base import BinaryClassifier, balanced_weights, check_choice, encode_binary_target


class XGBoostClassifier(BinaryClassifier):
    """``xgboost.XGBClassifier`` that accepts ``class_weight`` like scikit-learn models.

    ``class_weight="balanced"`` becomes per-sample weights at fit time, so the
    imbalance handling is the same across all classifiers. Labels are encoded
    to 0/1 internally, so any two class labels work.
    """

    def __init__(
        self,
        n_estimators=200,
        max_depth=3,
        learning_rate=0.05,
        subsample=0.8,
        colsample_bytree=0.5,
        class_weight=None,
        random_state=0,
        n_jobs=1,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y, sample_weight=None):
        """Train a fresh booster on ``X``, ``y``; returns self."""
        X, y = validate_data(self, X, y)
        y_index = encode_binary_target(self, y)
        self.model_ = XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            objective="binary:logistic",
            tree_method="hist",
        )
        weights = balanced_weights(self.class_weight, y_index, sample_weight)
        self.model_.fit(X, y_index, sample_weight=weights)
        return self

    def __getstate__(self):
        """Plain types only, for the safe model format: the booster as XGBoost's own JSON."""
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "model_" in state:
            state["model_"] = {"params": {k: v for k, v in self.model_.get_params().items()
                                          if isinstance(v, (int, float, str, bool, type(None)))},
                               "json": self.model_.get_booster().save_raw("json").decode()}
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.get("model_")
        if isinstance(saved, dict):
            state["model_"] = XGBClassifier(**saved["params"])
            state["model_"].load_model(bytearray(saved["json"].encode()))
        super().__setstate__(state)

    def predict_proba(self, X):
        """Probabilities for ``classes_``, shape (n_samples, 2)."""
        check_is_fitted(self)
        return self.model_.predict_proba(validate_data(self, X, reset=False)).astype(np.float64)


class _SmallClassCheck:
    """Explains, instead of a k-NN traceback, when a class is too small to oversample.

    SMOTE interpolates each minority sample with one of its ``k_neighbors``
    same-class neighbours, so every class it oversamples needs at least
    ``k_neighbors + 1`` samples in the training fold. (Only checked for an
    integer ``k_neighbors``, the default.)
    """

    def fit_resample(self, X, y, **params):
        """Check the minority class sizes, then oversample as the parent class does."""
        labels, counts = np.unique(y, return_counts=True)
        needed = self.k_neighbors + 1 if isinstance(self.k_neighbors, int) else 0
        for label, count in zip(labels, counts):
            if count < counts.max() and count < needed:
                raise ValueError(
                    f"SMOTE needs at least {needed} samples of each minority class "
                    f"(k_neighbors={self.k_neighbors} plus one) in every training fold, "
                    f"but this fold has only {count} of class {label} "
                    f"(of {len(y)} training samples). Use fewer folds, more patients, "
                    f"or imbalance='weights'."
                )
        return super().fit_resample(X, y, **params)


class CheckedSMOTE(_SmallClassCheck, SMOTE):
    """SMOTE for continuous features only, with the small-class check."""


class CheckedSMOTENC(_SmallClassCheck, SMOTENC):
    """SMOTE-NC: continuous columns interpolated, ``categorical_features`` columns (gender)
    copied from the most frequent value among the neighbours, so every synthetic patient
    is a possible one (never a gender of 0.4)."""


class CalibratedSVC(BinaryClassifier):
    """RBF support-vector machine whose probability respects its class weighting.

    ``SVC(probability=True)`` (libsvm's Platt scaling, deprecated in scikit-learn
    1.9) fits its sigmoid without the class weights, so with ``class_weight=
    "balanced"`` the rule ``probability >= 0.5`` disagreed with the weighted SVM on
    about 9 % of patients (recall 0.92 against 0.84). Here the probability is a
    sigmoid of ``decision_function`` fitted on the training data only: the SVM's
    decision values on each of ``calibration_folds`` stratified inner folds (an SVM
    fitted on the other inner folds), mapped to the labels by a logistic regression
    weighted with the same per-sample weights as the SVM. Both classes therefore
    weigh in the calibration exactly as in the SVM, and ``probability >= 0.5`` is
    the weighted model's decision. The final SVM is then fitted on all the data.
    """

    def __init__(self, C=1.0, gamma="scale", class_weight=None, calibration_folds=3, random_state=0):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.calibration_folds = calibration_folds
        self.random_state = random_state

    def _svc(self):
        return SVC(kernel="rbf", C=self.C, gamma=self.gamma, random_state=self.random_state)

    def fit(self, X, y, sample_weight=None):
        """Calibrate on inner folds of ``X``, ``y``, then fit the SVM on all of it; returns self."""
        X, y = validate_data(self, X, y)
        y_index = encode_binary_target(self, y)
        weights = balanced_weights(self.class_weight, y_index, sample_weight)
        folds = min(self.calibration_folds, np.bincount(y_index).min())
        if folds < 2:
            raise ValueError(f"the SVM's calibration needs at least 2 samples of each class, got "
                             f"{np.bincount(y_index).tolist()}.")
        inner = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        scores = np.empty(len(y_index))
        for train, test in inner.split(X, y_index):
            svc = self._svc().fit(X[train], y_index[train], sample_weight=weights[train])
            scores[test] = svc.decision_function(X[test])
        sigmoid = LogisticRegression().fit(scores[:, None], y_index, sample_weight=weights)
        self.slope_, self.intercept_ = float(sigmoid.coef_[0, 0]), float(sigmoid.intercept_[0])
        self.svc_ = self._svc().fit(X, y_index, sample_weight=weights)
        return self

    def decision_function(self, X):
        """The fitted SVM's signed distance to its boundary (positive: ``classes_[1]``)."""
        check_is_fitted(self)
        return self.svc_.decision_function(validate_data(self, X, reset=False))

    def predict_proba(self, X):
        """Calibrated probabilities for ``classes_``, shape (n_samples, 2)."""
        positive = 1.0 / (1.0 + np.exp(-(self.slope_ * self.decision_function(X) + self.intercept_)))
        return np.column_stack([1.0 - positive, positive])


def _svm(class_weight, random_state):
    return CalibratedSVC(class_weight=class_weight, random_state=random_state)


def _mlp(class_weight, random_state):
    from lympho.models.mlp import TorchMLPClassifier

    return TorchMLPClassifier(class_weight=class_weight, random_state=random_state)


def _xgboost(class_weight, random_state):
    return XGBoostClassifier(class_weight=class_weight, random_state=random_state)


def _logreg(class_weight, random_state):
    return LogisticRegression(max_iter=5000, C=1.0, class_weight=class_weight, random_state=random_state)


_BUILDERS = {"svm": _svm, "mlp": _mlp, "xgboost": _xgboost, "logreg": _logreg}


def make_pipeline(classifier: str, imbalance: str = "weights", random_state: int = 0,
                  categorical_features: Sequence[int] = ()) -> Pipeline:
    """Scaler, optional SMOTE, and classifier as one (unfitted) imblearn pipeline.

    ``categorical_features``: column indices of categorical features (the binary
    gender: :func:`lympho.data.categorical_columns` of the design matrix names);
    with "smote" they make it SMOTE-NC, which never interpolates them.

    ``imbalance``: "none" leaves the classes as they are, "weights" sets
    ``class_weight="balanced"`` on the classifier, "smote" oversamples the
    minority class of the (scaled) training data. Being pipeline steps, the
    scaler and SMOTE are refitted on each training fold only, and SMOTE is
    skipped at prediction time.
    """
    check_choice("classifier", classifier, CLASSIFIERS)
    check_choice("imbalance", imbalance, IMBALANCE)
    class_weight = "balanced" if imbalance == "weights" else None
    steps = [("scale", StandardScaler())]
    if imbalance == "smote":
        categorical = [int(i) for i in categorical_features]
        steps.append(("smote", CheckedSMOTENC(categorical, random_state=random_state) if categorical
                      else CheckedSMOTE(random_state=random_state)))
    steps.append(("clf", _BUILDERS[classifier](class_weight, random_state)))
    return Pipeline(steps)


def __getattr__(name: str):
    """``TorchMLPClassifier`` lives in :mod:`lympho.models.mlp` (torch is imported only when
    an MLP is used); it is still reachable here, where it used to be defined."""
    if name == "TorchMLPClassifier":
        from lympho.models.mlp import TorchMLPClassifier

        return TorchMLPClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

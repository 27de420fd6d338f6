"""Patient-level cross-validation and metrics for the lymphocytosis classifiers.

Malignant (1) is the positive class throughout: recall is sensitivity to
malignancy, specificity is recall of the reactive class (0). Folds are
stratified over patients, and the whole estimator (scaler, SMOTE,
classifier) is cloned and refitted on each training fold, so nothing learned
from test patients leaks into a fold's predictions. Results are plain Python
numbers so they serialise to JSON for caching and the dashboard.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import RepeatedStratifiedKFold

METRICS = ("balanced_accuracy", "f1", "recall", "specificity", "precision", "roc_auc")


def fold_metrics(y_true, y_pred, y_proba) -> dict:
    """All of ``METRICS`` plus ``confusion_matrix`` [[tn, fp], [fn, tp]] for one fold.

    Undefined ratios count as 0; ``roc_auc`` is NaN when ``y_true`` holds one class.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "specificity": float(recall_score(y_true, y_pred, pos_label=0, zero_division=0)),
        "precision": float(precision_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, y_proba)) if both_classes else float("nan"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).astype(int).tolist(),
    }


@dataclass
class CVResult:
    """Per-fold metrics and out-of-fold predictions of one cross-validation run.

    ``folds``: one dict per (repeat, fold), both numbered from 1, with the
    metrics, ``confusion_matrix``, ``n_train`` and ``n_test``.
    ``oof``: one row per patient per repeat: ``repeat``, ``fold``, ``id``,
    ``y_true``, ``probability`` (of malignancy) and ``prediction``.
    """

    folds: list[dict]
    oof: pd.DataFrame

    def summary(self) -> dict:
        """Mean, std (population, ddof=0), min and max of each metric over folds.

        Also ``confusion_matrix_pooled``, the fold matrices summed (with
        repeats, each patient is counted once per repeat), and ``n_folds``.
        """
        summary = {}
        for metric in METRICS:
            values = np.array([fold[metric] for fold in self.folds], dtype=float)
            summary[metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
            }
        pooled = np.sum([fold["confusion_matrix"] for fold in self.folds], axis=0)
        summary["confusion_matrix_pooled"] = pooled.astype(int).tolist()
        summary["n_folds"] = len(self.folds)
        return summary


def _check_cv_inputs(X, y, ids, folds):
    """Validate binary 0/1 labels, unique patient ids and enough patients per class."""
    if not len(X) == len(y) == len(ids):
        raise ValueError(f"X, y and ids differ in length: {len(X)}, {len(y)}, {len(ids)}.")
    if not np.isin(y, [0, 1]).all():
        raise ValueError(f"y must hold 0 (reactive) and 1 (malignant) only, got {np.unique(y)}.")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique: cross-validation expects one row per patient.")
    counts = np.bincount(y.astype(int), minlength=2)
    for label, name in enumerate(("reactive", "malignant")):
        if counts[label] < folds:
            raise ValueError(
                f"Class {label} ({name}) has {counts[label]} patients, fewer than folds={folds}; "
                f"every fold needs at least one patient of each class. Use at most "
                f"{counts.min()} folds."
            )


def _positive_proba(model, X):
    """Probability of class 1 from a fitted classifier's ``predict_proba``."""
    return model.predict_proba(X)[:, list(model.classes_).index(1)]


def cross_validate(estimator, X, y, ids, folds=3, repeats=1, seed=0, progress=None) -> CVResult:
    """Repeated stratified k-fold cross-validation over patients.

    For each fold, a clone of ``estimator`` is fitted on the training patients
    only and predicts the test patients. ``progress(done, total)``, if given,
    is called after each fold. The same inputs and ``seed`` give the same
    folds and, with deterministic estimators, identical results.
    """
    X, y, ids = np.asarray(X), np.asarray(y), np.asarray(ids)
    _check_cv_inputs(X, y, ids, folds)
    y = y.astype(int)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    total = folds * repeats
    fold_rows, oof_parts = [], []
    for index, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        repeat, fold = divmod(index, folds)
        model = clone(estimator).fit(X[train], y[train])
        X_test = X[test]
        prediction, probability = model.predict(X_test), _positive_proba(model, X_test)
        where = {"repeat": repeat + 1, "fold": fold + 1}
        fold_rows.append(
            where
            | fold_metrics(y[test], prediction, probability)
            | {"n_train": len(train), "n_test": len(test)}
        )
        oof_parts.append(
            pd.DataFrame(
                where
                | {"id": ids[test], "y_true": y[test], "probability": probability, "prediction": prediction}
            )
        )
        if progress is not None:
            progress(index + 1, total)
    return CVResult(folds=fold_rows, oof=pd.concat(oof_parts, ignore_index=True))


def roc_points(y_true, proba) -> dict:
    """ROC curve as lists ``fpr``, ``tpr``, ``thresholds`` (the first threshold is inf)."""
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()}


def operating_point(y_true, proba, threshold) -> dict:
    """Sensitivity, specificity, balanced accuracy and confusion matrix when
    patients with ``proba >= threshold`` are called malignant."""
    y_pred = (np.asarray(proba) >= threshold).astype(int)
    metrics = fold_metrics(y_true, y_pred, proba)
    return {
        "threshold": float(threshold),
        "sensitivity": metrics["recall"],
        "specificity": metrics["specificity"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "confusion_matrix": metrics["confusion_matrix"],
    }


def threshold_for_sensitivity(y_true, proba, target) -> float:
    """Highest threshold whose rule ``proba >= threshold`` reaches sensitivity ``target``."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target sensitivity must be within [0, 1], got {target}.")
    if not np.any(np.asarray(y_true) == 1):
        raise ValueError("y_true has no malignant (1) patients, so sensitivity is undefined.")
    _, tpr, thresholds = roc_curve(y_true, proba, drop_intermediate=False)
    return float(thresholds[np.argmax(tpr >= target)])

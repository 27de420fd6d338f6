"""Tests for lympho.evaluation: metrics, leak-free cross-validation, operating points."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from lympho.evaluation import (
    METRICS,
    CVResult,
    cross_validate,
    fold_metrics,
    format_estimate,
    oof_estimates,
    operating_point,
    reliability,
    roc_points,
    similar_patients,
    threshold_for_sensitivity,
    threshold_from_repeats,
)
from lympho.models.classifiers import make_pipeline


@pytest.fixture(scope="module")
def data():
    """~100 patients, 30/70 imbalanced, with string patient ids."""
    X, y = make_classification(
        n_samples=100, n_features=20, n_informative=5, weights=[0.3, 0.7],
        class_sep=1.5, random_state=0,
    )
    ids = np.array([f"P{i:03d}" for i in range(len(y))])
    return X, y, ids


# ---------------------------------------------------------------- fold_metrics

def test_fold_metrics_hand_example():
    y_true = [0, 0, 0, 1, 1, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 1, 1, 0, 0]
    y_proba = [0.1, 0.2, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3]
    m = fold_metrics(y_true, y_pred, y_proba)
    # tn=2 fp=1 fn=2 tp=3
    assert m["confusion_matrix"] == [[2, 1], [2, 3]]
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert m["balanced_accuracy"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    # 13 of the 15 (positive, negative) pairs are ranked correctly.
    assert m["roc_auc"] == pytest.approx(13 / 15)
    assert set(m) == set(METRICS) | {"confusion_matrix"}
    assert all(type(m[k]) is float for k in METRICS)


def test_fold_metrics_one_class_and_zero_division():
    m = fold_metrics([0, 0, 0], [0, 0, 0], [0.1, 0.2, 0.3])
    assert m["confusion_matrix"] == [[3, 0], [0, 0]]
    assert math.isnan(m["roc_auc"])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 1.0


# ------------------------------------------------------------- cross_validate

class SpyScaler(StandardScaler):
    """StandardScaler recording what each fit saw."""

    seen = []

    def fit(self, X, y=None, sample_weight=None):
        super().fit(X, y, sample_weight)
        SpyScaler.seen.append((self.n_samples_seen_, self.mean_.copy()))
        return self


_SMOTE = type(make_pipeline("logreg", "smote").named_steps["smote"])


class SpySMOTE(_SMOTE):
    """The pipeline's SMOTE, recording its input and output on each call."""

    seen = []

    def fit_resample(self, X, y, **params):
        X_res, y_res = super().fit_resample(X, y, **params)
        SpySMOTE.seen.append((X.copy(), np.bincount(y).tolist(), np.bincount(y_res).tolist()))
        return X_res, y_res


def test_scaler_and_smote_only_see_training_folds(data):
    X, y, ids = data
    SpyScaler.seen.clear()
    SpySMOTE.seen.clear()
    pipe = make_pipeline("logreg", "smote").set_params(scale=SpyScaler(), smote=SpySMOTE(random_state=0))
    result = cross_validate(pipe, X, y, ids, folds=3, seed=0)

    splits = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, y))
    assert len(SpyScaler.seen) == len(SpySMOTE.seen) == len(splits) == 3
    for (train, test), (n_seen, mean), (smote_X, counts_in, counts_out), fold, (_, part) in zip(
        splits, SpyScaler.seen, SpySMOTE.seen, result.folds, result.oof.groupby("fold")
    ):
        assert n_seen == len(train) == fold["n_train"] < len(y)
        np.testing.assert_allclose(mean, X[train].mean(axis=0))
        # SMOTE gets the training fold, already scaled with the training fold's statistics.
        assert counts_in == np.bincount(y[train]).tolist()
        np.testing.assert_allclose(smote_X.mean(axis=0), 0.0, atol=1e-12)
        assert counts_out == [max(counts_in)] * 2
        assert counts_out != [np.bincount(y).max()] * 2
        assert sorted(part["id"]) == sorted(ids[test])


def test_cross_validate_outputs(data):
    X, y, ids = data
    result = cross_validate(make_pipeline("logreg", "weights"), X, y, ids, folds=3)
    assert [(f["repeat"], f["fold"]) for f in result.folds] == [(1, 1), (1, 2), (1, 3)]
    assert sum(f["n_test"] for f in result.folds) == len(y)
    assert list(result.oof.columns) == ["repeat", "fold", "id", "y_true", "probability", "prediction"]
    assert sorted(result.oof["id"]) == sorted(ids)
    assert result.oof["probability"].between(0, 1).all()
    lookup = dict(zip(ids, y))
    assert (result.oof["y_true"] == result.oof["id"].map(lookup)).all()
    # Fold metrics are those of the fold's out-of-fold rows.
    for fold, (_, part) in zip(result.folds, result.oof.groupby("fold")):
        expected = fold_metrics(part["y_true"], part["prediction"], part["probability"])
        assert {k: fold[k] for k in expected} == expected
    assert result.summary()["balanced_accuracy"]["mean"] > 0.7


def test_cross_validate_accepts_dataframe(data):
    X, y, ids = data
    pipe = make_pipeline("logreg", "none")
    from_array = cross_validate(pipe, X, y, ids)
    from_frame = cross_validate(pipe, pd.DataFrame(X), pd.Series(y), list(ids))
    pd.testing.assert_frame_equal(from_array.oof, from_frame.oof)


def test_repeats_give_every_id_once_per_repeat(data):
    X, y, ids = data
    result = cross_validate(make_pipeline("logreg", "none"), X, y, ids, folds=3, repeats=2, seed=1)
    assert len(result.folds) == 6
    assert [(f["repeat"], f["fold"]) for f in result.folds] == [(r, f) for r in (1, 2) for f in (1, 2, 3)]
    assert len(result.oof) == 2 * len(y)
    assert (result.oof.groupby("repeat")["id"].agg(lambda s: sorted(s) == sorted(ids))).all()
    fold_of = result.oof.pivot(index="id", columns="repeat", values="fold")
    assert not (fold_of[1] == fold_of[2]).all()  # repeats reshuffle the patients
    summary = result.summary()
    assert summary["n_folds"] == 6
    assert np.sum(summary["confusion_matrix_pooled"]) == 2 * len(y)


def test_cross_validate_is_deterministic(data):
    X, y, ids = data
    pipe = make_pipeline("mlp", "smote", random_state=0).set_params(clf__epochs=20)
    first = cross_validate(pipe, X, y, ids, folds=3, seed=5)
    second = cross_validate(pipe, X, y, ids, folds=3, seed=5)
    pd.testing.assert_frame_equal(first.oof, second.oof)
    assert json.dumps(first.folds) == json.dumps(second.folds)
    other_seed = cross_validate(make_pipeline("logreg"), X, y, ids, folds=3, seed=6)
    assert not first.oof["id"].equals(other_seed.oof["id"])


def test_repeats_run_apart_and_concatenated_equal_one_run(data):
    """What the Ray engine relies on: one task per repeat, merged, is the single run."""
    X, y, ids = data
    pipe = make_pipeline("logreg", "weights")
    whole = cross_validate(pipe, X, y, ids, folds=3, repeats=3, seed=2, threshold=0.4)
    parts = [cross_validate(pipe, X, y, ids, folds=3, repeats=3, seed=2, threshold=0.4, only_repeat=r)
             for r in (3, 1, 2)]
    assert [f["repeat"] for f in parts[0].folds] == [3, 3, 3]
    merged = CVResult.concat(parts)
    assert merged.folds == whole.folds and merged.threshold == whole.threshold
    pd.testing.assert_frame_equal(merged.oof, whole.oof)


def test_progress_callback(data):
    X, y, ids = data
    calls = []
    cross_validate(make_pipeline("logreg"), X, y, ids, folds=3, repeats=2,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]


def test_too_few_patients_for_folds(data):
    X, y, ids = data
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:2]]
    with pytest.raises(ValueError, match=r"Class 0 \(reactive\) has 2 patients, fewer than folds=3"):
        cross_validate(make_pipeline("logreg"), X[keep], y[keep], ids[keep], folds=3)


def test_bad_labels_and_ids(data):
    X, y, ids = data
    with pytest.raises(ValueError, match="0 \\(reactive\\) and 1 \\(malignant\\)"):
        cross_validate(make_pipeline("logreg"), X, y * 2, ids)
    with pytest.raises(ValueError, match="unique"):
        cross_validate(make_pipeline("logreg"), X, y, np.zeros(len(y)))


def test_smote_error_surfaces_through_cross_validation(data):
    X, y, ids = data
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:6]]
    with pytest.raises(ValueError, match=r"SMOTE needs at least 6 samples.*only 4 of class 0"):
        cross_validate(make_pipeline("logreg", "smote"), X[keep], y[keep], ids[keep], folds=3)


# -------------------------------------------------------------------- summary

def test_summary_hand_example():
    def fold(value, cm, repeat):
        return {m: value for m in METRICS} | {"confusion_matrix": cm, "repeat": repeat}

    result = CVResult(
        folds=[fold(0.5, [[1, 2], [3, 4]], 1), fold(1.0, [[5, 6], [7, 8]], 2)],
        oof=pd.DataFrame(),
    )
    summary = result.summary()
    # Sample standard deviation (ddof=1): sqrt(((0.5-0.75)^2 + (1-0.75)^2) / 1).
    assert summary["f1"] == pytest.approx({"mean": 0.75, "std": 0.25 * math.sqrt(2), "min": 0.5, "max": 1.0})
    assert summary["confusion_matrix_pooled"] == [[6, 8], [10, 12]]
    # Two repeats: each patient is counted once, so the counts are halved.
    assert summary["confusion_matrix_per_repeat"] == [[3.0, 4.0], [5.0, 6.0]]
    assert summary["n_folds"] == 2 and summary["n_repeats"] == 2
    assert json.loads(json.dumps(summary)) == summary


class DisagreeingClassifier(ClassifierMixin, BaseEstimator):
    """Probability = the first feature; ``predict()`` says the opposite of ``probability >= 0.5``."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return np.column_stack([1 - X[:, 0], X[:, 0]])

    def predict(self, X):
        return (X[:, 0] < 0.5).astype(int)


def test_fold_metrics_decide_by_probability_at_the_threshold():
    y = np.array([0] * 6 + [1] * 6)
    X = np.array([[0.1], [0.2], [0.3], [0.4], [0.55], [0.6], [0.35], [0.5], [0.7], [0.8], [0.9], [0.95]])
    ids = np.array([f"P{i}" for i in range(12)])
    for threshold in (0.5, 0.3):
        result = cross_validate(DisagreeingClassifier(), X, y, ids, folds=2, repeats=2, threshold=threshold)
        oof = result.oof
        assert (oof["prediction"] == (oof["probability"] >= threshold)).all()
        called = (X[:, 0] >= threshold).astype(int)
        pooled = np.sum([f["confusion_matrix"] for f in result.folds], axis=0) / 2
        assert pooled.tolist() == confusion_matrix(y, called).tolist()
        summary = result.summary()
        assert summary["threshold"] == threshold
        assert summary["headline"]["metrics"]["recall"]["estimate"] == pytest.approx(called[y == 1].mean())


def test_oof_estimates_hand_example_and_format():
    # Two repeats of 4 patients; at 0.5 repeat 1 gets recall 1/2, repeat 2 recall 1.
    oof = pd.DataFrame({"repeat": [1] * 4 + [2] * 4, "fold": [1, 1, 2, 2] * 2, "id": list("abcd") * 2,
                        "y_true": [0, 0, 1, 1] * 2, "probability": [0.1, 0.6, 0.4, 0.9, 0.2, 0.3, 0.5, 0.7]})
    estimates = oof_estimates(oof, 0.5, n_boot=500, seed=1)
    metrics = estimates["metrics"]
    assert metrics["recall"]["estimate"] == pytest.approx(0.75)
    assert metrics["specificity"]["estimate"] == pytest.approx(0.75)
    assert metrics["balanced_accuracy"]["estimate"] == pytest.approx(0.75)
    for value in metrics.values():
        assert value["low"] <= value["estimate"] <= value["high"]
    assert (estimates["n_patients"], estimates["repeats"], estimates["folds"]) == (4, 2, 2)
    assert oof_estimates(oof.to_dict(orient="list"), 0.5, n_boot=500, seed=1) == estimates
    assert oof_estimates(oof, 0.5, n_boot=500, seed=2) != estimates
    text = format_estimate(estimates, "recall")
    low, high = metrics["recall"]["low"], metrics["recall"]["high"]
    assert text == (f"0.750 (95% CI {low:.2f}-{high:.2f}; bootstrap over 4 patients of the out-of-fold "
                    f"predictions, 2 x 2-fold CV)")
    assert json.loads(json.dumps(estimates)) == estimates


def test_threshold_from_repeats_is_chosen_and_scored_on_different_repeats():
    # Three repeats of the same 4 patients (2 malignant). For 100 % sensitivity each repeat's
    # threshold is its lower malignant probability: 0.3, 0.4 and 0.6.
    probabilities = [[0.1, 0.35, 0.3, 0.9], [0.2, 0.5, 0.4, 0.8], [0.1, 0.2, 0.6, 0.7]]
    oof = pd.DataFrame({"repeat": np.repeat([1, 2, 3], 4), "fold": [1, 2, 1, 2] * 3, "id": list("abcd") * 3,
                        "y_true": [0, 0, 1, 1] * 3, "probability": np.ravel(probabilities)})
    chosen = threshold_from_repeats(oof, 1.0)
    assert chosen["per_repeat"] == pytest.approx([0.3, 0.4, 0.6])
    assert chosen["threshold"] == pytest.approx(0.4)
    # Held out: repeat 1 at median(0.4, 0.6) = 0.5: recall 1/2, specificity 1; repeat 2 at 0.45:
    # recall 1/2, specificity 1/2; repeat 3 at 0.35: recall 1, specificity 1.
    recall = chosen["estimate"]["metrics"]["recall"]["estimate"]
    specificity = chosen["estimate"]["metrics"]["specificity"]["estimate"]
    assert recall == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert specificity == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        threshold_from_repeats(oof[oof["repeat"] == 1], 0.9)


# ------------------------------------------------------------ operating points

Y = [0, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8]


def test_roc_points_hand_example():
    points = roc_points(Y, P)
    assert points["fpr"] == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert points["tpr"] == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert points["thresholds"][1:] == [0.8, 0.4, 0.35, 0.1]


def test_operating_point_hand_example():
    point = operating_point(Y, P, 0.4)  # calls patients 2 (0.4) and 4 (0.8) malignant
    assert point["confusion_matrix"] == [[1, 1], [1, 1]]
    assert point["sensitivity"] == 0.5
    assert point["specificity"] == 0.5
    assert point["balanced_accuracy"] == 0.5
    everyone = operating_point(Y, P, 0.1)
    assert everyone["sensitivity"] == 1.0 and everyone["specificity"] == 0.0


@pytest.mark.parametrize("target, expected", [(0.5, 0.8), (0.6, 0.35), (1.0, 0.35)])
def test_threshold_for_sensitivity_hand_example(target, expected):
    threshold = threshold_for_sensitivity(Y, P, target)
    assert threshold == expected
    assert operating_point(Y, P, threshold)["sensitivity"] >= target
    assert operating_point(Y, P, np.nextafter(threshold, 1.0))["sensitivity"] < target


def test_threshold_for_sensitivity_errors():
    for bad in (1.5, 0, float("nan")):
        with pytest.raises(ValueError, match="sensitivity must be a finite number in"):
            threshold_for_sensitivity(Y, P, bad)
    with pytest.raises(ValueError, match="no malignant"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.9)


def test_similar_patients_counts_the_nearest_training_patients_by_their_mean_probability():
    ids = [f"P{i}" for i in range(20)]
    mean = np.arange(20) / 20  # patient i: probability i/20 on average over its two repeats; malignant from i=10
    oof = pd.DataFrame({"repeat": [1] * 20 + [2] * 20, "fold": 1, "id": ids * 2,
                        "y_true": [int(i >= 10) for i in range(20)] * 2,
                        "probability": np.concatenate([mean - 0.01, mean + 0.01])})
    high = similar_patients(oof, 0.9, k=5)  # nearest: 0.90, 0.85, 0.95, 0.80, 0.75
    assert (high["k"], high["malignant"], high["p_low"], high["p_high"]) == (5, 5, 0.75, 0.95)
    assert high["fraction"] == 1.0 and high["low"] < 1.0 == high["high"]  # Wilson: an honest interval at 5 of 5
    middle = similar_patients(oof, 0.475, k=4)  # 0.45 and 0.40 reactive, 0.50 and 0.55 malignant
    assert (middle["malignant"], middle["fraction"]) == (2, 0.5) and middle["low"] < 0.5 < middle["high"]
    assert similar_patients(oof, 0.5, k=100)["k"] == 20  # never more than there are patients


def test_reliability_groups_patients_and_scores_the_probabilities():
    ids = [f"P{i}" for i in range(20)]
    y = [0] * 10 + [1] * 10
    perfect = pd.DataFrame({"repeat": 1, "fold": 1, "id": ids, "y_true": y, "probability": [0.0] * 10 + [1.0] * 10})
    result = reliability(perfect, bins=4)
    table = result["table"]
    assert list(table["n"]) == [5, 5, 5, 5] and list(table["malignant"]) == [0, 0, 5, 5]
    assert result["brier"]["mean"] == 0.0 and (table["low"] <= table["fraction"]).all()
    unsure = perfect.assign(probability=0.5)  # every patient at 0.5: Brier 0.25, the no-skill score
    assert reliability(unsure, bins=4)["brier"]["mean"] == pytest.approx(0.25)


@pytest.mark.parametrize("threshold", [float("nan"), 2, -0.5, 0, float("inf")])
def test_threshold_functions_refuse_a_threshold_outside_0_1(threshold):
    """Today a NaN or 2 calls every patient reactive and -0.5 every patient malignant, silently."""
    oof = pd.DataFrame({"repeat": [1] * 4, "fold": [1, 1, 2, 2], "id": list("abcd"), "y_true": Y, "probability": P})
    for call in (lambda: operating_point(Y, P, threshold), lambda: oof_estimates(oof, threshold),
                 lambda: cross_validate(None, [[0]] * 4, Y, list("abcd"), folds=2, threshold=threshold)):
        with pytest.raises(ValueError, match="threshold must be a finite number in"):
            call()
    with pytest.raises(ValueError, match="sensitivity"):
        threshold_from_repeats(oof, threshold)  # none of them is a target sensitivity either

"""Tests for lympho.models.classifiers: sklearn compatibility, imbalance handling, determinism."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.preprocessing import StandardScaler

from lympho.data import categorical_columns
from lympho.models.classifiers import (
    CLASSIFIERS,
    IMBALANCE,
    TorchMLPClassifier,
    XGBoostClassifier,
    make_pipeline,
)


@pytest.fixture(scope="module")
def data():
    """~100 patients, 30/70 imbalanced, well separated."""
    X, y = make_classification(
        n_samples=100, n_features=20, n_informative=5, weights=[0.3, 0.7],
        class_sep=2.0, random_state=0,
    )
    return X, y


@pytest.fixture(scope="module")
def split(data):
    X, y = data
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


def test_choices():
    assert CLASSIFIERS == ("svm", "mlp", "xgboost", "logreg")
    assert IMBALANCE == ("none", "weights", "smote")


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_clone_and_fit_returns_self(classifier, data):
    X, y = data
    estimator = make_pipeline(classifier, "none").named_steps["clf"]
    copy = clone(estimator)
    assert copy is not estimator
    assert copy.get_params() == estimator.get_params()
    assert copy.fit(X, y) is copy
    assert list(copy.classes_) == [0, 1]
    proba = copy.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("classifier, imbalance", list(itertools.product(CLASSIFIERS, IMBALANCE)))
def test_every_combination_beats_chance(classifier, imbalance, split):
    X_train, X_test, y_train, y_test = split
    pipe = clone(make_pipeline(classifier, imbalance))
    assert pipe.fit(X_train, y_train) is pipe
    assert balanced_accuracy_score(y_test, pipe.predict(X_test)) > 0.75
    # One decision rule: predict() is probability >= 0.5 for every classifier.
    np.testing.assert_array_equal(pipe.predict(X_test), (pipe.predict_proba(X_test)[:, 1] >= 0.5).astype(int))


def test_pipeline_steps():
    assert [name for name, _ in make_pipeline("logreg", "smote").steps] == ["scale", "smote", "clf"]
    assert [name for name, _ in make_pipeline("logreg", "none").steps] == ["scale", "clf"]
    assert isinstance(make_pipeline("svm").named_steps["scale"], StandardScaler)


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_class_weight_follows_imbalance(classifier):
    def weight(imbalance):
        return make_pipeline(classifier, imbalance).named_steps["clf"].get_params()["class_weight"]

    assert weight("weights") == "balanced"
    assert weight("none") is None
    assert weight("smote") is None


def test_random_state_reaches_every_step():
    pipe = make_pipeline("mlp", "smote", random_state=7)
    assert pipe.named_steps["smote"].random_state == 7
    assert pipe.named_steps["clf"].random_state == 7


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_deterministic(classifier, split):
    X_train, X_test, y_train, _ = split
    first = make_pipeline(classifier, "smote", random_state=3).fit(X_train, y_train)
    second = make_pipeline(classifier, "smote", random_state=3).fit(X_train, y_train)
    np.testing.assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))


def test_mlp_seed_matters_and_global_rng_untouched(split):
    X_train, X_test, y_train, _ = split
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    threads = torch.get_num_threads()
    a = TorchMLPClassifier(epochs=5, dropout=0.2, random_state=0).fit(X_train, y_train)
    b = TorchMLPClassifier(epochs=5, dropout=0.2, random_state=1).fit(X_train, y_train)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert torch.get_num_threads() == threads
    assert not np.array_equal(a.predict_proba(X_test), b.predict_proba(X_test))


def test_mlp_predict_matches_proba(split):
    X_train, X_test, y_train, _ = split
    mlp = TorchMLPClassifier(epochs=10).fit(X_train, y_train)
    proba = mlp.predict_proba(X_test)[:, 1]
    np.testing.assert_array_equal(mlp.predict(X_test), (proba >= 0.5).astype(int))
    np.testing.assert_allclose(1 / (1 + np.exp(-mlp.decision_function(X_test))), proba)


def test_classifiers_accept_any_two_labels(data):
    X, y = data
    labels = np.array(["reactive", "malignant"])[y]
    for estimator in (TorchMLPClassifier(epochs=5), XGBoostClassifier(n_estimators=5)):
        estimator.fit(X, labels)
        assert set(estimator.predict(X)) <= {"reactive", "malignant"}
    with pytest.raises(ValueError, match="binary.*1 class"):
        TorchMLPClassifier(epochs=1).fit(X, np.zeros(len(X)))


@pytest.fixture(scope="module")
def rare_positives():
    """Overlapping classes with ~15% positives, where weighting visibly matters."""
    return make_classification(
        n_samples=120, n_features=10, n_informative=3, weights=[0.85, 0.15],
        class_sep=0.5, flip_y=0, random_state=1,
    )


def test_class_weights_change_mlp_decisions(rare_positives):
    X, y = rare_positives
    plain = TorchMLPClassifier(epochs=20).fit(X, y)
    balanced = TorchMLPClassifier(epochs=20, class_weight="balanced").fit(X, y)
    plain_recall = plain.predict(X)[y == 1].mean()
    balanced_recall = balanced.predict(X)[y == 1].mean()
    assert balanced_recall > plain_recall + 0.3
    assert balanced.predict(X).sum() > plain.predict(X).sum()


def test_class_weights_change_xgboost(rare_positives):
    X, y = rare_positives
    plain = XGBoostClassifier().fit(X, y).predict_proba(X)[:, 1]
    balanced = XGBoostClassifier(class_weight="balanced").fit(X, y).predict_proba(X)[:, 1]
    # Up-weighting the rare positives pushes every probability of malignancy up.
    assert balanced[y == 1].mean() > plain[y == 1].mean() + 0.05
    assert balanced[y == 0].mean() > plain[y == 0].mean()


def test_weighted_svm_probability_respects_the_class_weights(rare_positives):
    # libsvm's Platt scaling ignored the weights: out of fold, probability >= 0.5 caught 1 of 18
    # rare positives while the weighted SVM's own decision caught 9, and the class-balanced mean
    # probability was 0.18. The calibrated map is fitted with the same weights as the SVM.
    X, y = rare_positives
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    pipe = make_pipeline("svm", "weights")
    proba = cross_val_predict(pipe, X, y, cv=folds, method="predict_proba")[:, 1]
    assert (proba[y == 1].mean() + proba[y == 0].mean()) / 2 == pytest.approx(0.5, abs=0.1)
    assert (proba[y == 1] >= 0.5).mean() > 0.5
    plain = cross_val_predict(make_pipeline("svm", "none"), X, y, cv=folds, method="predict_proba")[:, 1]
    assert (proba[y == 1] >= 0.5).mean() > (plain[y == 1] >= 0.5).mean() + 0.3


def test_svm_calibration_needs_two_samples_per_class(data):
    X, y = data
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:1]]
    with pytest.raises(ValueError, match="at least 2 samples of each class"):
        make_pipeline("svm").fit(X[keep], y[keep])


def test_invalid_class_weight_is_rejected(data):
    X, y = data
    with pytest.raises(ValueError, match="class_weight"):
        TorchMLPClassifier(class_weight="auto", epochs=1).fit(X, y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classifier": "forest"}, "classifier 'forest'.*'svm', 'mlp', 'xgboost', 'logreg'"),
        ({"classifier": "svm", "imbalance": "undersample"}, "'none', 'weights', 'smote'"),
    ],
)
def test_unknown_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pipeline(**kwargs)


def test_smote_with_too_few_minority_samples_explains(data):
    X, y = data
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:4]]
    pipe = make_pipeline("logreg", "smote")
    with pytest.raises(ValueError, match=r"at least 6 samples.*only 4 of class 0"):
        pipe.fit(X[keep], y[keep])


def test_smote_balances_training_classes(data):
    X, y = data
    Xs, ys = make_pipeline("logreg", "smote").named_steps["smote"].fit_resample(X, y)
    assert np.bincount(ys).tolist() == [np.bincount(y).max()] * 2
    np.testing.assert_array_equal(Xs[: len(X)], X)


def test_smotenc_never_interpolates_the_gender_column(data):
    X, y = data
    X = X[:, :3].copy()
    X[:, 1] = (X[:, 1] > 0).astype(float)  # a binary column like "male"
    names = ["age", "male", "log_lymph_count"]
    pipe = make_pipeline("logreg", "smote", categorical_features=categorical_columns(names))
    scaled = pipe.named_steps["scale"].fit_transform(X)
    Xs, ys = pipe.named_steps["smote"].fit_resample(scaled, y)
    assert len(ys) > len(y)
    assert set(np.unique(Xs[:, 1])) == set(np.unique(scaled[:, 1]))  # only the two genders
    assert len(np.unique(Xs[len(X):, 0])) > 1  # continuous columns are still interpolated
    # Without the categorical columns the same step invents fractional genders.
    plain = make_pipeline("logreg", "smote").named_steps["smote"].fit_resample(scaled, y)[0]
    assert len(np.unique(plain[:, 1])) > 2
    assert pipe.fit(X, y).predict(X).shape == y.shape

"""Learned MIL pooling, the cell CNN, late fusion and the configs that use them (tiny settings)."""

import dataclasses
import html

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from lympho.data import load_cohort
from lympho.decision import evidence_text, similar_text
from lympho.experiment import RECOMMENDED, ExperimentConfig, config_pipeline, design_matrix, fusion_configs, run_experiment
from lympho.model_format import load_pipeline, save_pipeline
from lympho.models.cellcnn import CellCNNClassifier
from lympho.models.fusion import LateFusion, PatientView, instance_weights, records
from lympho.models.mil import AttentionMILClassifier, TopKMILClassifier
from lympho.reports import patient_report_html
from lympho.scoring import instance_scores, score_patient, train_model


def toy_bags(n=24, seed=0):
    """Malignant bags hold a few cells shifted along feature 0; every bag 5-12 cells."""
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2))
    bags = []
    for label in y:
        bag = rng.normal(size=(rng.integers(5, 13), 4))
        if label:
            bag[:3, 0] += 4
        bags.append(bag)
    X = np.empty(n, dtype=object)
    X[:] = bags
    return X, y


def plain(value) -> bool:
    """Numbers, strings, None, numpy arrays, and lists / tuples / dicts of them."""
    if isinstance(value, (dict,)):
        return all(plain(k) and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, np.ndarray, np.generic))


MIL = [AttentionMILClassifier(epochs=30, learning_rate=1e-2), TopKMILClassifier(k=3, epochs=30, learning_rate=1e-2)]


@pytest.mark.parametrize("model", MIL, ids=["attention", "topk"])
def test_mil_fits_bags_deterministically_with_instance_weights(model):
    X, y = toy_bags()
    first, second = clone(model).fit(X, y), clone(model).fit(X, y)
    p = first.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(p, second.predict_proba(X)[:, 1])
    assert p[y == 1].mean() > p[y == 0].mean() + 0.2
    weights = first.instance_weights(X)
    assert [len(w) for w in weights] == [len(b) for b in X]
    if isinstance(model, AttentionMILClassifier):
        np.testing.assert_allclose([w.sum() for w in weights], 1, rtol=1e-5)
    positive = weights[1]  # the shifted cells (first three) weigh most in a malignant bag
    assert set(np.argsort(-positive)[:2]) <= {0, 1, 2}
    assert all(plain(v) for v in vars(first).values())  # the safe model format needs plain state


def test_mil_early_stopping_uses_an_inner_split_only():
    X, y = toy_bags(40)
    model = AttentionMILClassifier(epochs=30, validation_fraction=0.25, patience=5).fit(X, y)
    assert 1 <= model.n_epochs_ <= 30


def test_cell_cnn_tiny_fit_on_demo_images(small_cohort_template):
    patients = load_cohort(small_cohort_template).labelled()[:8]
    X = np.empty(len(patients), dtype=object)
    X[:] = [tuple(str(p) for p in patient.images) for patient in patients]
    y = np.array([p.label for p in patients])
    model = CellCNNClassifier(size=32, cells_per_bag=4, bags_per_step=4, epochs=1, precision="fp32")
    first = clone(model).fit(X, y)
    p = first.predict_proba(X)
    assert p.shape == (8, 2) and np.isfinite(p).all()
    np.testing.assert_array_equal(p, clone(model).fit(X, y).predict_proba(X))  # seeded
    weights = first.instance_weights(X[:2])
    assert [len(w) for w in weights] == [len(b) for b in X[:2]]
    assert first.device_ == "cpu" and first.precision_ == "fp32"
    assert all(plain(v) for v in vars(first).values())


class SpyExpert(ClassifierMixin, BaseEstimator):
    """Records which patients (clinical column 0 holds an id) each fitted copy saw, and
    fails if a copy predicts a patient it was trained on while the fusion is fitting."""

    log: list = []

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        self.seen_ = {float(r["clinical"][0]) for r in X}
        self.rate_ = float(np.mean(y))
        return self

    def predict_proba(self, X):
        ids = {float(r["clinical"][0]) for r in X}
        SpyExpert.log.append(bool(ids & self.seen_))
        p = np.clip(np.array([r["clinical"][1] for r in X]) + self.shift, 0.01, 0.99)
        return np.column_stack([1 - p, p])


def spy_records(n=30):
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * (n // 2))
    clinical = np.column_stack([np.arange(n), np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, n), 0, 1)])
    return records(clinical), y


def test_stacked_fusion_fits_its_combiner_on_inner_out_of_fold_predictions():
    X, y = spy_records()
    SpyExpert.log = []
    fusion = LateFusion([("a", SpyExpert()), ("b", SpyExpert(0.1))], combine="stacked").fit(X[:24], y[:24])
    assert SpyExpert.log and not any(SpyExpert.log)  # no inner prediction on an inner training patient
    p = fusion.predict_proba(X[24:])[:, 1]
    assert p.shape == (6,) and fusion.stack_coef_.shape == (2,)
    mean = LateFusion([("a", SpyExpert()), ("b", SpyExpert(0.1))]).fit(X, y)
    experts = mean.expert_probabilities(X)
    np.testing.assert_allclose(mean.predict_proba(X)[:, 1], (experts["a"] + experts["b"]) / 2)


def test_logit_fusion_averages_the_experts_log_odds():
    X, y = spy_records()
    fusion = LateFusion([("a", SpyExpert()), ("b", SpyExpert(0.1))], combine="logit").fit(X, y)
    experts = fusion.expert_probabilities(X)
    log_odds = [np.log(p / (1 - p)) for p in experts.values()]
    np.testing.assert_allclose(fusion.predict_proba(X)[:, 1], 1 / (1 + np.exp(-(log_odds[0] + log_odds[1]) / 2)))


def test_weighted_fusion_weighs_each_expert_in_either_mean():
    X, y = spy_records()
    experts = [("a", SpyExpert()), ("b", SpyExpert(0.1))]
    logit = LateFusion(experts, combine="logit", weights=(0.7, 0.3)).fit(X, y)
    a, b = (np.log(p / (1 - p)) for p in logit.expert_probabilities(X).values())
    np.testing.assert_allclose(logit.predict_proba(X)[:, 1], 1 / (1 + np.exp(-(0.7 * a + 0.3 * b))))
    mean = LateFusion(experts, weights=(2, 6)).fit(X, y)  # weights need not sum to 1
    a, b = mean.expert_probabilities(X).values()
    np.testing.assert_allclose(mean.predict_proba(X)[:, 1], 0.25 * a + 0.75 * b)
    with pytest.raises(ValueError, match="stacking learns its own"):
        LateFusion(experts, combine="stacked", weights=(1, 1)).fit(X, y)
    for wrong in ((1,), (1, -1), (0, 0)):
        with pytest.raises(ValueError, match="2 non-negative numbers"):
            LateFusion(experts, weights=wrong).fit(X, y)


def test_clinical_weight_is_range_checked_and_cleared_where_it_changes_nothing():
    weighted = dataclasses.replace(RECOMMENDED, clinical_weight=0.65)
    assert weighted.expert_weights == (0.65, pytest.approx(0.35))
    assert config_pipeline(weighted, []).weights == weighted.expert_weights
    assert weighted.label().startswith("late log-odds mean, clinical weight 0.65: LogReg clinical")
    assert weighted.combine_name() == "mean of log-odds, clinical weight 0.65"
    assert ExperimentConfig.from_dict(weighted.to_dict()) == weighted
    for same in (dataclasses.replace(weighted, clinical_weight=0.5), dataclasses.replace(weighted, combine="stacked"),
                 dataclasses.replace(weighted, features="clinical"), dataclasses.replace(weighted, fusion="early")):
        assert same.clinical_weight is None and same.expert_weights is None
    assert dataclasses.replace(weighted, clinical_weight=0.5).key() == dataclasses.replace(
        weighted, clinical_weight=None).key()
    three = dataclasses.replace(LATE, combine="logit", clinical_weight=0.5)  # two image experts share the rest
    assert three.expert_weights == (0.5, 0.25, 0.25)
    assert dataclasses.replace(three, clinical_weight=1 / 3).clinical_weight is None
    assert [c.clinical_weight for c in fusion_configs(weighted)] == [None, None, None, 0.65]
    for wrong in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match="clinical_weight must be between 0 and 1"):
            dataclasses.replace(RECOMMENDED, clinical_weight=wrong)


@pytest.mark.parametrize("estimator", [
    AttentionMILClassifier(), TopKMILClassifier(), CellCNNClassifier(), PatientView("pooled", "moments"),
    LateFusion([("a", SpyExpert()), ("b", SpyExpert(0.2))], combine="stacked"),
    LateFusion([("a", SpyExpert()), ("b", SpyExpert(0.2))], combine="logit", weights=(0.6, 0.4)),
], ids=["attention", "topk", "cellcnn", "view", "fusion", "weighted-fusion"])
def test_estimators_clone_with_their_parameters(estimator):
    copy = clone(estimator)
    assert copy is not estimator and repr(copy.get_params(deep=False)) == repr(estimator.get_params(deep=False))


LATE = ExperimentConfig(features="both", encoder="morphology", pooling="moments", classifier="logreg",
                        image_model="pooled+topk", fusion="late", combine="stacked", folds=2)


def test_late_fusion_config_runs_and_records_its_experts(small_cohort_template, tmp_path):
    cohort = load_cohort(small_cohort_template)
    run = run_experiment(cohort, LATE, tmp_path)
    assert run["label"] == "late stacked: LogReg clinical | LogReg morphology/moments | top-k MIL morphology"
    assert run["encoder"]["name"] == "morphology" and run["encoder"]["device"] == "cpu"
    assert ExperimentConfig.from_dict(run["config"]) == LATE
    assert [c.label() for c in fusion_configs(dataclasses.replace(LATE, image_model="pooled"))] == [
        "LogReg, clinical", "LogReg, morphology/moments", "LogReg, clinical + morphology/moments",
        "late stacked: LogReg clinical | LogReg morphology/moments"]
    with pytest.raises(ValueError, match="fusion='late'"):
        ExperimentConfig(features="both", image_model="attention")
    assert [c.label() for c in fusion_configs(RECOMMENDED)] == [  # an image expert with its own classifier
        "LogReg, clinical", "LogRegCV morphology/meanmax", "LogReg, clinical + morphology/meanmax",
        "late log-odds mean: LogReg clinical | LogRegCV morphology/meanmax"]
    alone = ExperimentConfig(features="images", encoder="morphology", image_classifier="logregcv")
    assert alone.uses_records and alone.label() == "LogRegCV morphology/mean"
    assert config_pipeline(alone, []).steps[-1][1].__class__.__name__ == "LogisticRegressionCV"


def test_trained_late_fusion_saves_safely_and_ranks_cells_by_its_own_weights(small_cohort_template, tmp_path):
    cohort = load_cohort(small_cohort_template)
    config = dataclasses.replace(LATE, combine="mean")
    model = train_model(cohort, config, tmp_path / "cache", threshold_repeats=1, outer_repeats=1)
    patient = cohort.labelled()[0]
    cells = instance_scores(model, patient, tmp_path / "cache")
    assert len(cells) == len(patient.images) and set(cells["measure"]) == {"cell probability"}
    assert cells["score"].is_monotonic_decreasing
    result = score_patient(model, patient, tmp_path / "cache")  # each expert's own say, shown with the decision
    assert [name for name, _ in result["experts"]] == ["LogReg clinical", "LogReg morphology/moments",
                                                       "top-k MIL morphology"]
    assert result["probability"] == pytest.approx(np.mean([p for _, p in result["experts"]]))
    assert result["combine"] == "mean of probabilities"
    report = html.unescape(patient_report_html(result))
    assert evidence_text(result) in report and similar_text(result) in report
    (tmp_path / "saved").mkdir()
    loaded = load_pipeline(save_pipeline(model.pipeline, tmp_path / "saved"))
    X, _ = design_matrix(cohort.labelled(), config, None if not config.uses_encoder else
                         [np.ones((len(p.images), 80), np.float32) for p in cohort.labelled()])
    np.testing.assert_allclose(loaded.predict_proba(X), model.pipeline.predict_proba(X))
    assert instance_weights(loaded, X[:1]) is not None
    assert isinstance(config_pipeline(config, []), LateFusion)

"""Experiments end to end: determinism, leakage, the ablation and the run store."""

import dataclasses
import json

import numpy as np
import pytest

from lympho.data import load_cohort
from lympho.experiment import (TABLE2_ROWS, ExperimentConfig, design_matrix, run_ablation,
                               run_experiment)

FAST_IMAGES = ExperimentConfig(features="both", weights="none", precision="fp32", classifier="logreg")


@pytest.fixture
def cohort(small_cohort):
    return load_cohort(small_cohort)


def test_same_config_and_seed_give_identical_numbers(cohort, tmp_path):
    config = dataclasses.replace(FAST_IMAGES, classifier="mlp", repeats=2)
    first = run_experiment(cohort, config, tmp_path)
    second = run_experiment(cohort, config, tmp_path)
    assert first["folds"] == second["folds"] and first["oof"] == second["oof"]
    other_seed = run_experiment(cohort, dataclasses.replace(config, seed=1), tmp_path)
    assert other_seed["oof"]["id"] != first["oof"]["id"]  # other folds, other order


def test_run_record_shape(cohort, tmp_path):
    run = run_experiment(cohort, dataclasses.replace(FAST_IMAGES, repeats=2), tmp_path)
    assert len(run["folds"]) == 6 and {f["repeat"] for f in run["folds"]} == {1, 2}
    n = len(cohort.labelled())
    assert len(run["oof"]["id"]) == 2 * n
    assert sum(f["n_test"] for f in run["folds"]) == 2 * n
    assert run["cohort"]["synthetic"] is False
    assert set(run["summary"]["balanced_accuracy"]) >= {"mean", "std"}
    assert run["encoder"]["name"] == "resnet18" and run["encoder"]["precision"] == "fp32"
    assert run["encoder"]["device"] == "cpu" and "torch" in run["encoder"]
    json.dumps(run)  # a run record is plain JSON


def test_design_matrix_columns(cohort):
    patients = cohort.labelled()
    bags = [np.ones((len(p.images), 4)) * i for i, p in enumerate(patients)]
    X, names = design_matrix(patients, dataclasses.replace(FAST_IMAGES, pooling="meanmax"), bags)
    assert X.shape == (len(patients), 3 + 8) and names[:3] == ["age", "male", "log_lymph_count"]
    X, names = design_matrix(patients, dataclasses.replace(FAST_IMAGES, features="images"), bags)
    assert X.shape == (len(patients), 4)


def test_validation_fold_never_reaches_a_fitted_step(real_data, monkeypatch):
    """Poison the validation rows: if scaling, SMOTE or the classifier saw them, fits would change."""
    from lympho import evaluation

    seen = []
    original = evaluation.clone

    def spying_clone(estimator):
        fitted = original(estimator)
        fit = fitted.fit

        def fit_and_record(X, y, **kw):
            seen.append(X.copy())
            return fit(X, y, **kw)

        fitted.fit = fit_and_record
        return fitted

    monkeypatch.setattr(evaluation, "clone", spying_clone)
    cohort = load_cohort(real_data, verify_images=False)
    config = ExperimentConfig(features="clinical", classifier="svm", imbalance="smote", folds=3)
    run = run_experiment(cohort, config)
    ids = [p.id for p in cohort.labelled()]
    X, _ = design_matrix(cohort.labelled(), config)
    assert len(seen) == len(run["folds"]) == 3
    for fold_X, fold in zip(seen, run["folds"]):
        assert len(fold_X) == fold["n_train"] < len(ids)
    oof = run["oof"]
    for fold_number, fold_X in enumerate(seen, start=1):
        held_out = {i for i, f in zip(oof["id"], oof["fold"]) if f == fold_number}
        held_rows = {tuple(X[ids.index(i)]) for i in held_out}
        assert not held_rows & {tuple(row) for row in fold_X}


def test_ablation_runs_the_five_table2_rows(cohort, tmp_path):
    base = ExperimentConfig(weights="none", precision="fp32")
    table, runs = run_ablation(cohort, base, cache_dir=tmp_path)
    assert len(runs) == 5 and len(table) == 15
    assert [(r["config"]["features"], r["config"]["classifier"]) for r in runs] == list(TABLE2_ROWS)
    assert {"fold", "balanced_accuracy", "f1", "recall", "config.features", "config.classifier"} <= set(table.columns)
    assert table["config.precision"].eq("fp32").all() and table["precision"].between(0, 1).all()


def test_config_validation_and_key():
    with pytest.raises(ValueError, match="classifier"):
        ExperimentConfig(classifier="forest")
    with pytest.raises(ValueError, match="folds"):
        ExperimentConfig(folds=1)
    with pytest.raises(ValueError, match="unknown config field"):
        ExperimentConfig.from_dict({"colour": "red"})
    config = ExperimentConfig(seed=3)
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert config.key() == ExperimentConfig(seed=3).key() != ExperimentConfig(seed=4).key()


def test_the_published_promise_belongs_to_the_recommended_procedure():
    from lympho.experiment import OPERATING_RULE, RECOMMENDED_GRID
    from lympho.reference import recommended_promise

    stored = recommended_promise()
    assert ExperimentConfig.from_dict(stored["config"]) in RECOMMENDED_GRID
    assert stored["procedure"]["candidates"] == [f"{c.label()} [{c.imbalance}]" for c in RECOMMENDED_GRID]
    rule = stored["operating_point"]["rule"]
    assert (rule["kind"], rule["value"]) == OPERATING_RULE  # measured with the rule train uses by default

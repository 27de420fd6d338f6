"""Nested cross-validation of model selection: no leak from outer test folds, honest optimism."""

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from lympho.cli import main
from lympho.selection import Candidate, corrected_t_interval, nested_cv


class SpyClassifier(ClassifierMixin, BaseEstimator):
    """Column 0 is the patient's index (recorded at every fit); column 1 is the probability."""

    fits: list = []

    def fit(self, X, y):
        SpyClassifier.fits.append(set(X[:, 0].astype(int)))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return np.column_stack([1 - X[:, 1], X[:, 1]])


def test_inner_selection_never_sees_the_outer_test_patients():
    rng = np.random.default_rng(0)
    y = np.array([0] * 12 + [1] * 18)
    candidates = [Candidate(f"spy {k}", SpyClassifier(), np.column_stack([np.arange(30), rng.random(30)]))
                  for k in range(2)]
    SpyClassifier.fits.clear()
    result = nested_cv(candidates, y, outer_folds=3, outer_repeats=2, inner_folds=2, inner_repeats=2)
    from sklearn.model_selection import RepeatedStratifiedKFold
    outer = list(RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0).split(np.zeros(30), y))
    per_split = 2 * (2 * 2 + 1)  # candidates x (inner fits + the outer refit)
    assert len(SpyClassifier.fits) == per_split * len(outer)
    for s, (train, test) in enumerate(outer):
        for seen in SpyClassifier.fits[s * per_split:(s + 1) * per_split]:
            assert seen <= set(train) and not seen & set(test)
    assert len(result["nested"]["splits"]) == 6 and json.loads(json.dumps(result)) == result


def test_nested_estimate_is_honest_where_the_naive_one_is_lucky():
    # 12 candidates of pure noise: the best of them on the evaluation splits looks better than
    # chance, while the nested estimate of the choose-the-best procedure stays near 0.5.
    rng = np.random.default_rng(1)
    y = rng.permutation([0] * 30 + [1] * 30)
    candidates = [Candidate(f"noise {k}", LogisticRegression(), rng.normal(size=(60, 3))) for k in range(12)]
    result = nested_cv(candidates, y, outer_folds=3, outer_repeats=2, inner_folds=3, inner_repeats=1)
    assert result["naive"]["score"]["mean"] > 0.56
    assert abs(result["nested"]["score"]["mean"] - 0.5) < 0.08
    assert result["optimism"] > 0.05
    best = next(c for c in result["candidates"] if c["label"] == result["naive"]["label"])
    assert best["difference"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0} and best["won"] == 1.0
    others = [c for c in result["candidates"] if c is not best]
    assert all(c["difference"]["mean"] <= 0 and c["difference"]["ci_low"] < c["difference"]["mean"] for c in others)


def test_corrected_t_interval_is_wider_than_the_plain_one():
    values = [0.8, 0.85, 0.9, 0.82, 0.88, 0.86]
    low, high = corrected_t_interval(values, n_train=73, n_test=37)
    plain = 2.571 * np.std(values, ddof=1) / np.sqrt(6)
    assert low < np.mean(values) - plain and high > np.mean(values) + plain
    assert (low + high) / 2 == pytest.approx(np.mean(values))


def test_select_cli_prints_nested_and_naive(real_data, tmp_path, capsys):
    out_json = tmp_path / "select.json"
    code = main(["select", "--data", str(real_data), "--classifiers", "logreg,svm", "--imbalances", "none,weights",
                 "--outer-repeats", "2", "--inner-repeats", "1", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0
    assert "NESTED estimate" in out and "NAIVE best-of-grid estimate" in out and "optimism" in out
    assert "outer 2 x 3-fold CV, inner 1 x 3-fold CV" in out
    result = json.loads(out_json.read_text())
    assert result["settings"]["n_patients"] == 110 and result["settings"]["n_candidates"] == 4
    assert f"{result['nested']['score']['mean']:.3f}" in out and result["naive"]["label"] in out


def fixed_scores(scores) -> Candidate:
    """A candidate whose probability is fixed per patient, whatever it was trained on."""
    scores = np.asarray(scores, dtype=float)
    return Candidate("fixed", SpyClassifier(), np.column_stack([np.arange(len(scores)), scores]))


def test_at_the_operating_point_each_threshold_comes_from_the_training_patients_only():
    from lympho.evaluation import threshold_for_sensitivity

    rng = np.random.default_rng(3)
    y = np.array([0] * 15 + [1] * 21)
    scores = np.clip(0.35 * y + rng.random(36) * 0.65, 0, 1)
    result = nested_cv([fixed_scores(scores)], y, outer_folds=3, outer_repeats=2, inner_folds=3, inner_repeats=2,
                       sensitivity=0.9)
    from sklearn.model_selection import RepeatedStratifiedKFold
    outer = RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0).split(np.zeros(36), y)
    for split, (train, test) in zip(result["nested"]["splits"], outer):
        # Fixed scores make every inner repeat's out-of-fold predictions those of the training patients.
        assert split["threshold"] == pytest.approx(threshold_for_sensitivity(y[train], scores[train], 0.9))
    assert result["settings"]["sensitivity"] == 0.9 and result["settings"]["threshold"] is None
    assert result["nested"]["estimates"]["threshold"] is None


def test_at_the_operating_point_the_candidate_with_the_cleaner_tail_wins():
    # A: best at 0.5, but a fifth of the malignant patients score lowest, so 90 % sensitivity
    # costs it every reactive patient. B: weaker at 0.5, no such tail.
    y = np.array([0] * 30 + [1] * 30)
    a = np.r_[np.linspace(0.2, 0.45, 30), np.linspace(0.01, 0.1, 6), np.linspace(0.55, 0.9, 24)]
    b = np.r_[np.linspace(0.1, 0.6, 30), np.linspace(0.4, 0.9, 30)]
    grid = [fixed_scores(a), fixed_scores(b)]
    grid[0].label, grid[1].label = "A", "B"
    settings = dict(outer_folds=3, outer_repeats=2, inner_folds=3, inner_repeats=2)
    assert nested_cv(grid, y, **settings)["nested"]["chosen"] == {"A": 6}
    at_operating_point = nested_cv(grid, y, sensitivity=0.9, **settings)
    assert at_operating_point["nested"]["chosen"] == {"B": 6}
    assert at_operating_point["nested"]["estimates"]["metrics"]["recall"]["estimate"] >= 0.85


def test_the_operating_point_needs_inner_repeats():
    with pytest.raises(ValueError, match="inner_repeats >= 2"):
        nested_cv([fixed_scores([0.1, 0.9] * 6)], np.array([0, 1] * 6), inner_repeats=1, sensitivity=0.95)


def test_select_cli_at_the_operating_point(real_data, tmp_path, capsys):
    code = main(["select", "--data", str(real_data), "--classifiers", "logreg", "--imbalances", "none,weights",
                 "--outer-repeats", "1", "--inner-repeats", "2", "--sensitivity", "0.95"])
    out = capsys.readouterr().out
    assert code == 0 and "decided at each candidate's threshold for 95% sensitivity" in out
    assert "malignant when probability >= 0.5" not in out


def test_select_cli_runs_the_fusion_grid_at_the_operating_point(tmp_path, capsys):
    """The recommended configuration's choice, from the CLI (logreg candidates only, to keep it short)."""
    from lympho.synthetic import write_demo_cohort

    cohort = write_demo_cohort(tmp_path / "cohort", n_train=40, n_test=0, images_per_patient=(3, 4), seed=3)
    code = main(["select", "--data", str(cohort), "--grid", "fusion", "--classifiers", "logreg",
                 "--outer-repeats", "1", "--inner-folds", "2", "--inner-repeats", "2", "--sensitivity", "0.95"])
    out = capsys.readouterr().out
    assert code == 0 and "12 candidates" in out
    assert "late mean: LogReg clinical | LogRegCV morphology/meanmax" in out
    assert "late log-odds mean, clinical weight 0.65: LogReg clinical | LogRegCV morphology/meanmax" in out


def test_the_cli_offers_every_named_grid():
    """`select --grid` names its choices without importing lympho.selection (a fast --help)."""
    from lympho.cli import build_parser
    from lympho.selection import GRIDS

    select = build_parser()._subparsers._group_actions[0].choices["select"]
    grid = next(action for action in select._actions if action.dest == "grid")
    assert set(grid.choices) == set(GRIDS)

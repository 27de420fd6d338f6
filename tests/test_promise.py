"""The promise: the nested estimate of the whole training procedure, with intervals that re-run
its choices, the triage zones and the subgroup table."""

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from lympho.data import load_cohort
from lympho.evaluation import decision_estimates, subgroup_estimates, threshold_for_sensitivity
from lympho.experiment import ExperimentConfig
from lympho.promise import (PROMISE_METHOD, RULE_IN, RULE_OUT, ZONES, Rule, choose, final_choice, fit_nested,
                            promise, zone_of)
from lympho.scoring import load_model, save_model, train_model
from lympho.selection import Candidate


def noisy_labels(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 != 0).astype(int)  # two thirds malignant, like the cohort
    signal = y + rng.normal(0, 0.8, n)
    return y, signal, rng


def test_rule_thresholds_match_the_plain_definitions():
    y, p, rng = noisy_labels()
    ones = np.ones((1, len(y)))
    assert Rule("sensitivity", 0.9).thresholds(y, p, ones)[0] == threshold_for_sensitivity(y, p, 0.9)
    cut = Rule("specificity", 0.95).thresholds(y, p, ones)[0]
    reactive = p[y == 0]
    assert np.mean(reactive < cut) >= 0.95 and np.mean(reactive < reactive[reactive < cut].max()) < 0.95
    best = Rule("balanced").thresholds(y, p, ones)[0]
    balanced = [(np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t)) / 2 for t in np.unique(p)]
    assert (np.mean(p[y == 1] >= best) + np.mean(p[y == 0] < best)) / 2 == pytest.approx(max(balanced))
    assert Rule("fixed", 0.5).thresholds(y, p, np.ones((3, len(y)))).tolist() == [0.5] * 3
    weights = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=4).astype(float)
    expanded = [threshold_for_sensitivity(np.repeat(y, w.astype(int)), np.repeat(p, w.astype(int)), 0.9)
                for w in weights]  # a weight is a patient drawn that many times
    assert Rule("sensitivity", 0.9).thresholds(y, p, weights).tolist() == expanded


@pytest.mark.parametrize("kind, value", [("sensitivity", 1.5), ("fixed", float("nan")), ("fixed", 0),
                                         ("specificity", None), ("cut", 0.5)])
def test_rules_refuse_what_cannot_be_right(kind, value):
    with pytest.raises(ValueError, match="rule"):
        Rule(kind, value)


def test_the_procedure_chooses_the_informative_candidate():
    y, signal, rng = noisy_labels()
    informative = np.stack([signal + rng.normal(0, 0.1, len(y)) for _ in range(3)])
    noise = rng.random((3, len(y)))
    chosen, cut = choose(Rule("sensitivity", 0.9), y, [noise, informative], np.ones((1, len(y))))
    assert chosen.tolist() == [1]
    assert cut[0] == pytest.approx(np.median([threshold_for_sensitivity(y, row, 0.9) for row in informative]))
    final = final_choice(Rule("sensitivity", 0.9), y, [noise, informative], folds=3)
    assert final["chosen"] == 1 and final["threshold"] == pytest.approx(cut[0])
    assert final["rule_out"] <= final["threshold"] and "apparent" in final["apparent"]["method"]


class Memoriser(ClassifierMixin, BaseEstimator):
    """Probability 1 for a patient it was trained on, 0 otherwise: any leak shows."""

    def fit(self, X, y):
        self.seen_, self.classes_ = set(X[:, 0].tolist()), np.array([0, 1])
        return self

    def predict_proba(self, X):
        seen = np.array([x in self.seen_ for x in X[:, 0]], dtype=float)
        return np.column_stack([1 - seen, seen])


def test_no_prediction_comes_from_a_model_that_saw_the_patient():
    y, _, _ = noisy_labels(45)
    fit = fit_nested([Candidate("memoriser", Memoriser(), np.arange(len(y))[:, None].astype(float))], y,
                     outer_repeats=2, inner_repeats=2)
    assert all((rows == 0).all() for split in fit.inner for rows in split)
    assert all((p == 0).all() for split in fit.outer for p in split)


def test_promise_intervals_rerun_the_threshold_choice():
    y, signal, rng = noisy_labels(60)
    X = np.column_stack([signal, rng.normal(size=len(y))])
    candidates = [Candidate("logreg", LogisticRegression(), X)]
    fit = fit_nested(candidates, y, outer_repeats=2, inner_repeats=3)
    fixed = promise(fit, Rule("fixed", 0.5), n_boot=300)
    # Nothing is chosen at a fixed threshold: the interval is the plain bootstrap of the decisions.
    plain = decision_estimates(y, np.array(fixed["decisions"], dtype=bool), n_boot=300, seed=0)
    assert fixed["metrics"]["balanced_accuracy"] == pytest.approx(plain["metrics"]["balanced_accuracy"])
    chosen = promise(fit, Rule("sensitivity", 0.9), n_boot=300)
    again = decision_estimates(y, np.array(chosen["decisions"], dtype=bool), n_boot=300, seed=0)
    assert chosen["metrics"]["recall"]["estimate"] == pytest.approx(again["metrics"]["recall"]["estimate"])
    assert chosen["metrics"]["specificity"] != again["metrics"]["specificity"]  # re-chosen in every draw
    for metric in ("balanced_accuracy", "recall", "specificity"):
        figure = chosen["metrics"][metric]
        assert 0 <= figure["low"] <= figure["estimate"] <= figure["high"] <= 1
    assert chosen["kind"] == "nested" and chosen["method"] == PROMISE_METHOD
    assert chosen["thresholds"]["min"] <= chosen["thresholds"]["max"] and len(chosen["thresholds"]["per_split"]) == 6
    zones = chosen["zones"]
    assert sum(zones[z]["fraction"]["estimate"] for z in ZONES) == pytest.approx(1)
    assert 0 <= zones["rule-out"]["sensitivity"]["estimate"] <= 1


def test_zones_split_at_the_two_thresholds():
    assert zone_of([0.05, 0.2, 0.5, 0.9], 0.1, 0.6).tolist() == ["rule-out", "refer", "refer", "rule-in"]
    # a rule-out threshold above the rule-in one leaves no one to refer
    assert zone_of([0.05, 0.5, 0.9], 0.6, 0.4).tolist() == ["rule-out", "rule-out", "rule-in"]
    assert RULE_OUT.text() == "threshold for 98% sensitivity" and RULE_IN.text() == "threshold for 95% specificity"


def test_subgroups_count_patients_and_leave_undefined_metrics_empty(small_cohort):
    patients = load_cohort(small_cohort).labelled()
    y = np.array([p.label for p in patients])
    rows = subgroup_estimates(patients, y, y[None, :].astype(bool), n_boot=50)
    for group in ("age", "lymphocyte count", "gender"):
        assert sum(r["n"] for r in rows if r["group"] == group) == len(patients)
    for row in rows:
        if row["reactive"] == 0:
            assert row["specificity"]["estimate"] is None
        else:
            assert row["specificity"]["estimate"] == 1.0


def test_train_stores_the_promise_where_other_checks_read_it(small_cohort, tmp_path):
    cohort = load_cohort(small_cohort)
    config = ExperimentConfig(features="clinical", classifier="logreg")
    model = load_model(save_model(train_model(cohort, config, rule=Rule("sensitivity", 0.9), threshold_repeats=3,
                                              outer_repeats=2, inner_repeats=2, n_boot=100), tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    point = meta["operating_point"]
    for metric in ("balanced_accuracy", "recall", "specificity"):
        figure = point["estimate"]["metrics"][metric]
        assert {"estimate", "low", "high"} <= set(figure) and figure["low"] <= figure["estimate"] <= figure["high"]
    assert point["estimate"]["kind"] == "nested" and point["rule"]["kind"] == "sensitivity"
    assert point["target_sensitivity"] == 0.9 and len(point["per_repeat"]) == 3
    assert point["threshold_range"]["min"] <= point["threshold"] <= point["threshold_range"]["max"]
    assert "optimistic" not in point["estimate"]["method"] and "apparent" in point["apparent"]["method"]
    assert {row["group"] for row in meta["subgroups"]} == {"age", "lymphocyte count", "gender"}
    predictions = model.predict(cohort.select("test"))
    assert list(predictions.columns[:4]) == ["id", "probability", "prediction", "zone"]
    assert set(predictions.zone) <= set(ZONES)
    zones = point["zones"]
    expected = np.where(predictions.probability < zones["rule_out"], "rule-out",
                        np.where(predictions.probability >= max(zones["rule_in"], zones["rule_out"]),
                                 "rule-in", "refer"))
    assert predictions.zone.tolist() == expected.tolist()


def test_evaluate_json_carries_the_subgroup_figures(small_cohort, tmp_path, capsys):
    from lympho.cli import main

    out = tmp_path / "run.json"
    assert main(["evaluate", "--data", str(small_cohort), "--features", "clinical", "--classifier", "logreg",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["summary"]["subgroups"]
    assert {r["group"] for r in rows} == {"age", "lymphocyte count", "gender"}
    n = len(load_cohort(small_cohort).labelled())
    assert all(sum(r["n"] for r in rows if r["group"] == g) == n for g in ("age", "gender"))
    assert "by subgroup, out of fold at the same threshold: least reliable in:" in capsys.readouterr().out

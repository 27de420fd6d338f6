"""Every dashboard page under Streamlit's AppTest: set widgets, run, read what is shown.

Pages are tested one by one with the sidebar's state (the loaded cohort, the cache)
seeded, as app.py would leave it; tests/test_browser.py covers the navigation itself.
"""

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lympho.data import load_cohort
from lympho.evaluation import format_estimate, run_estimates
from lympho.experiment import ExperimentConfig, run_experiment
from lympho.runstore import RunStore
from lympho.experiment import RECOMMENDED
from lympho.scoring import save_model, train_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cohort(small_cohort):
    return load_cohort(small_cohort)


def open_page(name: str, cohort, cache: Path) -> AppTest:
    app = AppTest.from_file(str(REPO / "app_pages" / f"{name}.py"), default_timeout=120)
    app.session_state["cohort"] = cohort
    app.session_state["cache_dir"] = str(cache)
    app.run()
    assert not app.exception, app.exception
    return app


def finish_job(app: AppTest, slot: str) -> AppTest:
    """Wait for the page's background job, then let the page render its result."""
    app.session_state["jobs"][slot].wait(120)
    app.run()
    app.run()  # the first run notices the job ended and reruns the page
    assert not app.exception, app.exception
    return app


def texts(app: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "success", "error", "warning", "info")
                    for e in getattr(app, kind))


def test_data_page(cohort, isolated_cache):
    app = open_page("data", cohort, isolated_cache)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Patients"] == str(len(cohort.patients))
    assert metrics["Images"] == str(sum(len(p.images) for p in cohort.patients))
    patient = cohort.patients[3]
    app.selectbox(key="data_patient").set_value(patient.id).run()
    assert f"**{patient.id}**" in texts(app) and len(app.get("image")[0].proto.imgs) == len(patient.images)
    assert "magenta: nucleus" in app.get("plotly_chart")[-1].proto.spec  # the segmentation of one cell


def test_data_page_shows_the_loaders_warnings(small_cohort, isolated_cache):
    csv = small_cohort / "trainset" / "trainset_true.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[2, "LYMPH_COUNT"] = "650"
    table.to_csv(csv, index=False)
    app = open_page("data", load_cohort(small_cohort), isolated_cache)
    assert any("line 4, field LYMPH_COUNT: lymphocyte count 650" in w.value for w in app.warning)


def test_data_page_without_cohort_says_what_to_do(isolated_cache):
    app = open_page("data", None, isolated_cache)
    assert "Choose a data directory" in app.info[0].value


def test_experiment_page_runs_and_stores(cohort, isolated_cache):
    app = open_page("experiment", cohort, isolated_cache)
    app.selectbox(key="exp_classifier").set_value("logreg")
    app.number_input(key="exp_repeats").set_value(2)
    app.button[0].click().run()
    finish_job(app, "experiment")
    assert "Stored as run" in app.success[0].value
    assert {m.label for m in app.metric} >= {"Balanced accuracy", "Recall (sensitivity)"}
    run = RunStore(isolated_cache / "runs").runs()[0]
    # the same figure, with its interval, as the CLI prints it (lympho.evaluation.format_estimate)
    assert format_estimate(run_estimates(run), "balanced_accuracy") in texts(app)
    assert "95% CI" in app.metric[0].proto.delta
    assert len(app.dataframe[0].value) == 6 + 1  # 2 x 3 folds and the mean row
    run = RunStore(isolated_cache / "runs").runs()[0]
    assert run["config"]["classifier"] == "logreg" and run["config"]["repeats"] == 2
    point = run["summary"]["operating_point"]  # 2 repeats: where a trained model would decide, held out
    assert f"threshold {point['threshold']:.3f}" in texts(app)
    assert format_estimate(point["estimate"], "balanced_accuracy") in texts(app)
    charts = " ".join(chart.proto.spec for chart in app.get("plotly_chart"))
    assert "Do the probabilities mean what they say?" in charts and "Brier score" in charts  # calibration, shown
    assert "groups of about equal size by their out-of-fold probability" in texts(app)
    # The operating point moves with the threshold.
    app.slider(key="exp_result_t").set_value(0.01).run()  # the lowest: a threshold of 0 is refused
    assert "sensitivity **1.000**" in texts(app)


def test_image_options_follow_the_feature_choice_at_once(cohort, isolated_cache):
    app = open_page("experiment", cohort, isolated_cache)
    assert not app.selectbox(key="exp_encoder").disabled  # the recommended model uses images (late fusion)
    app.selectbox(key="exp_features").set_value("clinical").run()  # no form to submit first
    assert app.selectbox(key="exp_encoder").disabled and app.selectbox(key="exp_pooling").disabled
    app.selectbox(key="exp_features").set_value("both").run()
    assert not app.selectbox(key="exp_encoder").disabled and not app.selectbox(key="exp_pooling").disabled


def test_the_clinical_weight_applies_to_a_late_mean_only_and_reaches_the_run(cohort, isolated_cache):
    app = open_page("experiment", cohort, isolated_cache)
    weight = app.number_input(key="exp_clinical_weight")
    assert not weight.disabled and weight.value == pytest.approx(RECOMMENDED.clinical_weight or 0.5)
    app.selectbox(key="exp_combine").set_value("stacked").run()
    assert app.number_input(key="exp_clinical_weight").disabled
    app.selectbox(key="exp_combine").set_value("logit").run()
    app.number_input(key="exp_clinical_weight").set_value(0.7).run()
    app.selectbox(key="exp_features").set_value("clinical").run()
    assert app.number_input(key="exp_clinical_weight").disabled
    app.selectbox(key="exp_features").set_value("both").run()
    app.button[0].click().run()
    finish_job(app, "experiment")
    (run_id,) = RunStore(isolated_cache / "runs").ids()
    run = RunStore(isolated_cache / "runs").load(run_id)
    assert run["config"]["clinical_weight"] == 0.7 and "clinical weight 0.7" in run["label"]


def test_an_impossible_combination_is_a_form_error(cohort, isolated_cache):
    app = open_page("experiment", cohort, isolated_cache)
    app.selectbox(key="exp_features").set_value("both").run()
    app.selectbox(key="exp_fusion").set_value("early").run()  # the recommended model's is late
    app.multiselect(key="exp_image_model").set_value(["attention"]).run()  # attention needs late fusion
    assert "cannot run" in app.error[0].value and app.button[0].disabled
    app.selectbox(key="exp_fusion").set_value("late").run()
    assert not app.error and not app.button[0].disabled


def test_fusion_ablation_compares_clinical_image_experts_and_fusion(cohort, isolated_cache):
    app = open_page("ablation", cohort, isolated_cache)
    app.radio(key="abl_grid").set_value("Clinical vs image experts vs fusion").run()
    app.button[0].click().run()
    finish_job(app, "ablation")
    names = app.dataframe[0].value["Configuration"].tolist()
    assert names[0].startswith("LogReg, clinical") and any(n.startswith("late") for n in names), names
    assert any(n.startswith("LogRegCV morphology/meanmax") for n in names)  # the recommended model, taken apart


def test_mid_run_the_form_shows_the_running_config(cohort, isolated_cache):
    app = open_page("experiment", cohort, isolated_cache)
    app.selectbox(key="exp_classifier").set_value("svm").run()
    app.button[0].click().run()
    app.session_state["exp_classifier"] = "mlp"  # as if the form had been reset while away
    app.run()
    assert app.selectbox(key="exp_classifier").value == "svm" and app.selectbox(key="exp_classifier").disabled
    finish_job(app, "experiment")
    assert "Stored as run" in app.success[0].value
    assert len(RunStore(isolated_cache / "runs").ids()) == 1

def test_experiment_failure_is_a_message(cohort, isolated_cache):
    app = open_page("experiment", cohort, isolated_cache)
    app.selectbox(key="exp_imbalance").set_value("smote")
    app.number_input(key="exp_folds").set_value(5)
    app.button[0].click().run()
    finish_job(app, "experiment")
    assert "The experiment failed" in app.error[0].value


def test_ablation_page_table2(cohort, isolated_cache):
    app = open_page("ablation", cohort, isolated_cache)
    app.selectbox(key="abl_weights").set_value("none")
    app.button[0].click().run()
    finish_job(app, "ablation")
    table = app.dataframe[0].value
    assert len(table) == 5 + 5  # ours and, under each, the report's published row
    assert list(table.columns[:3]) == ["Configuration", "Source", "Balanced accuracy"] and "ROC AUC" in table.columns
    assert table["Configuration"].iloc[1] == "Report: SVM, clinical" and " ± " in table["Balanced accuracy"].iloc[0]
    assert table["Balanced accuracy"].str.endswith("★").sum() >= 1  # ties are all marked
    assert len(RunStore(isolated_cache / "runs").ids()) == 5
    assert "Run 2 or more repeats" in texts(app)  # one repeat: no held-out threshold to show
    app.toggle(key="abl_per_fold").set_value(True).run()
    assert "Balanced accuracy · 1" in app.dataframe[1].value.columns
    app.button[0].click().run()  # the same ablation again does not double the store
    finish_job(app, "ablation")
    assert len(RunStore(isolated_cache / "runs").ids()) == 5


def test_ablation_custom_grid_needs_choices(cohort, isolated_cache):
    app = open_page("ablation", cohort, isolated_cache)
    app.radio(key="abl_grid").set_value("Custom grid").run()
    app.multiselect[1].set_value([])
    app.button[0].click().run()
    assert "Choose at least one" in app.error[0].value


def test_runs_page_compares_and_exports(cohort, isolated_cache):
    store = RunStore(isolated_cache / "runs")
    for classifier in ("logreg", "svm"):
        store.save(run_experiment(cohort, ExperimentConfig(features="clinical", classifier=classifier)))
    app = open_page("runs", cohort, isolated_cache)
    table = app.dataframe[0].value
    assert len(table) == 2 and list(table.columns[:3]) == ["name", "balanced_accuracy", "f1"]
    assert "config.classifier" in table.columns and "config.features" not in table.columns  # only what differs
    assert "Run details" in [h.value for h in app.subheader]
    app.button[-1].click().run()  # fit and predict the test set
    finish_job(app, "submission")
    predictions = app.dataframe[-1].value
    assert list(predictions.columns) == ["id", "probability", "prediction", "zone"]
    assert len(predictions) == len(cohort.select("test"))


def test_runs_page_deep_links_and_edits(cohort, isolated_cache):
    store = RunStore(isolated_cache / "runs")
    ids = [store.save(run_experiment(cohort, ExperimentConfig(features="clinical", classifier=c)))
           for c in ("logreg", "svm", "xgboost")]
    app = AppTest.from_file(str(REPO / "app_pages" / "runs.py"), default_timeout=120)
    app.session_state["cohort"], app.session_state["cache_dir"] = cohort, str(isolated_cache)
    app.query_params["compare"] = f"{ids[0]},{ids[2]}"
    app.query_params["run"] = ids[2]
    app.run()
    assert not app.exception and "Comparison of 2 runs" in [h.value for h in app.subheader]
    assert app.selectbox(key="detail").value == ids[2]
    roc = app.get("plotly_chart")[1].proto.spec
    assert roc.count("AUC") >= 2  # one ROC curve per compared run
    app.text_input[0].input("baseline")
    app.text_input[1].input("paper keep")
    app.text_area[0].input("for the slides")
    app.button[0].click().run()
    edited = store.load(ids[2])
    assert edited["name"] == "baseline" and edited["tags"] == ["paper", "keep"] and edited["note"] == "for the slides"
    app.multiselect(key="runs_tags").set_value(["paper"]).run()
    assert app.dataframe[0].value["id"].tolist() == [ids[2]]


def test_runs_page_empty(cohort, isolated_cache):
    app = open_page("runs", cohort, isolated_cache)
    assert "No stored runs yet" in app.info[0].value


def test_score_page_trains_and_refuses_bad_input(cohort, isolated_cache):
    app = open_page("score", cohort, isolated_cache)
    assert "No trained model yet" in texts(app)
    # the form defaults to the recommended configuration (late fusion with the morphology expert) ...
    assert app.button[0].label == f"Train {RECOMMENDED.label()}"
    # ... whose 10 threshold repeats take a minute here: train a clinical-only model instead
    app.selectbox(key="train_features").set_value("clinical").run()
    app.button[0].click().run()
    finish_job(app, "train_model")
    chosen = app.selectbox(key="score_model").value
    assert chosen.endswith("/logreg-clinical-weights")  # a real (non-demo) cohort here: no -demo suffix
    app.button[-1].click().run()  # Score with no patient ID
    assert "Patient ID" in app.error[0].value


def test_score_page_decides_at_the_stored_operating_point_and_clears_stale_results(cohort, isolated_cache):
    save_model(train_model(cohort, None, isolated_cache, threshold_repeats=2, outer_repeats=1, inner_repeats=2),
               isolated_cache / "models" / "recommended")
    save_model(train_model(cohort, ExperimentConfig(features="clinical", classifier="logreg"), outer_repeats=1),
               isolated_cache / "models" / "other")
    app = open_page("score", cohort, isolated_cache)
    assert app.selectbox(key="score_model").value.endswith("/recommended")  # preselected, though not the newest
    card = texts(app)
    assert "Trained on" in card and "threshold" in card
    assert card.index("**Promise:**") < card.index("**Operating point:**")  # the promise first, the apparent after
    assert "what a new patient gets" in card and "Triage zones" in card
    app.text_input(key="score_patient_id").input("P-042")
    app.date_input(key="score_dob").set_value(date(1970, 5, 14))
    app.date_input(key="score_sampling_date").set_value(date(2020, 1, 1))
    app.button[-1].click().run()  # the recommended model uses images: none given is a clear refusal
    assert not app.exception and "no images" in app.error[0].value and not app.metric
    app.selectbox(key="score_model").set_value(str(isolated_cache / "models" / "other")).run()
    app.button[-1].click().run()  # a clinical-only model: no images needed
    shown = texts(app)
    assert not app.exception and ("Malignant pattern" in shown or "Reactive pattern" in shown)  # a decision
    assert "Triage zone:" in shown
    assert "age at sampling 49.6 years (sampled 2020-01-01), from date of birth 1970-05-14" in shown
    assert "P-042" in shown
    assert "refer for flow cytometry" in shown.lower() or "does not suggest referral" in shown
    assert "not a diagnosis" in shown  # the disclaimer beside the decision
    app.selectbox(key="score_model").set_value(str(isolated_cache / "models" / "recommended")).run()
    assert "previous result was cleared" in texts(app) and not app.metric  # no stale probability


def test_date_of_birth_accepts_recent_dates(cohort, isolated_cache):
    # any model will do here: a cheap clinical one
    save_model(train_model(cohort, ExperimentConfig(features="clinical", classifier="logreg"), threshold_repeats=2, outer_repeats=1),
               isolated_cache / "models" / "clinical")
    app = open_page("score", cohort, isolated_cache)
    assert app.date_input(key="score_dob").max == date.today()

"""Final models: fit, save safely, load, predict without labels, score one patient."""

import dataclasses
import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from lympho.data import REFERENCE_DATE, CohortError, load_cohort
from lympho.evaluation import SIMILAR_PATIENTS, oof_estimates, threshold_for_sensitivity
from lympho.experiment import ExperimentConfig
from lympho.experiment import OPERATING_RULE, THRESHOLD_REPEATS
from lympho.promise import Rule
from lympho.scoring import (ModelError, instance_scores, load_model,
                            make_patient, model_catalog, patient_warnings, save_model, score_patient, train_model)

IMAGE_MODEL = ExperimentConfig(features="both", weights="none", precision="fp32", classifier="logreg")


@pytest.fixture
def cohort(small_cohort):
    return load_cohort(small_cohort)


@pytest.fixture(scope="module")
def shared(small_cohort_template, tmp_path_factory):
    """One image model and its feature cache for the read-only tests below (keeps them fast)."""
    cache = tmp_path_factory.mktemp("shared-cache")
    cohort = load_cohort(small_cohort_template)
    return cohort, train_model(cohort, IMAGE_MODEL, cache), cache


@pytest.fixture
def saved_model(shared, tmp_path):
    """The shared image model saved into this test's own directory (no retraining)."""
    return save_model(shared[1], tmp_path / "model")


def test_round_trip_gives_the_same_predictions(cohort, saved_model, shared):
    cache = shared[2]
    fitted = train_model(cohort, IMAGE_MODEL, cache, threshold_repeats=2, outer_repeats=1)
    loaded = load_model(saved_model)
    assert loaded.config == IMAGE_MODEL and loaded.meta["n_features"] == 3 + 512
    test = cohort.select("test")
    assert fitted.predict(test, cache).equals(loaded.predict(test, cache))


def test_predictions_never_read_labels(cohort, saved_model, shared):
    model = load_model(saved_model)
    train = cohort.select("train")
    flipped = [dataclasses.replace(p, label=1 - p.label) for p in train]
    assert model.predict(train, shared[2]).equals(model.predict(flipped, shared[2]))


def test_save_replaces_a_model_but_never_other_data(cohort, saved_model, tmp_path):
    model = load_model(saved_model)
    save_model(model, saved_model)  # a model directory may be replaced
    assert load_model(saved_model).meta["sha256"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a lympho model directory"):
        save_model(model, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]  # no staging


def test_missing_or_damaged_models_are_clear_errors(saved_model, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="model.json: missing"):
        load_model(empty)
    pipeline = saved_model / "pipeline.skops"
    pipeline.write_bytes(pipeline.read_bytes()[:-10])
    with pytest.raises(ModelError, match="checksum"):
        load_model(saved_model)
    (saved_model / "model.json").write_text("{half")
    with pytest.raises(ModelError, match="damaged"):
        load_model(saved_model)


def test_model_json_records_config_and_versions(saved_model):
    meta = json.loads((saved_model / "model.json").read_text())
    assert meta["config"]["features"] == "both" and "torch" in meta["versions"]
    # the resolved device and precision, and what else the features depend on
    assert meta["encoder"]["device"] == "cpu" and meta["encoder"]["precision"] == "fp32"
    assert {"torch", "torchvision", "random_init_seed", "version"} <= set(meta["encoder"])


def test_score_one_patient(cohort, saved_model, shared):
    folder = cohort.select("test")[0].images[0].parent
    patient = make_patient(folder, "f", "12.5", dob=date(1950, 6, 1))
    result = score_patient(load_model(saved_model), patient, shared[2])
    assert 0 <= result["probability"] <= 1 and result["prediction"] in (0, 1)
    assert result["n_images"] == len(cohort.select("test")[0].images)
    assert result["sampling_date"] == date.today().isoformat()  # sampled today unless told otherwise
    # The same age at sampling, typed, gives the same model input.
    by_age = make_patient(folder, "F", 12.5, age=patient.age)
    assert score_patient(load_model(saved_model), by_age, shared[2])["probability"] == \
        pytest.approx(result["probability"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(gender="X", lymph_count=5, age=60), "unknown gender"),
    (dict(gender="M", lymph_count=-1, age=60), "must be positive"),
    (dict(gender="M", lymph_count="lots", age=60), "non-numeric"),
    (dict(gender="M", lymph_count=5, age=300), "between 0 and 120"),
    (dict(gender="M", lymph_count=5), "exactly one of"),
])
def test_bad_patient_input_is_refused(cohort, kwargs, message):
    folder = cohort.select("test")[0].images[0].parent
    with pytest.raises(CohortError, match=message):
        make_patient(folder, **kwargs)


def test_bad_image_folder_is_refused(tmp_path):
    with pytest.raises(CohortError, match="image folder not found"):
        make_patient(tmp_path / "none", "M", 5, age=50)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CohortError, match="no images"):
        make_patient(tmp_path, "M", 5, age=50)


def logit(p):
    return np.log(p) - np.log1p(-p)


def test_out_of_fold_predictions_choose_an_operating_point(shared, tmp_path):
    cohort, model, _ = shared
    model = load_model(save_model(model, tmp_path / "model"))  # oof survive the JSON round trip
    assert model.meta["oof"] == shared[1].meta["oof"]
    oof = pd.DataFrame(model.meta["oof"])
    n = len(cohort.labelled())
    assert len(oof) == n * THRESHOLD_REPEATS and oof.groupby("repeat")["id"].nunique().eq(n).all()
    # The threshold is the median over the repeats of each repeat's own threshold.
    per_repeat = [threshold_for_sensitivity(part["y_true"], part["probability"], 0.9)
                  for _, part in oof.groupby("repeat")]
    assert model.threshold_for_sensitivity(0.9) == pytest.approx(np.median(per_repeat))
    # The model carries its operating point (by default the fixed 0.5, read from no patient), its
    # promise (nested) and, second, its apparent figure.
    stored = model.meta["operating_point"]
    assert (stored["rule"]["kind"], stored["rule"]["value"]) == OPERATING_RULE == ("fixed", 0.5)
    assert model.threshold == stored["threshold"] == 0.5 and stored["target_sensitivity"] is None
    assert stored["estimate"]["kind"] == "nested" and stored["estimate"]["n_patients"] == n
    assert stored["apparent"]["repeats"] == THRESHOLD_REPEATS and "apparent" in stored["apparent"]["method"]
    assert stored["threshold_range"] == {"min": min(stored["per_repeat"]), "max": max(stored["per_repeat"])}
    recall = stored["estimate"]["metrics"]["recall"]
    assert 0 <= recall["low"] <= recall["estimate"] <= recall["high"] <= 1
    fixed = model.operating_point_estimate(threshold=0.5)
    assert fixed["estimate"] == oof_estimates(oof, 0.5) and fixed["target_sensitivity"] is None
    assert model.operating_point(1.0)["sensitivity"] == 0  # nobody called malignant
    with pytest.raises(ValueError, match="sensitivity"):
        model.threshold_for_sensitivity(1.5)


def test_predict_and_score_use_the_stored_threshold(shared):
    cohort, model, cache = shared
    patients = cohort.select("test")
    predictions = model.predict(patients, cache)
    assert (predictions["prediction"] == (predictions["probability"] >= model.threshold)).all()
    patient = make_patient(patients[0].images[0].parent, "M", 30, age=70)
    assert score_patient(model, patient, cache)["threshold"] == model.threshold


def test_a_fixed_threshold_is_stored_with_its_estimate(cohort):
    config = ExperimentConfig(features="clinical", classifier="logreg")
    model = train_model(cohort, config, rule=Rule("fixed", 0.3), threshold_repeats=3, outer_repeats=1)
    point = model.meta["operating_point"]
    assert point["threshold"] == model.threshold == 0.3 and point["target_sensitivity"] is None
    assert point["estimate"]["thresholds"]["per_split"] == [0.3] * 3  # nothing to choose
    plain = oof_estimates(model.meta["oof"], 0.3)["metrics"]
    assert {m: v["estimate"] for m, v in point["apparent"]["metrics"].items()} == \
        pytest.approx({m: v["estimate"] for m, v in plain.items()}, nan_ok=True)


def test_a_cohort_too_small_for_cv_stores_no_oof(cohort, tmp_path):
    config = ExperimentConfig(features="clinical", classifier="logreg", folds=10)
    model = load_model(save_model(train_model(cohort, config, outer_repeats=1), tmp_path / "m"))
    assert model.meta["oof"] is None and "fewer than folds=10" in model.meta["oof_unavailable"]
    with pytest.raises(ModelError, match="no out-of-fold predictions.*fewer than folds=10"):
        model.threshold_for_sensitivity(0.9)
    with pytest.raises(ModelError, match="no out-of-fold"):
        model.operating_point(0.5)


def test_instance_scores_rank_every_cell(shared):
    cohort, model, cache = shared
    patient = make_patient(cohort.select("test")[0].images[0].parent, "M", 30, age=70)
    scores = instance_scores(model, patient, cache)
    assert list(scores.columns) == ["path", "score", "measure"] and len(scores) == len(patient.images)
    assert set(scores.measure) == {"bag-of-one probability"}  # a pooled model has no cell weights of its own
    assert sorted(scores.path) == sorted(patient.images)
    assert scores.score.is_monotonic_decreasing and scores.score.between(0, 1).all()
    # Mean pooling + a linear classifier: the patient's logit is the mean of the cells' logits.
    probability = score_patient(model, patient, cache)["probability"]
    assert logit(probability) == pytest.approx(logit(scores.score.to_numpy()).mean(), abs=1e-6)
    clinical = train_model(cohort, ExperimentConfig(features="clinical", classifier="logreg"), outer_repeats=1)
    assert instance_scores(clinical, patient) is None


def test_score_patient_decides_at_the_threshold(shared):
    cohort, model, cache = shared
    patient = make_patient(cohort.select("test")[0].images[0].parent, "f", "12.5", age=61)
    result = score_patient(model, patient, cache, threshold=0.5)
    p = result["probability"]
    assert result["threshold"] == 0.5 and result["prediction"] == int(p >= 0.5)
    assert {k: result[k] for k in ("gender", "lymph_count")} == {"gender": "F", "lymph_count": 12.5}
    assert score_patient(model, patient, cache, threshold=p)["prediction"] == 1
    assert score_patient(model, patient, cache, threshold=min(1.0, p + 1e-9))["prediction"] == int(p >= 1.0)
    similar = result["similar"]  # how often training patients scored alike were malignant, out of fold
    assert similar["k"] == min(SIMILAR_PATIENTS, len(cohort.labelled())) and 0 <= similar["malignant"] <= similar["k"]
    assert similar["low"] <= similar["fraction"] <= similar["high"]
    assert result["experts"] == [] and result["combine"] is None  # one model, not a late fusion
    for bad in (1.5, -0.1, 0, float("nan"), "high"):  # 0 would call everyone malignant
        with pytest.raises(CohortError, match="threshold"):
            score_patient(model, patient, cache, threshold=bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(gender="M", lymph_count=1500, age=60), "at most 1000"),
    (dict(gender="M", lymph_count=0, age=60), "must be positive"),
    (dict(gender="M", lymph_count=5, age="old"), "non-numeric age"),
    (dict(gender="M", lymph_count=5, age=-1), "between 0 and 120"),
])
def test_out_of_range_input_is_refused(cohort, kwargs, message):
    folder = cohort.select("test")[0].images[0].parent
    with pytest.raises(CohortError, match=message):
        make_patient(folder, **kwargs)


def test_the_models_age_is_the_age_at_sampling(cohort):
    """Today a 70-year-old scored in 2026 enters the model as 63.9 (70 minus the years since 2020)."""
    folder = cohort.select("test")[0].images[0].parent
    sampled = date(2026, 1, 1)
    typed = make_patient(folder, "M", 30, age=70, sampling_date=sampled)
    born = make_patient(folder, "M", 30, dob=date(1956, 1, 1), sampling_date=sampled)
    assert typed.age == 70.0 and born.age == pytest.approx(70.0, abs=0.01)
    assert typed.sampling_date == born.sampling_date == sampled
    # The cohort's patients enter with their age at its sampling date, REFERENCE_DATE.
    assert make_patient(folder, "M", 30, dob=date(1956, 1, 1), sampling_date=REFERENCE_DATE).age == \
        pytest.approx(64.0, abs=0.01)
    assert make_patient(folder, "M", 30, age=70).sampling_date == date.today()


@pytest.mark.parametrize("kwargs, field, message", [
    (dict(dob=date(2026, 1, 2), sampling_date=date(2026, 1, 1)), "DOB", "after the sampling date 2026-01-01"),
    (dict(age=70, sampling_date=date.today() + timedelta(days=1)), "sampling date", "in the future"),
    (dict(dob=date.today() + timedelta(days=1)), "DOB", "after the sampling date"),
    (dict(age=70, lymph_count=float("inf")), "LYMPH_COUNT", "finite"),
    (dict(age=70, lymph_count="nan"), "LYMPH_COUNT", "finite"),
    (dict(age=float("nan")), "age", "between 0 and 120"),
    (dict(age=70, gender="  "), "GENDER", "unknown gender"),
    (dict(age=70, patient_id="../P16"), "ID", "not a plain name"),
    (dict(age=70, patient_id=" "), "ID", "empty patient ID"),
])
def test_patient_values_that_cannot_be_right_are_refused(cohort, kwargs, field, message):
    folder = cohort.select("test")[0].images[0].parent
    with pytest.raises(CohortError, match=message) as caught:
        make_patient(folder, **{"gender": "M", "lymph_count": 30, **kwargs})
    assert caught.value.field == field


def test_implausible_patient_values_are_scored_with_a_warning(cohort):
    folder = cohort.select("test")[0].images[0].parent
    assert patient_warnings(make_patient(folder, "M", 30, age=70)) == []
    warnings = patient_warnings(make_patient(folder, "M", 600, age=115))
    assert len(warnings) == 2
    assert warnings[0].startswith("field age:") and "115.0 years is implausible" in warnings[0]
    assert warnings[1].startswith("field LYMPH_COUNT:") and "600" in warnings[1]


def test_predict_and_operating_points_refuse_a_threshold_outside_0_1(shared):
    """Today predict(threshold=nan or 2) calls every patient reactive, -0.5 every one malignant."""
    cohort, model, cache = shared
    for bad in (float("nan"), 2, -0.5, 0):
        with pytest.raises(ValueError, match="threshold must be a finite number in"):
            model.predict(cohort.select("test"), cache, threshold=bad)
        with pytest.raises(ValueError, match="threshold must be a finite number in"):
            model.operating_point_estimate(threshold=bad)
        with pytest.raises(ValueError, match="sensitivity must be a finite number in"):
            model.operating_point_estimate(sensitivity=bad)


def test_model_catalog_lists_models_and_reports_damaged_ones(shared, tmp_path):
    _, model, _ = shared
    assert model_catalog(tmp_path / "none") == ([], [])
    save_model(model, tmp_path / "models" / "good")
    (tmp_path / "models" / "bad").mkdir()
    (tmp_path / "models" / "bad" / "model.json").write_text("{half")
    (tmp_path / "models" / "unrelated").mkdir()
    found, damaged = model_catalog(tmp_path / "models")
    assert [(p.name, m["label"]) for p, m in found] == [("good", IMAGE_MODEL.label())]
    assert len(damaged) == 1 and "bad" in damaged[0] and "damaged" in damaged[0]


def test_a_one_repeat_model_says_its_sensitivity_threshold_is_optimistic(shared):
    """Models saved before thresholds came from repeats hold one repeat: the threshold is then
    chosen and scored on the same predictions, and the estimate must say so."""
    model = shared[1]
    oof = pd.DataFrame(model.meta["oof"])
    one_repeat = dataclasses.replace(model, meta={**model.meta, "oof": oof[oof["repeat"] == 1].to_dict("list")})
    point = one_repeat.operating_point_estimate(sensitivity=0.9)
    assert point["target_sensitivity"] == 0.9
    assert "optimistic" in point["estimate"]["method"]
    assert point["estimate"]["metrics"]["recall"]["estimate"] >= 0.9  # true by construction: hence the warning

"""Final models: fit, save safely, load, predict without labels, score one patient."""

import dataclasses
import json
from datetime import date

import pytest

from lympho.data import CohortError, load_cohort
from lympho.experiment import ExperimentConfig
from lympho.scoring import ModelError, load_model, make_patient, save_model, score_patient, train_model

IMAGE_MODEL = ExperimentConfig(features="both", weights="none", precision="fp32", classifier="logreg")


@pytest.fixture
def cohort(small_cohort):
    return load_cohort(small_cohort)


@pytest.fixture
def saved_model(cohort, tmp_path):
    return save_model(train_model(cohort, IMAGE_MODEL, tmp_path / "cache"), tmp_path / "model")


def test_round_trip_gives_the_same_predictions(cohort, saved_model, tmp_path):
    fitted = train_model(cohort, IMAGE_MODEL, tmp_path / "cache")
    loaded = load_model(saved_model)
    assert loaded.config == IMAGE_MODEL and loaded.meta["n_features"] == 3 + 512
    test = cohort.select("test")
    assert fitted.predict(test, tmp_path / "cache").equals(loaded.predict(test, tmp_path / "cache"))


def test_predictions_never_read_labels(cohort, saved_model):
    model = load_model(saved_model)
    train = cohort.select("train")
    flipped = [dataclasses.replace(p, label=1 - p.label) for p in train]
    assert model.predict(train).equals(model.predict(flipped))


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
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_missing_or_damaged_models_are_clear_errors(saved_model, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="model.json: missing"):
        load_model(empty)
    pipeline = saved_model / "pipeline.joblib"
    pipeline.write_bytes(pipeline.read_bytes()[:-10])
    with pytest.raises(ModelError, match="checksum"):
        load_model(saved_model)
    (saved_model / "model.json").write_text("{half")
    with pytest.raises(ModelError, match="damaged"):
        load_model(saved_model)


def test_model_json_records_config_and_versions(saved_model):
    meta = json.loads((saved_model / "model.json").read_text())
    assert meta["config"]["features"] == "both" and "torch" in meta["versions"]


def test_score_one_patient(cohort, saved_model):
    folder = cohort.select("test")[0].images[0].parent
    patient = make_patient(folder, "f", "12.5", dob=date(1950, 6, 1))
    result = score_patient(load_model(saved_model), patient)
    assert 0 <= result["probability"] <= 1 and result["prediction"] in (0, 1)
    assert result["n_images"] == len(cohort.select("test")[0].images)
    by_age = make_patient(folder, "F", 12.5, age=patient.age)
    assert score_patient(load_model(saved_model), by_age)["probability"] == pytest.approx(result["probability"])


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

"""Model directories load without running anything from them: skops with an explicit list of
trusted types; old pickles only when the user says they trust them."""

import hashlib
import json
import os
import threading
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin

from lympho.cli import main
from lympho.experiment import ExperimentConfig
from lympho.model_format import PIPELINE_FILE, UnsafeModelError, trusted_types
from lympho.models.classifiers import make_pipeline
from lympho.scoring import ModelError, TrainedModel, load_model, save_model

CONFIG = ExperimentConfig(features="clinical", classifier="logreg")


def fitted(classifier="logreg", imbalance="weights"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=40) > 0).astype(int)
    return make_pipeline(classifier, imbalance).fit(X, y), X


def model_of(pipeline, config=CONFIG) -> TrainedModel:
    meta = {"format": 2, "config": config.to_dict(), "label": config.label(), "created": "2026-01-01T00:00:00",
            "cohort": {"name": "test", "root": "/x", "synthetic": True, "n_labelled": 40}, "n_features": 3}
    return TrainedModel(config, pipeline, meta)


@pytest.mark.parametrize("classifier, imbalance", [("svm", "smote"), ("logreg", "none"), ("xgboost", "weights"),
                                                   ("mlp", "weights")])
def test_every_classifier_round_trips_exactly(tmp_path, classifier, imbalance):
    pipeline, X = fitted(classifier, imbalance)
    pipeline.steps[-1][1].set_params(**({"epochs": 5} if classifier == "mlp" else {}))
    pipeline.fit(X, (X[:, 0] > 0).astype(int))
    folder = save_model(model_of(pipeline, ExperimentConfig(features="clinical", classifier=classifier,
                                                            imbalance=imbalance)), tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", PIPELINE_FILE]
    assert not sio.get_untrusted_types(file=folder / PIPELINE_FILE) or \
        set(sio.get_untrusted_types(file=folder / PIPELINE_FILE)) <= set(trusted_types())
    assert np.array_equal(load_model(folder).pipeline.predict_proba(X), pipeline.predict_proba(X))


class Trap(ClassifierMixin, BaseEstimator):
    """An estimator whose loading runs code: it writes ``marker`` (a stand-in for anything)."""

    def __init__(self, marker=""):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).write_text("code ran")
        self.__dict__.update(state)


class PickleTrap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def forge(folder: Path, name: str, payload: bytes, model_format: int) -> Path:
    """A model directory as an attacker would hand it over: a matching checksum included."""
    folder.mkdir()
    (folder / name).write_bytes(payload)
    meta = {**model_of(None).meta, "format": model_format, "sha256": hashlib.sha256(payload).hexdigest()}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_a_model_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    pipeline, _ = fitted()
    pipeline.steps.append(("trap", Trap(str(marker))))
    Trap.__setstate__(Trap(), {"marker": str(tmp_path / "probe")})  # the trap works when called
    assert (tmp_path / "probe").exists()
    forged = forge(tmp_path / "evil", PIPELINE_FILE, sio.dumps(pipeline), 2)
    with pytest.raises(UnsafeModelError, match=r"not trusted \((tests\.)?test_model_format\.Trap\)"):
        load_model(forged)
    assert not marker.exists()
    payload = sio.dumps({"call": os.system, "args": [f"touch {marker}"]})
    with pytest.raises(ModelError, match="posix.system|os.system"):
        load_model(forge(tmp_path / "evil2", PIPELINE_FILE, payload, 2))
    assert not marker.exists()


def test_an_old_pickle_model_loads_only_when_trusted(tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload_path = tmp_path / "payload.joblib"
    joblib.dump(PickleTrap(str(marker)), payload_path)
    forged = forge(tmp_path / "old", "pipeline.joblib", payload_path.read_bytes(), 1)
    with pytest.raises(ModelError, match="old-format model.*--trust-pickle"):
        load_model(forged)
    assert main(["predict", "--model", str(forged), "--out", str(tmp_path / "p.csv")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err and not marker.exists()
    load_model(forged, trust_pickle=True)  # the user's explicit choice: the pickle runs
    assert marker.read_text() == "code ran"


def test_a_pipeline_that_cannot_be_stored_safely_is_refused_at_save(tmp_path):
    pipeline, _ = fitted()
    pipeline.steps.append(("trap", Trap("x")))
    with pytest.raises(UnsafeModelError, match="Trap"):
        save_model(model_of(pipeline), tmp_path / "m")
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.staging-*"))


def test_an_oversized_model_file_is_refused_before_loading(tmp_path, monkeypatch):
    folder = save_model(model_of(fitted()[0]), tmp_path / "m")
    monkeypatch.setattr("lympho.model_format.MAX_MODEL_BYTES", 1000)
    with pytest.raises(UnsafeModelError, match="more than a model needs"):
        load_model(folder)


def test_concurrent_saves_to_one_directory_each_leave_a_valid_model(tmp_path):
    models = [model_of(fitted(imbalance=imbalance)[0]) for imbalance in ("none", "weights")]
    errors = []

    def save_many(model):
        try:
            for _ in range(8):
                save_model(model, tmp_path / "m")
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=save_many, args=(m,)) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    load_model(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_a_save_killed_between_its_two_renames_is_repaired(tmp_path):
    """kill -9 after the old model was moved aside: the next load puts it back."""
    folder = save_model(model_of(fitted()[0]), tmp_path / "m")
    os.replace(folder, tmp_path / ".m.previous")
    (tmp_path / ".m.staging-abc").mkdir()
    assert load_model(tmp_path / "m").meta["format"] == 2
    save_model(model_of(fitted()[0]), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]

"""Fit a final model on every labelled patient, store it safely, score new patients.

A model directory holds ``model.json`` (config, versions, training cohort, the
checksum of the fitted pipeline) and ``pipeline.joblib``. It is written into a
temporary sibling and swapped in whole, so an interrupted save never damages a
model that was already there. Load only model directories you trust: joblib files
are pickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import pandas as pd

from lympho.classifiers import make_pipeline
from lympho.data import (UNKNOWN_LABEL, CohortError, Patient, age_at_reference, check_image,
                         list_images, parse_gender, parse_lymph_count)
from lympho.experiment import (ExperimentConfig, StageProgress, cohort_summary, design_matrix,
                               instance_bags, versions, write_json_atomic)

MODEL_FORMAT = 1
#: Chosen by 20 x repeated 3-fold cross-validation on the real cohort
#: (benchmarks/model_selection.py, figures in the README): the best configuration that
#: needs no downloaded weights.
RECOMMENDED = ExperimentConfig(features="clinical", classifier="xgboost", imbalance="weights")


class ModelError(RuntimeError):
    """A model directory that is missing, incomplete or damaged."""


@dataclass
class TrainedModel:
    config: ExperimentConfig
    pipeline: object
    meta: dict

    def predict(self, patients: Sequence[Patient], cache_dir: Path | None = None,
                progress: StageProgress | None = None) -> pd.DataFrame:
        """``id, probability, prediction`` per patient; labels are never read."""
        unlabelled = [dataclasses.replace(p, label=UNKNOWN_LABEL) for p in patients]
        bags = instance_bags(unlabelled, self.config, cache_dir, progress)
        X, _ = design_matrix(unlabelled, self.config, bags)
        return pd.DataFrame({"id": [p.id for p in unlabelled],
                             "probability": self.pipeline.predict_proba(X)[:, 1],
                             "prediction": self.pipeline.predict(X).astype(int)})


def train_model(cohort, config: ExperimentConfig = RECOMMENDED, cache_dir: Path | None = None,
                progress: StageProgress | None = None) -> TrainedModel:
    """Fit ``config``'s pipeline on all labelled patients of ``cohort``."""
    patients = cohort.labelled()
    bags = instance_bags(patients, config, cache_dir, progress)
    X, names = design_matrix(patients, config, bags)
    y = np.array([p.label for p in patients])
    pipeline = make_pipeline(config.classifier, config.imbalance, config.seed).fit(X, y)
    meta = {"format": MODEL_FORMAT, "config": config.to_dict(), "label": config.label(),
            "cohort": cohort_summary(cohort), "n_features": len(names),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    return TrainedModel(config, pipeline, meta)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(model: TrainedModel, directory: Path | str) -> Path:
    """Write the model; an existing directory is replaced only if it is a model directory."""
    directory = Path(directory)
    if directory.exists() and not (directory / "model.json").is_file():
        if not directory.is_dir() or any(directory.iterdir()):
            raise ModelError(f"{directory}: exists and is not a lympho model directory; not overwriting it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    joblib.dump(model.pipeline, staging / "pipeline.joblib")
    write_json_atomic(staging / "model.json", {**model.meta, "sha256": _sha256(staging / "pipeline.joblib")})
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old)
    else:
        os.replace(staging, directory)
    return directory


def load_model(directory: Path | str) -> TrainedModel:
    directory = Path(directory)
    meta_path, pipeline_path = directory / "model.json", directory / "pipeline.joblib"
    if not directory.is_dir():
        raise ModelError(f"{directory}: model directory not found (train one with `python -m lympho train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: missing; {directory} is not a lympho model directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{meta_path}: damaged ({err})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{meta_path}: unsupported model format {meta.get('format')!r}")
    if not pipeline_path.is_file():
        raise ModelError(f"{pipeline_path}: missing")
    if _sha256(pipeline_path) != meta.get("sha256"):
        raise ModelError(f"{pipeline_path}: damaged (checksum does not match model.json)")
    try:
        config = ExperimentConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{meta_path}: invalid config ({err})") from None
    return TrainedModel(config, joblib.load(pipeline_path), meta)


def make_patient(images: Path | str | Sequence[Path], gender: str, lymph_count: float | str,
                 age: float | None = None, dob: date | None = None, patient_id: str = "patient") -> Patient:
    """A validated unlabelled patient from user input: a folder or a list of image files."""
    if (age is None) == (dob is None):
        raise CohortError("give exactly one of date of birth or age", field="age/dob")
    if dob is not None:
        age = age_at_reference(dob)
    if not 0 <= float(age) <= 120:
        raise CohortError(f"age must be between 0 and 120 years, got {age:.1f}", field="age")
    source = Path(images) if isinstance(images, (str, Path)) else None
    if source is not None and not source.is_dir():
        raise CohortError("image folder not found", source)
    paths = list_images(source) if source is not None else [Path(p) for p in images]
    if not paths:
        raise CohortError("no images (expected .jpg, .jpeg, .png, .bmp or .tif files)", source)
    for path in paths:
        check_image(path)
    return Patient(id=patient_id, split="test", label=UNKNOWN_LABEL, gender=parse_gender(gender),
                   age=float(age), lymph_count=parse_lymph_count(str(lymph_count)),
                   images=tuple(paths), dob=dob)


def score_patient(model: TrainedModel, patient: Patient, cache_dir: Path | None = None) -> dict:
    row = model.predict([patient], cache_dir).iloc[0]
    return {"id": patient.id, "probability": float(row["probability"]),
            "prediction": int(row["prediction"]), "n_images": len(patient.images),
            "model": model.meta["label"]}

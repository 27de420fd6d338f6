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

from lympho.data import (IMAGE_SUFFIXES, UNKNOWN_LABEL, CohortError, Patient, age_at_reference, check_image,
                         list_images, parse_gender, parse_lymph_count)
from lympho.evaluation import cross_validate
from lympho.evaluation import operating_point as _operating_point
from lympho.evaluation import threshold_for_sensitivity as _threshold_for_sensitivity
from lympho.experiment import (ExperimentConfig, StageProgress, cohort_summary, design_matrix,
                               instance_bags, versions, write_json_atomic)
from lympho.models.classifiers import make_pipeline

MODEL_FORMAT = 1
#: Chosen by 20 x repeated 3-fold cross-validation on the real cohort
#: (benchmarks/model_selection.py, figures in the README): the best configuration that
#: needs no downloaded weights.
RECOMMENDED = ExperimentConfig(features="clinical", classifier="xgboost", imbalance="weights")
#: Upper bound accepted for a user-entered lymphocyte count (x 10^9/L); the cohort spans 2-300.
MAX_LYMPH_COUNT = 1000.0


class ModelError(RuntimeError):
    """A model directory that is missing, incomplete or damaged."""


@dataclass
class TrainedModel:
    config: ExperimentConfig
    pipeline: object
    meta: dict

    def predict(self, patients: Sequence[Patient], cache_dir: Path | None = None,
                progress: StageProgress | None = None, threshold: float = 0.5) -> pd.DataFrame:
        """``id, probability, prediction`` per patient, ``prediction`` being
        ``probability >= threshold`` everywhere (CLI, scoring, dashboard); labels are never read."""
        unlabelled = [dataclasses.replace(p, label=UNKNOWN_LABEL) for p in patients]
        bags = instance_bags(unlabelled, self.config, cache_dir, progress)
        X, _ = design_matrix(unlabelled, self.config, bags)
        probability = self.pipeline.predict_proba(X)[:, 1]
        return pd.DataFrame({"id": [p.id for p in unlabelled], "probability": probability,
                             "prediction": (probability >= threshold).astype(int)})

    def _oof(self) -> tuple[np.ndarray, np.ndarray]:
        oof = self.meta.get("oof")
        if not oof:
            reason = self.meta.get("oof_unavailable") or "the model was saved without them"
            raise ModelError(f"this model has no out-of-fold predictions to choose a threshold from "
                             f"({reason})")
        return np.asarray(oof["y_true"], dtype=int), np.asarray(oof["probability"], dtype=float)

    def threshold_for_sensitivity(self, target: float) -> float:
        """The highest threshold whose out-of-fold sensitivity on the training patients
        reaches ``target`` (0 < target <= 1). An estimate from one cross-validation on a
        small cohort: new patients may fall short of it."""
        if not 0 < target <= 1:
            raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
        y_true, probability = self._oof()
        return _threshold_for_sensitivity(y_true, probability, target)

    def operating_point(self, threshold: float) -> dict:
        """Out-of-fold ``threshold, sensitivity, specificity, balanced_accuracy,
        confusion_matrix`` on the training patients when ``probability >= threshold``
        means malignant."""
        y_true, probability = self._oof()
        return _operating_point(y_true, probability, threshold)


def train_model(cohort, config: ExperimentConfig = RECOMMENDED, cache_dir: Path | None = None,
                progress: StageProgress | None = None) -> TrainedModel:
    """Fit ``config``'s pipeline on all labelled patients of ``cohort``.

    Also cross-validates the same pipeline once (``config.folds`` folds, ``config.seed``)
    on the same design matrix and keeps the out-of-fold probabilities in
    ``meta["oof"] = {"y_true": [...], "probability": [...]}``, from which
    :meth:`TrainedModel.threshold_for_sensitivity` picks an operating point. When a class
    has fewer patients than folds, ``meta["oof"]`` is None and ``meta["oof_unavailable"]``
    says why.
    """
    patients = cohort.labelled()
    bags = instance_bags(patients, config, cache_dir, progress)
    X, names = design_matrix(patients, config, bags)
    y = np.array([p.label for p in patients])
    pipeline = make_pipeline(config.classifier, config.imbalance, config.seed).fit(X, y)
    meta = {"format": MODEL_FORMAT, "config": config.to_dict(), "label": config.label(),
            "cohort": cohort_summary(cohort), "n_features": len(names),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    try:
        result = cross_validate(make_pipeline(config.classifier, config.imbalance, config.seed), X, y,
                                [p.id for p in patients], folds=config.folds, repeats=1, seed=config.seed)
    except ValueError as err:  # too few patients of a class for config.folds folds
        meta |= {"oof": None, "oof_unavailable": str(err)}
    else:
        meta["oof"] = {"y_true": [int(v) for v in result.oof["y_true"]],
                       "probability": [float(v) for v in result.oof["probability"]]}
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


def read_model_meta(directory: Path | str) -> tuple[dict, ExperimentConfig]:
    """A model directory's ``model.json`` and config, checked; any problem is a ModelError."""
    directory = Path(directory)
    meta_path = directory / "model.json"
    if not directory.is_dir():
        raise ModelError(f"{directory}: model directory not found (train one with `python -m lympho train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: missing; {directory} is not a lympho model directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{meta_path}: damaged ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{meta_path}: unsupported model format")
    try:
        config = ExperimentConfig.from_dict(meta["config"])
        if not {"label", "created"} <= set(meta) or not {"n_labelled", "synthetic"} <= set(meta["cohort"]):
            raise KeyError("label, created or cohort")
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{meta_path}: damaged ({type(err).__name__}: {err})") from None
    return meta, config


def load_model(directory: Path | str) -> TrainedModel:
    meta, config = read_model_meta(directory)
    pipeline_path = Path(directory) / "pipeline.joblib"
    if not pipeline_path.is_file():
        raise ModelError(f"{pipeline_path}: missing")
    if _sha256(pipeline_path) != meta.get("sha256"):
        raise ModelError(f"{pipeline_path}: damaged (checksum does not match model.json)")
    return TrainedModel(config, joblib.load(pipeline_path), meta)


def _user_number(value, field: str, label: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CohortError(f"non-numeric {label} {value!r}", field=field) from None
    if not np.isfinite(number):
        raise CohortError(f"{label} must be a finite number, got {value!r}", field=field)
    return number


def model_catalog(directory: Path | str) -> tuple[list[tuple[Path, dict]], list[str]]:
    """The model directories under ``directory``, newest first, as ``(path, meta)`` pairs
    read from each ``model.json`` (the pipeline is neither loaded nor checksummed: use
    :func:`load_model` on the one chosen), and one line per damaged one, skipped.
    Hidden folders (a save in progress) and folders without ``model.json`` are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return [], []
    found, damaged = [], []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "model.json").is_file():
            continue
        try:
            found.append((folder, read_model_meta(folder)[0]))
        except ModelError as err:
            damaged.append(str(err))
    found.sort(key=lambda item: str(item[1]["created"]), reverse=True)
    return found, damaged


def make_patient(images: Path | str | Sequence[Path], gender: str, lymph_count: float | str,
                 age: float | None = None, dob: date | None = None, patient_id: str = "patient",
                 require_images: bool = True) -> Patient:
    """A validated unlabelled patient from user input: a folder or a list of image files.

    Refused with a :class:`CohortError`: an age outside 0-120 years, a lymphocyte count
    that is not positive or above ``MAX_LYMPH_COUNT`` (x 10^9/L), an unknown gender, and
    unreadable images, or none when ``require_images`` (a clinical-only model needs none).
    """
    if (age is None) == (dob is None):
        raise CohortError("give exactly one of date of birth or age", field="age/dob")
    age = age_at_reference(dob) if dob is not None else _user_number(age, "age", "age")
    if not 0 <= age <= 120:
        raise CohortError(f"age must be between 0 and 120 years, got {age:.1f}", field="age")
    count = parse_lymph_count(str(lymph_count))
    if count > MAX_LYMPH_COUNT:
        raise CohortError(f"lymphocyte count must be at most {MAX_LYMPH_COUNT:.0f} x10^9/L, got {count:g} "
                          f"(check the unit: x10^9/L, not per microlitre)", field="LYMPH_COUNT")
    gender = parse_gender(str(gender))
    source = Path(images) if isinstance(images, (str, Path)) else None
    if source is not None and not source.is_dir():
        raise CohortError("image folder not found", source)
    paths = list_images(source) if source is not None else [Path(p) for p in images]
    if not paths and require_images:  # a clinical-only model needs none
        raise CohortError(f"no images (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)", source)
    for path in paths:
        check_image(path)
    return Patient(id=patient_id, split="test", label=UNKNOWN_LABEL, gender=gender,
                   age=float(age), lymph_count=count, images=tuple(paths), dob=dob)


def _check_threshold(threshold) -> float:
    value = _user_number(threshold, "threshold", "threshold")
    if not 0 <= value <= 1:
        raise CohortError(f"threshold must be between 0 and 1, got {value:g}", field="threshold")
    return value


def score_patient(model: TrainedModel, patient: Patient, cache_dir: Path | None = None,
                  threshold: float = 0.5) -> dict:
    """The patient's probability of malignancy and the decision ``probability >= threshold``.

    Keys: ``id, probability, prediction, threshold, n_images, model, gender, age,
    lymph_count``. ``prediction`` is 1 (malignant) or 0 (reactive) at ``threshold``, which
    may come from :meth:`TrainedModel.threshold_for_sensitivity`.
    """
    threshold = _check_threshold(threshold)
    row = model.predict([patient], cache_dir, threshold=threshold).iloc[0]
    return {"id": patient.id, "probability": float(row["probability"]), "prediction": int(row["prediction"]),
            "threshold": threshold, "n_images": len(patient.images), "model": model.meta["label"],
            "gender": patient.gender, "age": float(patient.age), "lymph_count": float(patient.lymph_count)}


def instance_scores(model: TrainedModel, patient: Patient, cache_dir: Path | None = None) -> pd.DataFrame | None:
    """How much each cell drives the patient's score: ``path`` (a Path), ``score``, highest first.

    The classifier only ever sees a pooled bag, so a cell has no score of its own. Each
    cell is scored instead as a bag of one: the patient's clinical values plus that cell's
    features, pooled (a single cell pools to itself for mean, max and meanmax) and passed
    through the fitted pipeline; the score is the resulting probability of malignancy,
    in [0, 1]. It answers "what would the model say if every cell looked like this one",
    so the top rows are the cells that push the patient towards malignant and the bottom
    rows those that push towards reactive. With mean pooling and a linear classifier the
    patient's logit is exactly the mean of these cells' logits; otherwise it is a ranking
    aid, not a decomposition, and the clinical values (held fixed) shift every cell alike.

    Returns None for a clinical-only model, which does not use images.
    """
    config = model.config
    if not config.uses_images:
        return None
    if config.pooling not in ("mean", "max", "meanmax"):
        raise ModelError(f"instance scores are not defined for {config.pooling!r} pooling")
    unlabelled = dataclasses.replace(patient, label=UNKNOWN_LABEL)
    bag = instance_bags([unlabelled], config, cache_dir)[0]
    X, _ = design_matrix([unlabelled] * len(bag), config, [row[None, :] for row in bag])
    scores = model.pipeline.predict_proba(X)[:, 1]
    frame = pd.DataFrame({"path": [Path(p) for p in unlabelled.images], "score": scores.astype(float)})
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

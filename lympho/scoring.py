"""Fit a final model on every labelled patient, store it safely, score new patients.

A model directory holds ``model.json`` (config, versions, training cohort, the
checksum of the fitted pipeline) and ``pipeline.skops``, a format that cannot run code
when loaded (:mod:`lympho.model_format`; old ``pipeline.joblib`` pickles load only with
``trust_pickle=True``). It is written into a temporary sibling and swapped in whole,
under a lock beside it, so an interrupted or concurrent save never damages a model that
was already there, and the next save or load repairs what a killed one left behind.
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

from filelock import FileLock
import numpy as np
import pandas as pd

from lympho.data import (IMAGE_SUFFIXES, UNKNOWN_LABEL, CohortError, Patient, age_at, age_warning, check_age,
                         check_image, check_sampling_date, check_sensitivity, check_threshold, list_images,
                         lymph_count_warning, parse_gender, parse_id, parse_lymph_count)
from lympho.encoders.ssl import check_model_weights
from lympho.evaluation import cross_validate, oof_estimates, similar_patients, threshold_from_repeats
from lympho.evaluation import operating_point as _operating_point
from lympho.evaluation import threshold_for_sensitivity as _threshold_for_sensitivity
from lympho.experiment import (OPERATING_RULE, PROMISE_INNER_REPEATS, PROMISE_OUTER_REPEATS, RECOMMENDED_GRID,
                               THRESHOLD_REPEATS, ExperimentConfig, StageProgress, cohort_summary, design_matrix,
                               encoder_record, instance_bags, versions, write_json_atomic)
from lympho.model_format import (LEGACY_PIPELINE_FILE, PIPELINE_FILE, ModelError, load_legacy_pipeline,
                                  load_pipeline, save_pipeline)

#: 2: the pipeline in skops (safe); 1: a joblib pickle, loaded only when trusted.
MODEL_FORMAT = 2
#: Prefix of a late fusion's per-expert probability columns in :meth:`TrainedModel.predict`.
EXPERT_COLUMN = "probability: "


@dataclass
class TrainedModel:
    config: ExperimentConfig
    pipeline: object
    meta: dict

    @property
    def threshold(self) -> float:
        """The model's stored decision threshold (0.5 for a model saved without one)."""
        return float((self.meta.get("operating_point") or {}).get("threshold", 0.5))

    @property
    def zones(self) -> dict | None:
        """The stored triage thresholds ``rule_out``, ``rule_in`` (None for a model saved without them)."""
        zones = (self.meta.get("operating_point") or {}).get("zones")
        return zones if zones and zones.get("rule_out") is not None else None

    def zone(self, probability) -> np.ndarray:
        """Each probability's triage zone (``rule-out``, ``refer``, ``rule-in``; lympho.promise),
        or ``n/a`` for a model saved without zone thresholds."""
        from lympho.promise import zone_of

        zones = self.zones
        if zones is None:
            return np.full(np.shape(probability), "n/a")
        return zone_of(probability, zones["rule_out"], zones["rule_in"])

    def predict(self, patients: Sequence[Patient], cache_dir: Path | None = None,
                progress: StageProgress | None = None, threshold: float | None = None) -> pd.DataFrame:
        """``id, probability, prediction, zone`` per patient, ``prediction`` being
        ``probability >= threshold`` everywhere (CLI, scoring, dashboard), ``zone`` the triage
        zone of the probability (:meth:`zone`); labels are never read.
        ``threshold`` defaults to the model's stored one (:attr:`threshold`). A late fusion adds
        each expert's own probability, in a column ``probability: <expert>`` (e.g.
        ``probability: LogReg clinical``), so that a user sees which evidence drove the call.
        A ``threshold`` outside (0, 1] is refused (a ValueError naming it)."""
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        unlabelled = [dataclasses.replace(p, label=UNKNOWN_LABEL) for p in patients]
        check_model_weights(self.meta.get("encoder"))
        bags = instance_bags(unlabelled, self.config, cache_dir, progress)
        X, _ = design_matrix(unlabelled, self.config, bags)
        if hasattr(self.pipeline, "expert_probabilities"):  # a late fusion: each expert once, then combined
            experts = self.pipeline.expert_probabilities(X)
            probability = self.pipeline.combined(experts)
            by_label = dict(zip(self.config.expert_labels(), experts.values(), strict=True))
        else:
            probability, by_label = self.pipeline.predict_proba(X)[:, 1], {}
        return pd.DataFrame({"id": [p.id for p in unlabelled], "probability": probability,
                             "prediction": (probability >= threshold).astype(int),
                             "zone": self.zone(probability),
                             **{f"{EXPERT_COLUMN}{label}": p for label, p in by_label.items()}})

    def _oof(self) -> pd.DataFrame:
        oof = self.meta.get("oof")
        if not oof:
            reason = self.meta.get("oof_unavailable") or "the model was saved without them"
            raise ModelError(f"this model has no out-of-fold predictions to choose a threshold from "
                             f"({reason})")
        frame = pd.DataFrame(oof)
        if "id" not in frame:  # saved before repeats were kept: one repeat, rows in patient order
            frame = frame.assign(id=np.arange(len(frame)), repeat=1)
        return frame

    def threshold_for_sensitivity(self, target: float) -> float:
        """The threshold for out-of-fold sensitivity ``target`` (0 < target <= 1) on the
        training patients: the median over the stored repeats of each repeat's threshold
        (:func:`lympho.evaluation.threshold_from_repeats`; one repeat in older models)."""
        return self.operating_point_estimate(sensitivity=target)["threshold"]

    def operating_point_estimate(self, threshold: float | None = None, sensitivity: float | None = None) -> dict:
        """What another decision rule reaches on the training patients, out of fold: apparent.

        With ``sensitivity``: the threshold chosen from the stored repeats for that target
        and its leave-one-repeat-out estimate. Otherwise ``threshold`` (default: the
        stored one) and :func:`lympho.evaluation.oof_estimates` at it. Either is measured on
        the patients the threshold was read from (or, for one chosen by a user looking at
        these figures, picked on), so it is labelled apparent wherever it is shown; the
        promise (``meta["operating_point"]["estimate"]``) holds only at the stored threshold.
        Returns ``threshold, target_sensitivity,
        estimate`` (``estimate`` formats with :func:`lympho.evaluation.format_estimate`) and,
        when chosen from repeats, ``per_repeat`` (each repeat's own threshold).
        """
        oof = self._oof()
        if sensitivity is not None:
            sensitivity = check_sensitivity(sensitivity)
            if oof["repeat"].nunique() > 1:
                chosen = threshold_from_repeats(oof, sensitivity)
                return {"threshold": chosen["threshold"], "target_sensitivity": sensitivity,
                        "per_repeat": chosen["per_repeat"], "estimate": chosen["estimate"]}
            threshold = min(_threshold_for_sensitivity(oof["y_true"], oof["probability"], sensitivity), 1.0)
            estimate = oof_estimates(oof, threshold)  # one repeat: read from and scored on the same predictions
            estimate["method"] += "; threshold chosen on these same predictions, so optimistic"
            return {"threshold": threshold, "target_sensitivity": sensitivity, "estimate": estimate}
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        return {"threshold": threshold, "target_sensitivity": None, "estimate": oof_estimates(oof, threshold)}

    def similar_patients(self, probability: float) -> dict | None:
        """:func:`lympho.evaluation.similar_patients` on the stored out-of-fold predictions;
        None for a model saved without them."""
        return similar_patients(self._oof(), probability) if self.meta.get("oof") else None

    def operating_point(self, threshold: float) -> dict:
        """Out-of-fold ``threshold, sensitivity, specificity, balanced_accuracy,
        confusion_matrix`` on the training patients when ``probability >= threshold``
        means malignant (every stored repeat pooled; see :meth:`operating_point_estimate`
        for intervals)."""
        oof = self._oof()
        return _operating_point(oof["y_true"], oof["probability"], threshold)


def train_model(cohort, config: ExperimentConfig | None = None, cache_dir: Path | None = None,
                progress: StageProgress | None = None, rule=None, threshold_repeats: int = THRESHOLD_REPEATS,
                outer_repeats: int = PROMISE_OUTER_REPEATS, inner_repeats: int = PROMISE_INNER_REPEATS,
                n_boot: int | None = None) -> TrainedModel:
    """Run the training procedure on every labelled patient of ``cohort``, and measure its promise.

    The procedure: the candidates are :data:`~lympho.experiment.RECOMMENDED_GRID` when
    ``config`` is None, else ``config`` alone. Each is cross-validated ``threshold_repeats``
    times (``folds`` and ``seed`` of the first candidate); the best at the operating
    ``rule`` (a :class:`lympho.promise.Rule`, default :func:`default_rule`) wins, its
    threshold is the median of its repeats' thresholds (:func:`lympho.promise.final_choice`),
    and it is fitted on every patient. Its out-of-fold probabilities are kept in
    ``meta["oof"]`` (``repeat, fold, id, y_true, probability``).

    The promise, ``meta["operating_point"]["estimate"]``: the nested estimate of that whole
    procedure (``outer_repeats`` x ``folds`` outer, ``inner_repeats`` x ``folds`` inner, at
    most ``threshold_repeats``), with intervals that re-run its choices
    (:func:`lympho.promise.promise`); ``apparent`` beside it is the chosen candidate's own
    leave-one-repeat-out figure, measured on the patients it was chosen on. Also stored:
    the triage zones' thresholds and nested figures (``zones``) and the nested figures per
    clinical subgroup (``meta["subgroups"]``). ``outer_repeats=0`` measures no promise (a
    model fitted only to predict). Where a class has too few patients for the folds, the
    first candidate is fitted at 0.5 (or a fixed rule's value) and ``meta["oof_unavailable"]``
    says why; where the promise could not be measured, ``meta["promise_unavailable"]`` does.
    """
    from sklearn.base import clone

    from lympho.evaluation import subgroup_estimates
    from lympho.promise import PROMISE_BOOTSTRAP, final_choice, fit_nested, promise
    from lympho.selection import config_candidates

    configs = tuple(RECOMMENDED_GRID if config is None else (config,))
    rule = default_rule() if rule is None else rule
    patients = cohort.labelled()
    ids = [p.id for p in patients]
    candidates, y = config_candidates(cohort, configs, cache_dir, progress)
    folds, seed = configs[0].folds, configs[0].seed
    meta = {"format": MODEL_FORMAT, "cohort": cohort_summary(cohort), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": versions(), "procedure": {"candidates": [c.label for c in candidates], "rule": rule.to_dict()}}
    try:
        results = [cross_validate(c.estimator, c.X, y, ids, folds=folds, repeats=threshold_repeats, seed=seed)
                   for c in candidates]
    except ValueError as err:  # too few patients of a class for the folds
        fixed = float(rule.value) if rule.kind == "fixed" else 0.5
        return _described(configs[0], candidates[0], clone(candidates[0].estimator).fit(candidates[0].X, y), meta | {
            "oof": None, "oof_unavailable": str(err),
            "operating_point": {"threshold": fixed, "rule": rule.to_dict(), "target_sensitivity": None,
                                "estimate": None}})
    choice = final_choice(rule, y, [_by_repeat(r.oof, ids) for r in results], folds)
    chosen = candidates[choice["chosen"]]
    oof = results[choice["chosen"]].oof[["repeat", "fold", "id", "y_true", "probability"]]
    meta["procedure"]["chosen"] = chosen.label
    meta["oof"] = {column: oof[column].tolist() for column in oof}  # plain Python values
    on_fit = (lambda done, total: progress("fits", done, total)) if progress else None
    try:
        if outer_repeats < 1:  # a model fitted only to predict (the Runs page's submission)
            raise ValueError("not measured (outer_repeats=0)")
        nested = fit_nested(candidates, y, outer_folds=folds, outer_repeats=outer_repeats, inner_folds=folds,
                            inner_repeats=min(inner_repeats, threshold_repeats), seed=seed, progress=on_fit)
        estimate = promise(nested, rule, n_boot=n_boot or PROMISE_BOOTSTRAP)
        decisions = np.array(estimate.pop("decisions"), dtype=bool)
        estimate.pop("zone_decisions")
        meta["subgroups"] = subgroup_estimates(patients, y, decisions)
    except ValueError as err:  # not asked for, or an outer training part too small for the inner folds
        estimate = None
        meta["promise_unavailable"] = str(err)
    zones = {"rule_out": choice["rule_out"], "rule_in": choice["rule_in"],
             "nested": estimate.pop("zones") if estimate else None}
    meta["operating_point"] = {
        "threshold": choice["threshold"], "rule": rule.to_dict(),
        "target_sensitivity": rule.value if rule.kind == "sensitivity" else None,
        "per_repeat": choice["per_repeat"],
        "threshold_range": {"min": min(choice["per_repeat"]), "max": max(choice["per_repeat"])},
        "estimate": estimate, "apparent": choice["apparent"], "zones": zones}
    return _described(configs[choice["chosen"]], chosen, clone(chosen.estimator).fit(chosen.X, y), meta)


def is_recommended(meta: dict) -> bool:
    """Whether a model came from the recommended procedure (``train`` with no options)."""
    candidates = (meta.get("procedure") or {}).get("candidates") or []
    return len(candidates) == len(RECOMMENDED_GRID) > 1


def default_rule():
    """The operating rule ``train`` uses unless told otherwise (:data:`~lympho.experiment.OPERATING_RULE`)."""
    from lympho.promise import Rule

    return Rule(*OPERATING_RULE)


def _by_repeat(oof: pd.DataFrame, ids: Sequence[str]) -> np.ndarray:
    """Out-of-fold probabilities as repeats x patients, patients in the order of ``ids``."""
    return oof.pivot(index="repeat", columns="id", values="probability")[list(ids)].to_numpy(dtype=float)


def _described(config: ExperimentConfig, candidate, pipeline, meta: dict) -> TrainedModel:
    """The model with what identifies its configuration added to ``meta``."""
    return TrainedModel(config, pipeline, {**meta, "config": config.to_dict(), "label": config.label(),
                                           "n_features": len(candidate.names), "encoder": encoder_record(config)})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lock(directory: Path) -> FileLock:
    """The lock every save (and a load that finds a save half done) takes: beside the model
    directory, so it works for a directory that does not exist yet."""
    return FileLock(directory.with_name(f".{directory.name}.lock"), timeout=120)


def _previous(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.previous")


def _repair(directory: Path) -> None:
    """Under the lock: finish what a killed save left. Its staging folders are deleted; a
    previous model moved aside but not yet replaced is put back."""
    for staging in directory.parent.glob(f".{directory.name}.staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    previous = _previous(directory)
    if previous.is_dir():
        if directory.exists():
            shutil.rmtree(previous)
        else:
            os.replace(previous, directory)


def save_model(model: TrainedModel, directory: Path | str) -> Path:
    """Write the model; an existing directory is replaced only if it is a model directory.
    Concurrent saves to one directory take turns; each leaves a complete model."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _lock(directory):
        _repair(directory)
        if directory.exists() and not (directory / "model.json").is_file():
            if not directory.is_dir() or any(directory.iterdir()):
                raise ModelError(f"{directory}: exists and is not a lympho model directory; not overwriting it")
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.staging-", dir=directory.parent))
        try:
            pipeline = save_pipeline(model.pipeline, staging)
            write_json_atomic(staging / "model.json", {**model.meta, "format": MODEL_FORMAT,
                                                       "pipeline": PIPELINE_FILE, "sha256": _sha256(pipeline)})
            if directory.exists():
                os.replace(directory, _previous(directory))
            os.replace(staging, directory)
            shutil.rmtree(_previous(directory), ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return directory


def read_model_meta(directory: Path | str) -> tuple[dict, ExperimentConfig]:
    """A model directory's ``model.json`` and config, checked; any problem is a ModelError."""
    directory = Path(directory)
    meta_path = directory / "model.json"
    if not directory.is_dir() and _previous(directory).is_dir():  # a save in progress, or killed
        with _lock(directory):
            _repair(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: model directory not found (train one with `python -m lympho train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: missing; {directory} is not a lympho model directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{meta_path}: damaged ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (1, MODEL_FORMAT):
        raise ModelError(f"{meta_path}: unsupported model format")
    try:
        config = ExperimentConfig.from_dict(meta["config"])
        if not {"label", "created"} <= set(meta) or not {"n_labelled", "synthetic"} <= set(meta["cohort"]):
            raise KeyError("label, created or cohort")
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{meta_path}: damaged ({type(err).__name__}: {err})") from None
    return meta, config


def load_model(directory: Path | str, trust_pickle: bool = False) -> TrainedModel:
    """Load a model directory without running anything from it. An old-format model (a
    pickle) is refused unless ``trust_pickle``: only for a model from a trusted source."""
    meta, config = read_model_meta(directory)
    legacy = meta["format"] == 1
    pipeline_path = Path(directory) / (LEGACY_PIPELINE_FILE if legacy else PIPELINE_FILE)
    if not pipeline_path.is_file():
        raise ModelError(f"{pipeline_path}: missing")
    if _sha256(pipeline_path) != meta.get("sha256"):
        raise ModelError(f"{pipeline_path}: damaged (checksum does not match model.json)")
    pipeline = load_legacy_pipeline(pipeline_path, trust_pickle) if legacy else load_pipeline(pipeline_path)
    return TrainedModel(config, pipeline, meta)


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
                 sampling_date: date | None = None, require_images: bool = True) -> Patient:
    """A validated unlabelled patient from user input: a folder or a list of image files.

    The models' age is the age at sampling (the cohort's patients' at
    :data:`~lympho.data.REFERENCE_DATE`, its sampling date). Give ``dob`` (date of birth),
    from which the age on ``sampling_date`` (the day the smear was taken; default today) is
    computed, or ``age``: the age in years at sampling, used as it is.

    Refused with a :class:`CohortError` naming the field: a sampling date in the future, a
    date of birth after it, an age outside 0-120 years, a lymphocyte count that is not a
    finite positive number at most :data:`~lympho.data.MAX_LYMPH_COUNT` (x 10^9/L), an
    unknown gender, an ID that is not a plain name, and unreadable images, or none when
    ``require_images`` (a clinical-only model needs none). Implausible but possible values
    are accepted: see :func:`patient_warnings`.
    """
    if (age is None) == (dob is None):
        raise CohortError("give exactly one of date of birth or age", field="age/dob")
    sampling_date = check_sampling_date(date.today() if sampling_date is None else sampling_date)
    age = check_age(age) if dob is None else age_at(dob, sampling_date)
    count = parse_lymph_count(str(lymph_count))
    gender = parse_gender(str(gender))
    paths = _patient_images(images, require_images)
    return Patient(id=parse_id(patient_id), split="test", label=UNKNOWN_LABEL, gender=gender, age=age,
                   lymph_count=count, images=tuple(paths), dob=dob, sampling_date=sampling_date)


def _patient_images(images: Path | str | Sequence[Path], require_images: bool) -> list[Path]:
    """The image files of a folder, or the given files; every one checked readable."""
    source = Path(images) if isinstance(images, (str, Path)) else None
    if source is not None and not source.is_dir():
        raise CohortError("image folder not found", source)
    paths = list_images(source) if source is not None else [Path(p) for p in images]
    if not paths and require_images:  # a clinical-only model needs none
        raise CohortError(f"no images (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)", source)
    for path in paths:
        check_image(path)
    return paths


def patient_warnings(patient: Patient) -> list[str]:
    """One line naming the field for each implausible but possible value of a scored patient
    (an age above 110, a lymphocyte count above 500 x 10^9/L): the same rules as the loader's."""
    warnings = [age_warning(patient.age, field="age"), lymph_count_warning(patient.lymph_count)]
    return [w for w in warnings if w]


def score_patient(model: TrainedModel, patient: Patient, cache_dir: Path | None = None,
                  threshold: float | None = None) -> dict:
    """The patient's probability of malignancy and the decision ``probability >= threshold``
    (default: the model's stored threshold, :attr:`TrainedModel.threshold`).

    Keys: ``id, probability, prediction, zone, threshold, n_images, model, gender, age,
    sampling_date, lymph_count, experts, combine, similar``; ``zone`` is the triage zone
    (:meth:`TrainedModel.zone`); ``age`` is the model's input,
    the age at sampling, on ``sampling_date`` (ISO text).
    ``prediction`` is 1 (malignant) or 0 (reactive) at ``threshold``, which may come from
    :meth:`TrainedModel.threshold_for_sensitivity`. ``experts``: for a late fusion, each
    expert's own probability, ``[(expert, probability), ...]``, and ``combine`` says how they
    were combined; empty for a single model. ``similar``: how many of the training patients
    scored most like this one were malignant (:meth:`TrainedModel.similar_patients`).
    """
    threshold = model.threshold if threshold is None else check_threshold(threshold)
    row = model.predict([patient], cache_dir, threshold=threshold).iloc[0]
    experts = [(name.removeprefix(EXPERT_COLUMN), float(row[name])) for name in row.index
               if name.startswith(EXPERT_COLUMN)]
    return {"id": patient.id, "probability": float(row["probability"]), "prediction": int(row["prediction"]),
            "zone": str(row["zone"]), "threshold": threshold, "n_images": len(patient.images),
            "model": model.meta["label"],
            "gender": patient.gender, "age": float(patient.age), "sampling_date": patient.sampling_date.isoformat(),
            "lymph_count": float(patient.lymph_count),
            "experts": experts, "combine": model.config.combine_name() if experts else None,
            "similar": model.similar_patients(float(row["probability"]))}


def instance_scores(model: TrainedModel, patient: Patient, cache_dir: Path | None = None) -> pd.DataFrame | None:
    """How much each cell drives the patient's score: ``path`` (a Path), ``score`` and
    ``measure`` (what the score is), highest first.

    Models that weigh cells themselves (attention or top-k MIL, the cell CNN, or a late
    fusion holding one) give their own weights: ``attention weight`` (the share of the
    patient's embedding each cell makes up; sums to 1) or, for top-k, ``cell probability``
    (each cell's own probability of malignancy): "the cells the model weighed most".

    Otherwise the classifier only ever sees a pooled bag, so a cell has no score of its own.
    Each cell is scored instead as a bag of one (``bag-of-one probability``): the patient's
    clinical values plus that cell's features, pooled (a single cell pools to itself for
    mean, max and meanmax) and passed through the fitted pipeline; the score is the
    resulting probability of malignancy, in [0, 1]. It answers "what would the model say if
    every cell looked like this one", so the top rows are the cells that push the patient
    towards malignant and the bottom rows those that push towards reactive. With mean
    pooling and a linear classifier the patient's logit is exactly the mean of these cells'
    logits; otherwise it is a ranking aid, not a decomposition, and the clinical values
    (held fixed) shift every cell alike.

    Returns None for a clinical-only model, which does not use images.
    """
    from lympho.models.fusion import instance_weights

    config = model.config
    if not config.uses_images:
        return None
    unlabelled = dataclasses.replace(patient, label=UNKNOWN_LABEL)
    check_model_weights(model.meta.get("encoder"))
    bags = instance_bags([unlabelled], config, cache_dir)
    paths = [Path(p) for p in unlabelled.images]
    if config.uses_records:
        X, _ = design_matrix([unlabelled], config, bags)
        weights = instance_weights(model.pipeline, X)
        if weights is not None:
            learned = next(e for e in config.image_experts if e != "pooled")
            measure = "cell probability" if learned == "topk" else "attention weight"
            return _ranked(paths, weights[0], measure)
    if config.pooling not in ("mean", "max", "meanmax"):
        raise ModelError(f"instance scores are not defined for {config.pooling!r} pooling")
    bag = bags[0]
    X, _ = design_matrix([unlabelled] * len(bag), config, [row[None, :] for row in bag])
    return _ranked(paths, model.pipeline.predict_proba(X)[:, 1], "bag-of-one probability")


def _ranked(paths: list[Path], scores, measure: str) -> pd.DataFrame:
    frame = pd.DataFrame({"path": paths, "score": np.asarray(scores, dtype=float), "measure": measure})
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

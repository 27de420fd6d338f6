"""An experiment: a hashable configuration, running it, and the store of past runs.

Data flows one way: cohort -> instance features (cached) -> pooled bag features
(+ clinical) -> classifier inside cross-validation -> metrics -> stored run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

# Light imports only (the CLI's `--help` loads this module): the feature extractor (torch),
# the classifiers and the cross-validation (scikit-learn, xgboost) are imported where used.
from lympho.data import (SETTING_BOUNDS, Cohort, Patient, categorical_columns, check_setting, clinical_matrix,
                         clinical_names, write_text_atomic)
from lympho.encoders import ENCODERS, PRECISIONS, WEIGHTS, uses_torchvision_options
from lympho.models import CLASSIFIERS, COMBINE_NAMES, COMBINES, FUSIONS, IMAGE_CLASSIFIERS, IMAGE_MODELS, IMBALANCE
from lympho.pooling import POOLING_NAMES, pool_bags, pooled_names

if TYPE_CHECKING:
    import pandas as pd

FEATURE_SETS = ("clinical", "images", "both")
CLASSIFIER_NAMES = {"svm": "SVM", "mlp": "MLP", "xgboost": "XGBoost", "logreg": "LogReg", "logregcv": "LogRegCV"}

#: (stage, done, total): stage is "extract" or "folds".
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines a result; equal configs give identical numbers."""

    features: str = "both"
    encoder: str = "resnet18"
    weights: str = "imagenet"
    pooling: str = "mean"
    classifier: str = "mlp"
    imbalance: str = "weights"
    folds: int = 3
    repeats: int = 1
    seed: int = 0
    log_count: bool = True
    precision: str = "auto"
    crop: int | None = None
    #: the image expert(s): "pooled", "attention", "topk", "cellcnn", or several joined by "+"
    image_model: str = "pooled"
    #: clinical + images: "early" (one table, one classifier) or "late" (experts, combined)
    fusion: str = "early"
    #: how late fusion combines the experts' probabilities: "mean", "logit" (mean log-odds) or "stacked"
    combine: str = "mean"
    #: the pooled image expert's classifier in late fusion (None: ``classifier``)
    image_classifier: str | None = None
    #: late fusion by a mean: the clinical expert's share, the image experts sharing the rest
    #: equally (None: every expert the same); cleared where it does not apply (``clinical_weight_applies``)
    clinical_weight: float | None = None

    def __post_init__(self):
        choices = {"features": FEATURE_SETS, "encoder": tuple(ENCODERS), "weights": WEIGHTS,
                   "pooling": POOLING_NAMES, "classifier": CLASSIFIERS,
                   "imbalance": IMBALANCE, "precision": PRECISIONS, "fusion": FUSIONS, "combine": COMBINES,
                   "image_classifier": (None, *IMAGE_CLASSIFIERS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(map(str, allowed))}")
        for name in SETTING_BOUNDS:  # folds, repeats, seed
            check_setting(name, getattr(self, name))
        experts = self.image_experts
        if any(e not in IMAGE_MODELS for e in experts) or len(set(experts)) != len(experts):
            raise ValueError(f"image_model: {self.image_model!r} is not one or more of {', '.join(IMAGE_MODELS)} "
                             f"joined by '+'")
        if self.features == "both" and self.fusion == "early" and experts != ("pooled",):
            raise ValueError(f"image_model {self.image_model!r} needs fusion='late': early fusion concatenates "
                             f"pooled image features with the clinical ones")
        self._normalise_clinical_weight()

    def _normalise_clinical_weight(self) -> None:
        """Range-check ``clinical_weight``; clear it where it changes nothing (no late mean with
        a clinical expert, or the equal share), so that one model has one config and one key,
        and a config derived with ``dataclasses.replace`` (an ablation's clinical row) stays valid."""
        weight = self.clinical_weight
        if weight is None:
            return
        if not 0 < weight < 1:
            raise ValueError(f"clinical_weight must be between 0 and 1 (exclusive), got {weight!r}")
        equal = math.isclose(weight, 1 / (1 + len(self.image_experts)))
        applies = self.clinical_weight_applies and not equal
        object.__setattr__(self, "clinical_weight", float(weight) if applies else None)

    @property
    def clinical_weight_applies(self) -> bool:
        """Whether ``clinical_weight`` can apply: late fusion of clinical and images, by a mean."""
        return self.features == "both" and self.fusion == "late" and self.combine in ("mean", "logit")

    @property
    def expert_weights(self) -> tuple[float, ...] | None:
        """Late fusion's weight per expert, clinical first (None: equal)."""
        if self.clinical_weight is None:
            return None
        share = (1 - self.clinical_weight) / len(self.image_experts)
        return (self.clinical_weight, *(share for _ in self.image_experts))

    @property
    def image_experts(self) -> tuple[str, ...]:
        return tuple(self.image_model.split("+"))

    @property
    def uses_records(self) -> bool:
        """Whether the model reads patient records (experts, bags, images) rather than one
        table: late fusion, learned pooling, the cell CNN, or an image expert alone with its
        own ``image_classifier``."""
        return self.uses_images and (self.image_experts != ("pooled",) or
                                     (self.features == "both" and self.fusion == "late") or
                                     (self.features == "images" and self.image_classifier is not None))

    @property
    def uses_encoder(self) -> bool:
        """Whether instance features are extracted (every image expert but the cell CNN)."""
        return self.uses_images and any(e != "cellcnn" for e in self.image_experts)

    @property
    def backbone(self) -> str:
        """Read-only alias of ``encoder`` (the field's name before 2026-11)."""
        return self.encoder

    @property
    def uses_images(self) -> bool:
        return self.features != "clinical"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ExperimentConfig":
        """Inverse of :meth:`to_dict`; ``backbone`` (the field's name before 2026-11) is
        read as ``encoder``."""
        if "backbone" in values and "encoder" not in values:
            values = {("encoder" if k == "backbone" else k): v for k, v in values.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        """A short human name, e.g. ``MLP, clinical + resnet18/mean`` or, late fusion,
        ``late mean: XGBoost clinical | LogReg morphology/moments | cell CNN``."""
        if not self.uses_records:
            images = self._images_name()
            parts = {"clinical": "clinical", "images": images, "both": f"clinical + {images}"}
            return f"{CLASSIFIER_NAMES[self.classifier]}, {parts[self.features]}"
        experts = self.expert_labels()
        combine = {"logit": "log-odds mean"}.get(self.combine, self.combine) + self._clinical_weight_note()
        return experts[0] if len(experts) == 1 else f"late {combine}: " + " | ".join(experts)

    def combine_name(self) -> str:
        """How late fusion combines its experts, in words, e.g. ``mean of log-odds, clinical
        weight 0.65``."""
        return COMBINE_NAMES[self.combine] + self._clinical_weight_note()

    def _clinical_weight_note(self) -> str:
        return "" if self.clinical_weight is None else f", clinical weight {self.clinical_weight:g}"

    def expert_labels(self) -> list[str]:
        """The name of each expert of a late fusion, in its order: the clinical expert (features
        "both"), then one per image model, e.g. ``LogRegCV morphology/meanmax``."""
        weights = self._weights_note()
        names = {"pooled": f"{CLASSIFIER_NAMES[self.image_classifier or self.classifier]} {self._images_name()}",
                 "attention": f"attention-MIL {self.encoder}{weights}", "topk": f"top-k MIL {self.encoder}{weights}",
                 "cellcnn": "cell CNN"}
        return ([f"{CLASSIFIER_NAMES[self.classifier]} clinical"] if self.features == "both" else []) + \
            [names[e] for e in self.image_experts]

    def _images_name(self) -> str:
        return f"{self.encoder}/{self.pooling}{self._weights_note()}"

    def _weights_note(self) -> str:
        return " (none)" if uses_torchvision_options(self.encoder) and self.weights != "imagenet" else ""


#: The late fusion of a clinical expert (class-weighted logistic regression on age, gender and
#: log lymphocyte count) and the morphology image expert (cell shape and colour statistics,
#: mean- and max-pooled per patient, L2 logistic regression with its strength chosen by inner
#: CV), their log-odds averaged with equal weights: averaging log-odds lets a sure call stand
#: against an unsure one. Every choice in it was made by scans on the same 110 patients
#: (docs/evaluation.md lists them as spent), so it is not trusted by itself: ``train`` with no options runs
#: the recommended *procedure* instead, which chooses between :data:`RECOMMENDED_GRID`'s
#: candidates inside every training set, and its promise is the nested estimate of that choice
#: (lympho.promise). On patients outside the 110, adding the morphology expert raised balanced
#: accuracy by about 0.09 while clinical-only models overfit, so every candidate keeps it.
RECOMMENDED = ExperimentConfig(features="both", encoder="morphology", pooling="meanmax", classifier="logreg",
                               imbalance="weights", fusion="late", combine="logit", image_model="pooled",
                               image_classifier="logregcv")
#: The candidates the recommended procedure chooses between: the recommended late fusion with the
#: cells mean+max pooled or mean pooled (the simplest first: ties go to it).
RECOMMENDED_GRID = (dataclasses.replace(RECOMMENDED, pooling="mean"), RECOMMENDED)
#: The sensitivity of a run's apparent operating-point view (``summary["operating_point"]``,
#: where ``train --sensitivity 0.95`` would decide); not the default rule (:data:`OPERATING_RULE`).
TARGET_SENSITIVITY = 0.95
#: The operating rule ``train`` stores unless told otherwise (lympho.promise.Rule's kind and value):
#: the class-weighted models' own midpoint, read from no patient. Chosen by the covariate-shift
#: stress test (benchmarks/covariate_shift.py, docs/evaluation.md): thresholds read from the tail
#: of the training patients' scores (95 % or 90 % sensitivity) or at their best balanced accuracy
#: collapsed when the test patients were older than the trained ones (specificity 0.00, 0.29
#: and 0.43 against 0.57 at 0.5), and 0.5 lost the least balanced accuracy under shift on average.
#: The triage zones' rule-out threshold serves the screening need for sensitivity.
OPERATING_RULE = ("fixed", 0.5)
#: The nested design of a trained model's promise: outer and inner cross-validation repeats.
PROMISE_OUTER_REPEATS = 3
PROMISE_INNER_REPEATS = 5
#: Cross-validation repeats from which a trained model's threshold is chosen.
THRESHOLD_REPEATS = 10


def make_extractor(config: ExperimentConfig, cache_dir: Path | None, engine=None, rehash: bool = False,
                   device: str = "auto"):
    """The cached feature extractor for ``config``'s images; ``engine``: where missing
    features are computed (None: this process; a :class:`lympho.distributed.RayEngine`)."""
    from lympho.encoders.preprocessing import Preprocessing
    from lympho.features import FeatureExtractor

    return FeatureExtractor(config.encoder, config.weights, precision=config.precision, device=device,
                            preprocessing=Preprocessing(crop=config.crop), cache_dir=cache_dir,
                            engine=engine, rehash=rehash)


def design_matrix(patients: Sequence[Patient], config: ExperimentConfig,
                  bags: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, list[str]]:
    """Patient-level features for ``config``; ``bags`` are the instance features, if used.

    A table (n_patients, columns) and its column names, or, when ``config.uses_records``,
    patient records (:func:`lympho.models.fusion.records`) and the names of their parts."""
    if config.uses_records:
        from lympho.models.fusion import records

        clinical = clinical_matrix(patients, config.log_count)
        names = clinical_names(config.log_count) + ([f"bag:{config.encoder}"] if bags is not None else []) + \
            (["images"] if "cellcnn" in config.image_experts else [])
        return records(clinical, bags, [p.images for p in patients]), names
    blocks, names = [], []
    if config.features in ("clinical", "both"):
        blocks.append(clinical_matrix(patients, config.log_count))
        names += clinical_names(config.log_count)
    if config.uses_images:
        pooled = pool_bags(bags, config.pooling)
        blocks.append(pooled)
        names += pooled_names(make_extractor(config, None).encoder.feature_names, config.pooling)
    return np.hstack(blocks), names


def config_pipeline(config: ExperimentConfig, names: Sequence[str]):
    """``config``'s unfitted pipeline for a design matrix with columns ``names`` (SMOTE-NC
    keeps its categorical columns categorical), or its expert model over patient records."""
    from lympho.models.classifiers import make_pipeline

    if config.uses_records:
        return record_model(config)
    return make_pipeline(config.classifier, config.imbalance, config.seed, categorical_columns(list(names)))


def record_model(config: ExperimentConfig):
    """The experts of ``config`` over patient records: the clinical expert (features
    "both"), one per image model; one expert alone, or their :class:`LateFusion`."""
    from imblearn.pipeline import Pipeline

    from lympho.models.census import view_steps
    from lympho.models.classifiers import make_pipeline
    from lympho.models.fusion import LateFusion

    def tabular(part: str, classifier: str, names: Sequence[str]):
        inner = _logregcv(config) if classifier == "logregcv" else \
            make_pipeline(classifier, config.imbalance, config.seed, categorical_columns(list(names)))
        return Pipeline([*view_steps(part, config.pooling, config.seed), *inner.steps])

    experts = [("clinical", tabular("clinical", config.classifier, clinical_names(config.log_count)))] \
        if config.features == "both" else []
    for name in config.image_experts:
        experts.append((name, tabular("pooled", config.image_classifier or config.classifier, [])
                        if name == "pooled" else _learned_expert(name, config)))
    if len(experts) == 1:
        return experts[0][1]
    return LateFusion(experts, combine=config.combine, weights=config.expert_weights, random_state=config.seed)


def _logregcv(config: ExperimentConfig):
    """Scaler and a logistic regression whose L2 strength (C from 1e-3 to 10) is chosen by
    inner 3-fold CV on the training patients, by log loss; class-weighted unless imbalance is
    "none" (SMOTE is not used for it)."""
    from imblearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegressionCV(Cs=list(np.logspace(-3, 1, 9)), l1_ratios=(0.0,), cv=3, scoring="neg_log_loss",
                                 use_legacy_attributes=False, max_iter=5000,
                                 class_weight=None if config.imbalance == "none" else "balanced")
    return Pipeline([("scale", StandardScaler()), ("clf", model)])


def _learned_expert(name: str, config: ExperimentConfig):
    """An attention / top-k MIL expert over instance features, or the cell CNN over pixels."""
    from imblearn.pipeline import Pipeline

    from lympho.models.fusion import PatientView

    class_weight = None if config.imbalance == "none" else "balanced"  # SMOTE has no bags: weights instead
    if name == "cellcnn":
        from lympho.models.cellcnn import CellCNNClassifier

        return Pipeline([("view", PatientView("images")),
                         ("clf", CellCNNClassifier(class_weight=class_weight, precision=config.precision,
                                                   random_state=config.seed))])
    from lympho.models.mil import AttentionMILClassifier, TopKMILClassifier

    model = (AttentionMILClassifier if name == "attention" else TopKMILClassifier)(
        class_weight=class_weight, random_state=config.seed)
    return Pipeline([("view", PatientView("bags")), ("clf", model)])


def instance_bags(patients: Sequence[Patient], config: ExperimentConfig, cache_dir: Path | None,
                  progress: StageProgress | None = None, engine=None) -> list[np.ndarray] | None:
    if not config.uses_encoder:
        return None
    on_extract = (lambda done, total: progress("extract", done, total)) if progress else None
    return make_extractor(config, cache_dir, engine).bags(patients, on_extract)


def encoder_record(config: ExperimentConfig) -> dict | None:
    """What produced the instance features: the encoder's name, code version and resolved
    parameters (device type, precision, weights, seed, library versions); None when the
    config uses no instance features. Stored in every run record and model; with the cell
    CNN, ``cell_cnn`` holds the device and precision it trains on."""
    if not config.uses_images:
        return None
    record = make_extractor(config, None).describe() if config.uses_encoder else {"name": None}
    if "cellcnn" in config.image_experts:
        from lympho.encoders.torchvision import resolve_device, resolve_precision

        device = resolve_device("auto")
        record["cell_cnn"] = {"device": device.type, "precision": resolve_precision(config.precision, device),
                              "torch": versions()["torch"]}
    return record


def cohort_summary(cohort: Cohort) -> dict:
    return {"name": cohort.name, "root": str(cohort.root), "synthetic": cohort.synthetic,
            "n_labelled": len(cohort.labelled())}


def run_experiment(cohort: Cohort, config: ExperimentConfig, cache_dir: Path | None = None,
                   progress: StageProgress | None = None,
                   bags: Sequence[np.ndarray] | None = None) -> dict:
    """Cross-validate ``config`` on the labelled patients; a JSON-ready run record."""
    from lympho.evaluation import cross_validate

    patients = cohort.labelled()
    if bags is None:
        bags = instance_bags(patients, config, cache_dir, progress)
    estimator, X, y, ids, options = cv_job(patients, config, bags)
    on_fold = (lambda done, total: progress("folds", done, total)) if progress else None
    return run_record(cohort, config, cross_validate(estimator, X, y, ids, **options, progress=on_fold))


def cv_job(patients: Sequence[Patient], config: ExperimentConfig, bags: Sequence[np.ndarray] | None) -> tuple:
    """What ``config``'s cross-validation needs: ``(estimator, X, y, ids, keywords)``; run
    here by :func:`run_experiment`, or as Ray tasks by an ablation on the Ray engine."""
    X, names = design_matrix(patients, config, bags)
    y = np.array([p.label for p in patients])
    return (config_pipeline(config, names), X, y, [p.id for p in patients],
            {"folds": config.folds, "repeats": config.repeats, "seed": config.seed})


def run_record(cohort: Cohort, config: ExperimentConfig, result) -> dict:
    """The JSON-ready record of ``config``'s cross-validation ``result`` (a CVResult). With 2
    or more repeats, ``summary["operating_point"]`` is where ``train --sensitivity 0.95`` would
    decide: the threshold for :data:`TARGET_SENSITIVITY` chosen from the repeats and its
    leave-one-repeat-out estimate, apparent since the threshold is read from the same patients
    (:func:`lympho.evaluation.threshold_from_repeats`). ``summary["subgroups"]``: the
    out-of-fold figures per clinical subgroup at the run's threshold
    (:func:`lympho.evaluation.oof_subgroups`)."""
    from lympho.evaluation import oof_subgroups, threshold_from_repeats

    summary = result.summary()
    if summary["n_repeats"] > 1:
        summary["operating_point"] = threshold_from_repeats(result.oof, TARGET_SENSITIVITY)
    summary["subgroups"] = oof_subgroups(result.oof, cohort.labelled(), summary["threshold"])
    return {
        "config": config.to_dict(), "key": config.key(), "label": config.label(),
        "cohort": cohort_summary(cohort), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "folds": result.folds, "summary": summary,
        "oof": result.oof.to_dict(orient="list"), "versions": versions(),
        "encoder": encoder_record(config),
    }


#: The report's Table 2: (features, classifier) per row, in its order.
TABLE2_ROWS = (("clinical", "svm"), ("both", "svm"), ("images", "svm"), ("both", "mlp"), ("images", "mlp"))


def fusion_configs(base: ExperimentConfig) -> list[ExperimentConfig]:
    """Clinical alone, each image expert of ``base`` alone, then their fusion: early (when
    the image expert is the pooled one) and late (``base.combine``): an ablation that shows
    what each part and each way of fusing adds."""
    clinical = dataclasses.replace(base, features="clinical", image_model="pooled", fusion="early")
    alone = [dataclasses.replace(base, features="images", image_model=e, fusion="early")  # its own image_classifier
             for e in base.image_experts]
    fused = [dataclasses.replace(base, features="both", fusion="late")]
    if "pooled" in base.image_experts:
        fused.insert(0, dataclasses.replace(base, features="both", fusion="early", image_model="pooled"))
    return [clinical, *alone, *fused]


def run_ablation(cohort: Cohort, base: ExperimentConfig,
                 rows: Sequence[tuple[str, str]] = TABLE2_ROWS, cache_dir: Path | None = None,
                 progress: StageProgress | None = None, engine=None,
                 configs: Sequence[ExperimentConfig] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Run each (features, classifier) row of ``base`` (or the given ``configs``, e.g.
    :func:`fusion_configs`) on shared cached features; one table row per fold.

    With ``engine`` (a :class:`lympho.distributed.RayEngine`) the features are extracted on
    the cluster and the grid runs as one task per configuration x repeat; same results.
    """
    configs = list(configs) if configs is not None else \
        [dataclasses.replace(base, features=f, classifier=c) for f, c in rows]
    image_config = next((c for c in configs if c.uses_encoder), None)
    patients = cohort.labelled()
    bags = instance_bags(patients, image_config, cache_dir, progress, engine) if image_config else None
    if engine is None:
        runs = [run_experiment(cohort, config, cache_dir, progress, bags) for config in configs]
    else:
        results = engine.cross_validate_grid([cv_job(patients, c, bags) for c in configs], progress)
        runs = [run_record(cohort, config, result) for config, result in zip(configs, results)]
    return ablation_table(runs), runs


def ablation_table(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per configuration and fold: the configuration's fields (``config.<field>``, so
    that the config field ``precision`` and the metric ``precision`` are two columns), then
    the metrics."""
    import pandas as pd

    from lympho.evaluation import METRICS

    return pd.DataFrame([{"configuration": run["label"], **{f"config.{k}": v for k, v in run["config"].items()},
                          "repeat": fold["repeat"],
                          "fold": fold["fold"], **{m: fold[m] for m in METRICS}}
                         for run in runs for fold in run["folds"]])


TABLE2_METRICS = ("balanced_accuracy", "f1", "recall")


def table2_layout(table: pd.DataFrame) -> pd.DataFrame:
    """The report's Table 2: a row per configuration, each metric per fold (``repeat.fold``
    when repeated)."""
    repeated = table["repeat"].max() > 1
    split = table["repeat"].astype(str) + "." + table["fold"].astype(str) if repeated else table["fold"].astype(str)
    wide = table.assign(split=split).pivot_table(index=["configuration", "config.imbalance"], columns="split",
                                                 values=list(TABLE2_METRICS), sort=False)
    return wide[list(TABLE2_METRICS)]


def versions() -> dict:
    from importlib.metadata import version

    packages = ("torch", "torchvision", "scikit-learn", "imbalanced-learn", "xgboost", "numpy")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def write_json_atomic(path: Path, payload) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

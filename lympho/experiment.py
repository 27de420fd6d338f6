"""An experiment: a hashable configuration, running it, and the store of past runs.

Data flows one way: cohort -> instance features (cached) -> pooled bag features
(+ clinical) -> classifier inside cross-validation -> metrics -> stored run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

# Light imports only (the CLI's `--help` loads this module): the feature extractor (torch),
# the classifiers and the cross-validation (scikit-learn, xgboost) are imported where used.
from lympho.data import (Cohort, Patient, categorical_columns, clinical_matrix, clinical_names,
                         write_text_atomic)
from lympho.encoders import ENCODERS, PRECISIONS, WEIGHTS, uses_torchvision_options
from lympho.models import CLASSIFIERS, IMBALANCE
from lympho.pooling import POOLINGS, pool_bags, pooled_names

if TYPE_CHECKING:
    import pandas as pd

FEATURE_SETS = ("clinical", "images", "both")
CLASSIFIER_NAMES = {"svm": "SVM", "mlp": "MLP", "xgboost": "XGBoost", "logreg": "LogReg"}

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

    def __post_init__(self):
        choices = {"features": FEATURE_SETS, "encoder": tuple(ENCODERS), "weights": WEIGHTS,
                   "pooling": tuple(POOLINGS), "classifier": CLASSIFIERS,
                   "imbalance": IMBALANCE, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.folds < 2 or self.repeats < 1:
            raise ValueError(f"folds must be >= 2 and repeats >= 1, got {self.folds} and {self.repeats}")

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
        """A short human name, e.g. ``MLP, clinical + resnet18/mean``."""
        images = f"{self.encoder}/{self.pooling}"
        if uses_torchvision_options(self.encoder) and self.weights != "imagenet":
            images += f" ({self.weights})"
        parts = {"clinical": "clinical", "images": images, "both": f"clinical + {images}"}
        return f"{CLASSIFIER_NAMES[self.classifier]}, {parts[self.features]}"


#: Chosen by 20 x repeated 3-fold cross-validation on the real cohort
#: (benchmarks/model_selection.py, figures in the README): the best configuration that
#: needs no downloaded weights.
RECOMMENDED = ExperimentConfig(features="clinical", classifier="xgboost", imbalance="weights")
#: The default operating point of a trained model: a screening tool must catch malignancy.
TARGET_SENSITIVITY = 0.95
#: Cross-validation repeats from which a trained model's threshold is chosen.
THRESHOLD_REPEATS = 10


def make_extractor(config: ExperimentConfig, cache_dir: Path | None, engine=None, rehash: bool = False,
                   device: str = "auto"):
    """The cached feature extractor for ``config``'s images; ``engine``: where missing
    features are computed (None: this process; a :class:`lympho.distributed.RayEngine`)."""
    from lympho.features import FeatureExtractor, Preprocessing

    return FeatureExtractor(config.encoder, config.weights, precision=config.precision, device=device,
                            preprocessing=Preprocessing(crop=config.crop), cache_dir=cache_dir,
                            engine=engine, rehash=rehash)


def design_matrix(patients: Sequence[Patient], config: ExperimentConfig,
                  bags: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, list[str]]:
    """Patient-level features for ``config``; ``bags`` are the instance features, if used."""
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
    keeps its categorical columns categorical)."""
    from lympho.models.classifiers import make_pipeline

    return make_pipeline(config.classifier, config.imbalance, config.seed, categorical_columns(list(names)))


def instance_bags(patients: Sequence[Patient], config: ExperimentConfig, cache_dir: Path | None,
                  progress: StageProgress | None = None, engine=None) -> list[np.ndarray] | None:
    if not config.uses_images:
        return None
    on_extract = (lambda done, total: progress("extract", done, total)) if progress else None
    return make_extractor(config, cache_dir, engine).bags(patients, on_extract)


def encoder_record(config: ExperimentConfig) -> dict | None:
    """What produced the instance features: the encoder's name, code version and resolved
    parameters (device type, precision, weights, seed, library versions); None when the
    config uses no images. Stored in every run record and model."""
    return make_extractor(config, None).describe() if config.uses_images else None


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
    """The JSON-ready record of ``config``'s cross-validation ``result`` (a CVResult)."""
    return {
        "config": config.to_dict(), "key": config.key(), "label": config.label(),
        "cohort": cohort_summary(cohort), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "folds": result.folds, "summary": result.summary(),
        "oof": result.oof.to_dict(orient="list"), "versions": versions(),
        "encoder": encoder_record(config),
    }


#: The report's Table 2: (features, classifier) per row, in its order.
TABLE2_ROWS = (("clinical", "svm"), ("both", "svm"), ("images", "svm"), ("both", "mlp"), ("images", "mlp"))


def run_ablation(cohort: Cohort, base: ExperimentConfig,
                 rows: Sequence[tuple[str, str]] = TABLE2_ROWS, cache_dir: Path | None = None,
                 progress: StageProgress | None = None, engine=None) -> tuple[pd.DataFrame, list[dict]]:
    """Run each (features, classifier) row on shared cached features; one table row per fold.

    With ``engine`` (a :class:`lympho.distributed.RayEngine`) the features are extracted on
    the cluster and the grid runs as one task per configuration x repeat; same results.
    """
    configs = [dataclasses.replace(base, features=f, classifier=c) for f, c in rows]
    image_config = next((c for c in configs if c.uses_images), None)
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

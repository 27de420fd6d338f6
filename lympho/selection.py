"""Nested cross-validation of model selection: how good is "the best of the grid", honestly?

Choosing the configuration with the best cross-validated score among many candidates,
then quoting that score, is optimistic: the winner is partly the candidate that got
lucky on those splits. :func:`nested_cv` measures the whole procedure instead. Outer
repeated stratified folds split the patients; inside each outer training fold the
candidate grid is scored by inner repeated cross-validation on the training patients
only, the inner winner is refitted on the whole outer training fold and predicts the
outer test patients. Those predictions give the nested estimate. The naive estimate
(the best candidate's score on the same outer splits, chosen on them) is reported
beside it, and candidates are compared by paired differences over the same splits.

Everything is decided by ``probability >= threshold`` (the project's one rule). Design
matrices are built once per candidate (:func:`config_candidates`); estimators are
cloned for every fit. A candidate is any scikit-learn-style classifier with
``predict_proba`` plus its rows per patient, so image experts and fusion models can
join the grid (:class:`Candidate`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats
from lympho.evaluation import (COUNT_METRICS, count_metrics, decision_estimates, held_out_thresholds,
                               repeat_thresholds, stored_threshold)
from lympho.promise import fit_nested

#: Progress callback: (fits done, fits in total).
Progress = Callable[[int, int], None]
NESTED_METHOD = "bootstrap over patients of the nested out-of-fold predictions"
NAIVE_METHOD = "bootstrap over patients of the best candidate's out-of-fold predictions"


@dataclass
class Candidate:
    """One entry of the grid: a name, an unfitted estimator, and its input rows.

    ``X`` has one row per patient, in the order of ``y`` given to :func:`nested_cv`,
    and is indexed by integer arrays (a 2-D array; an object array of bags works too).
    ``estimator`` is cloned before every fit. ``names``: the design matrix's column names,
    where there is one.
    """

    label: str
    estimator: object
    X: object
    names: Sequence[str] = ()


def clinical_grid() -> list:
    """Every classifier x imbalance handling on the clinical features (12 candidates)."""
    from lympho.experiment import ExperimentConfig
    from lympho.models.classifiers import CLASSIFIERS, IMBALANCE

    return [ExperimentConfig(features="clinical", classifier=c, imbalance=i) for c in CLASSIFIERS for i in IMBALANCE]


def images_grid() -> list:
    """The clinical grid plus the random-initialisation ResNet18 features (mean and mean+max
    pooled, alone and with clinical data) for every classifier, class-weighted: the 28
    candidates of ``benchmarks/model_selection.py`` (a scan spent on the real cohort)."""
    from lympho.experiment import ExperimentConfig
    from lympho.models.classifiers import CLASSIFIERS

    return clinical_grid() + [ExperimentConfig(features=f, weights="none", pooling=p, classifier=c, imbalance="weights")
                              for f in ("images", "both") for p in ("mean", "meanmax") for c in CLASSIFIERS]


def fusion_grid() -> list:
    """The sixteen candidates of the fusion scan on the real cohort (spent: docs/evaluation.md):
    clinical XGBoost and LogReg alone, and late fusions of a clinical expert (XGBoost, LogReg,
    MLP) with the LogRegCV expert on pooled morphology (mean, mean+max, moments), combined by
    the mean of probabilities, the mean of log-odds (the clinical expert weighted equally, or
    0.6, 0.65 or 0.7 of it) or stacking; all class-weighted, none needing downloaded weights."""
    from lympho.experiment import ExperimentConfig

    late = ExperimentConfig(features="both", encoder="morphology", pooling="mean", classifier="xgboost",
                            imbalance="weights", fusion="late", combine="mean", image_model="pooled",
                            image_classifier="logregcv")
    return [
        dataclasses.replace(late, features="clinical", fusion="early"),
        dataclasses.replace(late, features="clinical", fusion="early", classifier="logreg"),
        late,
        dataclasses.replace(late, combine="stacked"),
        dataclasses.replace(late, classifier="logreg"),
        dataclasses.replace(late, classifier="logreg", pooling="meanmax"),
        dataclasses.replace(late, classifier="logreg", pooling="moments"),
        dataclasses.replace(late, classifier="logreg", combine="stacked"),
        dataclasses.replace(late, classifier="mlp"),
        *(dataclasses.replace(late, classifier="logreg", pooling=pooling, combine="logit")
          for pooling in ("mean", "meanmax", "moments")),
        *(dataclasses.replace(late, classifier="logreg", pooling="meanmax", combine="logit", clinical_weight=weight)
          for weight in (0.6, 0.65, 0.7)),
        dataclasses.replace(late, classifier="logreg", pooling="moments", combine="logit", clinical_weight=0.6),
    ]


def cells_grid() -> list:
    """The image expert's encoder and pooling (issue: the self-supervised cell encoder): the late
    fusion of the clinical LogReg expert and the LogRegCV image expert (log-odds mean, equal
    weights, class-weighted) on morphology or ssl features (``python -m lympho pretrain``),
    pooled by mean, mean+max or the cell census with k = 16, 32 or 64 (fitted inside each
    training fold): 10 candidates."""
    from lympho.experiment import ExperimentConfig

    late = ExperimentConfig(features="both", encoder="morphology", classifier="logreg", imbalance="weights",
                            fusion="late", combine="logit", image_model="pooled", image_classifier="logregcv")
    return [dataclasses.replace(late, encoder=encoder, pooling=pooling) for encoder in ("morphology", "ssl")
            for pooling in ("mean", "meanmax", "census16", "census", "census64")]


#: The named candidate grids of ``python -m lympho select --grid``.
GRIDS = {"clinical": clinical_grid, "images": images_grid, "fusion": fusion_grid, "cells": cells_grid}


def config_candidates(cohort, configs: Sequence, cache_dir=None, progress=None) -> tuple[list[Candidate], np.ndarray]:
    """:class:`Candidate` per :class:`~lympho.experiment.ExperimentConfig` on the labelled
    patients, and their labels. Instance features are extracted (or read from the cache)
    once per encoder setting and shared by every config that uses them."""
    from lympho.experiment import config_pipeline, design_matrix, instance_bags

    patients = cohort.labelled()
    bags_of: dict = {}
    candidates = []
    for config in configs:
        image_key = (config.encoder, config.weights, config.precision, config.crop) if config.uses_images else None
        if image_key is not None and image_key not in bags_of:
            bags_of[image_key] = instance_bags(patients, config, cache_dir, progress)
        X, names = design_matrix(patients, config, bags_of.get(image_key))
        label = f"{config.label()} [{config.imbalance}]"
        candidates.append(Candidate(label, config_pipeline(config, names), X, tuple(names)))
    return candidates, np.array([p.label for p in patients], dtype=int)


def _score(y, probability, threshold, metric) -> float:
    """``metric`` (one of :data:`COUNT_METRICS`) of the decisions ``probability >= threshold``."""
    return count_metrics(y, probability >= threshold)[metric]


def _inner_score(y, inner_proba: np.ndarray, threshold: float, sensitivity: float | None, metric: str) -> float:
    """A candidate's inner-CV score: ``metric`` averaged over the inner repeats, each decided at
    ``threshold``, or with ``sensitivity`` at the median threshold of the *other* repeats
    (leave-one-repeat-out, as :func:`lympho.evaluation.threshold_from_repeats` estimates
    the stored operating point: never judged on the predictions it was chosen on)."""
    cuts = (np.full(len(inner_proba), threshold) if sensitivity is None
            else held_out_thresholds(repeat_thresholds(y, inner_proba, sensitivity)))
    return float(np.mean([_score(y, row, cut, metric) for row, cut in zip(inner_proba, cuts)]))


def corrected_t_interval(values, n_train: int, n_test: int, level: float = 0.95) -> tuple[float, float]:
    """Nadeau and Bengio's corrected resampled t interval for the mean of ``values`` over
    cross-validation splits: the variance is inflated by ``n_test / n_train`` because the
    splits share patients (the plain t interval would be far too narrow)."""
    values = np.asarray(values, dtype=float)
    j = len(values)
    if j < 2:
        return float("nan"), float("nan")
    spread = np.sqrt((1 / j + n_test / n_train) * np.var(values, ddof=1))
    half = stats.t.ppf(0.5 + level / 2, df=j - 1) * spread
    return float(values.mean() - half), float(values.mean() + half)


def _split_stats(values, n_train, n_test) -> dict:
    low, high = corrected_t_interval(values, n_train, n_test)
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "ci_low": low, "ci_high": high}


def nested_cv(candidates: Sequence[Candidate], y, *, outer_folds: int = 3, outer_repeats: int = 3,
              inner_folds: int = 3, inner_repeats: int = 2, seed: int = 0, threshold: float = 0.5,
              sensitivity: float | None = None, metric: str = "balanced_accuracy",
              progress: Progress | None = None) -> dict:
    """Nested cross-validation of "pick the candidate with the best mean inner-CV ``metric``".

    Decisions are ``probability >= threshold``. With ``sensitivity`` (needs
    ``inner_repeats >= 2``) every candidate is judged at the operating point a trained
    model stores instead: inside each outer training fold, the median over the inner
    repeats of each repeat's threshold for that sensitivity; the inner score is the
    leave-one-repeat-out score of that rule, and the outer test patients are decided at the
    threshold chosen on the training patients. The nested estimate is then that of the
    whole deployed procedure: choose the configuration, choose its threshold, decide.

    Returns a JSON-ready dict:

    - ``settings``: the fold counts, seed, threshold or sensitivity, metric, patients, candidates.
    - ``nested``: ``splits`` (one row per outer split: repeat, fold, the chosen candidate,
      its outer-test ``metric``), ``score`` (mean, std ddof=1 over outer splits, and the
      Nadeau-Bengio corrected 95 % interval), ``estimates`` (:func:`decision_estimates`
      of the nested out-of-fold decisions: bootstrap over patients) and ``chosen`` (how
      often each candidate won the inner selection).
    - ``naive``: the candidate with the best mean outer score, its ``score`` and
      ``estimates`` the same way: the figure one quotes after choosing on these splits.
    - ``candidates``: per candidate its ``score`` on the outer splits, and the paired
      comparison with the naive best: ``difference`` (mean of the per-split differences
      with its corrected interval) and ``won`` (fraction of outer splits where it scored
      at least as well as the best).
    - ``optimism``: naive minus nested mean ``metric`` over outer splits.

    Ties in the inner selection go to the candidate listed first.
    """
    if metric not in COUNT_METRICS:
        raise ValueError(f"metric must be one of {', '.join(COUNT_METRICS)}, got {metric!r}")
    if not candidates:
        raise ValueError("the candidate grid is empty")
    if sensitivity is not None and inner_repeats < 2:
        raise ValueError("choosing thresholds for a sensitivity needs inner_repeats >= 2")
    y = np.asarray(y, dtype=int)
    n, n_cand = len(y), len(candidates)
    fit = fit_nested(candidates, y, outer_folds=outer_folds, outer_repeats=outer_repeats, inner_folds=inner_folds,
                     inner_repeats=inner_repeats, seed=seed, progress=progress)
    outer = fit.splits
    outer_scores = np.empty((n_cand, len(outer)))
    outer_decided = np.empty((n_cand, outer_repeats, n), dtype=bool)
    outer_thresholds = np.full((n_cand, len(outer)), float(threshold))
    chosen = []
    for s, (train, test) in enumerate(outer):
        inner_means = np.empty(n_cand)
        for c in range(n_cand):
            inner_proba = fit.inner[s][c]
            inner_means[c] = _inner_score(y[train], inner_proba, threshold, sensitivity, metric)
            if sensitivity is not None:
                outer_thresholds[c, s] = stored_threshold(repeat_thresholds(y[train], inner_proba, sensitivity))
            decided = fit.outer[s][c] >= outer_thresholds[c, s]
            outer_decided[c, s // outer_folds, test] = decided
            outer_scores[c, s] = count_metrics(y[test], decided)[metric]
        chosen.append(int(np.argmax(inner_means)))
    nested_decided = np.empty((outer_repeats, n), dtype=bool)
    for s, (_, test) in enumerate(outer):
        nested_decided[s // outer_folds, test] = outer_decided[chosen[s], s // outer_folds, test]
    n_train, n_test = len(outer[0][0]), len(outer[0][1])
    nested_scores = outer_scores[chosen, np.arange(len(outer))]
    best = int(np.argmax(outer_scores.mean(axis=1)))
    common = {"folds": outer_folds, "threshold": threshold if sensitivity is None else None}
    result = {
        "settings": {"outer_folds": outer_folds, "outer_repeats": outer_repeats, "inner_folds": inner_folds,
                     "inner_repeats": inner_repeats, "seed": seed,
                     "threshold": threshold if sensitivity is None else None, "sensitivity": sensitivity,
                     "metric": metric,
                     "n_patients": n, "n_candidates": n_cand},
        "nested": {
            "splits": [{"repeat": s // outer_folds + 1, "fold": s % outer_folds + 1,
                        "chosen": candidates[c].label, "threshold": float(outer_thresholds[c, s]),
                        metric: float(nested_scores[s])}
                       for s, c in enumerate(chosen)],
            "score": _split_stats(nested_scores, n_train, n_test),
            "estimates": decision_estimates(y, nested_decided, method=NESTED_METHOD, **common),
            "chosen": {candidates[c].label: chosen.count(c) for c in sorted(set(chosen), key=chosen.index)},
        },
        "naive": {
            "label": candidates[best].label,
            "score": _split_stats(outer_scores[best], n_train, n_test),
            "estimates": decision_estimates(y, outer_decided[best], method=NAIVE_METHOD, **common),
        },
        "candidates": [],
    }
    for c, candidate in enumerate(candidates):
        difference = outer_scores[c] - outer_scores[best]
        low, high = corrected_t_interval(difference, n_train, n_test) if c != best else (0.0, 0.0)
        result["candidates"].append({
            "label": candidate.label, "score": _split_stats(outer_scores[c], n_train, n_test),
            "difference": {"mean": float(difference.mean()), "ci_low": low, "ci_high": high},
            "won": float(np.mean(outer_scores[c] >= outer_scores[best])),
            "chosen": chosen.count(c)})
    result["optimism"] = result["naive"]["score"]["mean"] - result["nested"]["score"]["mean"]
    return result


def candidates_table(result: dict):
    """The candidates as a frame, best mean outer score first."""
    import pandas as pd

    metric = result["settings"]["metric"]
    rows = [{"candidate": c["label"], f"{metric} mean": c["score"]["mean"], "std": c["score"]["std"],
             "diff to best": c["difference"]["mean"],
             "diff 95% CI": f"{c['difference']['ci_low']:+.3f} to {c['difference']['ci_high']:+.3f}",
             "splits won": c["won"], "chosen (nested)": c["chosen"]} for c in result["candidates"]]
    return pd.DataFrame(rows).sort_values(f"{metric} mean", ascending=False, kind="stable").reset_index(drop=True)


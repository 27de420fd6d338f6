"""Patient-level cross-validation and metrics for the lymphocytosis classifiers.

Malignant (1) is the positive class throughout: recall is sensitivity to
malignancy, specificity is recall of the reactive class (0). Folds are
stratified over patients, and the whole estimator (scaler, SMOTE,
classifier) is cloned and refitted on each training fold, so nothing learned
from test patients leaks into a fold's predictions. Results are plain Python
numbers so they serialise to JSON for caching and the dashboard.

One decision rule everywhere: a patient is called malignant when
``probability >= threshold`` (0.5 unless a threshold is chosen). Fold metrics,
operating points, ``predict``, ``score`` and the pages all apply it to the
same probabilities; no classifier's own ``predict()`` is used.

Spread and uncertainty: ``std`` is the sample standard deviation (ddof=1) of the
fold metrics, a spread across folds. The headline balanced accuracy, recall and
specificity carry a 95 % percentile-bootstrap interval over patients of the
out-of-fold predictions (:func:`oof_estimates`, :func:`format_estimate`).
"""

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import RepeatedStratifiedKFold

from lympho.data import check_sensitivity, check_threshold

METRICS = ("balanced_accuracy", "f1", "recall", "specificity", "precision", "roc_auc")


def fold_metrics(y_true, y_pred, y_proba) -> dict:
    """All of ``METRICS`` plus ``confusion_matrix`` [[tn, fp], [fn, tp]] for one fold.

    Undefined ratios count as 0; ``roc_auc`` is NaN when ``y_true`` holds one class.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "specificity": float(recall_score(y_true, y_pred, pos_label=0, zero_division=0)),
        "precision": float(precision_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, y_proba)) if both_classes else float("nan"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).astype(int).tolist(),
    }


#: The metrics quoted with a confidence interval wherever a run is shown.
HEADLINE = ("balanced_accuracy", "recall", "specificity")
#: Metrics computed from confusion counts, so the bootstrap can recompute them.
COUNT_METRICS = ("balanced_accuracy", "recall", "specificity", "precision", "f1")
CI_LEVEL = 0.95
N_BOOTSTRAP = 2000


@dataclass
class CVResult:
    """Per-fold metrics and out-of-fold predictions of one cross-validation run.

    ``folds``: one dict per (repeat, fold), both numbered from 1, with the
    metrics, ``confusion_matrix``, ``n_train`` and ``n_test``.
    ``oof``: one row per patient per repeat: ``repeat``, ``fold``, ``id``,
    ``y_true``, ``probability`` (of malignancy) and ``prediction``
    (``probability >= threshold``).
    """

    folds: list[dict]
    oof: pd.DataFrame
    threshold: float = 0.5

    @classmethod
    def concat(cls, parts: Sequence["CVResult"]) -> "CVResult":
        """One result from results of disjoint repeats (``cross_validate(only_repeat=...)``,
        e.g. one Ray task each), in the order a single run would give them."""
        parts = sorted(parts, key=lambda part: part.folds[0]["repeat"])
        return cls(folds=[fold for part in parts for fold in part.folds],
                   oof=pd.concat([part.oof for part in parts], ignore_index=True), threshold=parts[0].threshold)

    def summary(self) -> dict:
        """Mean, std (sample, ddof=1), min and max of each metric over folds, and more.

        ``confusion_matrix_per_repeat``: the fold matrices summed within each repeat,
        then averaged over repeats (each patient counted once; fractional with
        repeats). ``confusion_matrix_pooled``: summed over every fold of every repeat
        (each patient counted once per repeat). ``headline``: :func:`oof_estimates`
        at ``threshold`` (point estimates with 95 % bootstrap intervals), when
        out-of-fold predictions are present. Also ``n_folds``, ``n_repeats``,
        ``threshold``.
        """
        summary = {}
        for metric in METRICS:
            values = np.array([fold[metric] for fold in self.folds], dtype=float)
            summary[metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
            }
        matrices = np.array([fold["confusion_matrix"] for fold in self.folds], dtype=float)
        repeats = np.array([fold.get("repeat", 1) for fold in self.folds])
        n_repeats = len(np.unique(repeats))
        summary["confusion_matrix_pooled"] = matrices.sum(axis=0).astype(int).tolist()
        summary["confusion_matrix_per_repeat"] = (matrices.sum(axis=0) / n_repeats).tolist()
        summary["n_folds"] = len(self.folds)
        summary["n_repeats"] = n_repeats
        summary["threshold"] = float(self.threshold)
        if len(self.oof):
            summary["headline"] = oof_estimates(self.oof, self.threshold)
        return summary


def _repeat_matrix(oof) -> tuple[np.ndarray, np.ndarray, int]:
    """``(y, P, folds)``: labels per patient (sorted by id), probabilities ``(repeats, patients)``."""
    frame = oof if isinstance(oof, pd.DataFrame) else pd.DataFrame(dict(oof))
    if "repeat" not in frame:
        frame = frame.assign(repeat=1)
    if frame.duplicated(["repeat", "id"]).any():
        raise ValueError("out-of-fold predictions hold a patient twice within one repeat.")
    wide = frame.pivot(index="repeat", columns="id", values="probability")
    if wide.isna().any().any():
        raise ValueError("every repeat's out-of-fold predictions must cover the same patients.")
    labels = frame.drop_duplicates("id").set_index("id")["y_true"].reindex(wide.columns)
    folds = int(frame["fold"].max()) if "fold" in frame else 0
    return labels.to_numpy(dtype=int), wide.to_numpy(dtype=float), folds


def _count_metrics(tp, fn, tn, fp) -> dict:
    """:data:`COUNT_METRICS` from (weighted) confusion counts; NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        recall, specificity = tp / (tp + fn), tn / (tn + fp)
        return {"balanced_accuracy": (recall + specificity) / 2, "recall": recall,
                "specificity": specificity, "precision": tp / (tp + fp),
                "f1": 2 * tp / (2 * tp + fp + fn)}


def _repeat_averaged(y, decided, weights) -> dict:
    """Each count metric per row of ``weights`` (patient multiplicities), computed on
    each repeat's pooled decisions and averaged over repeats (``decided``: repeats x patients)."""
    positive, negative = (y == 1).astype(float), (y == 0).astype(float)
    called = decided.T.astype(float)  # patients x repeats
    counts = {"tp": weights @ (called * positive[:, None]), "fn": weights @ ((1 - called) * positive[:, None]),
              "tn": weights @ ((1 - called) * negative[:, None]), "fp": weights @ (called * negative[:, None])}
    return {metric: values.mean(axis=-1) for metric, values in _count_metrics(**counts).items()}


def count_metrics(y, decided) -> dict:
    """:data:`COUNT_METRICS` of one set of 0/1 decisions (floats; NaN where undefined)."""
    return {m: float(v[0]) for m, v in _repeat_averaged(np.asarray(y, dtype=int), np.atleast_2d(decided),
                                                        np.ones((1, len(y)))).items()}


def decision_estimates(y, decided, *, folds=0, method="bootstrap over patients of the out-of-fold predictions",
                       n_boot=N_BOOTSTRAP, seed=0, level=CI_LEVEL, threshold=None) -> dict:
    """Point estimates and percentile-bootstrap intervals of :data:`COUNT_METRICS`.

    ``decided`` holds 0/1 decisions, one row per repeat, one column per patient
    (labels ``y``). The point estimate of a metric is its value on each repeat's
    pooled decisions, averaged over repeats; the interval resamples patients
    (with replacement, all repeats of a patient together, ``seed`` fixed) and
    recomputes the same statistic. Returns a JSON-ready dict: ``metrics`` (metric ->
    ``estimate, low, high``), ``level``, ``n_patients``, ``repeats``, ``folds``,
    ``n_bootstrap``, ``seed``, ``method``, ``threshold``.
    """
    y, decided = np.asarray(y, dtype=int), np.atleast_2d(np.asarray(decided))
    n = len(y)
    point = _repeat_averaged(y, decided, np.ones((1, n)))
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    boot = _repeat_averaged(y, decided, weights)
    tail = 100 * (1 - level) / 2
    metrics = {}
    for metric in COUNT_METRICS:
        finite = boot[metric][np.isfinite(boot[metric])]
        low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
        metrics[metric] = {"estimate": float(point[metric][0]), "low": float(low), "high": float(high)}
    return {"metrics": metrics, "level": level, "n_patients": n, "repeats": len(decided), "folds": folds,
            "n_bootstrap": n_boot, "seed": seed, "method": method,
            "threshold": None if threshold is None else float(threshold)}


def oof_estimates(oof, threshold=0.5, *, n_boot=N_BOOTSTRAP, seed=0, level=CI_LEVEL) -> dict:
    """:func:`decision_estimates` of out-of-fold predictions decided by ``probability >= threshold``.

    ``oof``: a run's ``oof`` (frame or dict of lists with ``repeat``, ``fold``,
    ``id``, ``y_true``, ``probability``). The one function behind every headline
    figure of a run, in the CLI, the run record, the reports and the pages. A
    ``threshold`` outside (0, 1] is refused (a ValueError naming it).
    """
    threshold = check_threshold(threshold)
    y, probability, folds = _repeat_matrix(oof)
    return decision_estimates(y, probability >= threshold, folds=folds, n_boot=n_boot, seed=seed,
                              level=level, threshold=threshold)


def format_estimate(estimates: dict, metric: str, digits: int = 3) -> str:
    """One figure with its interval and what it was computed on, the same everywhere, e.g.
    ``0.878 (95% CI 0.83-0.92; bootstrap over 110 patients of the out-of-fold predictions,
    20 x 3-fold CV)``."""
    value = estimates["metrics"][metric]
    design = f"{estimates['repeats']} x {estimates['folds']}-fold CV" if estimates.get("folds") else \
        f"{estimates['repeats']} repeat(s)"
    method = estimates["method"].replace("patients", f"{estimates['n_patients']} patients", 1)
    return (f"{value['estimate']:.{digits}f} ({estimates['level']:.0%} CI {value['low']:.2f}-{value['high']:.2f}; "
            f"{method}, {design})")


def _check_cv_inputs(X, y, ids, folds):
    """Validate binary 0/1 labels, unique patient ids and enough patients per class."""
    if not len(X) == len(y) == len(ids):
        raise ValueError(f"X, y and ids differ in length: {len(X)}, {len(y)}, {len(ids)}.")
    if not np.isin(y, [0, 1]).all():
        raise ValueError(f"y must hold 0 (reactive) and 1 (malignant) only, got {np.unique(y)}.")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique: cross-validation expects one row per patient.")
    counts = np.bincount(y.astype(int), minlength=2)
    for label, name in enumerate(("reactive", "malignant")):
        if counts[label] < folds:
            raise ValueError(
                f"Class {label} ({name}) has {counts[label]} patients, fewer than folds={folds}; "
                f"every fold needs at least one patient of each class. Use at most "
                f"{counts.min()} folds."
            )


def _positive_proba(model, X):
    """Probability of class 1 from a fitted classifier's ``predict_proba``."""
    return model.predict_proba(X)[:, list(model.classes_).index(1)]


def cross_validate(estimator, X, y, ids, folds=3, repeats=1, seed=0, progress=None,
                   threshold=0.5, only_repeat=None) -> CVResult:
    """Repeated stratified k-fold cross-validation over patients.

    For each fold, a clone of ``estimator`` is fitted on the training patients
    only and gives the test patients a probability of malignancy; the decision
    (and every fold metric) is ``probability >= threshold``, the rule used
    everywhere else, never the estimator's own ``predict()``. ``progress(done, total)``, if given,
    is called after each fold. The same inputs and ``seed`` give the same
    folds and, with deterministic estimators, identical results. ``only_repeat`` (1-based)
    runs that repeat alone, with exactly the folds it has in the full run (see
    :meth:`CVResult.concat`). A ``threshold`` outside (0, 1] is refused (a ValueError naming it).
    """
    threshold = check_threshold(threshold)
    X, y, ids = np.asarray(X), np.asarray(y), np.asarray(ids)
    _check_cv_inputs(X, y, ids, folds)
    y = y.astype(int)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    total = folds * (repeats if only_repeat is None else 1)
    fold_rows, oof_parts = [], []
    for index, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        repeat, fold = divmod(index, folds)
        if only_repeat is not None and repeat + 1 != only_repeat:
            continue
        model = clone(estimator).fit(X[train], y[train])
        X_test = X[test]
        probability = _positive_proba(model, X_test)
        prediction = (probability >= threshold).astype(int)
        where = {"repeat": repeat + 1, "fold": fold + 1}
        fold_rows.append(
            where
            | fold_metrics(y[test], prediction, probability)
            | {"n_train": len(train), "n_test": len(test)}
        )
        oof_parts.append(
            pd.DataFrame(
                where
                | {"id": ids[test], "y_true": y[test], "probability": probability, "prediction": prediction}
            )
        )
        if progress is not None:
            progress(len(fold_rows), total)
    return CVResult(folds=fold_rows, oof=pd.concat(oof_parts, ignore_index=True), threshold=threshold)


def roc_points(y_true, proba) -> dict:
    """ROC curve as lists ``fpr``, ``tpr``, ``thresholds`` (the first threshold is inf)."""
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()}


def operating_point(y_true, proba, threshold) -> dict:
    """Sensitivity, specificity, balanced accuracy and confusion matrix when
    patients with ``proba >= threshold`` are called malignant (``threshold`` in (0, 1])."""
    threshold = check_threshold(threshold)
    y_pred = (np.asarray(proba) >= threshold).astype(int)
    metrics = fold_metrics(y_true, y_pred, proba)
    return {
        "threshold": float(threshold),
        "sensitivity": metrics["recall"],
        "specificity": metrics["specificity"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "confusion_matrix": metrics["confusion_matrix"],
    }


def threshold_for_sensitivity(y_true, proba, target) -> float:
    """Highest threshold whose rule ``proba >= threshold`` reaches sensitivity ``target``
    (in (0, 1]; else a ValueError naming it)."""
    target = check_sensitivity(target)
    if not np.any(np.asarray(y_true) == 1):
        raise ValueError("y_true has no malignant (1) patients, so sensitivity is undefined.")
    _, tpr, thresholds = roc_curve(y_true, proba, drop_intermediate=False)
    return float(thresholds[np.argmax(tpr >= target)])


def repeat_thresholds(y_true, probability_rows, target) -> np.ndarray:
    """Each repeat's :func:`threshold_for_sensitivity` (one row of out-of-fold probabilities a repeat)."""
    return np.array([threshold_for_sensitivity(y_true, row, target) for row in probability_rows])


def stored_threshold(per_repeat) -> float:
    """The operating point a model stores: the median of the repeats' thresholds (at most 1)."""
    return float(min(np.median(per_repeat), 1.0))


def held_out_thresholds(per_repeat) -> np.ndarray:
    """Each repeat's threshold chosen without it: the median of the *other* repeats' thresholds."""
    per_repeat = np.asarray(per_repeat, dtype=float)
    return np.array([np.median(np.delete(per_repeat, r)) for r in range(len(per_repeat))])


LEAVE_ONE_REPEAT_OUT = ("bootstrap over patients of each repeat's out-of-fold predictions, "
                        "decided at the median threshold of the other repeats")


def threshold_from_repeats(oof, target: float) -> dict:
    """A threshold for sensitivity ``target`` chosen from many repeats, and its leave-one-repeat-out
    estimate (apparent: the other repeats are the same patients; the nested figure is lympho.promise).

    One cross-validation repeat gives a noisy threshold, and quoting the sensitivity
    it reaches on the same predictions is true by construction. Here each repeat's
    out-of-fold predictions give their own :func:`threshold_for_sensitivity`; the
    chosen threshold is their median. The estimate is leave-one-repeat-out: each
    repeat is decided at the median threshold of the *other* repeats, and
    :func:`decision_estimates` summarises those held-out decisions (point estimate
    and bootstrap interval over patients). The repeats share patients, so this
    still flatters a little, but the threshold is never scored on the predictions
    it was chosen on. Needs at least 2 repeats.

    Returns ``target_sensitivity``, ``threshold``, ``per_repeat`` (the thresholds)
    and ``estimate``. A ``target`` outside (0, 1] is refused (a ValueError naming it).
    """
    target = check_sensitivity(target)
    y, probability, folds = _repeat_matrix(oof)
    if len(probability) < 2:
        raise ValueError("choosing a threshold from repeats needs at least 2 cross-validation repeats.")
    per_repeat = repeat_thresholds(y, probability, target)
    decided = probability >= held_out_thresholds(per_repeat)[:, None]
    threshold = stored_threshold(per_repeat)
    estimate = decision_estimates(y, decided, folds=folds, method=LEAVE_ONE_REPEAT_OUT, threshold=threshold)
    return {"target_sensitivity": float(target), "threshold": threshold,
            "per_repeat": [float(t) for t in per_repeat], "estimate": estimate}


#: How many training patients :func:`similar_patients` compares a new patient with.
SIMILAR_PATIENTS = 15


def similar_patients(oof, probability: float, k: int = SIMILAR_PATIENTS, level: float = CI_LEVEL) -> dict:
    """How often training patients scored like this one were malignant: a calibration check
    for one probability, in counts a clinician can weigh.

    A class-weighted model's probability is on a scale where both classes weighed the same
    in training, not the frequency of malignancy among patients who score so. Here each
    training patient's out-of-fold probability (averaged over the repeats) is compared with
    ``probability``; of the ``k`` nearest, the number that were malignant and its Wilson
    interval. Fold models saw two thirds of the patients, so their probabilities are a little
    less sharp than the deployed model's. Returns ``k, malignant, fraction, low, high`` and
    ``p_low, p_high`` (the range of those patients' probabilities).
    """
    y, probabilities, _ = _repeat_matrix(oof)
    mean = probabilities.mean(axis=0)
    k = min(k, len(y))
    nearest = np.argsort(np.abs(mean - probability), kind="stable")[:k]
    malignant = int(y[nearest].sum())
    low, high = _wilson(malignant, k, level)
    return {"k": k, "malignant": malignant, "fraction": malignant / k, "low": low, "high": high, "level": level,
            "p_low": float(mean[nearest].min()), "p_high": float(mean[nearest].max())}


def _wilson(successes: int, n: int, level: float) -> tuple[float, float]:
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def reliability(oof, bins: int = 5, level: float = CI_LEVEL) -> dict:
    """Do the probabilities mean what they say? Patients grouped into ``bins`` groups of about
    equal size by their out-of-fold probability (averaged over the repeats); per group, the mean
    probability and the fraction that were malignant, with its Wilson interval (``table``:
    ``n, malignant, mean_probability, fraction, low, high``); and the Brier score (mean squared
    error of the probabilities, 0 is perfect) per repeat, as ``brier`` ``mean, std``. A
    class-weighted model is not meant to be calibrated to the cohort's prevalence: its
    probabilities treat both classes as equally common, so the malignant fraction sits above
    the diagonal when malignancy is the majority. (scikit-learn's ``calibration_curve`` gives
    the fractions but not the counts that the intervals need.)"""
    from sklearn.metrics import brier_score_loss

    y, probabilities, _ = _repeat_matrix(oof)
    mean = probabilities.mean(axis=0)
    groups = pd.qcut(pd.Series(mean).rank(method="first"), min(bins, len(y)), labels=False)
    rows = []
    for _, index in pd.Series(range(len(y))).groupby(groups.to_numpy()):
        members = index.to_numpy()
        malignant, n = int(y[members].sum()), len(members)
        low, high = _wilson(malignant, n, level)
        rows.append({"n": n, "malignant": malignant, "mean_probability": float(mean[members].mean()),
                     "fraction": malignant / n, "low": low, "high": high})
    brier = [brier_score_loss(y, row) for row in probabilities]
    return {"table": pd.DataFrame(rows), "level": level,
            "brier": {"mean": float(np.mean(brier)), "std": float(np.std(brier, ddof=1)) if len(brier) > 1 else 0.0,
                      "repeats": len(brier)}}


def run_operating_point(run, target: float) -> dict | None:
    """Where a model trained like ``run`` with ``--sensitivity target`` would decide (apparent,
    leave-one-repeat-out): its stored ``summary["operating_point"]``
    when that was chosen for sensitivity ``target``, else :func:`threshold_from_repeats` of its
    out-of-fold predictions; None for a run with one repeat (no threshold can be held out)."""
    stored = (run.get("summary") or {}).get("operating_point")
    if stored and stored["target_sensitivity"] == target:
        return stored
    oof = pd.DataFrame(run.get("oof") or {})
    if "repeat" in oof and "id" in oof and oof["repeat"].nunique() > 1:
        return threshold_from_repeats(oof, target)
    return None


def run_estimates(run) -> dict | None:
    """A stored run's headline estimates: ``summary["headline"]``, or for a run stored before
    it existed :func:`oof_estimates` of its ``oof`` at its threshold (0.5); None without
    out-of-fold predictions."""
    summary = run.get("summary") or {}
    if summary.get("headline"):
        return summary["headline"]
    return oof_estimates(run["oof"], summary.get("threshold", 0.5)) if run.get("oof") else None


#: Clinically meaningful subgroups: (group, band, test on a patient). Age is at sampling
#: (for the cohort, at lympho.data.REFERENCE_DATE); the count is in x 10^9/L.
SUBGROUPS = (
    ("age", "< 50 y", lambda p: p.age < 50), ("age", "50-70 y", lambda p: 50 <= p.age <= 70),
    ("age", "> 70 y", lambda p: p.age > 70),
    ("lymphocyte count", "< 5", lambda p: p.lymph_count < 5),
    ("lymphocyte count", "5-10", lambda p: 5 <= p.lymph_count <= 10),
    ("lymphocyte count", "> 10", lambda p: p.lymph_count > 10),
    ("gender", "female", lambda p: p.gender == "F"), ("gender", "male", lambda p: p.gender == "M"),
)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def subgroup_estimates(patients, y, decided, *, n_boot=N_BOOTSTRAP, seed=0, level=CI_LEVEL) -> list[dict]:
    """Out-of-fold figures per clinical subgroup (:data:`SUBGROUPS`): where a model is weak.

    ``decided``: 0/1 decisions, one row per repeat, one column per patient of ``patients``
    (labels ``y``). Per band: ``group, band, n, malignant, reactive`` and, for each of
    :data:`HEADLINE`, ``estimate, low, high`` (:func:`decision_estimates` within the band;
    None where the band lacks the class a metric needs, e.g. specificity without reactive
    patients). Bands with no patient are left out.
    """
    y, decided = np.asarray(y, dtype=int), np.atleast_2d(np.asarray(decided, dtype=bool))
    rows = []
    for group, band, member in SUBGROUPS:
        mask = np.array([member(p) for p in patients], dtype=bool)
        if not mask.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            estimate = decision_estimates(y[mask], decided[:, mask], n_boot=n_boot, seed=seed, level=level)
        row = {"group": group, "band": band, "n": int(mask.sum()), "malignant": int(y[mask].sum()),
               "reactive": int((y[mask] == 0).sum())}
        for metric in HEADLINE:
            figure = estimate["metrics"][metric]
            row[metric] = {key: _finite_or_none(figure[key]) for key in ("estimate", "low", "high")}
        rows.append(row)
    return rows


def weakest_subgroups(rows: Sequence[dict], metric: str = "balanced_accuracy", k: int = 2) -> list[dict]:
    """The ``k`` bands with the lowest ``metric`` (bands where it is undefined are skipped)."""
    defined = [row for row in rows if row[metric]["estimate"] is not None]
    return sorted(defined, key=lambda row: row[metric]["estimate"])[:k]


def oof_subgroups(oof, patients, threshold: float = 0.5) -> list[dict]:
    """:func:`subgroup_estimates` of a run's out-of-fold predictions decided at ``threshold``."""
    frame = oof if isinstance(oof, pd.DataFrame) else pd.DataFrame(dict(oof))
    by_id = {p.id: p for p in patients}
    wide = frame.pivot(index="repeat", columns="id", values="probability")
    ordered = [by_id[i] for i in wide.columns]
    y = np.array([p.label for p in ordered])
    return subgroup_estimates(ordered, y, wide.to_numpy(dtype=float) >= threshold)

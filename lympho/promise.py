"""The promise a trained model makes: what the whole procedure that produced it reaches on
patients it never saw, at the operating point it decides by.

``train`` does not fit one fixed configuration and quote its cross-validated score. It runs
a *procedure*: score every candidate configuration by repeated cross-validation of the
labelled patients, keep the best at the operating rule (:class:`Rule`), take the rule's
threshold from the repeats, fit the winner on every patient. A figure measured on the
patients the choices were made on describes those patients, not the next ones; the figure a
new patient gets is the procedure's score on patients it never saw. So the procedure runs
whole inside each outer training part of repeated stratified folds (:func:`fit_nested`), and
the outer test patients are decided where it put the threshold (:func:`promise`).

The interval re-runs the choices in every resample. Refitting every model a thousand times
is out of reach, but the choices are cheap once the fitted probabilities are kept: each
bootstrap draw reweights the patients, and inside every outer split the configuration and
the threshold are chosen again from the *reweighted* inner predictions before the reweighted
test patients are scored. The interval is therefore as wide as the procedure is unstable
(a threshold read from the tail of a few patients moves a lot), which a bootstrap of fixed
decisions would hide.

Beside the single cut, the triage convention of clinical scores (:func:`promise` ``zones``):
a rule-out threshold (sensitivity >= 0.98), a rule-in threshold (specificity >= 0.95), and
between them "indeterminate: refer", each zone with its nested patient fraction and error
rate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import RepeatedStratifiedKFold

from lympho.evaluation import CI_LEVEL, COUNT_METRICS, _positive_proba

#: Progress callback: (fits done, fits in total).
Progress = Callable[[int, int], None]
#: Bootstrap draws of the promise's intervals (each re-runs every choice of the procedure).
PROMISE_BOOTSTRAP = 1000
#: The triage zones, in the order a page lists them.
ZONES = ("rule-out", "refer", "rule-in")
ZONE_TEXT = {"rule-out": "rule-out: reactive", "refer": "indeterminate: refer", "rule-in": "rule-in: malignant"}
PROMISE_METHOD = ("nested cross-validation of the whole procedure (choice of configuration and threshold inside "
                  "each outer training part); bootstrap over patients re-choosing both in every draw")


@dataclass(frozen=True)
class Rule:
    """How a threshold is read from out-of-fold probabilities.

    ``kind``: ``sensitivity`` (the highest threshold whose malignant patients reach
    sensitivity ``value``), ``specificity`` (the lowest threshold whose reactive patients
    reach specificity ``value``), ``balanced`` (the threshold of the highest balanced
    accuracy) or ``fixed`` (``value`` itself, chosen on nothing). With several repeats the
    threshold is the median of the repeats' thresholds.
    """

    kind: str
    value: float | None = None

    def __post_init__(self):
        if self.kind not in ("sensitivity", "specificity", "balanced", "fixed"):
            raise ValueError(f"rule kind must be sensitivity, specificity, balanced or fixed, got {self.kind!r}")
        if self.kind != "balanced" and not (self.value is not None and np.isfinite(self.value)
                                            and 0 < self.value < 1):
            raise ValueError(f"{self.kind} rule: value must be a number strictly between 0 and 1, got {self.value!r}")

    def text(self) -> str:
        """``threshold for 95% sensitivity``, ``threshold of the highest balanced accuracy``,
        ``fixed threshold 0.5``."""
        if self.kind == "fixed":
            return f"fixed threshold {self.value:g}"
        if self.kind == "balanced":
            return "threshold of the highest balanced accuracy"
        return f"threshold for {self.value:.0%} {self.kind}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "text": self.text()}

    @classmethod
    def from_dict(cls, values: dict) -> "Rule":
        return cls(values["kind"], values.get("value"))

    def thresholds(self, y, probability, weights) -> np.ndarray:
        """The rule's threshold of one set of probabilities under each row of ``weights``
        (draws x patients; a row of ones is the plain, unweighted choice)."""
        if self.kind == "fixed":
            return np.full(len(weights), self.value)
        if self.kind == "sensitivity":
            return _sensitivity_thresholds(y, probability, weights, self.value)
        if self.kind == "specificity":
            return _specificity_thresholds(y, probability, weights, self.value)
        return _balanced_thresholds(y, probability, weights)


RULE_OUT = Rule("sensitivity", 0.98)
RULE_IN = Rule("specificity", 0.95)


def _sensitivity_thresholds(y, probability, weights, target) -> np.ndarray:
    """Per draw, the highest positive's probability at which the weighted sensitivity of
    ``probability >= t`` reaches ``target`` (as :func:`lympho.evaluation.threshold_for_sensitivity`)."""
    positive = np.flatnonzero(y == 1)
    order = positive[np.argsort(-probability[positive], kind="stable")]
    caught = np.cumsum(weights[:, order], axis=1)
    reached = caught >= target * caught[:, -1:] - 1e-9
    return probability[order][np.argmax(reached, axis=1)]


def _specificity_thresholds(y, probability, weights, target) -> np.ndarray:
    """Per draw, the lowest threshold whose reactive patients below it reach weighted
    specificity ``target``: just above the reactive probability where it is reached."""
    negative = np.flatnonzero(y == 0)
    order = negative[np.argsort(probability[negative], kind="stable")]
    below = np.cumsum(weights[:, order], axis=1)
    reached = below >= target * below[:, -1:] - 1e-9
    return np.nextafter(probability[order][np.argmax(reached, axis=1)], np.inf)


def _balanced_thresholds(y, probability, weights) -> np.ndarray:
    """Per draw, the cut with the highest weighted balanced accuracy (the smallest such
    probability, so that ties keep the more sensitive cut)."""
    order = np.argsort(-probability, kind="stable")
    p, positive = probability[order], (y[order] == 1)
    w = weights[:, order]
    tp, fp = np.cumsum(w * positive, axis=1), np.cumsum(w * ~positive, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = tp / tp[:, -1:] + 1 - fp / fp[:, -1:]
    distinct = np.append(p[1:] < p[:-1], True)  # a cut must take every patient tied at it
    score[:, ~distinct] = -np.inf
    best = np.argmax(np.nan_to_num(score, nan=-np.inf), axis=1)
    return p[best]


def _rates(y, decided, weights) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sensitivity and specificity per draw (``decided``: draws x patients, or one row)."""
    positive = (y == 1)
    called = np.broadcast_to(decided, weights.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (weights * called * positive).sum(1) / (weights * positive).sum(1)
        specificity = (weights * ~called * ~positive).sum(1) / (weights * ~positive).sum(1)
    return sensitivity, specificity


def _per_repeat_thresholds(rule: Rule, y, rows: np.ndarray, weights) -> np.ndarray:
    """Per draw, each repeat's threshold (draws x repeats)."""
    return np.stack([rule.thresholds(y, row, weights) for row in rows], axis=1)


def choose(rule: Rule, y, inner: Sequence[np.ndarray], weights) -> tuple[np.ndarray, np.ndarray]:
    """The procedure's two choices on one set of training patients, per draw of ``weights``.

    ``inner``: per candidate, its repeated out-of-fold probabilities (repeats x patients).
    Each candidate is scored at the rule leave-one-repeat-out (each repeat decided at the
    median threshold of the *other* repeats, balanced accuracy averaged over repeats), so a
    threshold is never judged on the predictions it was read from; with one repeat it is
    scored at its own threshold. The best candidate wins (ties: the one listed first); its
    threshold is the median of its repeats' thresholds, at most 1.
    Returns ``(chosen candidate, threshold)``, one per draw.
    """
    scores, cuts = [], []
    for rows in inner:
        per_repeat = _per_repeat_thresholds(rule, y, rows, weights)
        held_out = per_repeat if len(rows) == 1 else np.stack(
            [np.median(np.delete(per_repeat, r, axis=1), axis=1) for r in range(len(rows))], axis=1)
        balanced = [np.mean(_rates(y, row[None, :] >= held_out[:, r:r + 1], weights), axis=0)
                    for r, row in enumerate(rows)]
        scores.append(np.nan_to_num(np.mean(balanced, axis=0), nan=-np.inf))
        cuts.append(np.minimum(np.median(per_repeat, axis=1), 1.0))
    chosen = np.argmax(np.stack(scores), axis=0)
    return chosen, np.stack(cuts)[chosen, np.arange(len(chosen))]


@dataclass
class NestedFit:
    """Every probability the nested procedure needs, fitted once.

    ``splits``: the outer ``(train, test)`` index pairs, ``outer_folds`` per repeat.
    ``inner[s][c]``: candidate ``c``'s inner out-of-fold probabilities on split ``s``'s
    training patients (inner repeats x training patients). ``outer[s][c]``: its
    probabilities of split ``s``'s test patients, fitted on all of its training patients.
    """

    y: np.ndarray
    labels: list[str]
    splits: list[tuple[np.ndarray, np.ndarray]]
    inner: list[list[np.ndarray]]
    outer: list[list[np.ndarray]]
    outer_folds: int
    inner_folds: int
    seed: int

    @property
    def outer_repeats(self) -> int:
        return len(self.splits) // self.outer_folds

    @property
    def inner_repeats(self) -> int:
        return len(self.inner[0][0])


def _rows(X, index):
    return X[index] if not isinstance(X, list) else [X[i] for i in index]


def fit_proba(estimator, X, y, train, test) -> np.ndarray:
    """Probability of malignancy of the ``test`` rows from a clone fitted on the ``train`` rows."""
    model = clone(estimator).fit(_rows(X, train), y[train])
    return _positive_proba(model, _rows(X, test))


def repeated_oof(estimator, X, y, index, folds: int, repeats: int, seed: int,
                 on_fit: Callable[[], None] | None = None) -> np.ndarray:
    """Out-of-fold probabilities (repeats x patients) of the rows ``index`` by repeated
    stratified ``folds``-fold cross-validation among themselves."""
    out = np.empty((repeats, len(index)))
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for i, (a, b) in enumerate(splitter.split(np.zeros(len(index)), y[index])):
        out[i // folds, b] = fit_proba(estimator, X, y, index[a], index[b])
        if on_fit is not None:
            on_fit()
    return out


def fit_nested(candidates: Sequence, y, *, outer_folds: int = 3, outer_repeats: int = 3, inner_folds: int = 3,
               inner_repeats: int = 5, seed: int = 0, progress: Progress | None = None,
               splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> NestedFit:
    """Fit every candidate inside every outer split: its repeated inner cross-validation on
    the training patients, and its fit on all of them for the test patients.

    ``candidates``: objects with ``label``, ``estimator`` (cloned for every fit) and ``X``
    (rows per patient, in the order of ``y``), as :class:`lympho.selection.Candidate`.
    ``splits``: outer ``(train, test)`` pairs to use instead of repeated stratified folds
    (e.g. a split along a covariate; ``outer_folds`` then says how many make one repeat).
    """
    y = np.asarray(y, dtype=int)
    if splits is None:
        splits = RepeatedStratifiedKFold(n_splits=outer_folds, n_repeats=outer_repeats,
                                         random_state=seed).split(np.zeros(len(y)), y)
    splits = [(np.asarray(train), np.asarray(test)) for train, test in splits]
    total, done = len(splits) * len(candidates) * (inner_folds * inner_repeats + 1), [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    inner, outer = [], []
    for s, (train, test) in enumerate(splits):
        inner.append([repeated_oof(c.estimator, c.X, y, train, inner_folds, inner_repeats, seed + 1 + s, tick)
                      for c in candidates])
        outer.append([])
        for c in candidates:
            outer[-1].append(fit_proba(c.estimator, c.X, y, train, test))
            tick()
    return NestedFit(y, [c.label for c in candidates], splits, inner, outer, outer_folds, inner_folds, seed)


def _zone_of(probability, rule_out, rule_in) -> np.ndarray:
    """0 rule-out (``p < rule_out``), 2 rule-in (``p >= max(rule_in, rule_out)``), 1 refer."""
    return np.where(probability < rule_out, 0, np.where(probability >= np.maximum(rule_in, rule_out), 2, 1))


class _Tally:
    """Weighted confusion counts per draw and outer repeat, and per zone."""

    def __init__(self, draws: int, repeats: int):
        shape = (draws, repeats)
        self.tp, self.fn, self.tn, self.fp = (np.zeros(shape) for _ in range(4))
        self.zone_n = np.zeros((3, *shape))
        self.zone_malignant = np.zeros((3, *shape))

    def add(self, repeat, y, decided, zone, weights):
        positive = (y == 1)
        self.tp[:, repeat] += (weights * decided * positive).sum(1)
        self.fn[:, repeat] += (weights * ~decided * positive).sum(1)
        self.tn[:, repeat] += (weights * ~decided * ~positive).sum(1)
        self.fp[:, repeat] += (weights * decided * ~positive).sum(1)
        for z in range(3):
            self.zone_n[z, :, repeat] += (weights * (zone == z)).sum(1)
            self.zone_malignant[z, :, repeat] += (weights * (zone == z) * positive).sum(1)

    def metrics(self) -> dict:
        """Per draw: each count metric averaged over the outer repeats, and the zones' figures."""
        with np.errstate(invalid="ignore", divide="ignore"):
            recall, specificity = self.tp / (self.tp + self.fn), self.tn / (self.tn + self.fp)
            out = {"balanced_accuracy": (recall + specificity) / 2, "recall": recall, "specificity": specificity,
                   "precision": self.tp / (self.tp + self.fp), "f1": 2 * self.tp / (2 * self.tp + self.fp + self.fn)}
            total, malignant = self.zone_n.sum(0), self.zone_malignant.sum(0)
            reactive = total - malignant
            for z, name in enumerate(ZONES):
                out[f"{name}.fraction"] = self.zone_n[z] / total
            out["rule-out.error_rate"] = self.zone_malignant[0] / self.zone_n[0]  # malignant patients ruled out
            out["refer.malignant_share"] = self.zone_malignant[1] / self.zone_n[1]
            out["rule-in.error_rate"] = (self.zone_n[2] - self.zone_malignant[2]) / self.zone_n[2]  # reactive ruled in
            out["rule-out.sensitivity"] = 1 - self.zone_malignant[0] / malignant
            out["rule-in.specificity"] = 1 - (self.zone_n[2] - self.zone_malignant[2]) / reactive
        with warnings.catch_warnings():  # an empty zone in every repeat has no error rate
            warnings.simplefilter("ignore", RuntimeWarning)
            return {name: np.nanmean(values, axis=1) for name, values in out.items()}


def _decide(fit: NestedFit, rule: Rule, weights: np.ndarray) -> tuple[_Tally, list]:
    """Run the procedure's choices in every outer split under each row of ``weights``."""
    tally, record = _Tally(len(weights), fit.outer_repeats), []
    for s, (train, test) in enumerate(fit.splits):
        y_train, w_train, w_test = fit.y[train], weights[:, train], weights[:, test]
        chosen, cut = choose(rule, y_train, fit.inner[s], w_train)
        draw = np.arange(len(weights))
        rule_out, rule_in = (np.stack([np.median(_per_repeat_thresholds(zone_rule, y_train, rows, w_train), axis=1)
                                       for rows in fit.inner[s]])[chosen, draw] for zone_rule in (RULE_OUT, RULE_IN))
        probability = np.stack(fit.outer[s])[chosen]  # draws x test patients
        decided = probability >= cut[:, None]
        zone = _zone_of(probability, rule_out[:, None], rule_in[:, None])
        tally.add(s // fit.outer_folds, fit.y[test], decided, zone, w_test)
        record.append((chosen, cut, rule_out, rule_in, probability, decided, zone))
    return tally, record


def _interval(point: float, draws: np.ndarray, level: float) -> dict:
    finite = draws[np.isfinite(draws)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
    return {"estimate": float(point), "low": float(low), "high": float(high)}


def promise(fit: NestedFit, rule: Rule, *, n_boot: int = PROMISE_BOOTSTRAP, seed: int = 0,
            level: float = CI_LEVEL) -> dict:
    """The nested estimate of the procedure at ``rule``, with intervals that re-run its choices.

    Returns a JSON-ready dict in the shape of :func:`lympho.evaluation.decision_estimates`
    (``metrics``: metric -> ``estimate, low, high``; ``level``, ``n_patients``, ``repeats``,
    ``folds``, ``n_bootstrap``, ``seed``, ``method``) plus ``kind: "nested"``, ``rule``,
    ``design`` (outer and inner fold counts), ``thresholds`` (the threshold chosen in each
    outer split, and their ``min``/``max``), ``chosen`` (how often each candidate won),
    ``zones`` (per zone: threshold range, patient fraction and error rate with intervals;
    the rule-out zone's sensitivity and the rule-in zone's specificity) and ``decisions``
    (the nested out-of-fold decisions, outer repeats x patients, for subgroup tables).
    """
    n = len(fit.y)
    point_tally, record = _decide(fit, rule, np.ones((1, n)))
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    boot = _decide(fit, rule, draws)[0].metrics()
    point = point_tally.metrics()
    metrics = {m: _interval(point[m][0], boot[m], level) for m in COUNT_METRICS}
    decisions = np.zeros((fit.outer_repeats, n), dtype=bool)
    zone_of_patient = np.zeros((fit.outer_repeats, n), dtype=int)
    for s, (_, test) in enumerate(fit.splits):
        decisions[s // fit.outer_folds, test] = record[s][5][0]
        zone_of_patient[s // fit.outer_folds, test] = record[s][6][0]
    cuts = [float(r[1][0]) for r in record]
    chosen = [fit.labels[int(r[0][0])] for r in record]
    zones = {}
    for name in ZONES:
        figure = "malignant_share" if name == "refer" else "error_rate"
        zone = {"fraction": _interval(point[f"{name}.fraction"][0], boot[f"{name}.fraction"], level),
                figure: _interval(point[f"{name}.{figure}"][0], boot[f"{name}.{figure}"], level)}
        if name != "refer":
            cut = [float(r[2 if name == "rule-out" else 3][0]) for r in record]
            zone["thresholds"] = {"min": min(cut), "max": max(cut)}
        zones[name] = zone
    zones["rule-out"]["sensitivity"] = _interval(point["rule-out.sensitivity"][0], boot["rule-out.sensitivity"], level)
    zones["rule-in"]["specificity"] = _interval(point["rule-in.specificity"][0], boot["rule-in.specificity"], level)
    return {"kind": "nested", "metrics": metrics, "level": level, "n_patients": n, "repeats": fit.outer_repeats,
            "folds": fit.outer_folds, "n_bootstrap": n_boot, "seed": seed, "method": PROMISE_METHOD,
            "rule": rule.to_dict(),
            "design": {"outer_folds": fit.outer_folds, "outer_repeats": fit.outer_repeats,
                       "inner_folds": fit.inner_folds, "inner_repeats": fit.inner_repeats,
                       "candidates": list(fit.labels)},
            "thresholds": {"per_split": cuts, "min": min(cuts), "max": max(cuts)},
            "chosen": {label: chosen.count(label) for label in dict.fromkeys(chosen)},
            "zones": zones, "decisions": decisions.astype(int).tolist(),
            "zone_decisions": zone_of_patient.tolist()}


APPARENT_METHOD = ("bootstrap over patients of the chosen candidate's out-of-fold predictions on the patients it "
                   "was chosen on (each repeat decided at the median threshold of the other repeats): apparent, "
                   "not the promise")


def final_choice(rule: Rule, y, inner: Sequence[np.ndarray], folds: int) -> dict:
    """The procedure run once on every labelled patient: what ``train`` stores.

    ``inner``: per candidate, its repeated out-of-fold probabilities on all the patients.
    Returns ``chosen`` (candidate index), ``threshold``, ``per_repeat`` (the chosen
    candidate's threshold in each repeat), the ``rule_out`` and ``rule_in`` thresholds (the
    medians of theirs; ``rule_in`` raised to ``rule_out`` where it lies below, so that the
    stored pair reads as it decides), and ``apparent``: the leave-one-repeat-out estimate on these same
    patients, optimistic because the candidate was chosen on them; shown second, so labelled.
    """
    from lympho.evaluation import decision_estimates

    y = np.asarray(y, dtype=int)
    ones = np.ones((1, len(y)))
    chosen = int(choose(rule, y, inner, ones)[0][0])
    rows = inner[chosen]
    per_repeat = _per_repeat_thresholds(rule, y, rows, ones)[0]
    threshold = float(min(np.median(per_repeat), 1.0))
    held_out = per_repeat if len(rows) == 1 else \
        np.array([np.median(np.delete(per_repeat, r)) for r in range(len(rows))])
    apparent = decision_estimates(y, rows >= held_out[:, None], folds=folds, method=APPARENT_METHOD,
                                  threshold=threshold)
    rule_out, rule_in = (float(np.median(_per_repeat_thresholds(zone_rule, y, rows, ones)))
                         for zone_rule in (RULE_OUT, RULE_IN))
    return {"chosen": chosen, "threshold": threshold, "per_repeat": [float(t) for t in per_repeat],
            "apparent": apparent, "rule_out": rule_out, "rule_in": max(rule_in, rule_out)}


def zone_of(probability, rule_out: float, rule_in: float) -> np.ndarray:
    """Each probability's triage zone name (:data:`ZONES`) at a model's stored zone thresholds."""
    return np.array(ZONES)[_zone_of(np.asarray(probability, dtype=float), rule_out, rule_in)]

"""Published numbers to compare with, and the recommended model's own promise.

Every figure carries its source and what it was computed on, so a page can say both
(e.g. "one 3-fold split" against "nested 3 x 3-fold"). The recommended model's promise is
measured by ``benchmarks/promise.py`` (``train`` with no options on the real cohort) and
stored in :data:`PROMISE_FILE`; whoever changes the recommended procedure reruns it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lympho.figures import IMBALANCE_LABELS

#: The report's Table 2 (seed-report.txt): per fold of one 3-fold split, ImageNet ResNet features.
REPORT_TABLE2 = (
    {"name": "SVM, clinical", "features": "clinical", "classifier": "svm",
     "balanced_accuracy": (0.82, 0.81, 0.80), "f1": (0.87, 0.86, 0.87), "recall": (0.85, 0.83, 0.85)},
    {"name": "SVM, clinical + ImageNet ResNet", "features": "both", "classifier": "svm",
     "balanced_accuracy": (0.78, 0.90, 0.58), "f1": (0.87, 0.89, 0.83), "recall": (0.87, 0.80, 0.96)},
    {"name": "SVM, ImageNet ResNet", "features": "images", "classifier": "svm",
     "balanced_accuracy": (0.57, 0.61, 0.60), "f1": (0.23, 0.87, 0.53), "recall": (0.13, 0.96, 0.39)},
    {"name": "MLP, clinical + ImageNet ResNet", "features": "both", "classifier": "mlp",
     "balanced_accuracy": (0.91, 0.86, 0.89), "f1": (0.90, 0.84, 0.88), "recall": (0.83, 0.72, 0.78)},
    {"name": "MLP, ImageNet ResNet", "features": "images", "classifier": "mlp",
     "balanced_accuracy": (0.5, 0.5, 0.5), "f1": (0.0, 0.0, 0.0), "recall": (0.0, 0.0, 0.0)},
)
REPORT_COMPUTED_ON = "one 3-fold split of the 163 labelled patients (the report's Table 2)"

#: The report's rows that the overview compares with (its baseline and its best).
FEATURED_REPORT_ROWS = ("SVM, clinical", "MLP, clinical + ImageNet ResNet")

#: Single published figures on the challenge's hidden test set.
PUBLISHED = (
    {"name": "Report: weighted BCE, challenge test set", "value": 0.852,
     "note": "the report, on the challenge's test set"},
    {"name": "Paper: MIL + mixture of experts", "value": 0.854,
     "note": "Sahasrabudhe et al., IEEE JBHI 2021, challenge test set"},
    {"name": "Paper: attention-MIL", "value": 0.829, "note": "Sahasrabudhe et al. 2021"},
    {"name": "Paper: biologists", "value": 0.771, "note": "Sahasrabudhe et al. 2021"},
)

#: The recommended model's promise on the real cohort, written by ``benchmarks/promise.py``
#: (``train`` with no options on the 110 labelled patients): the model's ``operating_point``
#: (the nested estimate with its intervals, the threshold and its range, the apparent figure,
#: the triage zones), its ``subgroups``, the procedure, the machine and the date.
PROMISE_FILE = Path(__file__).with_name("reference_promise.json")


def recommended_promise() -> dict | None:
    """The stored promise of the recommended model (None until ``benchmarks/promise.py`` ran)."""
    try:
        return json.loads(PROMISE_FILE.read_text())
    except FileNotFoundError:
        return None


def comparison_rows(ours: dict | None = None) -> list[dict]:
    """Rows for :func:`lympho.figures.benchmark_comparison`: the recommended model's promise
    (its nested estimate, with the 95 % interval that re-runs its choices), the report's Table 2
    rows (mean and fold range) and the published test-set figures; ``ours`` adds a run on the
    loaded cohort (``name, mean, std, note``)."""
    rows = []
    stored = recommended_promise()
    if stored:
        figure = stored["operating_point"]["estimate"]["metrics"]["balanced_accuracy"]
        rows.append({"name": "This tool: the recommended model's promise (nested CV)", "value": figure["estimate"],
                     "low": figure["low"], "high": figure["high"], "ours": True,
                     "note": f"nested cross-validation of train with no options on the "
                             f"{stored['cohort']['n_labelled']} "
                             f"labelled patients, at its stored threshold; 95% CI re-running every choice"})
    if ours is not None:
        rows.append({"name": ours["name"], "value": ours["mean"], "low": ours["mean"] - ours["std"],
                     "high": ours["mean"] + ours["std"], "note": ours["note"], "ours": True})
    for row in (r for r in REPORT_TABLE2 if r["name"] in FEATURED_REPORT_ROWS):
        folds = row["balanced_accuracy"]
        rows.append({"name": f"Report: {row['name']}", "value": sum(folds) / len(folds), "low": min(folds),
                     "high": max(folds), "note": f"mean and range of {REPORT_COMPUTED_ON}", "ours": False})
    rows += [{**row, "low": None, "high": None, "ours": False} for row in PUBLISHED]
    return rows


PAPER_METRICS = ("balanced_accuracy", "f1", "recall", "roc_auc")


def _mean_sd(values) -> tuple[float, float]:
    values = pd.Series(values, dtype=float).dropna()
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def paper_table(table: pd.DataFrame, metrics=PAPER_METRICS) -> pd.DataFrame:
    """The ablation as a paper would print it: one row per configuration, each metric as
    ``mean ± sd`` over its folds (sd with ddof=1), the best mean of each metric marked ★, and
    the report's published row for the same features and classifier right under ours.

    ``table`` is :func:`lympho.experiment.ablation_table` (``config.*`` columns). Columns:
    Configuration, Source, one per metric, Folds."""
    rows, stats = [], {}
    for name, part in table.groupby("configuration", sort=False):
        config = {c[len("config."):]: part[c].iloc[0] for c in part.columns if c.startswith("config.")}
        stats[name] = {m: _mean_sd(part[m]) for m in metrics if m in part}
        n = len(part)
        repeats = part["repeat"].max()
        rows.append({"Configuration": f"{name} · {IMBALANCE_LABELS.get(config.get('imbalance'), '')}",
                     "Source": f"ours, {repeats} x {n // max(repeats, 1)}-fold", "_name": name,
                     "_config": config})
    best = {m: max((s[m][0] for s in stats.values() if m in s), default=None) for m in metrics}
    out, shown_report = [], set()
    for row in rows:
        line = {"Configuration": row["Configuration"], "Source": row["Source"]}
        for metric in metrics:
            mean, sd = stats[row["_name"]].get(metric, (float("nan"), float("nan")))
            star = " ★" if best[metric] is not None and mean == best[metric] and len(rows) > 1 else ""
            line[metric] = f"{mean:.3f} ± {sd:.3f}{star}" if sd == sd else f"{mean:.3f}{star}"
        line["Folds"] = str(len(table[table.configuration == row["_name"]]))
        out.append(line)
        report = next((r for r in REPORT_TABLE2 if (r["features"], r["classifier"]) ==
                       (row["_config"].get("features"), row["_config"].get("classifier"))), None)
        if report is not None and report["name"] not in shown_report:
            shown_report.add(report["name"])
            published = {"Configuration": f"Report: {report['name']}", "Source": "published, one 3-fold split"}
            for metric in metrics:
                published[metric] = ("{:.3f} ± {:.3f}".format(*_mean_sd(report[metric])) if metric in report
                                     else "not reported")
            out.append({**published, "Folds": "3"})
    return pd.DataFrame(out)

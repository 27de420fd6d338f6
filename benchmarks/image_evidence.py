"""Does image evidence help, offline? Clinical-only, image experts, early and late fusion.

Every candidate is scored on the same 10 x repeated stratified 3-fold patient-level splits
(seed 0) of the labelled real patients, decided by ``probability >= 0.5``: balanced
accuracy, recall, specificity and ROC AUC as mean ± std (ddof=1) over the 30 folds, and
the paired difference of balanced accuracy against clinical-only XGBoost (today's
recommended model) over the same folds, with Nadeau and Bengio's corrected 95 % interval.
Then the nested cross-validation of "choose the best of these candidates"
(``lympho.selection.nested_cv``) gives the honest estimate of the whole choice, and the
chosen configuration is trained on every patient to report the operating point it stores
(the threshold for 95 % sensitivity, chosen from 10 repeats) with its estimate on held-out
folds. No downloaded weights: morphology features and networks trained on the cohort.

    python benchmarks/image_evidence.py [--data DIR] [--cache-dir DIR] [--repeats 10] [--json FILE]
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lympho.data import load_cohort  # noqa: E402
from lympho.experiment import RECOMMENDED, ExperimentConfig, instance_bags, run_experiment  # noqa: E402
from lympho.scoring import train_model  # noqa: E402
from lympho.selection import config_candidates, corrected_t_interval, nested_cv  # noqa: E402

BASE = ExperimentConfig(encoder="morphology", pooling="moments", classifier="xgboost", imbalance="weights")


def candidates() -> list[ExperimentConfig]:
    """Clinical alone, image experts alone, early fusion, late fusion (mean and stacked), with
    the pooled image expert unregularised (logreg) and with its L2 strength chosen by inner CV
    (logregcv): the README's table, in its order."""
    late = dataclasses.replace(BASE, features="both", fusion="late", image_classifier="logreg")
    cv = dataclasses.replace(late, image_classifier="logregcv")
    return [
        dataclasses.replace(BASE, features="clinical"),
        dataclasses.replace(BASE, features="clinical", classifier="logreg"),
        dataclasses.replace(BASE, features="images", classifier="logreg"),
        dataclasses.replace(BASE, features="images", image_model="topk"),
        dataclasses.replace(BASE, features="images", image_model="attention"),
        dataclasses.replace(BASE, features="both"),
        late,
        dataclasses.replace(late, pooling="mean"),
        dataclasses.replace(late, combine="stacked"),
        dataclasses.replace(late, image_model="topk"),
        dataclasses.replace(late, image_model="pooled+topk"),
        dataclasses.replace(late, classifier="logreg"),
        dataclasses.replace(cv, features="images"),
        cv,
        dataclasses.replace(cv, pooling="mean"),
        dataclasses.replace(cv, combine="stacked"),
        dataclasses.replace(cv, image_model="pooled+topk"),
        dataclasses.replace(cv, pooling="mean", image_model="pooled+topk"),
        dataclasses.replace(cv, classifier="logreg"),
    ]


def nested_grid() -> list[ExperimentConfig]:
    """The candidates of the nested check (README): clinical XGBoost and LogReg, and the
    late fusions that matched them."""
    cv = dataclasses.replace(BASE, features="both", fusion="late", image_classifier="logregcv", pooling="mean")
    return [dataclasses.replace(BASE, features="clinical"), dataclasses.replace(BASE, features="clinical",
                                                                                classifier="logreg"),
            cv, dataclasses.replace(cv, image_model="topk", pooling="moments"), dataclasses.replace(cv, combine="stacked")]


def fold_values(run: dict, metric: str = "balanced_accuracy") -> np.ndarray:
    return np.array([fold[metric] for fold in run["folds"]])


def quality_table(runs: list[dict]) -> pd.DataFrame:
    baseline = fold_values(runs[0])
    n_train, n_test = runs[0]["folds"][0]["n_train"], runs[0]["folds"][0]["n_test"]
    rows = []
    for run in runs:
        summary, diff = run["summary"], fold_values(run) - baseline
        low, high = corrected_t_interval(diff, n_train, n_test) if diff.any() else (0.0, 0.0)
        rows.append({"configuration": run["label"],
                     **{m: f"{summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}"
                        for m in ("balanced_accuracy", "recall", "specificity", "roc_auc")},
                     "Δ BA vs clinical XGBoost": f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--outer-repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cohort = load_cohort(args.data)
    configs = [dataclasses.replace(c, repeats=args.repeats) for c in candidates()]
    bags = instance_bags(cohort.labelled(), configs[2], args.cache_dir)
    runs = []
    for config in configs:
        started = time.perf_counter()
        runs.append(run_experiment(cohort, config, args.cache_dir, bags=bags if config.uses_encoder else None))
        print(f"{runs[-1]['label']}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    table = quality_table(runs)
    print(f"{len(cohort.labelled())} labelled patients, {args.repeats} x 3-fold CV (seed 0), "
          f"malignant when probability >= 0.5; mean ± std over folds (ddof=1); Δ: paired over the same folds")
    print(table.to_string(index=False))
    candidates_, y = config_candidates(cohort, nested_grid(), args.cache_dir)
    nested = nested_cv(candidates_, y, outer_folds=3, outer_repeats=args.outer_repeats, inner_folds=3,
                       inner_repeats=2, seed=0)
    score = nested["nested"]["score"]
    print(f"\nnested CV (outer {args.outer_repeats} x 3-fold, inner 2 x 3-fold): balanced accuracy "
          f"{score['mean']:.3f} ± {score['std']:.3f} [{score['ci_low']:.3f}, {score['ci_high']:.3f}]; "
          f"naive best {nested['naive']['label']}: {nested['naive']['score']['mean']:.3f}; "
          f"chosen {nested['nested']['chosen']}")
    model = train_model(cohort, RECOMMENDED, args.cache_dir)
    point = model.meta["operating_point"]
    print(f"\nRECOMMENDED {model.meta['label']}: stored operating point {json.dumps(point, default=float)}")
    if args.json:
        args.json.write_text(json.dumps({"table": table.to_dict(orient="records"), "nested": nested,
                                         "recommended": {"label": model.meta["label"], "operating_point": point}},
                                        indent=1, default=float))


if __name__ == "__main__":
    main()

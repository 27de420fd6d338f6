"""One 3-fold cross-validation of the cell CNN trained from pixels, timed, on the labelled
real patients: the CNN alone, clinical XGBoost alone, and their late average, all from the
same fits (a late fusion's experts), on the same folds (seed 0); wall and CPU time.

    python benchmarks/cellcnn_cv.py [--data DIR] [--repeats 1]
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from extraction import cpu_model  # noqa: E402
from sklearn.model_selection import RepeatedStratifiedKFold  # noqa: E402

from lympho.data import load_cohort  # noqa: E402
from lympho.encoders.torchvision import resolve_device, resolve_precision  # noqa: E402
from lympho.evaluation import count_metrics  # noqa: E402
from lympho.experiment import ExperimentConfig, config_pipeline, design_matrix  # noqa: E402

CONFIG = ExperimentConfig(features="both", image_model="cellcnn", fusion="late", classifier="xgboost")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    patients = load_cohort(args.data).labelled()
    X, names = design_matrix(patients, CONFIG)
    y = np.array([p.label for p in patients])
    device = resolve_device("auto")
    scores = {"cell CNN": [], "XGBoost clinical": [], "late mean": []}
    wall, cpu = time.perf_counter(), cpu_seconds()
    splits = RepeatedStratifiedKFold(n_splits=3, n_repeats=args.repeats, random_state=0).split(y, y)
    for train, test in splits:
        model = config_pipeline(CONFIG, names).fit(X[train], y[train])
        experts = model.expert_probabilities(X[test])
        for name, probability in (("cell CNN", experts["cellcnn"]), ("XGBoost clinical", experts["clinical"]),
                                  ("late mean", model.predict_proba(X[test])[:, 1])):
            scores[name].append(count_metrics(y[test], probability >= 0.5))
        print(f"fold done at {time.perf_counter() - wall:.0f} s", file=sys.stderr, flush=True)
    results = {"machine": cpu_model(), "device": device.type, "precision": resolve_precision("auto", device),
               "folds": 3 * args.repeats, "wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu}
    for name, rows in scores.items():
        results[name] = {m: f"{np.mean([r[m] for r in rows]):.3f} ± {np.std([r[m] for r in rows], ddof=1):.3f}"
                         for m in ("balanced_accuracy", "recall", "specificity")}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""One 3-fold cross-validation of the cell CNN trained from pixels (images alone and
late-averaged with clinical XGBoost), timed, on the labelled real patients.

    python benchmarks/cellcnn_cv.py [--data DIR] [--cache-dir DIR] [--repeats 1]
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from extraction import cpu_model  # noqa: E402

from lympho.data import load_cohort  # noqa: E402
from lympho.encoders.torchvision import resolve_device, resolve_precision  # noqa: E402
from lympho.experiment import ExperimentConfig, run_experiment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cohort = load_cohort(args.data)
    device = resolve_device("auto")
    results = {"machine": cpu_model(), "device": device.type, "precision": resolve_precision("auto", device)}
    for name, config in (("cnn_images", ExperimentConfig(features="images", image_model="cellcnn")),
                         ("late_clinical_xgboost_cnn", ExperimentConfig(features="both", image_model="cellcnn",
                                                                        fusion="late", classifier="xgboost"))):
        started = time.perf_counter()
        run = run_experiment(cohort, ExperimentConfig.from_dict({**config.to_dict(), "repeats": args.repeats}),
                             args.cache_dir)
        summary = run["summary"]
        results[name] = {"label": run["label"], "seconds": time.perf_counter() - started,
                         **{m: f"{summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}"
                            for m in ("balanced_accuracy", "recall", "specificity", "roc_auc")}}
        print(json.dumps(results[name]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

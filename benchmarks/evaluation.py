"""Time a 3-fold evaluation on cached features, per classifier (MLP's 100 epochs included).

First fills the feature cache (resnet18, random init, so no download is needed), then
times ``run_experiment`` in-process for clinical + image features, and one whole
``python -m lympho evaluate`` process (interpreter start and imports included).

    python benchmarks/evaluation.py [--data DIR] [--cache-dir DIR]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lympho.data import load_cohort  # noqa: E402
from lympho.experiment import ExperimentConfig, instance_bags, run_experiment  # noqa: E402
from lympho.models.classifiers import CLASSIFIERS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cache-dir", type=Path, help="reuse a filled cache (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache_dir or Path(scratch)
        cohort = load_cohort(args.data)
        base = ExperimentConfig(features="both", weights="none", imbalance="weights")
        instance_bags(cohort.labelled(), base, cache)  # fill the cache; not timed
        print(f"{len(cohort.labelled())} patients, clinical + resnet18 mean-pooled features, 3 folds")
        for classifier in CLASSIFIERS:
            config = ExperimentConfig(features="both", weights="none", classifier=classifier)
            started = time.perf_counter()
            run = run_experiment(cohort, config, cache)
            seconds = time.perf_counter() - started
            print(f"  {classifier:8s} {seconds:5.2f} s in-process   "
                  f"balanced accuracy {run['summary']['balanced_accuracy']['mean']:.3f}")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lympho", "evaluate", "--data", str(args.data),
                        "--features", "both", "--weights", "none", "--classifier", "mlp",
                        "--cache-dir", str(cache)], cwd=REPO, check=True, capture_output=True)
        print(f"  whole `python -m lympho evaluate --classifier mlp` process: "
              f"{time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()

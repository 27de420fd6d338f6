"""Choose the recommended configuration by repeated cross-validation, with its spread.

Every candidate is scored on the same 20 x 3-fold patient-level splits (seed 0) of the
labelled real patients; the table is sorted by mean balanced accuracy (± the sample std
over folds, a spread). The winner's score here is optimistic (chosen on these splits), and
fold spreads do not compare candidates: for paired differences over the same splits and the
nested estimate of the whole choice, run ``python -m lympho select`` or
``benchmarks/nested_selection.py``.

    python benchmarks/model_selection.py [--data DIR] [--repeats 20] [--cache-dir DIR] [--images]
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lympho.data import load_cohort  # noqa: E402
from lympho.experiment import ExperimentConfig, instance_bags, run_experiment  # noqa: E402
from lympho.models.classifiers import CLASSIFIERS, IMBALANCE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def candidates(with_images: bool) -> list[ExperimentConfig]:
    grid = [ExperimentConfig(features="clinical", classifier=c, imbalance=i)
            for c in CLASSIFIERS for i in IMBALANCE]
    if with_images:
        grid += [ExperimentConfig(features=f, weights="none", pooling=p, classifier=c, imbalance="weights")
                 for f in ("images", "both") for p in ("mean", "meanmax") for c in CLASSIFIERS]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--images", action="store_true", help="also random-init resnet18 features")
    args = parser.parse_args()
    cohort = load_cohort(args.data)
    rows, bag_memo = [], {}
    for config in candidates(args.images):
        config = dataclasses.replace(config, repeats=args.repeats)
        image_key = (config.encoder, config.weights) if config.uses_images else None
        if image_key and image_key not in bag_memo:
            bag_memo[image_key] = instance_bags(cohort.labelled(), config, args.cache_dir)
        run = run_experiment(cohort, config, args.cache_dir, bags=bag_memo.get(image_key))
        summary = run["summary"]
        rows.append({"configuration": run["label"], "imbalance": config.imbalance,
                     **{f"{m}": f"{summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}"
                        for m in ("balanced_accuracy", "recall", "specificity", "roc_auc")},
                     "mean_ba": summary["balanced_accuracy"]["mean"]})
        print(rows[-1], flush=True, file=sys.stderr)
    table = pd.DataFrame(rows).sort_values("mean_ba", ascending=False).drop(columns="mean_ba")
    print(f"{len(cohort.labelled())} labelled patients, {args.repeats} x 3-fold CV, seed 0")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()

"""Morphology vs the self-supervised (ssl) encoder vs both, as the image expert: out of fold and nested.

For each image encoder (``morphology``; ``ssl``, the weights ``--encoder ssl`` resolves;
``both``: each cell's morphology and ssl features side by side) and each pooling (mean,
mean+max, the cell census with k = 16, 32 (``census``), 64, fitted inside each training fold):

- image-only ROC AUC out of fold: the LogRegCV image expert alone, over ``--repeats`` x
  3-fold CV per split seed of ``--seeds`` (mean over the repeats of each repeat's pooled
  out-of-fold AUC), for the poolings of ``--oof-poolings``;
- fused ROC AUC and balanced accuracy (at 0.5) out of fold: the same expert late-fused with the
  clinical LogReg expert, mean of log-odds, equal weights (the form of selection.fusion_grid);
- the nested estimate (lympho.selection.nested_cv, balanced accuracy at 0.5) of choosing
  the pooling (and so k) among the five fused candidates of that encoder, per split seed of
  ``--nested-seeds``.

Labels are read here (it is an evaluation); the ssl encoder's pretraining read none. Each fit
of the LogRegCV expert takes about 3 s on a loaded 2-core CPU, so run one process per encoder,
niced, and print the tables of their JSON files together:

    nice -n 5 python benchmarks/ssl_comparison.py --encoders ssl --json ssl.json [--data DIR]
        [--cache-dir DIR] [--seeds 0] [--repeats 3] [--nested-seeds 0 1] [--outer-repeats 1]
    python benchmarks/ssl_comparison.py --tables morphology.json ssl.json both.json
"""

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lympho.data import clinical_matrix, load_cohort  # noqa: E402
from lympho.experiment import ExperimentConfig, instance_bags, record_model  # noqa: E402
from lympho.models.fusion import records  # noqa: E402
from lympho.selection import Candidate, nested_cv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POOLINGS = ("mean", "meanmax", "census16", "census", "census64")  # census: k = 32
ENCODERS = {"morphology": ("morphology",), "ssl": ("ssl",), "both": ("morphology", "ssl")}
#: The fused form of selection.fusion_grid: clinical LogReg, image LogRegCV, log-odds mean, equal weights.
FUSED = ExperimentConfig(features="both", encoder="morphology", classifier="logreg", imbalance="weights",
                         fusion="late", combine="logit", image_model="pooled", image_classifier="logregcv")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def encoder_bags(patients, cache_dir) -> dict[str, list[np.ndarray]]:
    """Each encoder's bags of cell features (from the feature cache), and both side by side."""
    single = {name: instance_bags(patients, dataclasses.replace(FUSED, encoder=name), cache_dir)
              for name in ("morphology", "ssl")}
    return {name: [np.hstack(parts) for parts in zip(*(single[p] for p in parts_of))]
            for name, parts_of in ENCODERS.items()}


def expert(pooling: str, fused: bool, seed: int):
    """The image expert (alone, or late-fused with the clinical expert) for ``pooling``."""
    config = dataclasses.replace(FUSED, pooling=pooling, seed=seed)
    return record_model(config if fused else dataclasses.replace(config, features="images", fusion="early"))


def oof_scores(estimator, X, y, repeats: int, seed: int) -> dict:
    """ROC AUC and balanced accuracy (at 0.5) of each repeat's pooled out-of-fold predictions."""
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    aucs, bas = [], []
    for repeat in range(repeats):
        probability = np.empty(len(y))
        for train, test in StratifiedKFold(3, shuffle=True, random_state=seed * 1000 + repeat).split(X, y):
            probability[test] = clone(estimator).fit(X[train], y[train]).predict_proba(X[test])[:, 1]
        aucs.append(roc_auc_score(y, probability))
        bas.append(balanced_accuracy_score(y, probability >= 0.5))
    return {"roc_auc": float(np.mean(aucs)), "roc_auc_sd": float(np.std(aucs, ddof=1)) if repeats > 1 else 0.0,
            "balanced_accuracy": float(np.mean(bas))}


def compare(cohort, cache_dir, encoders, seeds, repeats: int, oof_poolings, nested_seeds, outer_repeats: int,
            inner_repeats: int) -> dict:
    patients = cohort.labelled()
    y = np.array([p.label for p in patients])
    clinical = clinical_matrix(patients)
    bags = encoder_bags(patients, cache_dir)
    rows, nested = [], []
    for name in encoders:
        X = records(clinical, bags[name])
        for seed in seeds:
            for pooling in oof_poolings:
                alone = oof_scores(expert(pooling, False, seed), X, y, repeats, seed)
                fused = oof_scores(expert(pooling, True, seed), X, y, repeats, seed)
                rows.append({"encoder": name, "pooling": pooling, "seed": seed, "image_auc": alone["roc_auc"],
                             "image_auc_sd": alone["roc_auc_sd"], "fused_auc": fused["roc_auc"],
                             "fused_ba": fused["balanced_accuracy"]})
                print(json.dumps(rows[-1]), flush=True)
        for seed in nested_seeds:
            candidates = [Candidate(f"{name}/{p}", expert(p, True, seed), X) for p in POOLINGS]
            result = nested_cv(candidates, y, outer_repeats=outer_repeats, inner_repeats=inner_repeats, seed=seed)
            nested.append({"encoder": name, "seed": seed, "nested_ba": result["nested"]["score"]["mean"],
                           "nested_ba_ci": [result["nested"]["score"]["ci_low"], result["nested"]["score"]["ci_high"]],
                           "naive_ba": result["naive"]["score"]["mean"], "naive": result["naive"]["label"],
                           "chosen": result["nested"]["chosen"]})
            print(json.dumps(nested[-1]), flush=True)
    return {"rows": rows, "nested": nested}


def print_tables(result: dict) -> None:
    import pandas as pd

    rows = pd.DataFrame(result["rows"])
    if len(rows):
        print(f"Out of fold: {len(set(rows.seed))} split seed(s) x {result['repeats']} repeats of 3-fold CV")
        table = rows.groupby(["encoder", "pooling"], sort=False).agg(
            image_auc=("image_auc", "mean"), image_auc_seed_sd=("image_auc", "std"),
            fused_auc=("fused_auc", "mean"), fused_auc_seed_sd=("fused_auc", "std"),
            fused_ba=("fused_ba", "mean")).reset_index()
        print("\nOut of fold (mean over split seeds; sd between seeds)")
        print(table.to_string(index=False, float_format="%.3f"))
    nested = pd.DataFrame(result["nested"])
    if not len(nested):
        return
    print("\nNested estimate (balanced accuracy at 0.5, choosing the pooling among the five fused candidates)")
    print(nested[["encoder", "seed", "nested_ba", "naive_ba", "naive"]].to_string(index=False, float_format="%.3f"))
    print(nested.groupby("encoder", sort=False)["nested_ba"].agg(["mean", "std"]).to_string(float_format="%.3f"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--encoders", nargs="+", choices=tuple(ENCODERS), default=list(ENCODERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="split seeds, out of fold")
    parser.add_argument("--repeats", type=int, default=3, help="3-fold CV repeats per seed, out of fold")
    parser.add_argument("--oof-poolings", nargs="*", choices=POOLINGS, default=["mean", "meanmax", "census"])
    parser.add_argument("--nested-seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--outer-repeats", type=int, default=1, help="outer 3-fold repeats of the nested CV")
    parser.add_argument("--inner-repeats", type=int, default=1, help="inner 3-fold repeats of the nested CV")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tables", nargs="+", type=Path, help="print the tables of these JSON files together")
    args = parser.parse_args()
    if args.tables:
        parts = [json.loads(path.read_text()) for path in args.tables]
        print_tables({"repeats": parts[0]["repeats"], "rows": [r for p in parts for r in p["rows"]],
                      "nested": [n for p in parts for n in p["nested"]]})
        return
    from lympho.encoders.ssl import find_weights, weights_digest

    cohort = load_cohort(args.data)
    weights = find_weights()
    start = time.perf_counter()
    result = compare(cohort, args.cache_dir, args.encoders, args.seeds, args.repeats, args.oof_poolings,
                     args.nested_seeds, args.outer_repeats, args.inner_repeats)
    result["repeats"] = args.repeats
    seconds = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps({"cohort": str(cohort.root), "seconds": seconds, "cpu": cpu_model(),
                                         "ssl_weights": str(weights), **result}, indent=1))
    print_tables(result)
    print(f"\n{seconds:.0f} s on {cpu_model()}; ssl weights {weights} ({weights_digest(weights)[:12]})")


if __name__ == "__main__":
    main()

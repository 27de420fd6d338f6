"""``python -m lympho ablation``: the report's Table 2, or the fusion rows, on shared cached features."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from lympho.cli.common import (ProgressBars, add_config_options, add_data_options, add_engine_options, cache_dir_of,
                               comma_list, config_from, engine_of, load, run_store_of)
from lympho.data import write_text_atomic
from lympho.experiment import FEATURE_SETS, TABLE2_ROWS, TARGET_SENSITIVITY, ExperimentConfig
from lympho.models import CLASSIFIERS, IMBALANCE

#: The report's setting for Table 2: ImageNet ResNet18 features, mean-pooled, weighted loss.
ABLATION_BASE = ExperimentConfig(pooling="mean", imbalance="weights")


def add_parser(commands) -> None:
    """Add the ``ablation`` command to ``commands``, the subparsers of ``python -m lympho``."""
    ablation = commands.add_parser("ablation", help="the report's Table 2, five rows")
    add_data_options(ablation)
    add_config_options(ablation, ABLATION_BASE, ("encoder", "weights", "pooling", "classifier", "imbalance", "folds",
                                                 "repeats", "seed", "precision", "crop", "image_model",
                                                 "combine", "image_classifier", "clinical_weight"))
    ablation.add_argument("--fusion-rows", action="store_true",
                          help="instead of Table 2: clinical alone, each image expert alone, early fusion "
                               "(pooled images) and late fusion, side by side")
    ablation.add_argument("--feature-sets", type=comma_list(FEATURE_SETS),
                          help="custom grid: comma list of clinical,images,both")
    ablation.add_argument("--classifiers", type=comma_list(CLASSIFIERS), help="custom grid: comma list")
    ablation.add_argument("--imbalances", type=comma_list(IMBALANCE), help="comma list (default: weights)")
    ablation.add_argument("--out", type=Path, required=True, help="folder for ablation.csv")
    add_engine_options(ablation)
    ablation.set_defaults(run=cmd_ablation)


def cmd_ablation(args) -> None:
    from lympho import reports
    from lympho.experiment import ablation_table, fusion_configs, run_ablation, table2_layout

    fusion_base = dataclasses.replace(ABLATION_BASE, fusion="late")  # --clinical-weight applies to its late row
    base = config_from(args, fusion_base if args.fusion_rows else ABLATION_BASE)
    cohort = load(args)
    custom = args.feature_sets or args.classifiers
    rows = (list(itertools.product(args.feature_sets or ["clinical", "images", "both"],
                                   args.classifiers or ["svm", "mlp"])) if custom else TABLE2_ROWS)
    runs, bars, engine = [], ProgressBars(), engine_of(args)
    for imbalance in args.imbalances or [base.imbalance]:
        configs = fusion_configs(dataclasses.replace(base, imbalance=imbalance)) if args.fusion_rows else None
        runs += run_ablation(cohort, dataclasses.replace(base, imbalance=imbalance), rows,
                             cache_dir_of(args), bars, engine=engine, configs=configs)[1]
    table = ablation_table(runs)
    store = run_store_of(args)
    for run in runs:
        store.save(run)
    args.out.mkdir(parents=True, exist_ok=True)
    table.insert(0, "synthetic", cohort.synthetic)
    write_text_atomic(args.out / "ablation.csv", reports.csv_text(table))
    print(table2_layout(table).to_string(float_format="%.2f"))
    points = reports.operating_point_table(runs, TARGET_SENSITIVITY)
    if (points["Threshold"] == reports.ONE_REPEAT).all():
        print(f"(--repeats 2 or more also shows each configuration at its {TARGET_SENSITIVITY:.0%}-sensitivity threshold)")
    else:
        print(f"\nat each configuration's threshold for {TARGET_SENSITIVITY:.0%} sensitivity instead (train "
              f"--sensitivity {TARGET_SENSITIVITY}), apparent: the median of the repeats' thresholds, each repeat "
              "decided at the other repeats' median, read from these same patients; 95% CI by bootstrap over patients:")
        print(points.to_string(index=False))
    print(f"wrote {args.out / 'ablation.csv'}")

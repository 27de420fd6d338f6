"""Command line: ``python -m lympho {evaluate,ablation,extract,train,predict,score}``.

Every command calls the same core functions as the dashboard. With no ``--data`` (and
no ``LYMPHO_DATA``) the synthetic demo cohort is used, and every output says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from lympho.backbones import BACKBONES, PRECISIONS, WEIGHTS, WeightsUnavailable
from lympho.classifiers import CLASSIFIERS, IMBALANCE
from lympho.data import SPLITS, CohortError, default_cache_dir, parse_dob, resolve_cohort
from lympho.evaluation import METRICS
from lympho.experiment import (FEATURE_SETS, ExperimentConfig, RunStore, make_extractor,
                               run_ablation, run_experiment, write_json_atomic)
from lympho.pooling import POOLINGS
from lympho.scoring import RECOMMENDED, ModelError, load_model, make_patient, save_model, score_patient, train_model

CONFIG_OPTIONS = {  # option -> (type, choices); None means "keep the base config's value"
    "features": (str, FEATURE_SETS), "backbone": (str, tuple(BACKBONES)), "weights": (str, WEIGHTS),
    "pooling": (str, tuple(POOLINGS)), "classifier": (str, CLASSIFIERS),
    "imbalance": (str, IMBALANCE), "precision": (str, PRECISIONS),
    "folds": (int, None), "repeats": (int, None), "seed": (int, None), "crop": (int, None),
}


#: The report's setting for Table 2: ImageNet ResNet18 features, mean-pooled, weighted loss.
ABLATION_BASE = ExperimentConfig(pooling="mean", imbalance="weights")
EXTRACT_BASE = ExperimentConfig()


class ProgressBars:
    """One tqdm bar per stage ("extract", "folds"), on stderr."""

    def __init__(self):
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        unit = {"extract": "img", "folds": "fold"}.get(stage, "it")
        bar = self.bars.get(stage)
        if bar is None or bar.total != total:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="cohort directory (challenge layout); default: "
                        "$LYMPHO_DATA, else the synthetic demo cohort")
    parser.add_argument("--cache-dir", type=Path, help="feature cache and run store; default: "
                        "$LYMPHO_CACHE, else ~/.cache/lympho")


def add_config_options(parser: argparse.ArgumentParser, base: ExperimentConfig,
                       names=tuple(CONFIG_OPTIONS)) -> None:
    for name in names:
        kind, choices = CONFIG_OPTIONS[name]
        default = getattr(base, name)
        parser.add_argument(f"--{name}", type=kind, choices=choices,
                            help=f"default: {'none' if default is None else default}")
    if "features" in names:
        parser.add_argument("--raw-count", action="store_true", help="use the lymphocyte count unlogged")


def config_from(args, base: ExperimentConfig) -> ExperimentConfig:
    overrides = {name: getattr(args, name) for name in CONFIG_OPTIONS
                 if getattr(args, name, None) is not None}
    if getattr(args, "raw_count", False):
        overrides["log_count"] = False
    return dataclasses.replace(base, **overrides)


def cache_dir_of(args) -> Path:
    return args.cache_dir or default_cache_dir()


def load(args):
    cohort = resolve_cohort(args.data, cache_dir_of(args))
    if cohort.synthetic:
        print(f"[SYNTHETIC DEMO COHORT: {cohort.root}; pass --data DIR for real patients]", file=sys.stderr)
    for warning in cohort.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return cohort


def fold_table(folds: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(folds)[["repeat", "fold", *METRICS, "confusion_matrix"]]
    return table.rename(columns={"balanced_accuracy": "bal_acc"})


def summary_line(summary: dict) -> str:
    return "  ".join(f"{m}={summary[m]['mean']:.3f}±{summary[m]['std']:.3f}" for m in METRICS)


def cmd_evaluate(args) -> None:
    cohort = load(args)
    config = config_from(args, RECOMMENDED)
    run = run_experiment(cohort, config, cache_dir_of(args), ProgressBars())
    run_id = RunStore(cache_dir_of(args) / "runs").save(run)
    print(f"{run['label']}  ({'synthetic demo' if cohort.synthetic else cohort.name})")
    print(fold_table(run["folds"]).to_string(index=False, float_format="%.3f"))
    print("mean±std: " + summary_line(run["summary"]))
    print(f"run stored as {run_id}")
    if args.json:
        write_json_atomic(args.json, {k: run[k] for k in ("config", "cohort", "folds", "summary")})


def cmd_ablation(args) -> None:
    cohort = load(args)
    base = config_from(args, ABLATION_BASE)
    table, runs = run_ablation(cohort, base, cache_dir=cache_dir_of(args), progress=ProgressBars())
    store = RunStore(cache_dir_of(args) / "runs")
    for run in runs:
        store.save(run)
    args.out.mkdir(parents=True, exist_ok=True)
    table.insert(0, "synthetic", cohort.synthetic)
    table.to_csv(args.out / "ablation.csv", index=False)
    wide = table.pivot_table(index="configuration", columns="fold", sort=False,
                             values=["balanced_accuracy", "f1", "recall"])
    print(wide.to_string(float_format="%.2f"))
    print(f"wrote {args.out / 'ablation.csv'}")


def cmd_extract(args) -> None:
    cohort = load(args)
    config = config_from(args, EXTRACT_BASE)
    patients = cohort.select(args.split)
    extractor = make_extractor(config, cache_dir_of(args))
    bars = ProgressBars()
    extractor.bags(patients, lambda done, total: bars("extract", done, total))
    stats = extractor.last_stats
    print(f"{stats['images']} images ({stats['extracted']} extracted, {stats['cached']} cached) in "
          f"{stats['seconds']:.1f} s: {stats['images_per_second']:.0f} img/s "
          f"[{config.backbone}, {config.weights}, {extractor.precision}, {extractor.device}]")


def cmd_train(args) -> None:
    cohort = load(args)
    config = config_from(args, RECOMMENDED)
    model = train_model(cohort, config, cache_dir_of(args), ProgressBars())
    save_model(model, args.out)
    print(f"trained {model.meta['label']} on {len(cohort.labelled())} patients -> {args.out}")


def cmd_predict(args) -> None:
    model = load_model(args.model)
    cohort = load(args)
    patients = cohort.select(args.split)
    predictions = model.predict(patients, cache_dir_of(args), ProgressBars())
    if args.kaggle:
        predictions = predictions.rename(columns={"id": "Id", "prediction": "Predicted"})[["Id", "Predicted"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    predictions.to_csv(tmp, index=False)
    tmp.replace(args.out)
    print(f"wrote {len(predictions)} predictions ({args.split}) -> {args.out}")


def cmd_score(args) -> None:
    model = load_model(args.model)
    dob = parse_dob(args.dob) if args.dob else None
    patient = make_patient(args.images, args.gender, args.lymph_count, age=args.age, dob=dob)
    result = score_patient(model, patient, cache_dir_of(args))
    decision = "malignant" if result["prediction"] else "reactive"
    print(f"probability of malignancy {result['probability']:.3f} -> {decision} "
          f"({result['n_images']} images; model: {result['model']})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lympho",
        description="Reactive (0) or malignant (1) lymphocytosis from blood-smear image bags and clinical data.")
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="cross-validate one configuration")
    add_data_options(evaluate)
    add_config_options(evaluate, RECOMMENDED)
    evaluate.add_argument("--json", type=Path, help="write config, folds and summary here")
    evaluate.set_defaults(run=cmd_evaluate)

    ablation = commands.add_parser("ablation", help="the report's Table 2, five rows")
    add_data_options(ablation)
    add_config_options(ablation, ABLATION_BASE, ("backbone", "weights", "pooling", "imbalance", "folds",
                                                 "repeats", "seed", "precision", "crop"))
    ablation.add_argument("--out", type=Path, required=True, help="folder for ablation.csv")
    ablation.set_defaults(run=cmd_ablation)

    extract = commands.add_parser("extract", help="fill the feature cache, report img/s")
    add_data_options(extract)
    add_config_options(extract, EXTRACT_BASE, ("backbone", "weights", "precision", "crop"))
    extract.add_argument("--split", choices=(*SPLITS, "all"), default="all")
    extract.set_defaults(run=cmd_extract)

    train = commands.add_parser("train", help="fit on all labelled patients (default: recommended config)")
    add_data_options(train)
    add_config_options(train, RECOMMENDED)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.set_defaults(run=cmd_train)

    predict = commands.add_parser("predict", help="predict a split of a cohort")
    add_data_options(predict)
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--split", choices=tuple(SPLITS), default="test")
    predict.add_argument("--out", type=Path, required=True, help="CSV: ID,probability,prediction")
    predict.add_argument("--kaggle", action="store_true", help="write the challenge's Id,Predicted")
    predict.set_defaults(run=cmd_predict)

    score = commands.add_parser("score", help="score one patient from a folder of images")
    score.add_argument("--model", type=Path, required=True)
    score.add_argument("--images", type=Path, required=True)
    score.add_argument("--gender", required=True, help="M or F")
    born = score.add_mutually_exclusive_group(required=True)
    born.add_argument("--dob", help="date of birth: M/D/YYYY, DD-MM-YYYY or YYYY-MM-DD")
    born.add_argument("--age", type=float, help="age in years")
    score.add_argument("--lymph-count", required=True, help="lymphocytes, x10^9/L")
    score.add_argument("--cache-dir", type=Path)
    score.set_defaults(run=cmd_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CohortError, ModelError, WeightsUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the cache keeps what was extracted so far", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m lympho {data,evaluate,ablation,extract,train,predict,score,runs}``.

Every command calls the same core functions as the dashboard. With no ``--data`` (and
no ``LYMPHO_DATA``) the synthetic demo cohort is used, and every output says so.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import itertools
import json
import os
import sys
import threading
import tempfile
from pathlib import Path

# Only light modules at the top: `--help` and argument errors must answer in well under a
# second, so torch, scikit-learn, xgboost, pandas and plotly are imported inside the
# commands that use them (tests/test_cli_startup.py checks this).
from lympho.data import (REFERENCE_DATE, SPLITS, CacheError, CohortError, default_cache_dir, overview, parse_dob,
                         resolve_cohort, usable_cache_dir, write_text_atomic)
from lympho.encoders import ENCODERS, PRECISIONS, WEIGHTS
from lympho.experiment import (FEATURE_SETS, RECOMMENDED, TABLE2_ROWS, TARGET_SENSITIVITY, THRESHOLD_REPEATS,
                               ExperimentConfig, write_json_atomic)
from lympho.models import CLASSIFIERS, COMBINES, FUSIONS, IMAGE_CLASSIFIERS, IMAGE_MODELS, IMBALANCE
from lympho.pooling import POOLINGS

#: lympho.evaluation.METRICS, spelled out so that parsing never imports scikit-learn
#: (tests/test_cli_startup.py checks that the two agree).
METRIC_NAMES = ("balanced_accuracy", "f1", "recall", "specificity", "precision", "roc_auc")
CONFIG_OPTIONS = {  # option -> (type, choices); None means "keep the base config's value"
    "features": (str, FEATURE_SETS), "encoder": (str, tuple(ENCODERS)), "weights": (str, WEIGHTS),
    "pooling": (str, tuple(POOLINGS)), "classifier": (str, CLASSIFIERS),
    "imbalance": (str, IMBALANCE), "precision": (str, PRECISIONS),
    "folds": (int, None), "repeats": (int, None), "seed": (int, None), "crop": (int, None),
    "image_model": (str, None), "fusion": (str, FUSIONS), "combine": (str, COMBINES),
    "image_classifier": (str, IMAGE_CLASSIFIERS), "clinical_weight": (float, None),
}
HELP = {"image_model": f"image expert(s): {', '.join(IMAGE_MODELS)}, or several joined by + (late fusion)",
        "fusion": "clinical + images: early (one table) or late (experts combined)",
        "combine": "late fusion: mean of the experts' probabilities, or stacked (logistic regression on "
                   "inner out-of-fold predictions)",
        "image_classifier": "classifier of the pooled image expert in late fusion (logregcv: logistic regression "
                            "with its L2 strength chosen by inner CV)",
        "clinical_weight": "late fusion by mean or logit: the clinical expert's share, between 0 and 1, the image "
                           "experts sharing the rest (0.5 with one image expert: equal)"}


#: The report's setting for Table 2: ImageNet ResNet18 features, mean-pooled, weighted loss.
ABLATION_BASE = ExperimentConfig(pooling="mean", imbalance="weights")
EXTRACT_BASE = ExperimentConfig()


class ProgressBars:
    """One tqdm bar per stage ("extract", "folds"), on stderr."""

    def __init__(self):
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        unit = {"extract": "img", "folds": "fold", "fits": "fit"}.get(stage, "it")
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
        aliases = ("--backbone",) if name == "encoder" else ()  # the option's name before 2026-11
        default_text = f"default: {'none' if default is None else default}"
        parser.add_argument(f"--{name.replace('_', '-')}", *aliases, dest=name, type=kind, choices=choices,
                            help=f"{HELP[name]}; {default_text}" if name in HELP else default_text)
    if "features" in names:
        parser.add_argument("--raw-count", action="store_true", help="use the lymphocyte count unlogged")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this machine (default); ray: a Ray cluster "
                             "(pip install -r requirements-ray.txt)")
    parser.add_argument("--address", help="Ray cluster to join, e.g. ray://head:10001 (default: $RAY_ADDRESS, "
                        "else a local Ray instance on this machine's cores)")


def engine_of(args):
    """The Ray engine when asked for (imported only then), else None: this process."""
    if args.engine != "ray":
        return None
    from lympho.distributed import RayEngine

    return RayEngine(args.address)


def add_trust_pickle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-pickle", action="store_true",
                        help="also load an old-format model (pipeline.joblib, a pickle that runs code when "
                             "loaded): only for a model from a source you trust")


def config_from(args, base: ExperimentConfig) -> ExperimentConfig:
    overrides = {name: getattr(args, name) for name in CONFIG_OPTIONS
                 if getattr(args, name, None) is not None}
    if getattr(args, "raw_count", False):
        overrides["log_count"] = False
    config = dataclasses.replace(base, **overrides)
    if "clinical_weight" in overrides and not config.clinical_weight_applies:
        raise ValueError("--clinical-weight applies only to late fusion of clinical and image experts combined "
                         "by mean or logit (--features both --fusion late --combine mean|logit; ablation: "
                         "--fusion-rows)")
    return config


def cache_dir_of(args) -> Path:
    """The cache directory, created and checked writable (a one-line error naming it if not)."""
    return usable_cache_dir(args.cache_dir or default_cache_dir())


def load(args):
    cohort = resolve_cohort(args.data, cache_dir_of(args))
    if cohort.synthetic:
        print(f"[SYNTHETIC DEMO COHORT: {cohort.root}; pass --data DIR for real patients]", file=sys.stderr)
    for warning in cohort.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return cohort


def fold_table(folds: list[dict]):
    import pandas as pd

    from lympho.evaluation import METRICS

    table = pd.DataFrame(folds)[["repeat", "fold", *METRICS, "confusion_matrix"]]
    return table.rename(columns={"balanced_accuracy": "bal_acc"})


def summary_line(summary: dict) -> str:
    from lympho.evaluation import METRICS

    return "  ".join(f"{m}={summary[m]['mean']:.3f}±{summary[m]['std']:.3f}" for m in METRICS)


def print_headline(run: dict) -> None:
    """A run's headline figures with their intervals (lympho.evaluation.run_estimates), if it has them."""
    from lympho.evaluation import run_estimates

    estimates = run_estimates(run)
    if estimates is not None:
        print(f"at threshold {estimates['threshold']:g} (malignant when probability >= threshold):")
        print("\n".join(headline_lines(estimates)))


def print_operating_point(run: dict) -> None:
    """Where a model trained like ``run`` would decide (runs of 2 or more repeats), as ``train`` prints it."""
    from lympho.evaluation import run_operating_point

    point = run_operating_point(run, TARGET_SENSITIVITY)
    if point is not None:
        print("where a model trained like this would decide (each repeat at the other repeats' threshold):")
        print("\n".join(operating_point_lines(point)))


def print_calibration(run: dict) -> None:
    """The reliability of a run's probabilities (lympho.evaluation.reliability), as the Experiment page draws it."""
    from lympho.evaluation import reliability

    if "id" not in run["oof"]:  # stored before patient ids were kept
        return
    result = reliability(run["oof"])
    groups = "; ".join(f"{g.mean_probability:.2f} -> {g.malignant}/{g.n} malignant ({g.fraction:.0%}, "
                       f"{g.low:.0%}-{g.high:.0%})" for g in result["table"].itertuples())
    brier = result["brier"]
    print(f"calibration (patients in {len(result['table'])} equal groups by out-of-fold probability, mean over "
          f"repeats; {result['level']:.0%} Wilson CI): {groups}; Brier score {brier['mean']:.3f} ± "
          f"{brier['std']:.3f} over {brier['repeats']} repeat(s)")


def headline_lines(estimates: dict) -> list[str]:
    """The headline metrics with their intervals, worded as everywhere else (format_estimate)."""
    from lympho.evaluation import HEADLINE, format_estimate

    return [f"{m}: {format_estimate(estimates, m)}" for m in HEADLINE]


def operating_point_lines(point: dict) -> list[str]:
    """A model's decision threshold, how it was chosen, and what it reaches out of fold."""
    how = "fixed"
    if point.get("target_sensitivity"):
        spread = point.get("per_repeat") or [point["threshold"]]
        how = (f"chosen for sensitivity {point['target_sensitivity']:.2f}: median of {len(spread)} repeats' "
               f"thresholds, which ranged {min(spread):.3f}-{max(spread):.3f}")
    lines = [f"decision: malignant when probability >= {point['threshold']:.3f} ({how})"]
    if point.get("estimate"):
        lines += [f"  {line}" for line in headline_lines(point["estimate"])]
    return lines


def cmd_evaluate(args) -> None:
    from lympho.experiment import run_experiment

    config = config_from(args, RECOMMENDED)  # a bad option fails before the cohort loads
    cohort = load(args)
    run = run_experiment(cohort, config, cache_dir_of(args), ProgressBars())
    run_id = run_store_of(args).save(run)
    print(f"{run['label']}  ({'synthetic demo' if cohort.synthetic else cohort.name})")
    print(fold_table(run["folds"]).to_string(index=False, float_format="%.3f"))
    print("mean ± std over folds (sample std, ddof=1): " + summary_line(run["summary"]))
    print_headline(run)
    print_operating_point(run)
    print_calibration(run)
    print(f"run stored as {run_id}")
    if args.json:
        write_json_atomic(args.json, {k: run[k] for k in ("config", "cohort", "folds", "summary")})


def cmd_data(args) -> None:
    cohort = load(args)
    print(f"{cohort.name}: {len(cohort.patients)} patients, "
          f"{sum(len(p.images) for p in cohort.patients)} images (ages at {REFERENCE_DATE})")
    print(overview(cohort).to_string(index=False, float_format="%.1f"))


def comma_list(allowed):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        wrong = [item for item in items if item not in allowed]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return items
    return parse


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
        print(f"\nat each configuration's threshold for {TARGET_SENSITIVITY:.0%} sensitivity (median of the repeats' "
              "thresholds; each repeat decided at the other repeats' median; 95% CI by bootstrap over patients):")
        print(points.to_string(index=False))
    print(f"wrote {args.out / 'ablation.csv'}")


def cmd_extract(args) -> None:
    from lympho.experiment import make_extractor

    config = config_from(args, EXTRACT_BASE)
    cohort = load(args)
    patients = cohort.select(args.split)
    extractor = make_extractor(config, cache_dir_of(args), engine_of(args), args.rehash, args.device)
    bars = ProgressBars()
    extractor.bags(patients, lambda done, total: bars("extract", done, total))
    stats = extractor.last_stats
    print(f"{stats['images']} images ({stats['extracted']} extracted, {stats['cached']} cached) in "
          f"{stats['seconds']:.1f} s: {stats['images_per_second']:.0f} img/s "
          f"[{describe_encoder(extractor.describe())}]")


def describe_encoder(record: dict) -> str:
    """``resnet18 v2, weights=none, device=cpu, precision=bf16, ...`` from an encoder record."""
    details = (f"{k}={v}" for k, v in record.items() if k not in ("name", "version", "kind") and v is not None)
    return f"{record['name']} v{record['version']}, " + ", ".join(details)


def cmd_train(args) -> None:
    from lympho.scoring import save_model, train_model

    config = config_from(args, RECOMMENDED)  # a bad option fails before the cohort loads
    cohort = load(args)
    model = train_model(cohort, config, cache_dir_of(args), ProgressBars(), sensitivity=args.sensitivity,
                        threshold=args.threshold, threshold_repeats=args.threshold_repeats)
    save_model(model, args.out)
    print(f"trained {model.meta['label']} on {len(cohort.labelled())} patients -> {args.out}")
    print("\n".join(operating_point_lines(model.meta["operating_point"])))


def chosen_threshold(model, args) -> float:
    """``--threshold``, else the threshold for ``--sensitivity``, else the model's stored one."""
    if args.sensitivity is not None:
        return model.threshold_for_sensitivity(args.sensitivity)
    return model.threshold if args.threshold is None else args.threshold


def cmd_predict(args) -> None:
    if args.split == "train" and not args.in_sample:
        raise ValueError("--split train predicts the patients the model was trained on: in-sample "
                         "predictions, far better than on new patients. Pass --in-sample to write them "
                         "anyway; for honest figures use `python -m lympho evaluate`.")
    from lympho import reports
    from lympho.scoring import load_model

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    cohort = load(args)
    threshold = chosen_threshold(model, args)
    predictions = model.predict(cohort.select(args.split), cache_dir_of(args), ProgressBars(), threshold)
    write_text_atomic(args.out, reports.submission_csv(predictions) if args.kaggle
                      else reports.csv_text(predictions))
    note = " (IN-SAMPLE: the model was trained on these patients)" if args.split == "train" else ""
    print(f"wrote {len(predictions)} predictions ({args.split}){note}, malignant when probability >= "
          f"{threshold:.3f} -> {args.out}")


def patient_images(source: Path, scratch: Path) -> Path | list[Path]:
    """A folder as it is; a zip (or one image) checked and unpacked like a dashboard upload."""
    from lympho.uploads import save_uploads

    if source.is_dir():
        return source
    if not source.is_file():
        raise CohortError("no such image folder or file", source)
    return save_uploads([(source.name, source.read_bytes())], scratch / "patient")


def cmd_score(args) -> None:
    from lympho import reports
    from lympho.decision import evidence_text, similar_text
    from lympho.scoring import instance_scores, load_model, make_patient, score_patient

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    dob = parse_dob(args.dob) if args.dob else None
    threshold = chosen_threshold(model, args)
    with tempfile.TemporaryDirectory() as scratch:
        patient = make_patient(patient_images(args.images, Path(scratch)), args.gender, args.lymph_count,
                               age=args.age, dob=dob)
        cache_dir = cache_dir_of(args)
        result = score_patient(model, patient, cache_dir, threshold)
        cells = instance_scores(model, patient, cache_dir)
        ranked = [] if cells is None else [(p.read_bytes(), s) for p, s in zip(cells.path, cells.score)]
    decision = "malignant" if result["prediction"] else "reactive"
    print(f"probability of malignancy {result['probability']:.3f} -> {decision} at threshold "
          f"{threshold:.3f} ({result['n_images']} images; model: {result['model']})")
    evidence, similar = evidence_text(result), similar_text(result)
    if evidence:
        print(f"each expert's probability: {evidence}")
    if similar:
        print(similar)
    if args.report:
        write_text_atomic(args.report, reports.patient_report_html(result, ranked[:reports.MAX_CELLS]))
        print(f"wrote the one-page report -> {args.report}")


def run_store_of(args):
    from lympho.runstore import RunStore

    return RunStore(cache_dir_of(args) / "runs")


def cmd_select(args) -> None:
    from lympho.experiment import cohort_summary
    from lympho.selection import GRIDS, candidates_table, config_candidates, nested_cv

    cohort = load(args)
    grid = [dataclasses.replace(config, seed=args.seed) for config in GRIDS[args.grid]()
            if config.classifier in (args.classifiers or CLASSIFIERS)
            and config.imbalance in (args.imbalances or IMBALANCE)]
    bars = ProgressBars()
    candidates, y = config_candidates(cohort, grid, cache_dir_of(args), bars)
    result = nested_cv(candidates, y, outer_folds=args.outer_folds, outer_repeats=args.outer_repeats,
                       inner_folds=args.inner_folds, inner_repeats=args.inner_repeats, seed=args.seed,
                       sensitivity=args.sensitivity, progress=lambda done, total: bars("fits", done, total))
    print("\n".join(selection_report(result, cohort)))
    print(candidates_table(result).to_string(index=False, float_format="%.3f"))
    if args.json:
        write_json_atomic(args.json, {"cohort": cohort_summary(cohort), **result})


def selection_report(result: dict, cohort) -> list[str]:
    """The nested and the naive estimate side by side, with the settings they come from."""
    from lympho.evaluation import HEADLINE, format_estimate

    settings, nested, naive = result["settings"], result["nested"], result["naive"]
    metric = settings["metric"]
    design = (f"outer {settings['outer_repeats']} x {settings['outer_folds']}-fold CV, inner "
              f"{settings['inner_repeats']} x {settings['inner_folds']}-fold CV, seed {settings['seed']}")
    rule = (f"malignant when probability >= {settings['threshold']:g}" if settings.get("sensitivity") is None else
            f"decided at each candidate's threshold for {settings['sensitivity']:.0%} sensitivity, chosen on the "
            f"training patients (median over the inner repeats)")
    lines = [f"{'synthetic demo' if cohort.synthetic else cohort.name}: {settings['n_patients']} labelled patients, "
             f"{settings['n_candidates']} candidates, {design}; {rule}",
             "", f"NESTED estimate (the whole choose-the-best procedure, chosen inside each outer training fold):"]
    lines += [f"  {metric} over outer splits: " + split_line(nested["score"])]
    lines += [f"  {m}: {format_estimate(nested['estimates'], m)}" for m in HEADLINE]
    lines += ["", f"NAIVE best-of-grid estimate ({naive['label']}, chosen and scored on the same outer splits):"]
    lines += [f"  {metric} over outer splits: " + split_line(naive["score"])]
    lines += [f"  {m}: {format_estimate(naive['estimates'], m)}" for m in HEADLINE]
    lines += ["", f"optimism of the naive figure: {result['optimism']:+.3f} {metric}",
              "inner-selection winners: " + ", ".join(f"{k} x{v}" for k, v in nested["chosen"].items()), "",
              "candidates on the outer splits; paired differences to the best over the same splits "
              "(Nadeau-Bengio corrected 95% CI) and the fraction of splits where each did at least as well:"]
    return lines


def split_line(score: dict) -> str:
    return (f"mean {score['mean']:.3f}, std {score['std']:.3f} (ddof=1), corrected 95% CI "
            f"{score['ci_low']:.3f}-{score['ci_high']:.3f}")


def cmd_runs_list(args) -> None:
    from lympho.runstore import tracker_table

    runs = [r for r in run_store_of(args).runs() if not args.tag or args.tag in r.get("tags", [])]
    if not runs:
        print("no stored runs" + (f" tagged {args.tag!r}" if args.tag else ""))
        return
    table = tracker_table(runs, all_fields=args.all_params).drop(columns=["note"])
    table = table[["id", *table.columns.drop("id")]].sort_values(args.sort, ascending=False, kind="stable")
    print(table.to_string(index=False, float_format="%.3f"))


def cmd_runs_show(args) -> None:
    from lympho.runstore import display_name

    run = run_store_of(args).load(args.id)
    print(f"{run['id']}: {display_name(run)}  [{', '.join(run.get('tags', []))}]")
    print(f"created {run['created']}; cohort {run['cohort']['name']} ({run['cohort']['n_labelled']} labelled"
          f"{', synthetic demo' if run['cohort']['synthetic'] else ''})")
    print("config: " + ", ".join(f"{k}={v}" for k, v in run["config"].items()))
    if run.get("note"):
        print(f"note: {run['note']}")
    print(fold_table(run["folds"]).to_string(index=False, float_format="%.3f"))
    print("mean ± std over folds (sample std, ddof=1): " + summary_line(run["summary"]))
    print_headline(run)
    print_operating_point(run)
    print_calibration(run)


def cmd_runs_edit(args) -> None:
    from lympho.runstore import display_name

    store = run_store_of(args)
    if args.action == "tag":
        run = store.tag(args.id, add=args.add or [], remove=args.remove or [])
        print(f"{args.id}: tags {', '.join(run['tags']) or '(none)'}")
    elif args.action == "note":
        store.note(args.id, args.text)
        print(f"{args.id}: note saved")
    elif args.action == "rename":
        print(f"{args.id}: now named {display_name(store.rename(args.id, args.name))!r}")
    else:
        for run_id in args.ids:
            store.delete(run_id)
            print(f"deleted {run_id}")


def cmd_runs_export(args) -> None:
    from lympho import reports

    store = run_store_of(args)
    unknown = set(args.ids or []) - set(store.ids())
    if unknown:
        raise ValueError(f"no stored run(s) {', '.join(sorted(unknown))}; see `python -m lympho runs list`")
    runs = [run for run in store.runs() if not args.ids or run["id"] in args.ids]
    if not runs:
        raise ValueError("no stored runs to export")
    kind = args.out.suffix.lower()
    exporters = {".csv": lambda: reports.csv_text(reports.runs_table(runs)),
                 ".json": lambda: json.dumps(runs, indent=1), ".html": lambda: reports.runs_report_html(runs)}
    if kind not in exporters:
        raise ValueError(f"{args.out}: the file name must end in .csv, .json or .html")
    write_text_atomic(args.out, exporters[kind]())
    print(f"exported {len(runs)} run(s) -> {args.out}")


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    point = parser.add_mutually_exclusive_group()
    point.add_argument("--threshold", type=float, help="decision threshold: malignant when probability >= it "
                       "(default: the model's stored threshold)")
    point.add_argument("--sensitivity", type=float, help="use the threshold for this out-of-fold sensitivity "
                       "on the training patients (median over the model's cross-validation repeats)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lympho",
        description="Reactive (0) or malignant (1) lymphocytosis from blood-smear image bags and clinical data.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="summarise a cohort")
    add_data_options(data)
    data.set_defaults(run=cmd_data)

    evaluate = commands.add_parser("evaluate", help="cross-validate one configuration")
    add_data_options(evaluate)
    add_config_options(evaluate, RECOMMENDED)
    evaluate.add_argument("--json", type=Path, help="write config, folds and summary here")
    evaluate.set_defaults(run=cmd_evaluate)

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

    extract = commands.add_parser("extract", help="fill the feature cache, report img/s")
    add_data_options(extract)
    add_config_options(extract, EXTRACT_BASE, ("encoder", "weights", "precision", "crop"))
    extract.add_argument("--split", choices=(*SPLITS, "all"), default="all")
    extract.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else cpu), cpu, "
                         "cuda or cuda:N; on a Ray cluster whose head has no GPU, pass cuda (and --precision bf16)")
    extract.add_argument("--rehash", action="store_true", help="read and hash every image again, even those "
                         "whose size and modification time are unchanged since the last run")
    add_engine_options(extract)
    extract.set_defaults(run=cmd_extract)

    train = commands.add_parser("train", help="fit on all labelled patients (default: recommended config)")
    add_data_options(train)
    add_config_options(train, RECOMMENDED)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    point = train.add_mutually_exclusive_group()
    point.add_argument("--sensitivity", type=float, default=TARGET_SENSITIVITY,
                       help=f"store the threshold for this out-of-fold sensitivity, chosen from "
                            f"--threshold-repeats repeats (default {TARGET_SENSITIVITY})")
    point.add_argument("--threshold", type=float, help="store this fixed threshold instead")
    train.add_argument("--threshold-repeats", type=int, default=THRESHOLD_REPEATS,
                       help=f"cross-validation repeats to choose and check the threshold (default {THRESHOLD_REPEATS})")
    train.set_defaults(run=cmd_train)

    predict = commands.add_parser("predict", help="predict a split of a cohort")
    add_data_options(predict)
    predict.add_argument("--model", type=Path, required=True)
    add_trust_pickle(predict)
    predict.add_argument("--split", choices=tuple(SPLITS), default="test")
    predict.add_argument("--out", type=Path, required=True, help="CSV: ID,probability,prediction")
    predict.add_argument("--kaggle", action="store_true", help="write the challenge's Id,Predicted")
    predict.add_argument("--in-sample", action="store_true",
                         help="allow --split train (in-sample predictions of the training patients)")
    add_threshold_options(predict)
    predict.set_defaults(run=cmd_predict)

    score = commands.add_parser("score", help="score one patient from a folder of images")
    score.add_argument("--model", type=Path, required=True)
    add_trust_pickle(score)
    score.add_argument("--images", type=Path, required=True, help="a folder of images, or a zip of them")
    score.add_argument("--gender", required=True, help="M or F")
    born = score.add_mutually_exclusive_group(required=True)
    born.add_argument("--dob", help="date of birth: M/D/YYYY, DD-MM-YYYY or YYYY-MM-DD")
    born.add_argument("--age", type=float, help=f"age today in years; converted to the model's age at "
                      f"{REFERENCE_DATE} (the age minus the years since then)")
    score.add_argument("--lymph-count", required=True, help="lymphocytes, x10^9/L")
    add_threshold_options(score)
    score.add_argument("--report", type=Path, help="write a one-page HTML report here")
    score.add_argument("--cache-dir", type=Path)
    score.set_defaults(run=cmd_score)

    select = commands.add_parser("select", help="nested cross-validation of choosing the best configuration")
    add_data_options(select)
    select.add_argument("--grid", choices=("clinical", "images", "fusion"), default="clinical",
                        help="the candidates: clinical (12: classifier x imbalance), images (those and 16 on "
                             "random-initialisation resnet18 features; extracts them once) or fusion (9: "
                             "clinical models and late fusions with morphology, the recommended "
                             "configuration's choice, best with --sensitivity 0.95); default: clinical")
    for name, default in (("outer-folds", 3), ("outer-repeats", 3), ("inner-folds", 3), ("inner-repeats", 2),
                          ("seed", 0)):
        select.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    select.add_argument("--sensitivity", type=float,
                        help="judge every candidate at the operating point a trained model stores: its threshold "
                             "for this sensitivity, chosen on the training patients (needs --inner-repeats >= 2); "
                             "default: at probability 0.5")
    select.add_argument("--classifiers", type=comma_list(CLASSIFIERS), help="only these (comma list)")
    select.add_argument("--imbalances", type=comma_list(IMBALANCE), help="only these (comma list)")
    select.add_argument("--json", type=Path, help="write the full result here")
    select.set_defaults(run=cmd_select)

    runs = commands.add_parser("runs", help="the run tracker: list, show, tag, note, rename, delete, export")
    runs = runs.add_subparsers(dest="action", required=True)
    listing = runs.add_parser("list", help="every stored run, metrics first, differing parameters only")
    listing.add_argument("--tag", help="only runs with this tag")
    listing.add_argument("--sort", choices=(*METRIC_NAMES, "balanced_accuracy_at_op"), default="balanced_accuracy",
                         help="sort by this metric's mean, or by the balanced accuracy at the 95%%-sensitivity "
                              "threshold")
    listing.add_argument("--all-params", action="store_true", help="every configuration field, not only those "
                                                                   "that differ")
    listing.set_defaults(run=cmd_runs_list)
    show = runs.add_parser("show", help="one run: configuration, folds, summary")
    show.add_argument("id")
    show.set_defaults(run=cmd_runs_show)
    tag = runs.add_parser("tag", help="add or remove tags")
    tag.add_argument("id")
    tag.add_argument("--add", nargs="+", metavar="TAG")
    tag.add_argument("--remove", nargs="+", metavar="TAG")
    note = runs.add_parser("note", help="set a run's note ('' clears it)")
    note.add_argument("id")
    note.add_argument("text")
    rename = runs.add_parser("rename", help="name a run ('' restores its configuration label)")
    rename.add_argument("id")
    rename.add_argument("name")
    delete = runs.add_parser("delete", help="delete runs")
    delete.add_argument("ids", nargs="+", metavar="ID")
    for edit in (tag, note, rename, delete):
        edit.set_defaults(run=cmd_runs_edit)
    export = runs.add_parser("export", help="export runs as CSV, JSON or a self-contained HTML report")
    export.add_argument("--ids", nargs="+", help="run ids (default: all)")
    export.add_argument("--out", type=Path, required=True, help="FILE.csv, FILE.json or FILE.html")
    export.set_defaults(run=cmd_runs_export)
    for command in (listing, show, tag, note, rename, delete, export):
        command.add_argument("--cache-dir", type=Path)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input, printed as one line (exit 2) rather than a traceback.

    Looked up in the modules already loaded: an error can only come from a module the command
    imported, and a command that never needed torch must not import it to report an error.
    """
    errors = [CohortError, ValueError, CacheError, OSError]
    loaded_only = (("lympho.model_format", "ModelError"), ("lympho.encoders.torchvision", "WeightsUnavailable"))
    for module, name in loaded_only:
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the cache keeps what was extracted so far", file=sys.stderr)
        return 130
    return 0


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: once torch is loaded, unloading its modules
    and C++ state costs about a second of every command (a tenth of a cold extraction of
    2,000 images). Exit handlers still run and the streams are flushed; every file a
    command writes is closed by then (atomic writers), and with other threads alive the
    normal exit is kept, since it waits for them (daemon threads, such as tqdm's monitor,
    would be stopped by the normal exit too)."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if "torch" not in sys.modules or others:
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())

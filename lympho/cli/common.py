"""What the commands share: option groups, how options become a configuration, and printing.

Only light modules at the top: ``--help`` and argument errors must answer in well under a
second, so torch, scikit-learn, xgboost, pandas and plotly are imported inside the functions
that use them (tests/test_cli_startup.py checks this).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from lympho.data import check_sensitivity, check_setting, check_threshold, default_cache_dir, resolve_cohort, \
    usable_cache_dir
from lympho.encoders import ENCODERS, PRECISIONS, WEIGHTS
from lympho.experiment import FEATURE_SETS, OPERATING_RULE, TARGET_SENSITIVITY, ExperimentConfig
from lympho.models import CLASSIFIERS, COMBINES, FUSIONS, IMAGE_CLASSIFIERS, IMAGE_MODELS, IMBALANCE
from lympho.pooling import POOLING_NAMES


def checked(check):
    """An argparse type applying ``check`` (a rule of :mod:`lympho.data`) to the option's text:
    what it refuses stops at parsing, its message shown as the option's error."""
    def parse(text: str):
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(getattr(err, "message", str(err))) from None
    parse.__name__ = check.__name__
    return parse


def setting(name: str):
    """An argparse type for the cross-validation setting ``name`` (folds, repeats or seed):
    a whole number within :data:`lympho.data.SETTING_BOUNDS`."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name} must be a whole number, got {text!r}") from None
        return check_setting(name, value)
    check.__name__ = name
    return checked(check)


CONFIG_OPTIONS = {  # option -> (type, choices); None means "keep the base config's value"
    "features": (str, FEATURE_SETS), "encoder": (str, tuple(ENCODERS)), "weights": (str, WEIGHTS),
    "pooling": (str, POOLING_NAMES), "classifier": (str, CLASSIFIERS),
    "imbalance": (str, IMBALANCE), "precision": (str, PRECISIONS),
    "folds": (setting("folds"), None), "repeats": (setting("repeats"), None), "seed": (setting("seed"), None),
    "crop": (int, None),
    "image_model": (str, None), "fusion": (str, FUSIONS), "combine": (str, COMBINES),
    "image_classifier": (str, IMAGE_CLASSIFIERS), "clinical_weight": (float, None),
}
#: Help texts of the configuration options that need more than their default.
CONFIG_OPTION_HELP = {
    "image_model": f"image expert(s): {', '.join(IMAGE_MODELS)}, or several joined by + (late fusion)",
    "fusion": "clinical + images: early (one table) or late (experts combined)",
    "combine": "late fusion: mean of the experts' probabilities, or stacked (logistic regression on "
               "inner out-of-fold predictions)",
    "image_classifier": "classifier of the pooled image expert in late fusion (logregcv: logistic regression "
                        "with its L2 strength chosen by inner CV)",
    "clinical_weight": "late fusion by mean or logit: the clinical expert's share, between 0 and 1, the image "
                       "experts sharing the rest (0.5 with one image expert: equal)"}


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
    """``--data`` and ``--cache-dir``, for every command that reads a cohort."""
    parser.add_argument("--data", type=Path, help="cohort directory (challenge layout); default: "
                        "$LYMPHO_DATA, else the synthetic demo cohort")
    parser.add_argument("--cache-dir", type=Path, help="feature cache and run store; default: "
                        "$LYMPHO_CACHE, else ~/.cache/lympho")


def add_config_options(parser: argparse.ArgumentParser, base: ExperimentConfig,
                       names=tuple(CONFIG_OPTIONS)) -> None:
    """One option per configuration field in ``names``, its help giving ``base``'s value as the default.

    The options default to None, so that ``config_from`` keeps the base value of every option not given.
    """
    for name in names:
        kind, choices = CONFIG_OPTIONS[name]
        default = getattr(base, name)
        aliases = ("--backbone",) if name == "encoder" else ()  # the option's name before 2026-11
        default_text = f"default: {'none' if default is None else default}"
        parser.add_argument(f"--{name.replace('_', '-')}", *aliases, dest=name, type=kind, choices=choices,
                            help=f"{CONFIG_OPTION_HELP[name]}; {default_text}" if name in CONFIG_OPTION_HELP
                            else default_text)
    if "features" in names:
        parser.add_argument("--raw-count", action="store_true", help="use the lymphocyte count unlogged")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--address``: where the work runs (this process, or a Ray cluster)."""
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
    """``--trust-pickle``: the explicit consent needed to load a model stored as a pickle."""
    parser.add_argument("--trust-pickle", action="store_true",
                        help="also load an old-format model (pipeline.joblib, a pickle that runs code when "
                             "loaded): only for a model from a source you trust")


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    """``--threshold`` or ``--sensitivity``, overriding a trained model's stored threshold."""
    point = parser.add_mutually_exclusive_group()
    point.add_argument("--threshold", type=checked(check_threshold), help="decision threshold in (0, 1]: "
                       "malignant when probability >= it (default: the model's stored threshold)")
    point.add_argument("--sensitivity", type=checked(check_sensitivity), help="use the threshold for this "
                       "out-of-fold sensitivity in (0, 1] on the training patients (median over the model's "
                       "cross-validation repeats)")


def chosen_threshold(model, args) -> float:
    """``--threshold``, else the threshold for ``--sensitivity``, else the model's stored one."""
    if args.sensitivity is not None:
        return model.threshold_for_sensitivity(args.sensitivity)
    return model.threshold if args.threshold is None else args.threshold


def comma_list(allowed):
    """An argparse type for a comma-separated list of names from ``allowed`` (at least one)."""
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        wrong = [item for item in items if item not in allowed]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return items
    return parse


def config_from(args, base: ExperimentConfig) -> ExperimentConfig:
    """``base`` with the configuration options given on the command line.

    Raises ValueError for a ``--clinical-weight`` the configuration would ignore, so that a
    setting never silently does nothing.
    """
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


def run_store_of(args):
    """The run tracker's store, ``runs/`` in the cache directory."""
    from lympho.runstore import RunStore

    return RunStore(cache_dir_of(args) / "runs")


def load(args, verify_images: bool = True):
    """The cohort of ``--data``, saying on stderr when it is the synthetic demo and what looked wrong.
    ``verify_images=False``: the images' headers are left to the caller (``extract``'s extractor)."""
    cohort = resolve_cohort(args.data, cache_dir_of(args), verify_images)
    if cohort.synthetic:
        print(f"[SYNTHETIC DEMO COHORT: {cohort.root}; pass --data DIR for real patients]", file=sys.stderr)
    for warning in cohort.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return cohort


def fold_table(folds: list[dict]):
    """One row per repeat and fold: the metrics and the confusion matrix."""
    import pandas as pd

    from lympho.evaluation import METRICS

    table = pd.DataFrame(folds)[["repeat", "fold", *METRICS, "confusion_matrix"]]
    return table.rename(columns={"balanced_accuracy": "bal_acc"})


def summary_line(summary: dict) -> str:
    """Every metric's mean ± sample std over folds, on one line."""
    from lympho.evaluation import METRICS

    return "  ".join(f"{m}={summary[m]['mean']:.3f}±{summary[m]['std']:.3f}" for m in METRICS)


def print_headline(run: dict) -> None:
    """A run's headline figures with their intervals (lympho.evaluation.run_estimates), if it has them."""
    from lympho.evaluation import run_estimates

    estimates = run_estimates(run)
    if estimates is None:
        return
    kind, value = OPERATING_RULE
    if kind == "fixed" and estimates["threshold"] == value:
        print(f"promise of a model trained with this configuration (train decides at the fixed threshold {value:g}, "
              f"chosen on no patient, so this out-of-fold figure is its nested estimate):")
    else:
        print(f"at threshold {estimates['threshold']:g} (malignant when probability >= threshold):")
    print("\n".join(headline_lines(estimates)))


def print_subgroups(run: dict) -> None:
    """Where the run's model is least reliable, by clinical subgroup (``--json`` has every band)."""
    from lympho.decision import weakest_text

    text = weakest_text((run.get("summary") or {}).get("subgroups") or [])
    if text:
        print(f"by subgroup, out of fold at the same threshold: {text} (every band: --json, summary.subgroups)")


def print_operating_point(run: dict) -> None:
    """Where a model trained like ``run`` with ``--sensitivity`` would decide (runs of 2 or more repeats):
    apparent, since the threshold is read from the same patients."""
    from lympho.evaluation import run_operating_point

    point = run_operating_point(run, TARGET_SENSITIVITY)
    if point is not None:
        print(f"at {TARGET_SENSITIVITY:.0%} sensitivity instead (train --sensitivity {TARGET_SENSITIVITY}), apparent: "
              f"the threshold is read from these same patients (each repeat at the other repeats' threshold):")
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


def print_run(run: dict) -> None:
    """A run's headline (the promise of a model trained like it) first, then its fold table and
    summary, subgroups, the apparent 95 %-sensitivity view and calibration: evaluate and runs show."""
    print_headline(run)
    print(fold_table(run["folds"]).to_string(index=False, float_format="%.3f"))
    print("mean ± std over folds (sample std, ddof=1): " + summary_line(run["summary"]))
    print_subgroups(run)
    print_operating_point(run)
    print_calibration(run)


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

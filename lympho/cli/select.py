"""``python -m lympho select``: nested cross-validation of choosing the best configuration from a grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lympho.cli.common import ProgressBars, add_data_options, cache_dir_of, checked, comma_list, load, setting
from lympho.data import check_sensitivity
from lympho.experiment import write_json_atomic
from lympho.models import CLASSIFIERS, IMBALANCE


def add_parser(commands) -> None:
    """Add the ``select`` command to ``commands``, the subparsers of ``python -m lympho``."""
    select = commands.add_parser("select", help="nested cross-validation of choosing the best configuration")
    add_data_options(select)
    select.add_argument("--grid", choices=("clinical", "images", "fusion", "cells"), default="clinical",
                        help="the candidates: clinical (12: classifier x imbalance), images (those and 16 on "
                             "random-initialisation resnet18 features; extracts them once) or fusion (9: "
                             "clinical models and late fusions with morphology) or cells (10: late fusions "
                             "with morphology or ssl features, pooled by mean, meanmax or a census of 16, 32 or "
                             "64 cell clusters); default: clinical")
    for name, default in (("outer-folds", 3), ("outer-repeats", 3), ("inner-folds", 3), ("inner-repeats", 2),
                          ("seed", 0)):
        select.add_argument(f"--{name}", type=setting(name.split("-")[-1]), default=default,
                            help=f"default {default}")
    select.add_argument("--sensitivity", type=checked(check_sensitivity),
                        help="judge every candidate at its threshold for this sensitivity, chosen on the training "
                             "patients as train --sensitivity would (needs --inner-repeats >= 2); default: at "
                             "probability 0.5, where train decides by default")
    select.add_argument("--classifiers", type=comma_list(CLASSIFIERS), help="only these (comma list)")
    select.add_argument("--imbalances", type=comma_list(IMBALANCE), help="only these (comma list)")
    select.add_argument("--json", type=Path, help="write the full result here")
    select.set_defaults(run=cmd_select)


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
    """A score's mean, spread and corrected interval over the outer splits, in one phrase."""
    return (f"mean {score['mean']:.3f}, std {score['std']:.3f} (ddof=1), corrected 95% CI "
            f"{score['ci_low']:.3f}-{score['ci_high']:.3f}")

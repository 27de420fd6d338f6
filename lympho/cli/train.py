"""``python -m lympho train``: fit a model on every labelled patient and store its decision threshold."""

from __future__ import annotations

from pathlib import Path

from lympho.cli.common import (ProgressBars, add_config_options, add_data_options, cache_dir_of, checked, config_from,
                               load, operating_point_lines, setting)
from lympho.data import check_sensitivity, check_threshold
from lympho.experiment import RECOMMENDED, TARGET_SENSITIVITY, THRESHOLD_REPEATS


def add_parser(commands) -> None:
    """Add the ``train`` command to ``commands``, the subparsers of ``python -m lympho``."""
    train = commands.add_parser("train", help="fit on all labelled patients (default: recommended config)")
    add_data_options(train)
    add_config_options(train, RECOMMENDED)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    point = train.add_mutually_exclusive_group()
    point.add_argument("--sensitivity", type=checked(check_sensitivity), default=TARGET_SENSITIVITY,
                       help=f"store the threshold for this out-of-fold sensitivity, chosen from "
                            f"--threshold-repeats repeats (default {TARGET_SENSITIVITY})")
    point.add_argument("--threshold", type=checked(check_threshold), help="store this fixed threshold instead")
    train.add_argument("--threshold-repeats", type=setting("repeats"), default=THRESHOLD_REPEATS,
                       help=f"cross-validation repeats to choose and check the threshold (default {THRESHOLD_REPEATS})")
    train.set_defaults(run=cmd_train)


def cmd_train(args) -> None:
    from lympho.scoring import save_model, train_model

    config = config_from(args, RECOMMENDED)  # a bad option fails before the cohort loads
    cohort = load(args)
    model = train_model(cohort, config, cache_dir_of(args), ProgressBars(), sensitivity=args.sensitivity,
                        threshold=args.threshold, threshold_repeats=args.threshold_repeats)
    save_model(model, args.out)
    print(f"trained {model.meta['label']} on {len(cohort.labelled())} patients -> {args.out}")
    print("\n".join(operating_point_lines(model.meta["operating_point"])))

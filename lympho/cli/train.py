"""``python -m lympho train``: run the training procedure on every labelled patient, store the
model with its operating point and its promise (the nested estimate of that procedure)."""

from __future__ import annotations

from pathlib import Path

from lympho.cli.common import (CONFIG_OPTIONS, ProgressBars, add_config_options, add_data_options, cache_dir_of,
                               checked, config_from, load, setting)
from lympho.data import check_sensitivity, check_threshold
from lympho.experiment import (OPERATING_RULE, PROMISE_INNER_REPEATS, PROMISE_OUTER_REPEATS, RECOMMENDED,
                               THRESHOLD_REPEATS)


def add_parser(commands) -> None:
    """Add the ``train`` command to ``commands``, the subparsers of ``python -m lympho``."""
    train = commands.add_parser("train", help="fit on all labelled patients (default: the recommended procedure), "
                                              "with the model's promise")
    add_data_options(train)
    add_config_options(train, RECOMMENDED)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    kind, value = OPERATING_RULE
    default = f"{kind} {value}" if value is not None else kind
    point = train.add_mutually_exclusive_group()
    point.add_argument("--sensitivity", type=checked(check_sensitivity),
                       help=f"store the threshold for this out-of-fold sensitivity in (0, 1), chosen from "
                            f"--threshold-repeats repeats (default rule: {default})")
    point.add_argument("--balanced", action="store_true",
                       help="store the threshold of the highest out-of-fold balanced accuracy")
    point.add_argument("--threshold", type=checked(check_threshold), help="store this fixed threshold instead")
    train.add_argument("--threshold-repeats", type=setting("repeats"), default=THRESHOLD_REPEATS,
                       help=f"cross-validation repeats to choose the configuration and threshold "
                            f"(default {THRESHOLD_REPEATS})")
    train.add_argument("--outer-repeats", type=setting("repeats"), default=PROMISE_OUTER_REPEATS,
                       help=f"outer repeats of the nested cross-validation that measures the promise "
                            f"(default {PROMISE_OUTER_REPEATS})")
    train.add_argument("--inner-repeats", type=setting("repeats"), default=PROMISE_INNER_REPEATS,
                       help=f"inner repeats that choose the configuration and threshold inside each outer "
                            f"training part (default {PROMISE_INNER_REPEATS}, at most --threshold-repeats)")
    train.set_defaults(run=cmd_train)


def rule_of(args):
    """The operating rule of ``--sensitivity``, ``--balanced`` or ``--threshold``; None: the default."""
    from lympho.promise import Rule

    if args.sensitivity is not None:
        return Rule("sensitivity", args.sensitivity)
    if args.threshold is not None:
        return Rule("fixed", args.threshold)
    return Rule("balanced") if args.balanced else None


def cmd_train(args) -> None:
    from lympho.decision import promise_lines, subgroup_lines
    from lympho.scoring import save_model, train_model

    given = any(getattr(args, name, None) is not None for name in CONFIG_OPTIONS) or args.raw_count
    config = config_from(args, RECOMMENDED) if given else None  # a bad option fails before the cohort loads
    rule = rule_of(args)
    cohort = load(args)
    model = train_model(cohort, config, cache_dir_of(args), ProgressBars(), rule=rule,
                        threshold_repeats=args.threshold_repeats, outer_repeats=args.outer_repeats,
                        inner_repeats=args.inner_repeats)
    save_model(model, args.out)
    procedure = model.meta["procedure"]
    chosen = (f"the recommended procedure chose {model.meta['label']} of {len(procedure['candidates'])} candidates"
              if config is None else f"trained {model.meta['label']}")
    print(f"{chosen} on {len(cohort.labelled())} patients -> {args.out}")
    print("\n".join(promise_lines(model.meta["operating_point"])))
    if model.meta.get("promise_unavailable"):
        print(f"no promise: {model.meta['promise_unavailable']}")
    if model.meta.get("subgroups"):
        print("by subgroup (nested out-of-fold decisions, 95% intervals):")
        print("\n".join(f"  {line}" for line in subgroup_lines(model.meta["subgroups"])))

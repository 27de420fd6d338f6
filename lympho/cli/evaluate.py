"""``python -m lympho evaluate``: cross-validate one configuration and store the run."""

from __future__ import annotations

from pathlib import Path

from lympho.cli.common import (ProgressBars, add_config_options, add_data_options, cache_dir_of, config_from, load,
                               print_run, run_store_of)
from lympho.experiment import RECOMMENDED, write_json_atomic


def add_parser(commands) -> None:
    """Add the ``evaluate`` command to ``commands``, the subparsers of ``python -m lympho``."""
    evaluate = commands.add_parser("evaluate", help="cross-validate one configuration")
    add_data_options(evaluate)
    add_config_options(evaluate, RECOMMENDED)
    evaluate.add_argument("--json", type=Path, help="write config, folds and summary here")
    evaluate.set_defaults(run=cmd_evaluate)


def cmd_evaluate(args) -> None:
    from lympho.experiment import run_experiment

    config = config_from(args, RECOMMENDED)  # a bad option fails before the cohort loads
    cohort = load(args)
    run = run_experiment(cohort, config, cache_dir_of(args), ProgressBars())
    run_id = run_store_of(args).save(run)
    print(f"{run['label']}  ({'synthetic demo' if cohort.synthetic else cohort.name})")
    print_run(run)
    print(f"run stored as {run_id}")
    if args.json:
        write_json_atomic(args.json, {k: run[k] for k in ("config", "cohort", "folds", "summary")})

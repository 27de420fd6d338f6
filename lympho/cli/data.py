"""``python -m lympho data``: summarise a cohort."""

from __future__ import annotations

from lympho.cli.common import add_data_options, load
from lympho.data import REFERENCE_DATE, overview


def add_parser(commands) -> None:
    """Add the ``data`` command to ``commands``, the subparsers of ``python -m lympho``."""
    data = commands.add_parser("data", help="summarise a cohort")
    add_data_options(data)
    data.set_defaults(run=cmd_data)


def cmd_data(args) -> None:
    cohort = load(args)
    print(f"{cohort.name}: {len(cohort.patients)} patients, "
          f"{sum(len(p.images) for p in cohort.patients)} images (ages at {REFERENCE_DATE})")
    print(overview(cohort).to_string(index=False, float_format="%.1f"))

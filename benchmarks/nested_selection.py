"""Nested cross-validation of the recommended-configuration choice, with the naive figure beside it.

The same computation as ``python -m lympho select`` (lympho.selection.nested_cv), plus
the machine and the wall time, for the README. Run it niced on a shared machine:

    nice -n 5 python benchmarks/nested_selection.py [--data DIR] [--grid clinical|images|fusion]
        [--sensitivity S] [--cache-dir DIR]
        [--outer-folds 3 --outer-repeats 5 --inner-folds 3 --inner-repeats 3] [--json FILE]
"""

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lympho.cli.select import selection_report  # noqa: E402
from lympho.data import load_cohort  # noqa: E402
from lympho.experiment import cohort_summary, write_json_atomic  # noqa: E402
from lympho.selection import GRIDS, candidates_table, config_candidates, nested_cv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--grid", choices=tuple(GRIDS), default="clinical", help="the candidates (see select --help)")
    parser.add_argument("--sensitivity", type=float, help="judge candidates at their threshold for it")
    parser.add_argument("--outer-folds", type=int, default=3)
    parser.add_argument("--outer-repeats", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--inner-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cohort = load_cohort(args.data)
    grid = [dataclasses.replace(c, seed=args.seed) for c in GRIDS[args.grid]()]
    candidates, y = config_candidates(cohort, grid, args.cache_dir)
    start = time.perf_counter()
    result = nested_cv(candidates, y, outer_folds=args.outer_folds, outer_repeats=args.outer_repeats,
                       inner_folds=args.inner_folds, inner_repeats=args.inner_repeats, seed=args.seed,
                       sensitivity=args.sensitivity)
    seconds = time.perf_counter() - start
    print("\n".join(selection_report(result, cohort)))
    print(candidates_table(result).to_string(index=False, float_format="%.3f"))
    print(f"\n{seconds:.0f} s on {cpu_model()} ({len(candidates)} candidates, features precomputed)")
    if args.json:
        write_json_atomic(args.json, {"cohort": cohort_summary(cohort), "seconds": seconds, "cpu": cpu_model(),
                                      **result})


if __name__ == "__main__":
    main()

"""The challenge's CSV, for benchmarks that lay out large cohorts of copied or generated cells."""

import csv
from pathlib import Path


def write_trainset_csv(root: Path, rows: list[dict]) -> None:
    """``rows`` (``ID, LABEL, GENDER, DOB, LYMPH_COUNT``) as ``<root>/trainset/trainset_true.csv``."""
    with (root / "trainset" / "trainset_true.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

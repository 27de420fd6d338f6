"""The recommended model's promise on the real cohort: ``train`` with no options, as a user runs it.

Runs the recommended procedure on every labelled patient (choose between
``RECOMMENDED_GRID``'s candidates by repeated cross-validation, read the threshold of the
default operating rule, fit) and its nested estimate (lympho.promise), then writes what the
Overview page, the model card's reference and the README quote to
``lympho/reference_promise.json``: the promise with its intervals, the threshold and its
range, the apparent figure, the triage zones, the subgroup table, the machine and the time.
Whoever changes the recommended procedure or the data reruns it.

    python benchmarks/promise.py [--data DIR] [--cache-dir DIR] [--out lympho/reference_promise.json]
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lympho.data import load_cohort  # noqa: E402
from lympho.decision import promise_lines, subgroup_lines, weakest_text  # noqa: E402
from lympho.reference import PROMISE_FILE  # noqa: E402
from lympho.scoring import train_model  # noqa: E402


def cpu_model() -> str:
    """The ``Model name`` line of lscpu (the CPU differs between machines of one kind)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")),
                "unknown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--out", type=Path, default=PROMISE_FILE)
    args = parser.parse_args()
    started = time.time()
    cohort = load_cohort(args.data)
    model = train_model(cohort, None, args.cache_dir)
    seconds = time.time() - started
    meta = model.meta
    print(f"chose {meta['label']} ({meta['procedure']['chosen']}) in {seconds:.0f} s")
    print("\n".join(promise_lines(meta["operating_point"])))
    print("\n".join(subgroup_lines(meta["subgroups"])))
    print(weakest_text(meta["subgroups"]))
    record = {"label": meta["label"], "config": meta["config"], "procedure": meta["procedure"],
              "operating_point": meta["operating_point"], "subgroups": meta["subgroups"],
              "cohort": {"name": cohort.name, "n_labelled": len(cohort.labelled()),
                         "malignant": sum(p.label == 1 for p in cohort.labelled())},
              "computed": time.strftime("%Y-%m-%d"), "seconds": round(seconds),
              "machine": f"{cpu_model()}, {__import__('os').cpu_count()} cores",
              "command": "python benchmarks/promise.py (train with no options)"}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

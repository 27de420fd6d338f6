"""The CLI answers `--help` and argument errors without importing the heavy libraries.

Behavioural, not timed: a fresh interpreter runs the CLI the way a user does and reports
which modules it loaded. torch alone takes seconds to import.
"""

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "sklearn", "xgboost", "imblearn", "pandas", "plotly", "streamlit", "ray")

PROBE = """
import runpy, sys
sys.argv = ["lympho", *{argv!r}]
try:
    runpy.run_module("lympho", run_name="__main__")
except SystemExit as exit:
    print("EXIT", exit.code)
print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""


def run_cli(*argv: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv), heavy=HEAVY)],
                          capture_output=True, text=True, timeout=300)
    return done.stdout, done.stderr


@pytest.mark.parametrize("argv", [("--help",), ("extract", "--help"), ("ablation", "--help"),
                                  ("evaluate", "--classifier", "nope")])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    out, err = run_cli(*argv)
    exit_line = next(line for line in out.splitlines() if line.startswith("EXIT"))
    assert exit_line == ("EXIT 0" if "--help" in argv else "EXIT 2")
    assert out.strip().endswith("LOADED"), f"heavy modules imported: {out.splitlines()[-1]}"
    if "--help" in argv:
        assert "usage: python -m lympho" in out
    else:
        assert "invalid choice: 'nope'" in err


def test_a_bad_cohort_error_needs_no_heavy_import(tmp_path):
    out, err = run_cli("data", "--data", str(tmp_path / "missing"))
    assert "EXIT 2" in out and err.startswith("error:") and str(tmp_path / "missing") in err
    assert out.strip().endswith("LOADED")


def test_the_cli_spells_the_metrics_as_evaluation_does():
    from lympho.cli.runs import METRIC_NAMES
    from lympho.evaluation import METRICS

    assert METRIC_NAMES == METRICS

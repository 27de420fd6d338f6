"""Command line: ``python -m lympho {data,evaluate,ablation,extract,pretrain,train,predict,score,select,runs}``.

Every command calls the same core functions as the dashboard. With no ``--data`` (and
no ``LYMPHO_DATA``) the synthetic demo cohort is used, and every output says so.

Each command is a module of this package with ``add_parser(commands)``, which adds its
subparser and sets its handler as ``run``; a new command is a new module listed in
``COMMANDS``. Only light modules are imported at the top of every one of them: ``--help``
and argument errors must answer in well under a second, so torch, scikit-learn, xgboost,
pandas and plotly are imported inside the handlers that use them
(tests/test_cli_startup.py checks this).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from pathlib import Path

from lympho.cli import ablation, data, evaluate, extract, predict, pretrain, runs, score, select, train
from lympho.data import CacheError, CohortError

#: The command modules, in the order ``--help`` lists them.
COMMANDS = (data, evaluate, ablation, extract, pretrain, train, predict, score, select, runs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lympho``: one subparser per module of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="python -m lympho",
        description="Reactive (0) or malignant (1) lymphocytosis from blood-smear image bags and clinical data.")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="profile the command with cProfile and write its statistics to FILE (read them with "
                             "python -m pstats FILE, or snakeviz); the fast exit keeps `python -m cProfile` from "
                             "writing its own")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input, printed as one line (exit 2) rather than a traceback.

    Looked up in the modules already loaded: an error can only come from a module the command
    imported, and a command that never needed torch must not import it to report an error.
    """
    errors = [CohortError, ValueError, CacheError, OSError]
    loaded_only = (("lympho.model_format", "ModelError"), ("lympho.encoders.torchvision", "WeightsUnavailable"))
    for module, name in loaded_only:
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the command, return the exit code.

    0 on success, 2 for bad input (one line on stderr, see ``user_errors``), 130 when
    interrupted; any other error propagates with its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the cache keeps what was extracted so far", file=sys.stderr)
        return 130
    return 0


def run(args) -> None:
    """Run the parsed command, under cProfile when ``--profile FILE`` asks (written even if it fails)."""
    if args.profile is None:
        args.run(args)
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(args.run, args)
    finally:
        profiler.dump_stats(args.profile)
        print(f"profile -> {args.profile} (python -m pstats {args.profile})", file=sys.stderr)


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: once torch is loaded, unloading its modules
    and C++ state costs about a second of every command (a tenth of a cold extraction of
    2,000 images). Exit handlers still run and the streams are flushed; every file a
    command writes is closed by then (atomic writers), and with other threads alive the
    normal exit is kept, since it waits for them (daemon threads, such as tqdm's monitor,
    would be stopped by the normal exit too)."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if "torch" not in sys.modules or others:
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

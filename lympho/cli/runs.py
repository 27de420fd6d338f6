"""``python -m lympho runs``: the run tracker (list, show, tag, note, rename, delete, export)."""

from __future__ import annotations

import json
from pathlib import Path

from lympho.cli.common import print_run, run_store_of
from lympho.data import write_text_atomic

#: lympho.evaluation.METRICS, spelled out so that parsing never imports scikit-learn
#: (tests/test_cli_startup.py checks that the two agree).
METRIC_NAMES = ("balanced_accuracy", "f1", "recall", "specificity", "precision", "roc_auc")


def add_parser(commands) -> None:
    """Add the ``runs`` group and its actions to ``commands``, the subparsers of ``python -m lympho``."""
    runs = commands.add_parser("runs", help="the run tracker: list, show, tag, note, rename, delete, export")
    runs = runs.add_subparsers(dest="action", required=True)
    listing = runs.add_parser("list", help="every stored run, metrics first, differing parameters only")
    listing.add_argument("--tag", help="only runs with this tag")
    listing.add_argument("--sort", choices=(*METRIC_NAMES, "balanced_accuracy_at_op"), default="balanced_accuracy",
                         help="sort by this metric's mean, or by the balanced accuracy at 95%% sensitivity "
                              "(apparent, leave-one-repeat-out)")
    listing.add_argument("--all-params", action="store_true", help="every configuration field, not only those "
                                                                   "that differ")
    listing.set_defaults(run=cmd_runs_list)
    show = runs.add_parser("show", help="one run: configuration, folds, summary")
    show.add_argument("id")
    show.set_defaults(run=cmd_runs_show)
    tag = runs.add_parser("tag", help="add or remove tags")
    tag.add_argument("id")
    tag.add_argument("--add", nargs="+", metavar="TAG")
    tag.add_argument("--remove", nargs="+", metavar="TAG")
    note = runs.add_parser("note", help="set a run's note ('' clears it)")
    note.add_argument("id")
    note.add_argument("text")
    rename = runs.add_parser("rename", help="name a run ('' restores its configuration label)")
    rename.add_argument("id")
    rename.add_argument("name")
    delete = runs.add_parser("delete", help="delete runs")
    delete.add_argument("ids", nargs="+", metavar="ID")
    for edit in (tag, note, rename, delete):
        edit.set_defaults(run=cmd_runs_edit)
    export = runs.add_parser("export", help="export runs as CSV, JSON or a self-contained HTML report")
    export.add_argument("--ids", nargs="+", help="run ids (default: all)")
    export.add_argument("--out", type=Path, required=True, help="FILE.csv, FILE.json or FILE.html")
    export.set_defaults(run=cmd_runs_export)
    for command in (listing, show, tag, note, rename, delete, export):
        command.add_argument("--cache-dir", type=Path)


def cmd_runs_list(args) -> None:
    from lympho.runstore import tracker_table

    runs = [r for r in run_store_of(args).runs() if not args.tag or args.tag in r.get("tags", [])]
    if not runs:
        print("no stored runs" + (f" tagged {args.tag!r}" if args.tag else ""))
        return
    table = tracker_table(runs, all_fields=args.all_params).drop(columns=["note"])
    table = table[["id", *table.columns.drop("id")]].sort_values(args.sort, ascending=False, kind="stable")
    print(table.to_string(index=False, float_format="%.3f"))


def cmd_runs_show(args) -> None:
    from lympho.runstore import display_name

    run = run_store_of(args).load(args.id)
    print(f"{run['id']}: {display_name(run)}  [{', '.join(run.get('tags', []))}]")
    print(f"created {run['created']}; cohort {run['cohort']['name']} ({run['cohort']['n_labelled']} labelled"
          f"{', synthetic demo' if run['cohort']['synthetic'] else ''})")
    print("config: " + ", ".join(f"{k}={v}" for k, v in run["config"].items()))
    if run.get("note"):
        print(f"note: {run['note']}")
    print_run(run)


def cmd_runs_edit(args) -> None:
    from lympho.runstore import display_name

    store = run_store_of(args)
    if args.action == "tag":
        run = store.tag(args.id, add=args.add or [], remove=args.remove or [])
        print(f"{args.id}: tags {', '.join(run['tags']) or '(none)'}")
    elif args.action == "note":
        store.note(args.id, args.text)
        print(f"{args.id}: note saved")
    elif args.action == "rename":
        print(f"{args.id}: now named {display_name(store.rename(args.id, args.name))!r}")
    else:
        for run_id in args.ids:
            store.delete(run_id)
            print(f"deleted {run_id}")


def cmd_runs_export(args) -> None:
    from lympho import reports

    store = run_store_of(args)
    unknown = set(args.ids or []) - set(store.ids())
    if unknown:
        raise ValueError(f"no stored run(s) {', '.join(sorted(unknown))}; see `python -m lympho runs list`")
    runs = [run for run in store.runs() if not args.ids or run["id"] in args.ids]
    if not runs:
        raise ValueError("no stored runs to export")
    kind = args.out.suffix.lower()
    exporters = {".csv": lambda: reports.csv_text(reports.runs_table(runs)),
                 ".json": lambda: json.dumps(runs, indent=1), ".html": lambda: reports.runs_report_html(runs)}
    if kind not in exporters:
        raise ValueError(f"{args.out}: the file name must end in .csv, .json or .html")
    write_text_atomic(args.out, exporters[kind]())
    print(f"exported {len(runs)} run(s) -> {args.out}")

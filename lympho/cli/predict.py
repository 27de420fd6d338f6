"""``python -m lympho predict``: a trained model's decisions for a split of a cohort, as CSV."""

from __future__ import annotations

from pathlib import Path

from lympho.cli.common import (ProgressBars, add_data_options, add_threshold_options, add_trust_pickle, cache_dir_of,
                               chosen_threshold, load)
from lympho.data import SPLITS, write_text_atomic


def add_parser(commands) -> None:
    """Add the ``predict`` command to ``commands``, the subparsers of ``python -m lympho``."""
    predict = commands.add_parser("predict", help="predict a split of a cohort")
    add_data_options(predict)
    predict.add_argument("--model", type=Path, required=True)
    add_trust_pickle(predict)
    predict.add_argument("--split", choices=tuple(SPLITS), default="test")
    predict.add_argument("--out", type=Path, required=True, help="CSV: id,probability,prediction,zone (and each expert's "
                         "probability for a late fusion)")
    predict.add_argument("--kaggle", action="store_true", help="write the challenge's Id,Predicted")
    predict.add_argument("--in-sample", action="store_true",
                         help="allow --split train (in-sample predictions of the training patients)")
    add_threshold_options(predict)
    predict.set_defaults(run=cmd_predict)


def cmd_predict(args) -> None:
    if args.split == "train" and not args.in_sample:
        raise ValueError("--split train predicts the patients the model was trained on: in-sample "
                         "predictions, far better than on new patients. Pass --in-sample to write them "
                         "anyway; for honest figures use `python -m lympho evaluate`.")
    from lympho import reports
    from lympho.scoring import load_model

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    cohort = load(args)
    threshold = chosen_threshold(model, args)
    predictions = model.predict(cohort.select(args.split), cache_dir_of(args), ProgressBars(), threshold)
    write_text_atomic(args.out, reports.submission_csv(predictions) if args.kaggle
                      else reports.csv_text(predictions))
    note = " (IN-SAMPLE: the model was trained on these patients)" if args.split == "train" else ""
    print(f"wrote {len(predictions)} predictions ({args.split}){note}, malignant when probability >= "
          f"{threshold:.3f} -> {args.out}")

"""``python -m lympho score``: one new patient, from a folder or zip of images and the clinical data."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lympho.cli.common import add_threshold_options, add_trust_pickle, cache_dir_of, checked, chosen_threshold
from lympho.data import CohortError, parse_dob, parse_sampling_date, write_text_atomic


def add_parser(commands) -> None:
    """Add the ``score`` command to ``commands``, the subparsers of ``python -m lympho``."""
    score = commands.add_parser("score", help="score one patient from a folder of images")
    score.add_argument("--model", type=Path, required=True)
    add_trust_pickle(score)
    score.add_argument("--images", type=Path, required=True, help="a folder of images, or a zip of them")
    score.add_argument("--gender", required=True, help="M or F")
    born = score.add_mutually_exclusive_group(required=True)
    born.add_argument("--dob", help="date of birth: M/D/YYYY, DD-MM-YYYY or YYYY-MM-DD")
    born.add_argument("--age", type=float, help="age at sampling in years (on --sampling-date), used as it is")
    score.add_argument("--sampling-date", type=checked(parse_sampling_date),
                       help="the day the smear was taken (YYYY-MM-DD; default: today): the models use the age "
                            "at sampling, computed on it from --dob")
    score.add_argument("--lymph-count", required=True, help="lymphocytes, x10^9/L")
    add_threshold_options(score)
    score.add_argument("--report", type=Path, help="write a one-page HTML report here")
    score.add_argument("--cache-dir", type=Path)
    score.set_defaults(run=cmd_score)


def patient_images(source: Path, scratch: Path) -> Path | list[Path]:
    """A folder as it is; a zip (or one image) checked and unpacked like a dashboard upload."""
    from lympho.uploads import save_uploads

    if source.is_dir():
        return source
    if not source.is_file():
        raise CohortError("no such image folder or file", source)
    return save_uploads([(source.name, source.read_bytes())], scratch / "patient")


def cmd_score(args) -> None:
    from lympho import reports
    from lympho.decision import age_text, evidence_text, promise_text, similar_text, zone_text
    from lympho.scoring import instance_scores, load_model, make_patient, patient_warnings, score_patient

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    dob = parse_dob(args.dob) if args.dob else None
    threshold = chosen_threshold(model, args)
    with tempfile.TemporaryDirectory() as scratch:
        patient = make_patient(patient_images(args.images, Path(scratch)), args.gender, args.lymph_count,
                               age=args.age, dob=dob, sampling_date=args.sampling_date)
        for warning in patient_warnings(patient):  # implausible, not impossible: scored, but check it
            print(f"warning: {warning}", file=sys.stderr)
        cache_dir = cache_dir_of(args)
        result = score_patient(model, patient, cache_dir, threshold)
        cells = instance_scores(model, patient, cache_dir)
        ranked = [] if cells is None else [(p.read_bytes(), s) for p, s in zip(cells.path, cells.score)]
    decision = "malignant" if result["prediction"] else "reactive"
    zone = zone_text(result["zone"], model.meta)
    if zone:
        print(f"triage zone: {zone}")
    print(f"probability of malignancy {result['probability']:.3f} -> {decision} at threshold "
          f"{threshold:.3f} ({result['n_images']} images; model: {result['model']})")
    print(f"inputs: {age_text(patient.age, patient.sampling_date)}, gender {patient.gender}, "
          f"lymphocyte count {patient.lymph_count:g} x10^9/L")
    promise = promise_text(model.meta.get("operating_point"))
    if promise:
        print(f"the model's promise at its stored threshold (nested CV, 95% intervals): {promise}")
    evidence, similar = evidence_text(result), similar_text(result)
    if evidence:
        print(f"each expert's probability: {evidence}")
    if similar:
        print(similar)
    if args.report:
        write_text_atomic(args.report, reports.patient_report_html(result, ranked[:reports.MAX_CELLS]))
        print(f"wrote the one-page report -> {args.report}")

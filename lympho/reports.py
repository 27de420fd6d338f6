"""Exports: the runs table (CSV), a self-contained HTML report of runs, a one-page
printable patient report, and the challenge's submission CSV.

Every HTML document here renders offline: plotly.js is embedded once, inline,
and images are embedded as base64. All text is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from lympho import figures
from lympho.data import CohortError, read_image
from lympho.decision import evidence_text, similar_text
from lympho.evaluation import (HEADLINE, METRICS, format_estimate, reliability, run_estimates,
                               run_operating_point)

#: At most this many cell thumbnails on a patient report.
MAX_CELLS = 12
DISCLAIMER = ("Research tool, not a diagnosis. This result was produced by an experimental model and has not "
              "been validated for clinical use; it must not replace the judgement of a qualified clinician or "
              "confirmatory testing (flow cytometry).")
MALIGNANT_DECISION = "Malignant: refer for flow cytometry"
REACTIVE_DECISION = "Reactive"

_BASE_COLUMNS = ("id", "created", "label", "key", "cohort", "synthetic", "n_labelled", "n_folds")


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


# --------------------------------------------------------------------------- runs table


def runs_table(runs: Sequence[Mapping]) -> pd.DataFrame:
    """One row per run: id (when any run has one), created, label, key, cohort name,
    synthetic, n_labelled, n_folds, every config field, then ``<metric>_mean`` and
    ``<metric>_std`` (sample std over folds, ddof=1) for each of
    :data:`lympho.evaluation.METRICS`, then the headline estimates: ``threshold`` and
    ``<metric>_estimate``, ``<metric>_ci_low``, ``<metric>_ci_high`` for each of
    :data:`lympho.evaluation.HEADLINE` (95 % bootstrap over patients of the out-of-fold
    predictions; NaN for a run without them); then the same with ``_at_op`` at 95 % sensitivity
    (apparent, leave-one-repeat-out: the run's ``summary.operating_point``, where ``train
    --sensitivity 0.95`` would decide; NaN for a run of one repeat)."""
    config_fields: list[str] = []
    for run in runs:
        config_fields += [k for k in run.get("config", {}) if k not in config_fields]
    with_id = any("id" in run for run in runs)
    metric_columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    ci_columns = [f"threshold{at}" for at in ("", "_at_op")] + \
        [f"{m}{at}_{s}" for at in ("", "_at_op") for m in HEADLINE for s in ("estimate", "ci_low", "ci_high")]
    columns = [c for c in _BASE_COLUMNS if with_id or c != "id"] + config_fields + metric_columns + ci_columns
    rows = []
    for run in runs:
        cohort, summary = run.get("cohort", {}), run.get("summary", {})
        row = {"id": run.get("id"), "created": run.get("created"), "label": run.get("label"),
               "key": run.get("key"), "cohort": cohort.get("name"), "synthetic": bool(cohort.get("synthetic", False)),
               "n_labelled": cohort.get("n_labelled"), "n_folds": summary.get("n_folds", len(run.get("folds", [])))}
        row.update({k: run.get("config", {}).get(k) for k in config_fields})
        for metric in METRICS:
            stats = summary.get(metric, {})
            row[f"{metric}_mean"] = stats.get("mean", math.nan)
            row[f"{metric}_std"] = stats.get("std", math.nan)
        row.update(_ci_columns(run_estimates(run)))
        point = summary.get("operating_point")  # stored with runs of 2 or more repeats
        row.update(_ci_columns(point and {"threshold": point["threshold"], **point["estimate"]}, "_at_op"))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


#: What :func:`operating_point_table` says of a run with one repeat (no threshold can be held out).
ONE_REPEAT = "needs 2 or more repeats"


def operating_point_table(runs: Sequence[Mapping], target: float) -> pd.DataFrame:
    """Each run at the threshold for sensitivity ``target`` chosen from its repeats (the median
    of the per-repeat thresholds), where ``train --sensitivity`` would decide, scored
    leave-one-repeat-out (apparent: the other repeats are the same patients) with 95 % bootstrap
    intervals over patients (:func:`lympho.evaluation.run_operating_point`).
    Columns: Configuration, Threshold, then balanced accuracy, recall and specificity as
    ``0.892 (0.83–0.94)``, the best balanced accuracy marked ★. A run with one repeat has no
    such estimate and says so."""
    rows, best = [], {}
    for run in runs:
        row = {"Configuration": figures.config_name(run["label"], run["config"])}
        point = run_operating_point(run, target)
        if point is not None:
            row["Threshold"] = f"{point['threshold']:.3f}"
            for metric in HEADLINE:
                value = point["estimate"]["metrics"][metric]
                row[figures.metric_label(metric)] = f"{value['estimate']:.3f} ({value['low']:.2f}–{value['high']:.2f})"
            best[len(rows)] = point["estimate"]["metrics"]["balanced_accuracy"]["estimate"]
        else:
            row["Threshold"] = ONE_REPEAT
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(best) > 1:
        column = figures.metric_label("balanced_accuracy")
        top = max(best.values())
        for index, value in best.items():
            if value == top:
                table.loc[index, column] += " ★"
    return table


def subgroup_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The subgroup figures (:func:`lympho.evaluation.subgroup_estimates`) as a table: one row
    per band, patients (malignant / reactive), and each headline metric with its interval."""
    from lympho.decision import PROMISE_METRICS, figure_text

    return pd.DataFrame([{"Subgroup": f"{row['group']} {row['band']}",
                          "Patients": f"{row['n']} ({row['malignant']} / {row['reactive']})",
                          **{name: figure_text(row[metric]) for metric, name in PROMISE_METRICS}} for row in rows])


def _ci_columns(estimates: Mapping | None, suffix: str = "") -> dict:
    if estimates is None:
        return {}
    row = {f"threshold{suffix}": estimates["threshold"]}
    for metric in HEADLINE:
        value = estimates["metrics"][metric]
        row |= {f"{metric}{suffix}_estimate": value["estimate"], f"{metric}{suffix}_ci_low": value["low"],
                f"{metric}{suffix}_ci_high": value["high"]}
    return row


# --------------------------------------------------------------------------- HTML helpers

_CSS = """
:root { --ink:#1F2937; --muted:#6B7280; --line:#E5E7EB; --reactive:#2C7BB6; --malignant:#C51B7D; }
* { box-sizing: border-box; }
body { font-family: Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1200px; padding: 24px 32px; line-height: 1.45; font-size: 14px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.meta { color: var(--muted); margin: 0 0 16px; }
.banner { border: 2px solid #B45309; background: #FEF3C7; color: #78350F; padding: 12px 16px;
          border-radius: 6px; font-weight: 600; margin: 12px 0 20px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #F9FAFB; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.summary td { font-weight: 600; border-top: 2px solid var(--ink); }
.scroll { overflow-x: auto; }
.figure { margin: 8px 0 16px; break-inside: avoid; page-break-inside: avoid; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.run { break-before: auto; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
       background: #FEF3C7; color: #78350F; margin-left: 6px; vertical-align: middle; }
footer { color: var(--muted); font-size: 12px; margin-top: 32px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  .run { break-before: page; page-break-before: always; }
  .pair { grid-template-columns: 1fr 1fr; }
  .scroll { overflow: visible; }
  h2 { border-top: none; }
}
@page { size: A4 landscape; margin: 12mm; }
"""


def _figure_html(fig, first: bool, height: int | None = None) -> str:
    height = height or int(fig.layout.height or 420)
    body = fig.to_html(full_html=False, include_plotlyjs=bool(first), default_height=f"{height}px",
                       default_width="100%", config={"displaylogo": False, "responsive": True})
    return f'<div class="figure">{body}</div>'


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(frame: pd.DataFrame, numeric: Sequence[str] = (), summary_row: Mapping | None = None) -> str:
    head = "".join(f'<th class="{"num" if c in numeric else ""}">{_esc(c)}</th>' for c in frame.columns)
    body = []
    for row in frame.to_dict("records"):
        cells = "".join(f'<td class="{"num" if c in numeric else ""}">{_esc(_fmt(row[c]))}</td>'
                        for c in frame.columns)
        body.append(f"<tr>{cells}</tr>")
    if summary_row is not None:
        cells = "".join(f'<td class="{"num" if c in numeric else ""}">{_esc(summary_row.get(c, ""))}</td>'
                        for c in frame.columns)
        body.append(f'<tr class="summary">{cells}</tr>')
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _comparison_table(runs: Sequence[Mapping]) -> str:
    rows = []
    for run in runs:
        summary = run.get("summary", {})
        row = {"Run": figures.run_name(run), "Cohort": run.get("cohort", {}).get("name", ""),
               "Folds": summary.get("n_folds", len(run.get("folds", [])))}
        estimates = run_estimates(run)
        for metric in HEADLINE:
            value = estimates["metrics"][metric] if estimates else None
            row[f"{figures.metric_label(metric)}, 95% CI"] = (
                f"{value['estimate']:.3f} ({value['low']:.2f}-{value['high']:.2f})" if value else "—")
        for metric in METRICS:
            stats = summary.get(metric)
            row[f"{figures.metric_label(metric)}, mean ± std"] = (
                f"{stats['mean']:.3f} ± {stats['std']:.3f}" if stats else "—")
        rows.append(row)
    frame = pd.DataFrame(rows)
    return _table(frame, numeric=[c for c in frame.columns if c not in ("Run", "Cohort")])


def _headline_list(run: Mapping) -> str:
    """The run's headline figures, each with its interval and what it was computed on."""
    estimates = run_estimates(run)
    if estimates is None:
        return ""
    items = "".join(f"<li>{_esc(figures.metric_label(m))}: {_esc(format_estimate(estimates, m))}</li>"
                    for m in HEADLINE)
    return (f"<p>Malignant when probability &ge; {estimates['threshold']:g}:</p><ul>{items}</ul>")


def _config_table(run: Mapping) -> str:
    cohort = run.get("cohort", {})
    items = [("Label", run.get("label")), ("Run id", run.get("id")), ("Key", run.get("key")),
             ("Created", run.get("created")), ("Cohort", cohort.get("name")),
             ("Synthetic cohort", "yes" if cohort.get("synthetic") else "no"),
             ("Labelled patients", cohort.get("n_labelled"))]
    items += [(name, "—" if value is None else _fmt(value)) for name, value in run.get("config", {}).items()]
    versions = run.get("versions") or {}
    if versions:
        items.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in items if v is not None)
    return f"<table>{rows}</table>"


def _fold_table(run: Mapping) -> str:
    folds = pd.DataFrame(run.get("folds", []))
    if folds.empty:
        return "<p>No folds.</p>"
    columns = [c for c in ("repeat", "fold", *METRICS, "n_train", "n_test") if c in folds.columns]
    frame = folds[columns].copy()
    if "confusion_matrix" in folds:
        frame["TN / FP / FN / TP"] = [" / ".join(str(int(v)) for row in m for v in row)
                                      for m in folds["confusion_matrix"]]
    names = {"repeat": "Repeat", "fold": "Fold", "n_train": "Train patients", "n_test": "Test patients",
             **{m: figures.metric_label(m) for m in METRICS}}
    frame = frame.rename(columns=names)
    metric_names = [figures.metric_label(m) for m in METRICS]
    summary = run.get("summary", {})
    summary_row = {"Repeat": "Mean ± std"}
    for metric in METRICS:
        if metric in summary:
            summary_row[figures.metric_label(metric)] = f"{summary[metric]['mean']:.3f} ± {summary[metric]['std']:.3f}"
    numeric = ["Repeat", "Fold", "Train patients", "Test patients"] + metric_names
    return _table(frame, numeric=numeric, summary_row=summary_row)


def _confusion_of(run: Mapping) -> tuple[list | None, str]:
    """The run's confusion matrix with each patient counted once (averaged over repeats), and
    its title; a run stored before that existed shows its pooled matrix, labelled as such."""
    summary = run.get("summary", {})
    repeats = summary.get("n_repeats") or run.get("config", {}).get("repeats", 1)
    if "confusion_matrix_per_repeat" in summary:
        note = f"mean over {repeats} repeats, " if repeats > 1 else ""
        return summary["confusion_matrix_per_repeat"], f"Confusion matrix ({note}each patient once)"
    if "confusion_matrix_pooled" in summary:
        note = f", each patient counted {repeats}×" if repeats and repeats > 1 else ""
        return summary["confusion_matrix_pooled"], f"Pooled confusion matrix (all folds{note})"
    return None, ""


def _synthetic(run: Mapping) -> bool:
    return bool(run.get("cohort", {}).get("synthetic", False))


def runs_report_html(runs: Sequence[Mapping], title: str = "lympho runs") -> str:
    """One self-contained HTML document presenting ``runs`` (renders offline).

    Layout: title, generation time, a banner if any run used the synthetic demo
    cohort, the comparison table, the :func:`figures.compare_runs` chart, then per
    run its configuration, headline figures with intervals, fold table, confusion
    matrix (each patient once) and ROC curves.
    plotly.js is embedded inline exactly once (with the first figure).
    """
    runs = list(runs)
    parts = [f"<h1>{_esc(title)}</h1>",
             f'<p class="meta">Generated {_esc(time.strftime("%Y-%m-%d %H:%M"))} by lympho · '
             f"{len(runs)} run{'s' if len(runs) != 1 else ''} · malignant (1) is the positive class; "
             f"std is the sample standard deviation (ddof=1) over cross-validation folds, a spread; "
             f"95% CI: percentile bootstrap over patients of the out-of-fold predictions.</p>"]
    synthetic = [r for r in runs if _synthetic(r)]
    if synthetic:
        parts.append(f'<div class="banner" role="alert">SYNTHETIC DEMO COHORT: {len(synthetic)} of {len(runs)} '
                     f"run(s) used generated demo data, not patients. Their numbers say nothing about real "
                     f"performance.</div>")
    if not runs:
        parts.append("<p>No runs to report.</p>")
    else:
        first = True
        parts += ["<h2>Comparison</h2>", _comparison_table(runs)]
        parts.append(_figure_html(figures.compare_runs(runs), first))
        first = False
        for index, run in enumerate(runs, start=1):
            summary = run.get("summary", {})
            tag = '<span class="tag">synthetic</span>' if _synthetic(run) else ""
            parts.append(f'<section class="run"><h2>{index}. {_esc(figures.run_name(run))}{tag}</h2>')
            parts += ["<h3>Configuration</h3>", _config_table(run), "<h3>Headline figures</h3>",
                      _headline_list(run), "<h3>Folds</h3>", _fold_table(run)]
            pair = []
            matrix, title = _confusion_of(run)
            if matrix is not None:
                pair.append(_figure_html(figures.confusion_matrix(matrix, title), first))
                first = False
            if run.get("oof"):
                pair.append(_figure_html(figures.roc_curves(run["oof"]), first))
                first = False
            if "id" in (run.get("oof") or {}):  # runs stored before patient ids were kept have no per-patient view
                pair.append(_figure_html(figures.reliability_diagram(reliability(run["oof"])), first))
            parts.append(f'<div class="pair">{"".join(pair)}</div></section>')
    parts.append("<footer>lympho: a research tool for lymphocytosis classification, not a diagnostic device."
                 "</footer>")
    return _document(title, _CSS, "\n".join(parts))


def _document(title: str, css: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# --------------------------------------------------------------------------- patient report

_PATIENT_CSS = """
@page { size: A4; margin: 14mm; }
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; }
body { font-family: Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif; color: #1F2937; font-size: 12px;
       line-height: 1.4; }
.page { width: 182mm; margin: 0 auto; padding: 8mm 0; }
header { display: flex; justify-content: space-between; align-items: baseline;
         border-bottom: 2px solid #1F2937; padding-bottom: 4px; margin-bottom: 10px; }
header h1 { font-size: 20px; margin: 0; }
header .meta { color: #6B7280; font-size: 11px; text-align: right; }
h2 { font-size: 13px; margin: 12px 0 4px; text-transform: uppercase; letter-spacing: .04em; color: #6B7280; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #E5E7EB; }
th { width: 38%; font-weight: 600; }
.decision { border: 2px solid; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.decision.malignant { border-color: #C51B7D; background: #FCE7F3; }
.decision.reactive { border-color: #2C7BB6; background: #E0F2FE; }
.decision .words { font-size: 20px; font-weight: 700; }
.decision .detail { font-size: 12px; margin-top: 4px; }
.cells { display: grid; grid-template-columns: repeat(6, 1fr); gap: 6px; }
.cell { text-align: center; font-size: 10px; color: #374151; break-inside: avoid; }
.cell img { width: 100%; height: auto; aspect-ratio: 1 / 1; object-fit: cover; border: 1px solid #D1D5DB;
            border-radius: 3px; display: block; }
.disclaimer { margin-top: 12px; border: 1px solid #B45309; background: #FEF3C7; color: #78350F;
              padding: 8px 10px; border-radius: 4px; font-size: 11px; }
footer { margin-top: 8px; color: #6B7280; font-size: 10px; }
@media print { .page { padding: 0; } }
"""

_MIME = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
         (b"GIF89a", "image/gif"))


def image_data_uri(image: bytes | str | Path, max_side: int = 256) -> str:
    """A ``data:`` URI of an image given as bytes or a file path.

    PNG, JPEG and GIF are embedded as they are; other formats (TIFF, BMP, ...) are
    converted to PNG with Pillow, downscaled to ``max_side`` pixels.
    """
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    mime = next((m for magic, m in _MIME if data.startswith(magic)), None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        try:
            img = read_image(io.BytesIO(data))
        except CohortError as err:
            raise ValueError(err.message) from None
        img.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _number(value, fmt: str, unit: str = "") -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(value) else f"{value:{fmt}}{unit}"


def decision(result: Mapping) -> tuple[int, float]:
    """``(prediction, threshold)``: malignant when ``probability >= threshold`` (0.5 if not given)."""
    threshold = result.get("threshold")
    threshold = 0.5 if threshold is None else float(threshold)
    return int(float(result["probability"]) >= threshold), threshold


def patient_report_html(result: Mapping, cells: Sequence[tuple[bytes | str | Path, float]] | None = None,
                        measure: str = "bag-of-one probability") -> str:
    """A one-page printable (A4) report of one scored patient.

    ``result``: ``id, probability, threshold, n_images, model`` and ``gender, age,
    lymph_count`` (``prediction`` may be given; the decision shown is always
    ``probability >= threshold``, the rule the threshold defines). ``cells``: the
    top cells as (image bytes or path, instance score), in the order given; at most
    :data:`MAX_CELLS` are shown, embedded as base64 thumbnails. ``measure`` says what the
    score is (``lympho.scoring.instance_scores``): only an attention weight or a cell
    probability is titled "weighed most"; a bag-of-one probability is called what it is.
    """
    prediction, threshold = decision(result)
    probability = float(result["probability"])
    words = MALIGNANT_DECISION if prediction == 1 else REACTIVE_DECISION
    css_class = "malignant" if prediction == 1 else "reactive"
    gender = figures.GENDER_NAMES.get(str(result.get("gender", "")).upper(), result.get("gender") or "—")
    sampled = f" (sampled {result['sampling_date']})" if result.get("sampling_date") else ""
    rows = [("Patient", result.get("id", "—")), ("Gender", gender),
            ("Age at sampling", _number(result.get("age"), ".1f", " years") + sampled),
            ("Lymphocyte count", _number(result.get("lymph_count"), ".1f", " ×10⁹/L")),
            ("Images analysed", result.get("n_images", "—")), ("Model", result.get("model", "—"))]
    evidence, similar = evidence_text(result), similar_text(result)
    if evidence:
        rows.append(("Each expert's probability", evidence))
    if similar:
        rows.append(("Patients scored alike", similar))
    table = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    comparison = "≥" if prediction == 1 else "<"
    parts = [
        '<div class="page">',
        f'<header><h1>lympho patient report</h1><div class="meta">Patient {_esc(result.get("id", "—"))}<br>'
        f'{_esc(time.strftime("%Y-%m-%d %H:%M"))}</div></header>',
        f'<div class="decision {css_class}"><div class="words">{_esc(words)}</div>'
        f'<div class="detail">Probability of malignancy <b>{probability:.1%}</b> ({probability:.3f}) '
        f"{_esc(comparison)} decision threshold {threshold:.3f}.</div></div>",
        f"<h2>Patient</h2><table>{table}</table>",
    ]
    cells = list(cells or [])[:MAX_CELLS]
    if cells:
        thumbs = "".join(f'<figure class="cell" style="margin:0"><img src="{image_data_uri(image)}" '
                         f'alt="cell {i}, score {float(score):.3f}"><figcaption>#{i} · score {float(score):.3f}'
                         f"</figcaption></figure>" for i, (image, score) in enumerate(cells, start=1))
        if measure == "bag-of-one probability":
            heading = (f"<h2>Cells with the highest scores on their own (top {len(cells)})</h2><p class=\"meta\">"
                       "Each cell scored as a bag of one with the patient's clinical values: not the weight the "
                       "model gave it.</p>")
        else:
            heading = f"<h2>Cells the model weighed most (top {len(cells)}, by {_esc(measure)})</h2>"
        parts.append(f"{heading}<div class=\"cells\">{thumbs}</div>")
    parts += [f'<div class="disclaimer"><b>Disclaimer.</b> {_esc(DISCLAIMER)}</div>',
              f"<footer>Generated by lympho on {_esc(time.strftime('%Y-%m-%d'))}. Decision rule: malignant when "
              f"the probability is at least the threshold.</footer>",
              "</div>"]
    return _document(f"lympho report — {result.get('id', 'patient')}", _PATIENT_CSS, "\n".join(parts))


# --------------------------------------------------------------------------- submission


def submission_csv(predictions: pd.DataFrame) -> str:
    """The challenge's ``Id,Predicted`` CSV from a frame with ``id`` and ``prediction`` (0/1)."""
    missing = [c for c in ("id", "prediction") if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {', '.join(missing)}")
    if predictions["id"].duplicated().any():
        duplicated = predictions.loc[predictions["id"].duplicated(), "id"].astype(str).tolist()
        raise ValueError(f"duplicate patient id(s): {', '.join(duplicated[:5])}")
    values = pd.to_numeric(predictions["prediction"], errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        raise ValueError("prediction must be 0 (reactive) or 1 (malignant) for every patient")
    frame = pd.DataFrame({"Id": predictions["id"].astype(str).to_numpy(), "Predicted": values.astype(int).to_numpy()})
    return csv_text(frame)


# --------------------------------------------------------------------------- CSV exports

#: A cell starting with one of these is run as a formula by spreadsheets (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """``value``, or a text cell that would run as a formula prefixed with ``'`` (shown as
    text by spreadsheets). Numbers, and text that reads as a number (``-1.5``), are kept."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text (no index) for export, every cell and header spreadsheet-safe.
    Every CSV this package writes for people to open goes through here."""
    safe = frame.map(spreadsheet_safe).rename(columns=spreadsheet_safe)
    return safe.to_csv(index=False, lineterminator="\n")

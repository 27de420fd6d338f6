"""Streamlit pieces shared by the pages: config widgets, job results, run views (the light
pieces, cohort, remembered state and jobs, are in :mod:`app_pages.shell`).

Only presentation lives here; every computation is a ``lympho`` function that the CLI
calls too.
"""

from __future__ import annotations

import dataclasses
import html

import pandas as pd
import streamlit as st

from lympho import figures
from lympho.encoders import ENCODERS, WEIGHTS, uses_torchvision_options
from lympho.encoders.torchvision import hub_checkpoint_path
from lympho.decision import encoder_text
from lympho.evaluation import (METRICS, format_estimate, oof_estimates, operating_point, reliability,
                               run_estimates, run_operating_point, threshold_for_sensitivity)
from lympho.experiment import CLASSIFIER_NAMES, FEATURE_SETS, OPERATING_RULE, TARGET_SENSITIVITY, ExperimentConfig
from lympho.jobs import Job
from lympho.models import COMBINE_NAMES, COMBINES, FUSIONS, IMAGE_CLASSIFIERS, IMAGE_MODELS
from lympho.models.classifiers import CLASSIFIERS, IMBALANCE
from lympho.pooling import POOLING_NAMES
from lympho.runstore import RunStore, display_name
from app_pages.shell import cache_dir, current_job, remember, set_remembered


def run_store() -> RunStore:
    return RunStore(cache_dir() / "runs")


def synthetic_banner() -> None:
    if st.session_state["cohort"].synthetic:
        st.warning("Synthetic demo cohort: generated images and values, not patients.", icon=":material/science:")


def weights_available(encoder: str) -> bool:
    return uses_torchvision_options(encoder) and hub_checkpoint_path(encoder).is_file()


def image_options(key: str, base: ExperimentConfig, disabled: bool = False) -> dict:
    """Encoder, weights and pooling widgets (remembered across pages); ImageNet is
    preselected only when its weights are cached; weights apply to torchvision encoders only."""
    left, middle, right = st.columns(3)
    encoder = left.selectbox("Image encoder", tuple(ENCODERS), key=remember(f"{key}_encoder", base.encoder),
                             disabled=disabled)
    cached = weights_available(encoder)
    torchvision = uses_torchvision_options(encoder)
    weights = middle.selectbox("Weights", WEIGHTS, key=remember(f"{key}_weights", "imagenet" if cached else "none"),
                               disabled=disabled or not torchvision,
                               help=None if cached or not torchvision else
                               f"ImageNet weights are not in the torch hub cache ({hub_checkpoint_path(encoder)}); "
                               "offline, use none.")
    pooling = right.selectbox("Pooling", POOLING_NAMES, key=remember(f"{key}_pooling", base.pooling),
                              disabled=disabled)
    return {"encoder": encoder, "weights": weights if torchvision else base.weights, "pooling": pooling}


SAME = "same"  # the image expert uses the configuration's classifier (image_classifier None)
EQUAL_SHARE = 0.5  # the clinical weight shown for a config without one: equal, with one image expert
IMAGE_MODEL_LABELS = {"pooled": "Pooled features + classifier", "attention": "Attention MIL",
                      "topk": "Top-k MIL", "cellcnn": "Cell CNN (trained from pixels)"}


def load_config_state(key: str, config: ExperimentConfig) -> None:
    """Put ``config`` into the form's widgets (before they are drawn), e.g. the running job's."""
    for field in ("features", "classifier", "imbalance", "encoder", "weights", "pooling", "folds", "repeats",
                  "seed", "fusion", "combine"):
        set_remembered(f"{key}_{field}", getattr(config, field))
    set_remembered(f"{key}_clinical_weight", config.clinical_weight or EQUAL_SHARE)
    set_remembered(f"{key}_image_classifier", config.image_classifier or SAME)
    set_remembered(f"{key}_image_model", config.image_model.split("+"))


def image_model_options(key: str, base: ExperimentConfig, features: str, disabled: bool) -> dict:
    """The image expert(s) and, for clinical + images, how they are fused with the clinical model."""
    left, middle, right, last = st.columns(4)
    experts = left.multiselect("Image model(s)", IMAGE_MODELS, format_func=IMAGE_MODEL_LABELS.get,
                               key=remember(f"{key}_image_model", base.image_model.split("+")), disabled=disabled)
    fusion = middle.selectbox("Fusion with clinical", FUSIONS, key=remember(f"{key}_fusion", base.fusion),
                              disabled=disabled or features != "both",
                              format_func={"early": "Early (one table)", "late": "Late (experts combined)"}.get)
    late = features == "both" and fusion == "late"
    combine = right.selectbox("Combine experts", COMBINES, key=remember(f"{key}_combine", base.combine),
                              disabled=disabled or not late,
                              format_func=lambda c: COMBINE_NAMES[c].capitalize())
    clinical_weight = right.number_input(
        "Clinical expert's weight", 0.05, 0.95, step=0.05, format="%.2f",
        key=remember(f"{key}_clinical_weight", base.clinical_weight or EQUAL_SHARE),
        disabled=disabled or not late or combine == "stacked",
        help="Its share of the (log-odds) mean; the image experts share the rest equally. "
             "0.50 with one image expert: all equal.")
    image_classifier = last.selectbox("Image expert's classifier", (SAME, *IMAGE_CLASSIFIERS),
                                      key=remember(f"{key}_image_classifier", base.image_classifier or SAME),
                                      disabled=disabled or not late,
                                      format_func=lambda c: "Same as the classifier" if c == SAME
                                      else CLASSIFIER_NAMES[c])
    return {"image_model": "+".join(experts), "fusion": fusion, "combine": combine,
            "image_classifier": None if image_classifier == SAME else image_classifier,
            "clinical_weight": float(clinical_weight) if late and combine != "stacked" else None}


def config_form(key: str, base: ExperimentConfig, disabled: bool = False) -> ExperimentConfig | None:
    """Every field of an experiment, defaulting to ``base`` and remembered across pages; None
    (with the reason on the page) for an invalid combination. Not in an ``st.form``: choosing
    "Clinical + images" enables the image options at once."""
    left, middle, right = st.columns(3)
    features = left.selectbox("Features", FEATURE_SETS, format_func=figures.FEATURE_LABELS.get,
                              key=remember(f"{key}_features", base.features), disabled=disabled)
    classifier = middle.selectbox("Classifier", CLASSIFIERS, format_func=CLASSIFIER_NAMES.get,
                                  key=remember(f"{key}_classifier", base.classifier), disabled=disabled)
    imbalance = right.selectbox("Imbalance handling", IMBALANCE, format_func=figures.IMBALANCE_LABELS.get,
                                key=remember(f"{key}_imbalance", base.imbalance), disabled=disabled)
    images = image_options(key, base, disabled=disabled or features == "clinical")
    images |= image_model_options(key, base, features, disabled=disabled or features == "clinical")
    left, middle, right = st.columns(3)
    folds = left.number_input("Folds", 2, 10, key=remember(f"{key}_folds", base.folds), disabled=disabled)
    repeats = middle.number_input("Repeats", 1, 50, key=remember(f"{key}_repeats", base.repeats), disabled=disabled)
    seed = right.number_input("Seed", 0, 2**31 - 1, key=remember(f"{key}_seed", base.seed), disabled=disabled)
    if features == "clinical":  # image options do not apply: keep the base's, so equal models stay equal
        images = {}
    try:
        return dataclasses.replace(base, features=features, classifier=classifier, imbalance=imbalance,
                                   folds=int(folds), repeats=int(repeats), seed=int(seed), **images)
    except ValueError as err:
        st.error(f"This combination cannot run: {err}")
        return None


def job_progress(slot: str) -> None:
    """Poll the slot's job while it runs (only then); rerun the page once it is done so results appear."""
    job = current_job(slot)
    if job is not None and (job.running or not st.session_state.get(f"{slot}_shown_{id(job)}")):
        st.fragment(_job_progress_body, run_every=0.5)(slot)


def _job_progress_body(slot: str) -> None:
    job = current_job(slot)
    if job.running:
        st.progress(job.fraction, text=job.describe())
    elif not st.session_state.get(f"{slot}_shown_{id(job)}"):
        st.session_state[f"{slot}_shown_{id(job)}"] = True
        st.rerun()


def finished_job(slot: str, failure: str) -> Job | None:
    """Progress while the slot's job runs; the job once it has succeeded, else None
    (a failure is shown as ``failure: reason``)."""
    job_progress(slot)
    job = current_job(slot)
    if job is None or job.running:
        return None
    if job.error:
        st.error(f"{failure}: {job.error}")
        return None
    return job


def metrics_table(run: dict) -> pd.DataFrame:
    rows = [{"repeat": f["repeat"], "fold": f["fold"], **{figures.metric_label(m): f"{f[m]:.3f}" for m in METRICS},
             "confusion [[tn, fp], [fn, tp]]": str(f["confusion_matrix"])} for f in run["folds"]]
    summary = run["summary"]
    rows.append({"repeat": "mean ± sd", "fold": "",
                 **{figures.metric_label(m): f"{summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}" for m in METRICS},
                 "confusion [[tn, fp], [fn, tp]]": str(summary.get("confusion_matrix_per_repeat",
                                                                    summary["confusion_matrix_pooled"]))})
    return pd.DataFrame(rows).astype(str)


def show_run(run: dict, key: str) -> None:
    """A run's results: headline figures with intervals, fold table, metric chart, confusion
    matrices, ROC and operating point."""
    name = html.escape(figures.config_name(display_name(run), run["config"]))
    st.markdown(f"<h3><span style='color:{figures.config_color(run['config'])}'>●</span> {name}</h3>",
                unsafe_allow_html=True)  # the dot: the configuration's colour, as in every chart
    summary, estimates = run["summary"], run_estimates(run)
    columns = st.columns(5)
    for column, metric in zip(columns, ("balanced_accuracy", "recall", "specificity", "f1", "roc_auc")):
        value = (estimates or {}).get("metrics", {}).get(metric)
        if value is not None:
            column.metric(figures.metric_label(metric), f"{value['estimate']:.3f}",
                          f"{estimates['level']:.0%} CI {value['low']:.2f}–{value['high']:.2f}",
                          delta_color="off", delta_arrow="off")
        else:
            column.metric(figures.metric_label(metric), f"{summary[metric]['mean']:.3f}",
                          f"spread across folds ± {summary[metric]['std']:.3f}", delta_color="off", delta_arrow="off")
    if estimates:
        kind, value = OPERATING_RULE
        promise = (f"At {value:g}, the fixed threshold `train` decides at by default, read from no patient: this "
                   "out-of-fold figure is therefore the promise of a model trained with this configuration. "
                   if kind == "fixed" and estimates.get("threshold") == value else "")
        st.caption(f"{promise}Balanced accuracy {format_estimate(estimates, 'balanced_accuracy')}. "
                   f"Run `{run.get('id', run['key'])}`, {run['created']}; the table's ± is the spread across folds.")
    else:
        st.caption(f"{figures.computed_on(run)}; run `{run.get('id', run['key'])}`, {run['created']}")
    point = run_operating_point(run, TARGET_SENSITIVITY)
    if point is not None:
        st.markdown(f"**At {TARGET_SENSITIVITY:.0%} sensitivity instead (`train --sensitivity {TARGET_SENSITIVITY}`), "
                    f"apparent:** threshold {point['threshold']:.3f} (the median of the repeats' thresholds, each "
                    "repeat decided at the other repeats' median: read from these same patients, so optimistic): "
                    + "; ".join(f"{figures.metric_label(m).lower()} {format_estimate(point['estimate'], m)}"
                                for m in ("balanced_accuracy", "recall", "specificity")))
    if run.get("encoder"):
        st.caption(f"Image features: {encoder_text(run['encoder'])}.")
    st.dataframe(metrics_table(run), hide_index=True, width="stretch")
    st.plotly_chart(figures.fold_metrics(run["folds"]), key=f"{key}_folds")
    left, right = st.columns(2)
    if summary.get("confusion_matrix_per_repeat") is not None:
        matrix, title = summary["confusion_matrix_per_repeat"], "Mean per repeat (each patient once)"
    else:
        matrix = summary["confusion_matrix_pooled"]
        title = f"Pooled: each patient counted {run['config']['repeats']} time(s)"
    left.plotly_chart(figures.confusion_matrix(matrix, title), key=f"{key}_pooled")
    with right:
        operating_point_view(run, key)
    if "id" in run["oof"]:  # runs stored before patient ids were kept have no per-patient view
        calibration_view(run, key)
    with st.expander("Confusion matrix of each fold"):
        columns = st.columns(min(len(run["folds"]), 3))
        for i, fold in enumerate(run["folds"]):
            columns[i % len(columns)].plotly_chart(
                figures.confusion_matrix(fold["confusion_matrix"], f"Repeat {fold['repeat']}, fold {fold['fold']}"),
                key=f"{key}_cm_{i}")


def calibration_view(run: dict, key: str) -> None:
    """The reliability diagram of the run's out-of-fold probabilities, and how to read it."""
    calibration = reliability(pd.DataFrame(run["oof"]))
    groups = calibration["table"]
    st.plotly_chart(figures.reliability_diagram(calibration), key=f"{key}_reliability")
    st.caption(f"The {int(groups['n'].sum())} patients in {len(groups)} groups of about equal size by their "
               f"out-of-fold probability (mean over the repeats); bars: {calibration['level']:.0%} Wilson intervals. "
               "A class-weighted model treats both classes as equally common, so where malignancy is the majority "
               "its points sit above the diagonal: read its probability as a score, and the Score page's "
               "*patients scored alike* as what such a score meant.")


def operating_point_view(run: dict, key: str) -> None:
    """Pick a threshold, or a target sensitivity, on the out-of-fold probabilities; what it
    reaches is given with its interval and how it was computed."""
    oof = pd.DataFrame(run["oof"])
    mode = st.radio("Operating point", ("Threshold", "Target sensitivity"), horizontal=True, key=f"{key}_mode")
    note = "out-of-fold"
    if mode == "Threshold":
        threshold = st.slider("Threshold on the probability of malignancy", 0.01, 1.0, 0.5, 0.01, key=f"{key}_t")
        estimates = oof_estimates(oof, threshold)
    else:
        target = st.slider("Target sensitivity", 0.5, 1.0, 0.95, 0.01, key=f"{key}_s")
        if oof["repeat"].nunique() > 1:
            chosen = run_operating_point(run, target)  # the stored one at the default target
            threshold, estimates = chosen["threshold"], chosen["estimate"]
            note = (estimates.get("method", "leave-one-repeat-out")
                    + "; apparent, since the other repeats are these same patients")
        else:
            threshold = min(threshold_for_sensitivity(oof.y_true, oof.probability, target), 1.0)
            estimates = oof_estimates(oof, threshold)
            note = ("chosen and scored on the same predictions (optimistic): run 2 or more repeats to hold each "
                    "repeat's threshold out")
    point = operating_point(oof.y_true, oof.probability, threshold)
    metrics = estimates["metrics"]
    st.caption(f"Threshold {min(threshold, 1.0):.3f}: sensitivity **{metrics['recall']['estimate']:.3f}** "
               f"({metrics['recall']['low']:.2f}–{metrics['recall']['high']:.2f}), specificity "
               f"**{metrics['specificity']['estimate']:.3f}** ({metrics['specificity']['low']:.2f}–"
               f"{metrics['specificity']['high']:.2f}), balanced accuracy "
               f"{metrics['balanced_accuracy']['estimate']:.3f}; {estimates['level']:.0%} CIs, {note}.")
    st.plotly_chart(figures.roc_curves(oof, marker=(1 - point["specificity"], point["sensitivity"])),
                    key=f"{key}_roc")
    st.plotly_chart(figures.confusion_matrix(point["confusion_matrix"],
                                             f"At threshold {min(threshold, 1.0):.2f} (all repeats pooled)"),
                    key=f"{key}_op_cm")

"""Ablation: a grid of feature sets x classifiers x imbalance handling, as a paper table beside
the report's published Table 2 rows."""

import dataclasses
import itertools

import streamlit as st

from lympho import figures, reference, reports
from lympho.experiment import (CLASSIFIER_NAMES, FEATURE_SETS, RECOMMENDED, TABLE2_ROWS, TARGET_SENSITIVITY,
                               ExperimentConfig, ablation_table, fusion_configs, run_ablation, table2_layout)
from lympho.models.classifiers import CLASSIFIERS, IMBALANCE
from app_pages.common import config_form, finished_job, image_options, run_store, synthetic_banner
from app_pages.shell import cache_dir, current_cohort, job_busy, remember, start_job

SLOT = "ablation"

cohort = current_cohort()
st.header("Ablation")
synthetic_banner()
GRIDS = ("The report's Table 2 (five rows)", "Custom grid", "Clinical vs image experts vs fusion")
grid_choice = st.radio("Grid", GRIDS, horizontal=True, key=remember("abl_grid", GRIDS[0]))
busy = job_busy(SLOT)
fusion_base = None
if grid_choice == GRIDS[2]:
    st.caption("Clinical alone, each image expert alone, then their fusion (early when the image expert is the "
               "pooled one, and late): what each part and each way of fusing adds. Set the fused model here.")
    fusion_base = config_form("abl_fusion", RECOMMENDED)  # by default, the recommended model taken apart
    features = classifiers = imbalances = None
elif grid_choice == GRIDS[1]:
    left, middle, right = st.columns(3)
    features = left.multiselect("Feature sets", FEATURE_SETS, format_func=figures.FEATURE_LABELS.get,
                                key=remember("abl_features", ["clinical"]))
    classifiers = middle.multiselect("Classifiers", CLASSIFIERS, format_func=CLASSIFIER_NAMES.get,
                                     key=remember("abl_classifiers", ["svm", "logreg"]))
    imbalances = right.multiselect("Imbalance handling", IMBALANCE, format_func=figures.IMBALANCE_LABELS.get,
                                   key=remember("abl_imbalances", ["weights"]))
else:
    features = classifiers = imbalances = None
    st.caption("SVM on clinical, clinical + images and images; MLP on clinical + images and images; "
               "class weights, as in the report.")
base = ExperimentConfig(pooling="mean", imbalance="weights")
if fusion_base is None:
    images = image_options("abl", base)
    left, right = st.columns(2)
    folds = left.number_input("Folds", 2, 10, key=remember("abl_folds", 3))
    repeats = right.number_input("Repeats", 1, 20, key=remember("abl_repeats", 1))

if st.button("Run ablation", type="primary", disabled=busy or (grid_choice == GRIDS[2] and fusion_base is None)):
    if fusion_base is not None:
        configs, store, cache = fusion_configs(fusion_base), run_store(), cache_dir()

        def work(progress):
            runs = run_ablation(cohort, fusion_base, cache_dir=cache, progress=progress, configs=configs)[1]
            for run in runs:
                run["id"] = store.save(run)
            return runs

        start_job(SLOT, f"Fusion ablation of {len(configs)} configurations", work)
        st.rerun()
    elif features is None:
        rows, imbalances = TABLE2_ROWS, ["weights"]
    else:
        rows = list(itertools.product(features, classifiers))
    if not rows or not imbalances:
        st.error("Choose at least one feature set, one classifier and one imbalance handling.")
    else:
        base = dataclasses.replace(base, folds=int(folds), repeats=int(repeats), **images)
        store, cache = run_store(), cache_dir()

        def work(progress):
            runs = []
            for imbalance in imbalances:
                runs += run_ablation(cohort, dataclasses.replace(base, imbalance=imbalance), rows, cache, progress)[1]
            for run in runs:
                run["id"] = store.save(run)
            return runs

        start_job(SLOT, f"Ablation of {len(rows) * len(imbalances)} configurations", work)
        st.rerun()

job = finished_job(SLOT, "The ablation failed")
if job is not None:
    table = ablation_table(job.result)
    st.success(f"{len(job.result)} configurations, stored as runs ({job.finished - job.started:.1f} s).")
    st.subheader("Mean ± sd over folds, beside the report's Table 2")
    paper = reference.paper_table(table).rename(columns=figures.metric_label)
    st.dataframe(paper, hide_index=True, width="stretch")
    st.caption(f"★ the best mean of each metric among our rows. Ours: {figures.computed_on(job.result[0])} "
               "(sd with ddof = 1). The report's rows: mean ± sd "
               "of its three folds (one 3-fold split of 163 patients, ImageNet ResNet features); other "
               "patients and splits, so compare magnitudes, not decimals.")
    st.subheader(f"At each one's threshold for {TARGET_SENSITIVITY:.0%} sensitivity instead (apparent)")
    points = reports.operating_point_table(job.result, TARGET_SENSITIVITY)
    if (points["Threshold"] == reports.ONE_REPEAT).all():
        st.caption(f"Run 2 or more repeats to see each configuration at its threshold for {TARGET_SENSITIVITY:.0%} "
                   f"sensitivity, where `train --sensitivity {TARGET_SENSITIVITY}` would decide.")
    else:
        st.dataframe(points, hide_index=True, width="stretch")
        st.caption("The table above is at 0.5, where `train` decides by default. Here each configuration is at the "
                   f"threshold `train --sensitivity {TARGET_SENSITIVITY}` would store (the median of each repeat's "
                   "threshold for this sensitivity), where the ranking may differ. Each repeat decided at the median "
                   "threshold of the other repeats, which were read from these same patients: apparent, so "
                   "optimistic. 95% CIs by bootstrap over patients; ★ the best balanced accuracy.")
    st.plotly_chart(figures.ablation_bars(table), key="ablation_chart")
    if st.toggle("Show every fold (the report's layout)", key=remember("abl_per_fold", False)):
        wide = table2_layout(table)
        wide.columns = [f"{figures.metric_label(metric)} · {split}" for metric, split in wide.columns]
        st.dataframe(wide.reset_index().round(3), hide_index=True, width="stretch")
    st.download_button("Download ablation.csv", reports.csv_text(table), "ablation.csv", "text/csv")

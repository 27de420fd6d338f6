"""Ablation: a grid of feature sets x classifiers x imbalance handling, the report's Table 2 layout."""

import dataclasses
import itertools

import streamlit as st

from lympho import figures
from lympho.experiment import (CLASSIFIER_NAMES, FEATURE_SETS, TABLE2_ROWS, ExperimentConfig, ablation_table,
                               run_ablation, table2_layout)
from lympho.models.classifiers import CLASSIFIERS, IMBALANCE
from app_pages.common import (FEATURE_NAMES, cache_dir, current_cohort, finished_job, image_options, job_busy,
                              run_store, start_job, synthetic_banner)

SLOT = "ablation"

cohort = current_cohort()
st.header("Ablation")
synthetic_banner()
grid_choice = st.radio("Grid", ("The report's Table 2 (five rows)", "Custom grid"), horizontal=True, key="grid")
busy = job_busy(SLOT)
with st.form("ablation_form"):
    if grid_choice.startswith("Custom"):
        left, middle, right = st.columns(3)
        features = left.multiselect("Feature sets", FEATURE_SETS, ["clinical", "both"], format_func=FEATURE_NAMES.get)
        classifiers = middle.multiselect("Classifiers", CLASSIFIERS, ["svm", "mlp"], format_func=CLASSIFIER_NAMES.get)
        imbalances = right.multiselect("Imbalance handling", IMBALANCE, ["weights"])
    else:
        features = classifiers = imbalances = None
        st.caption("SVM on clinical, clinical + images and images; MLP on clinical + images and images; "
                   "class-weighted, as in the report.")
    base = ExperimentConfig(pooling="mean", imbalance="weights")
    images = image_options("abl", base)
    left, right = st.columns(2)
    folds = left.number_input("Folds", 2, 10, 3, key="abl_folds")
    repeats = right.number_input("Repeats", 1, 20, 1, key="abl_repeats")
    submitted = st.form_submit_button("Run ablation", type="primary", disabled=busy)

if submitted and not busy:
    if features is None:
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

job = finished_job(SLOT, "The ablation failed")
if job is not None:
    table = ablation_table(job.result)
    st.success(f"{len(job.result)} configurations, stored as runs ({job.finished - job.started:.1f} s).")
    st.subheader("Table 2 layout: each metric per fold")
    wide = table2_layout(table)
    wide.columns = [f"{figures.metric_label(metric)} · {split}" for metric, split in wide.columns]
    st.dataframe(wide.reset_index(), hide_index=True, width="stretch")
    st.plotly_chart(figures.ablation_bars(table), key="ablation_chart")
    st.download_button("Download ablation.csv", table.to_csv(index=False), "ablation.csv", "text/csv")

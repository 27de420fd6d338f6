"""Runs: every stored run; compare, export for a team, and write a challenge submission."""

import json

import streamlit as st

from lympho import figures, reports
from lympho.experiment import ExperimentConfig
from lympho.scoring import train_model
from app_pages.common import cache_dir, finished_job, job_busy, run_store, show_run, start_job

SLOT = "submission"

st.header("Runs")
runs = run_store().runs()
if not runs:
    st.info("No stored runs yet: run an experiment or an ablation first.")
    st.stop()
runs = runs[::-1]  # newest first
table = reports.runs_table(runs)
shown = ["id", "label", "imbalance", "cohort", "synthetic", "balanced_accuracy_mean", "balanced_accuracy_std",
         "recall_mean", "specificity_mean", "roc_auc_mean", "folds", "repeats", "seed"]
st.caption("Select rows to compare them, export them, or open one.")
picked = st.dataframe(table[[c for c in shown if c in table.columns]], hide_index=True, width="stretch",
                      on_select="rerun", selection_mode="multi-row", key="runs_table")
selected = [runs[i] for i in picked.selection.rows] or runs[:1]

st.subheader(f"Comparison of {len(selected)} run{'s' * (len(selected) > 1)}")
st.plotly_chart(figures.compare_runs(selected), key="compare")
st.dataframe(reports.runs_table(selected).set_index("id").T.astype(str), width="stretch")
left, middle, right = st.columns(3)
left.download_button("Export CSV", reports.csv_text(reports.runs_table(selected)), "lympho-runs.csv", "text/csv")
middle.download_button("Export JSON", json.dumps(selected, indent=1), "lympho-runs.json", "application/json")
right.download_button("Export HTML report", reports.runs_report_html(selected), "lympho-report.html", "text/html",
                      help="One self-contained file with the figures, for presenting to a team.")

st.subheader("Run details")
run = st.selectbox("Run", selected, format_func=lambda r: f"{r['id']}: {r['label']}", key="detail")
show_run(run, f"detail_{run['id']}")

st.subheader("Test-set predictions")
cohort = st.session_state.get("cohort")
if cohort is None or not cohort.select("test"):
    st.caption("The loaded cohort has no unlabelled test patients.")
    st.stop()
st.caption(f"Fit **{run['label']}** on all {len(cohort.labelled())} labelled patients of the loaded cohort, "
           f"then predict its {len(cohort.select('test'))} test patients in the challenge's `Id,Predicted` format.")
if st.button("Fit and predict the test set", disabled=job_busy(SLOT)):
    config, cache = ExperimentConfig.from_dict(run["config"]), cache_dir()

    def work(progress):
        return train_model(cohort, config, cache, progress).predict(cohort.select("test"), cache, progress)

    start_job(SLOT, f"Submission from {run['label']}", work)
job = finished_job(SLOT, "Could not predict the test set")
if job is not None:
    st.dataframe(job.result, hide_index=True)
    st.download_button("Download submission.csv", reports.submission_csv(job.result), "submission.csv", "text/csv")

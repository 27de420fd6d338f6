"""Runs: the tracker. Every stored run, metrics first; compare, tag, annotate, rename, delete,
link to a run or a comparison, export for a team, and write a challenge submission.

Deep links: ``/runs?run=ID`` opens a run, ``/runs?compare=ID1,ID2`` a comparison. The CLI
does the same through ``python -m lympho runs ...``.
"""

import json

import streamlit as st

from lympho import figures, reports
from lympho.experiment import ExperimentConfig
from lympho.runstore import display_name, tracker_table
from lympho.scoring import train_model
from app_pages.common import finished_job, run_store, show_run
from app_pages.shell import cache_dir, job_busy, remember, start_job

SLOT = "submission"

st.header("Runs")
store = run_store()
runs = store.runs()[::-1]  # newest first
if not runs:
    st.info("No stored runs yet: run an experiment or an ablation first.")
    st.stop()
by_id = {run["id"]: run for run in runs}

left, right = st.columns([3, 1])
all_tags = sorted({tag for run in runs for tag in run.get("tags", [])})
wanted_tags = left.multiselect("Only runs tagged", all_tags, key=remember("runs_tags", []))
all_fields = right.toggle("Every parameter", key=remember("runs_all_fields", False),
                          help="Off: only the parameters that differ between the runs listed.")
listed = [r for r in runs if set(wanted_tags) <= set(r.get("tags", []))]
table = tracker_table(listed, all_fields=all_fields)
metric_columns = {m: st.column_config.NumberColumn(figures.metric_label(m), format="%.3f")
                  for m in ("balanced_accuracy", "f1", "recall", "specificity", "precision", "roc_auc")}
metric_columns["balanced_accuracy_std"] = st.column_config.NumberColumn("BA sd over folds", format="%.3f")
metric_columns["balanced_accuracy_ci_low"] = st.column_config.NumberColumn("BA 95% CI low", format="%.2f")
metric_columns["balanced_accuracy_ci_high"] = st.column_config.NumberColumn("BA 95% CI high", format="%.2f")
metric_columns["balanced_accuracy_at_op"] = st.column_config.NumberColumn("BA at 95% sens.", format="%.3f")
metric_columns["specificity_at_op"] = st.column_config.NumberColumn("Specificity at 95% sens.", format="%.3f")
st.caption("Click a column header to sort; select rows to compare them. Metrics: mean over each run's folds; "
           "BA 95% CI: bootstrap over patients of the run's out-of-fold predictions, at 0.5, where `train` decides "
           "by default. At 95% sens.: apparent, at the threshold `train --sensitivity 0.95` would store (chosen from "
           "the repeats, each repeat decided at the others', read from these same patients), for runs of 2 or more "
           "repeats.")
picked = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row",
                      key="runs_table", column_config=metric_columns, height=min(420, 38 + 35 * len(table)))

linked = [i for i in st.query_params.get("compare", "").split(",") if i in by_id]
selected_ids = [listed[i]["id"] for i in picked.selection.rows] or linked or [listed[0]["id"] if listed else
                                                                                runs[0]["id"]]
if picked.selection.rows:
    st.query_params["compare"] = ",".join(selected_ids)
selected = [by_id[i] for i in selected_ids]

st.subheader(f"Comparison of {len(selected)} run{'s' * (len(selected) > 1)}")
st.markdown(f"[Link to this comparison](/runs?compare={','.join(selected_ids)})")
left, right = st.columns(2)
left.plotly_chart(figures.compare_runs(selected), key="compare")
right.plotly_chart(figures.roc_overlay(selected), key="compare_roc")
st.dataframe(tracker_table(selected).round(3).set_index("id").T.astype(str), width="stretch")  # runs as columns
left, middle, right = st.columns(3)
# The exports are built when clicked, not on every rerun (the HTML report embeds plotly.js and every figure).
left.download_button("Export CSV", lambda: reports.csv_text(reports.runs_table(selected)), "lympho-runs.csv",
                     "text/csv")
middle.download_button("Export JSON", lambda: json.dumps(selected, indent=1), "lympho-runs.json", "application/json")
right.download_button("Export HTML report", lambda: reports.runs_report_html(selected), "lympho-report.html",
                      "text/html", help="One self-contained file with the figures, for presenting to a team.")

st.subheader("Run details")
wanted = st.query_params.get("run")
choices = selected_ids if wanted not in by_id or wanted in selected_ids else [wanted, *selected_ids]
run = by_id[st.selectbox("Run", choices, format_func=lambda i: f"{i}: {display_name(by_id[i])}",
                         index=choices.index(wanted) if wanted in choices else 0, key="detail")]
st.query_params["run"] = run["id"]
st.markdown(f"[Link to this run](/runs?run={run['id']})")
if run.get("tags") or run.get("note"):  # the user's own words, shown as plain text
    st.text("\n".join(filter(None, [f"Tags: {', '.join(run.get('tags', []))}" if run.get("tags") else "",
                                     run.get("note", "")])))
with st.expander("Rename, tag, annotate or delete this run"):
    with st.form(f"edit_{run['id']}"):
        name = st.text_input("Name", run.get("name") or "", placeholder=run["label"])
        tags = st.text_input("Tags (space-separated)", " ".join(run.get("tags", [])))
        note = st.text_area("Note", run.get("note", ""))
        if st.form_submit_button("Save"):
            try:
                store.rename(run["id"], name)
                store.tag(run["id"], add=tags.split(), remove=[t for t in run.get("tags", []) if t not in tags.split()])
                store.note(run["id"], note)
            except ValueError as err:
                st.error(str(err))
            else:
                st.rerun()
    if st.checkbox("Delete this run", key=f"confirm_{run['id']}"):
        if st.button(f"Delete {run['id']} for good", type="primary"):
            store.delete(run["id"])
            st.query_params.clear()
            st.rerun()
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
        model = train_model(cohort, config, cache, progress, outer_repeats=0)  # predictions only: no promise
        return model.predict(cohort.select("test"), cache, progress)

    start_job(SLOT, f"Submission from {run['label']}", work)
job = finished_job(SLOT, "Could not predict the test set")
if job is not None:
    st.dataframe(job.result, hide_index=True)
    st.download_button("Download submission.csv", reports.submission_csv(job.result), "submission.csv", "text/csv")

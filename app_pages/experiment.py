"""Experiment: configure one cross-validated experiment, run it, read its results."""

import streamlit as st

from lympho.experiment import run_experiment
from lympho.scoring import RECOMMENDED
from app_pages.common import (cache_dir, config_form, current_cohort, finished_job, job_busy, run_store, show_run,
                              start_job, synthetic_banner)

SLOT = "experiment"

cohort = current_cohort()
st.header("Experiment")
synthetic_banner()
st.caption("Patient-level stratified k-fold cross-validation; scaling and SMOTE are fitted on "
           "training folds only. Defaults: the recommended configuration.")

busy = job_busy(SLOT)
with st.form("experiment_form"):
    config = config_form("exp", RECOMMENDED)
    submitted = st.form_submit_button("Run experiment", type="primary", disabled=busy)

if submitted and not busy:
    store, cache = run_store(), cache_dir()

    def work(progress):
        run = run_experiment(cohort, config, cache, progress)
        run["id"] = store.save(run)
        return run

    start_job(SLOT, config.label(), work)

if job_busy(SLOT):
    st.info("Running: you can keep using the app; the run continues and is stored when it ends.")
job = finished_job(SLOT, "The experiment failed")
if job is not None:
    st.success(f"Stored as run `{job.result['id']}` ({job.finished - job.started:.1f} s).")
    show_run(job.result, "exp_result")

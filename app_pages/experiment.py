"""Experiment: configure one cross-validated experiment, run it, read its results."""

import streamlit as st

from lympho.experiment import run_experiment
from lympho.experiment import RECOMMENDED
from app_pages.common import config_form, finished_job, load_config_state, run_store, show_run, synthetic_banner
from app_pages.shell import cache_dir, current_cohort, current_job, job_busy, start_job

SLOT = "experiment"

cohort = current_cohort()
st.header("Experiment")
synthetic_banner()
st.caption("Patient-level stratified k-fold cross-validation; scaling and SMOTE are fitted on "
           "training folds only. Defaults: the recommended configuration (cells mean+max pooled, one of the "
           "two candidates `train` chooses between). Headline figures are at 0.5, where `train` decides by "
           "default.")

busy = job_busy(SLOT)
if busy:  # coming back mid-run: the form shows the running job's configuration
    load_config_state("exp", current_job(SLOT).context)
config = config_form("exp", RECOMMENDED, disabled=busy)
if st.button("Run experiment", type="primary", disabled=busy or config is None):
    store, cache = run_store(), cache_dir()

    def work(progress):
        run = run_experiment(cohort, config, cache, progress)
        run["id"] = store.save(run)
        return run

    start_job(SLOT, config.label(), work, context=config)
    st.rerun()

if busy:
    st.info(f"Running **{current_job(SLOT).context.label()}**: you can keep using the app (the sidebar shows "
            "its progress); the run is stored when it ends.")
job = finished_job(SLOT, "The experiment failed")
if job is not None:
    st.success(f"Stored as run `{job.result['id']}` ({job.finished - job.started:.1f} s).")
    if config is not None and job.context != config:
        st.caption("This result is of the run above, not of the configuration now in the form.")
    show_run(job.result, "exp_result")

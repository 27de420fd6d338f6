"""The light half of the shared page code (no torch, no scikit-learn): the loaded cohort,
widget state that survives page changes, background jobs and the job indicator.

app.py and the overview import only this, so the landing page opens before the heavy
libraries have loaded.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lympho.data import default_cache_dir
from lympho.jobs import Job

#: Where each job slot's results are shown (for the job indicator's link).
SLOT_PAGES = {"experiment": ("app_pages/experiment.py", "Experiment"),
              "ablation": ("app_pages/ablation.py", "Ablation"),
              "train_model": ("app_pages/score.py", "Score a patient"),
              "submission": ("app_pages/runs.py", "Runs")}
REMEMBERED = "_remembered_keys"


def current_cohort():
    """The cohort picked in the sidebar; stops the page with a hint when there is none."""
    cohort = st.session_state.get("cohort")
    if cohort is None:
        pending = st.session_state.get("cohort_pending")
        st.info(pending or "Choose a data directory in the sidebar, or leave it empty for the demo cohort.")
        st.stop()
    return cohort


def cache_dir() -> Path:
    return Path(st.session_state.get("cache_dir") or default_cache_dir())


def remember(key: str, default) -> str:
    """A widget key whose value outlives the page: Streamlit drops the state of widgets not
    drawn in a run, so app.py re-saves remembered keys before every page
    (:func:`keep_remembered_state`). Create the widget with ``key=`` and no default value."""
    st.session_state.setdefault(key, default)
    st.session_state.setdefault(REMEMBERED, set()).add(key)
    return key


def keep_remembered_state() -> None:
    """Re-save every remembered widget value, so that leaving a page keeps its form."""
    for key in st.session_state.get(REMEMBERED, ()):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def start_job(slot: str, name: str, work, context=None) -> Job:
    jobs = st.session_state.setdefault("jobs", {})
    jobs[slot] = Job(name, work, context)
    return jobs[slot]


def current_job(slot: str) -> Job | None:
    return st.session_state.get("jobs", {}).get(slot)


def job_busy(slot: str) -> bool:
    job = current_job(slot)
    return job is not None and job.running


@st.fragment(run_every=1.0)
def job_indicator() -> None:
    """Sidebar: every job of this session, running (with progress) or just finished."""
    jobs = st.session_state.get("jobs", {})
    if not jobs:
        return
    st.caption("Jobs")
    for slot, job in jobs.items():
        page, title = SLOT_PAGES.get(slot, (None, slot))
        if job.running:
            st.progress(job.fraction, text=job.describe())
        else:
            state = f"failed: {job.error}" if job.error else f"done in {job.finished - job.started:.0f} s"
            st.caption(f"{'⚠️' if job.error else '✅'} {job.name}: {state}")
        if page:
            st.page_link(page, label=f"Open {title}", icon=":material/arrow_forward:")

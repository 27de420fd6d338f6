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
              "submission": ("app_pages/runs.py", "Runs"),
              "pretrain": ("app_pages/data.py", "Data"), "cellspace": ("app_pages/data.py", "Data")}
REMEMBERED = "_remembered_keys"
KEEP = "_kept_"


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
    """A widget key whose value outlives the page. Streamlit forgets the state of widgets not
    drawn in a run (e.g. on another page), so every remembered value is also copied to a
    plain key (:func:`keep_remembered_state`, run by app.py first) and restored from it here.
    Create the widget with ``key=`` and no default value."""
    store = f"{KEEP}{key}"
    st.session_state.setdefault(store, default)
    if key not in st.session_state:
        st.session_state[key] = st.session_state[store]
    st.session_state.setdefault(REMEMBERED, set()).add(key)
    return key


def set_remembered(key: str, value) -> None:
    """Set a remembered widget's value (before the widget is drawn)."""
    remember(key, value)
    st.session_state[key] = st.session_state[f"{KEEP}{key}"] = value


def keep_remembered_state() -> None:
    """Copy every remembered widget's current value to its plain key, so that leaving a page
    keeps its form."""
    for key in st.session_state.get(REMEMBERED, ()):
        if key in st.session_state:
            st.session_state[f"{KEEP}{key}"] = st.session_state[key]


def start_job(slot: str, name: str, work, context=None) -> Job:
    jobs = st.session_state.setdefault("jobs", {})
    jobs[slot] = Job(name, work, context)
    return jobs[slot]


def current_job(slot: str) -> Job | None:
    return st.session_state.get("jobs", {}).get(slot)


def job_busy(slot: str) -> bool:
    job = current_job(slot)
    return job is not None and job.running


def job_indicator() -> None:
    """Sidebar: every job of this session, running (with progress) or finished. It polls only
    while a job runs (an idle session costs nothing), and reruns the app once when it ends."""
    jobs = st.session_state.get("jobs", {})
    running = any(job.running for job in jobs.values())
    st.fragment(_job_list, run_every=1.0 if running else None)()


def _job_list() -> None:
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
            icon = ":material/error:" if job.error else ":material/check_circle:"
            st.caption(f"{icon} {job.name}: {state}")
        if page:
            st.page_link(page, label=f"Open {title}", icon=":material/arrow_forward:")
    seen = st.session_state.setdefault("_jobs_seen_ended", set())
    ended = {id(job) for job in jobs.values() if not job.running} - seen
    if ended:  # stop polling: the next full run draws this list without a timer
        seen |= ended
        st.rerun()

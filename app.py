"""lympho dashboard: entry point, navigation, the cohort picker and the job indicator in the sidebar."""

import importlib
import os
import threading
from pathlib import Path

import streamlit as st

from lympho.data import CohortError, remember_data_dir, remembered_data_dirs, resolve_cohort
from lympho.jobs import Job
from lympho.synthetic import demo_cohort_dir, demo_cohort_ready
from app_pages.guard import require_login, usable_cache_or_stop
from app_pages.shell import job_indicator, keep_remembered_state

st.set_page_config(page_title="lympho", page_icon="🔬", layout="wide")
DEMO = "Synthetic demo cohort"


@st.cache_resource(show_spinner="Loading cohort…", max_entries=4)
def load(data: str, cache: str):
    """One loaded cohort per directory, shared by every session (loading checks every image)."""
    return resolve_cohort(data or None, Path(cache))


@st.cache_resource(show_spinner=False)
def demo_build(cache: str) -> Job:
    """The demo cohort's one-off generation, in the background and shared by every session."""
    return Job("Generating the synthetic demo cohort",
               lambda progress: demo_cohort_dir(Path(cache), lambda done, total: progress("demo", done, total)))


@st.cache_resource(show_spinner=False)
def warm_imports() -> threading.Thread:
    """Import the heavy libraries (torch, scikit-learn, XGBoost) in the background once per
    server, so the overview opens at once and the other pages are ready when first opened.
    Started once a cohort is loaded, so that it does not slow the demo cohort's generation."""
    thread = threading.Thread(target=importlib.import_module, args=("lympho.scoring",), daemon=True)
    thread.start()
    return thread


@st.fragment(run_every=0.5)
def demo_progress(cache: Path) -> None:
    job = demo_build(str(cache))
    if job.running:
        st.progress(job.fraction, text=job.describe())
    else:
        st.rerun()


def pick_cohort(cache: Path) -> None:
    """Sidebar: the demo, LYMPHO_DATA, a remembered directory, or one typed in."""
    known = list(dict.fromkeys(filter(None, [os.environ.get("LYMPHO_DATA"), *remembered_data_dirs(cache)])))
    choice = st.selectbox("Cohort", [*known, DEMO, "Another directory…"], key="cohort_choice")
    data = "" if choice == DEMO else choice
    st.session_state["cohort"] = None
    if choice == "Another directory…":
        data = st.text_input("Data directory (challenge layout)", key="data_dir",
                             placeholder="/path/to/lymphocytosis").strip()
        if not data:
            return
    if not data and not os.environ.get("LYMPHO_DATA") and not demo_cohort_ready(cache):
        job = demo_build(str(cache))
        if job.error:
            st.error(f"Could not generate the demo cohort: {job.error}")
            demo_build.clear()
        else:
            st.session_state["cohort_pending"] = "The synthetic demo cohort is being generated (once, a few seconds)."
            demo_progress(cache)
        return
    try:
        cohort = load(data, str(cache))
    except CohortError as err:
        st.error(f"Cannot load this cohort. {err}")
        return
    st.session_state.pop("cohort_pending", None)
    if not cohort.synthetic and data not in known:
        remember_data_dir(cache, cohort.root)
    st.session_state["cohort"] = cohort
    if cohort.synthetic:
        st.warning("SYNTHETIC DEMO COHORT: generated images and values, not patients.")
    else:
        st.caption(f"{len(cohort.labelled())} labelled, {len(cohort.select('test'))} unlabelled patients")
    for warning in cohort.warnings:
        st.caption(f"⚠️ {warning}")


require_login()
# Less empty space above each page, so a 1280 x 720 projector shows the content.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>")
keep_remembered_state()
with st.sidebar:
    st.title("lympho")
    st.caption("Reactive or malignant lymphocytosis, from blood-smear images and clinical data.")
    cache = usable_cache_or_stop()
    st.session_state["cache_dir"] = str(cache)
    pick_cohort(cache)
    if st.session_state["cohort"] is not None:  # after the demo cohort's generation, not competing with it
        warm_imports()
    job_indicator()
    st.caption(f"Cache: `{cache}`")

st.navigation({
    "": [st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True)],
    "Explore": [st.Page("app_pages/data.py", title="Data", icon=":material/table:"),
                st.Page("app_pages/experiment.py", title="Experiment", icon=":material/science:")],
    "Score": [st.Page("app_pages/score.py", title="Score a patient", icon=":material/person_search:")],
    "Present": [st.Page("app_pages/ablation.py", title="Ablation", icon=":material/view_comfy:"),
                st.Page("app_pages/runs.py", title="Runs", icon=":material/history:")],
}).run()

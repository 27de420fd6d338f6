"""lympho dashboard: entry point, navigation, and the cohort picker in the sidebar."""

import os
from pathlib import Path

import streamlit as st

from lympho.data import CohortError, default_cache_dir, remember_data_dir, remembered_data_dirs, resolve_cohort

st.set_page_config(page_title="lympho", page_icon="🔬", layout="wide")
DEMO = "Synthetic demo cohort"


@st.cache_resource(show_spinner="Loading cohort…", max_entries=4)
def load(data: str, cache: str):
    """One loaded cohort per directory, shared by every session (loading checks every image)."""
    return resolve_cohort(data or None, Path(cache))


def pick_cohort(cache: Path) -> None:
    """Sidebar: the demo, LYMPHO_DATA, a remembered directory, or one typed in."""
    known = list(dict.fromkeys(filter(None, [os.environ.get("LYMPHO_DATA"), *remembered_data_dirs(cache)])))
    choice = st.selectbox("Cohort", [*known, DEMO, "Another directory…"], key="cohort_choice")
    data = "" if choice == DEMO else choice
    if choice == "Another directory…":
        data = st.text_input("Data directory (challenge layout)", key="data_dir",
                             placeholder="/path/to/lymphocytosis").strip()
        if not data:
            st.session_state["cohort"] = None
            return
    try:
        cohort = load(data, str(cache))
    except CohortError as err:
        st.error(f"Cannot load this cohort. {err}")
        st.session_state["cohort"] = None
        return
    if not cohort.synthetic and data not in known:
        remember_data_dir(cache, cohort.root)
    st.session_state["cohort"] = cohort
    if cohort.synthetic:
        st.warning("SYNTHETIC DEMO COHORT: generated images and values, not patients.")
    else:
        st.caption(f"{len(cohort.labelled())} labelled, {len(cohort.select('test'))} unlabelled patients")
    for warning in cohort.warnings:
        st.caption(f"⚠️ {warning}")


with st.sidebar:
    st.title("lympho")
    st.caption("Reactive or malignant lymphocytosis, from blood-smear images and clinical data.")
    cache = default_cache_dir()
    st.session_state["cache_dir"] = str(cache)
    pick_cohort(cache)
    st.caption(f"Cache: `{cache}`")

st.navigation([
    st.Page("app_pages/data.py", title="Data", icon=":material/table:", default=True),
    st.Page("app_pages/experiment.py", title="Experiment", icon=":material/science:"),
    st.Page("app_pages/ablation.py", title="Ablation", icon=":material/view_comfy:"),
    st.Page("app_pages/score.py", title="Score a patient", icon=":material/person_search:"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/history:"),
]).run()

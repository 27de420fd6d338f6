"""lympho dashboard: entry point, navigation, and the cohort picker in the sidebar."""

import os

import streamlit as st

from lympho.data import CohortError, default_cache_dir, resolve_cohort

st.set_page_config(page_title="lympho", page_icon=":microscope:", layout="wide")


@st.cache_resource(show_spinner="Loading cohort…")
def cached_cohort(data: str):
    return resolve_cohort(data or None, default_cache_dir())


with st.sidebar:
    st.title("lympho")
    data = st.text_input("Data directory (challenge layout)", value=os.environ.get("LYMPHO_DATA", ""),
                         help="Leave empty for the synthetic demo cohort.", key="data_dir")
    try:
        st.session_state["cohort"] = cached_cohort(data.strip())
    except CohortError as err:
        st.error(f"Cannot load cohort: {err}")
        st.session_state["cohort"] = None
    cohort = st.session_state["cohort"]
    if cohort is not None:
        if cohort.synthetic:
            st.warning("SYNTHETIC DEMO COHORT: generated images and values, not patients.")
        st.caption(f"Cohort: `{cohort.root}`")
    st.caption(f"Cache: `{default_cache_dir()}`")

st.navigation([st.Page("pages/data.py", title="Data", icon=":material/table:")]).run()

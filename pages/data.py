"""Data page: the loaded cohort at a glance."""

import streamlit as st

cohort = st.session_state.get("cohort")
st.header("Cohort")
if cohort is None:
    st.info("Choose a data directory in the sidebar.")
    st.stop()
frame = cohort.frame()
left, middle, right = st.columns(3)
left.metric("Patients", len(frame))
middle.metric("Labelled (malignant / reactive)", f"{(frame.label == 1).sum()} / {(frame.label == 0).sum()}")
right.metric("Images", int(frame.n_images.sum()))
st.dataframe(frame, hide_index=True, width="stretch")

"""Data: the cohort at a glance, the report's Figure 1, and a patient browser."""

import streamlit as st

from lympho import figures
from lympho.data import LABEL_NAMES, overview, read_image
from lympho.encoders import morphology
from app_pages import cells
from app_pages.common import synthetic_banner
from app_pages.shell import current_cohort, remember

GALLERY_LIMIT = 60

cohort = current_cohort()
st.header("Cohort")
synthetic_banner()
for warning in cohort.warnings:  # unlisted folders, implausible ages and counts: loaded, but check them
    st.warning(warning, icon=":material/warning:")
frame = cohort.frame()
columns = st.columns(4)
columns[0].metric("Patients", len(frame))
columns[1].metric("Malignant / reactive", f"{(frame.label == 1).sum()} / {(frame.label == 0).sum()}")
columns[2].metric("Unlabelled (test)", int((frame.label == -1).sum()))
columns[3].metric("Images", int(frame.n_images.sum()),
                  f"{frame.n_images.min()}–{frame.n_images.max()} per patient", delta_color="off", delta_arrow="off")
summary = overview(cohort).round(1)
st.dataframe(summary.rename(columns=figures.column_label), hide_index=True)

st.subheader("Clinical attributes by label")
left, right = st.columns(2)
left.plotly_chart(figures.gender_by_label(frame), key="gender")
right.plotly_chart(figures.age_vs_count(frame), key="age_count")
st.plotly_chart(figures.images_per_patient(frame), key="images")

st.subheader("Patients")
if st.session_state.get("data_patient") not in set(frame.id):  # another cohort was picked
    st.session_state.pop("data_patient", None)
patient_id = st.selectbox("Patient", frame.id, key=remember("data_patient", frame.id.iloc[0]))
patient = next(p for p in cohort.patients if p.id == patient_id)
label = LABEL_NAMES[patient.label]
st.markdown(f"**{patient.id}** ({patient.split}set): **{label}**, gender {patient.gender}, "
            f"age at sampling {patient.age:.0f} years (sampled {patient.sampling_date}; born "
            f"{patient.dob or 'unknown'}), "
            f"lymphocyte count {patient.lymph_count:g} x10⁹/L, {len(patient.images)} images")
shown = patient.images[:GALLERY_LIMIT]
if len(patient.images) > GALLERY_LIMIT:
    st.caption(f"Showing the first {GALLERY_LIMIT} of {len(patient.images)} images.")
st.image([read_image(path) for path in shown], width=112, caption=[path.name for path in shown])

st.subheader("One cell, as the morphology encoder sees it")
cell = st.selectbox("Cell", patient.images, format_func=lambda path: path.name, key=f"cell_{patient.id}")
st.plotly_chart(figures.cell_segmentation(morphology.masks(cell)), key="cell_segmentation")
st.caption("The central 160 px of the crop at half resolution; the nucleus is found by Otsu's threshold on the "
           "red channel's darkness, the cell as bluish pixels near it. A failed segmentation is a flag column "
           "of the encoder, never a dropped cell.")

cells.show(cohort, cell)

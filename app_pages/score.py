"""Score a patient: upload their cells and clinical values, get a probability and a decision."""

import tempfile
from datetime import date

import streamlit as st

from lympho import reports
from lympho.data import REFERENCE_DATE, CohortError
from lympho.scoring import (RECOMMENDED, ModelError, instance_scores, load_model, make_patient, model_catalog,
                            save_model, score_patient, train_model)
from lympho.uploads import UPLOAD_SUFFIXES, save_uploads
from app_pages.common import finished_job
from app_pages.shell import cache_dir, job_busy, start_job

SLOT = "train_recommended"

st.header("Score a patient")
models_dir = cache_dir() / "models"


@st.cache_resource(max_entries=4)
def cached_model(path: str, created: str, trust_pickle: bool = False):
    """Loaded once per model version (``created`` changes when a model is replaced)."""
    return load_model(path, trust_pickle=trust_pickle)


# --- the model ---------------------------------------------------------------------------
catalog, damaged = model_catalog(models_dir)
for problem in damaged:
    st.caption(f"⚠️ skipped {problem}")
cohort = st.session_state.get("cohort")
left, right = st.columns([3, 2])
if catalog:
    path, meta = left.selectbox("Model", catalog, key="model",
                                format_func=lambda item: f"{item[0].name}: {item[1]['label']} "
                                                         f"({item[1]['cohort']['n_labelled']} patients)")
    if meta["cohort"]["synthetic"]:
        left.warning("This model was trained on the synthetic demo cohort: its scores mean nothing clinically.")
else:
    left.info("No trained model yet: train the recommended one in one click.")
if right.button(f"Train the recommended model ({RECOMMENDED.label()}) on the loaded cohort",
                disabled=cohort is None or job_busy(SLOT)):
    cache, target = cache_dir(), models_dir / ("recommended-demo" if cohort.synthetic else "recommended")

    def work(progress):
        return save_model(train_model(cohort, RECOMMENDED, cache, progress), target)

    start_job(SLOT, "Training the recommended model", work)
finished_job(SLOT, "Training failed")
if not catalog:
    st.stop()
trust = meta["format"] == 1 and left.checkbox(
    "Trust this old model file", key="trust_pickle",
    help="Saved before the safe format: its pipeline.joblib is a pickle, which runs code when loaded. "
         "Tick only for a model from a source you trust; better, train it again.")
try:
    model = cached_model(str(path), meta["created"], trust)
except ModelError as err:
    st.error(str(err))
    st.stop()

# --- the patient -------------------------------------------------------------------------
born = st.radio("Give the patient's", ("Date of birth", "Age"), horizontal=True, key="born")
with st.form("patient"):
    uploads = st.file_uploader("The patient's lymphocyte images (several files, or one zip)", type=UPLOAD_SUFFIXES,
                               accept_multiple_files=True, key="uploads")
    left, middle, right = st.columns(3)
    gender = left.radio("Gender", ("F", "M"), horizontal=True, key="gender")
    if born == "Date of birth":
        dob = middle.date_input("Date of birth", date(1950, 1, 1), min_value=date(1900, 1, 1),
                                max_value=REFERENCE_DATE, key="dob")
    else:
        age = middle.number_input("Age (years)", 0.0, 120.0, 70.0, key="age")
    count = right.number_input("Lymphocyte count (x10⁹/L)", 0.01, 1000.0, 10.0, key="count")
    threshold = st.slider("Decision threshold on the probability of malignancy", 0.0, 1.0, 0.5, 0.01,
                          key="threshold", help="Lower it to catch more malignant patients at the cost of "
                                                "more false alarms.")
    submitted = st.form_submit_button("Score", type="primary")
if model.meta.get("oof"):
    target = 0.95
    st.caption(f"On its training patients (out-of-fold), a threshold of "
               f"{model.threshold_for_sensitivity(target):.3f} reaches a sensitivity of {target:.0%}.")

if submitted:
    try:
        with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
            paths = save_uploads([(f.name, f.getvalue()) for f in uploads or []], f"{scratch}/patient")
            patient = make_patient(paths, gender, count, **({"dob": dob} if born == "Date of birth" else {"age": age}))
            with st.spinner(f"Scoring {len(paths)} images…"):
                result = score_patient(model, patient, cache_dir(), threshold=threshold)
                cells = instance_scores(model, patient, cache_dir())
            ranked = [] if cells is None else [(p.read_bytes(), s) for p, s in zip(cells.path, cells.score)]
        st.session_state["score_result"] = (result, ranked)
    except CohortError as err:
        st.error(str(err))
        st.session_state.pop("score_result", None)

if "score_result" in st.session_state:
    result, ranked = st.session_state["score_result"]
    left, right = st.columns(2)
    left.metric("Probability of malignancy", f"{result['probability']:.3f}")
    right.metric(f"Decision at threshold {result['threshold']:.2f}",
                 "Malignant" if result["prediction"] else "Reactive")
    if result["prediction"]:
        right.caption("Refer for flow cytometry.")
    if model.meta.get("oof"):
        point = model.operating_point(result["threshold"])
        right.caption(f"At this threshold, out-of-fold on the training patients: sensitivity "
                      f"{point['sensitivity']:.2f}, specificity {point['specificity']:.2f}.")
    st.caption(f"{result['n_images']} images, model: {result['model']}")
    if ranked:
        st.subheader("Cells ordered by how much each drove the score")
        st.image([image for image, _ in ranked], width=112,
                 caption=[f"{score:.2f}" for _, score in ranked])
    else:
        st.caption("This model uses clinical values only: the images do not change its score.")
    st.download_button("Download the one-page report", reports.patient_report_html(result, ranked[:12]),
                       "lympho-patient-report.html", "text/html")

"""Score a patient: decision support. The model and its card, the patient's inputs, the model's
stored operating point, and a result that always belongs to the inputs and model on screen."""

import re
import tempfile
from datetime import date

import streamlit as st

from lympho import reports
from lympho.data import MAX_AGE, MAX_LYMPH_COUNT, CohortError
from lympho.decision import (DISCLAIMER_SHORT, evidence_text, inputs_used, model_card, operating_point_text,
                             promise_text, result_key, similar_text, thumbnails, zone_text)
from lympho.experiment import RECOMMENDED
from lympho.scoring import (ModelError, default_rule, instance_scores, is_recommended, load_model, make_patient,
                            model_catalog, patient_warnings, save_model, score_patient, train_model)
from lympho.uploads import UPLOAD_SUFFIXES, save_uploads
from app_pages import cells
from app_pages.common import config_form, finished_job
from app_pages.shell import cache_dir, job_busy, remember, start_job

SLOT = "train_model"
RESULT = "score_result"

st.header("Score a patient")
models_dir = cache_dir() / "models"
cohort = st.session_state.get("cohort")


@st.cache_data(max_entries=2, show_spinner=False)
def cached_thumbnails(files: tuple[tuple[str, bytes], ...]):
    """Decoded once per set of uploads, not on every rerun of the page."""
    return thumbnails(files)


@st.cache_resource(max_entries=4)
def cached_model(path: str, created: str, trust_pickle: bool = False):
    """Loaded once per model version (``created`` changes when a model is replaced)."""
    return load_model(path, trust_pickle=trust_pickle)


def model_folder(config, synthetic: bool) -> str:
    """``recommended`` for the recommended configuration, else a slug of the configuration."""
    slug = "recommended" if config == RECOMMENDED else \
        re.sub(r"[^a-z0-9]+", "-", f"{config.label()} {config.imbalance}".lower()).strip("-")
    return f"{slug}-demo" if synthetic else slug


def recommended_first(catalog, synthetic: bool | None):
    """The recommended model (of the loaded cohort's kind, real or demo) first, then newest first."""
    def rank(item):
        meta = item[1]
        return (not is_recommended(meta), meta["cohort"]["synthetic"] != synthetic)
    return sorted(catalog, key=rank)


# --- the model ---------------------------------------------------------------------------
catalog, damaged = model_catalog(models_dir)
for problem in damaged:
    st.caption(f"⚠️ skipped {problem}")
catalog = recommended_first(catalog, None if cohort is None else cohort.synthetic)
with st.expander("Train a model on the loaded cohort", expanded=not catalog, icon=":material/model_training:"):
    if cohort is None:
        st.info("Load a cohort in the sidebar first.")
    else:
        st.caption("Any configuration, image-based ones included: it is fitted on every labelled patient, "
                   f"cross-validated to place its triage zones, decides at the {default_rule().text()}, and its "
                   "promise is measured by nested cross-validation. Defaults: the recommended procedure, which "
                   "chooses between the recommended configuration's poolings inside every training set.")
        train_config = config_form("train", RECOMMENDED, disabled=job_busy(SLOT))
        if train_config is not None and st.button(f"Train {train_config.label()}", type="primary",
                                                  disabled=job_busy(SLOT)):
            cache, target = cache_dir(), models_dir / model_folder(train_config, cohort.synthetic)

            def work(progress):
                procedure = None if train_config == RECOMMENDED else train_config  # None: the recommended procedure
                return save_model(train_model(cohort, procedure, cache, progress), target)

            start_job(SLOT, f"Training {train_config.label()}", work, context=train_config)
            st.rerun()
    trained = finished_job(SLOT, "Training failed")
    if trained is not None:
        st.success(f"Trained and saved as `{trained.result.name}`.")
if not catalog:
    st.info("No trained model yet: train one above. The recommended one uses the images: on 110 patients about "
            "20 seconds the first time (measuring every cell's morphology), then 6; a clinical-only one "
            "takes seconds.")
    st.stop()

paths = [str(path) for path, _ in catalog]
metas = {str(path): meta for path, meta in catalog}
if st.session_state.get("score_model") not in metas:
    st.session_state.pop("score_model", None)
left, right = st.columns([3, 2])
chosen = left.selectbox("Model", paths, key=remember("score_model", paths[0]),
                        format_func=lambda p: f"{metas[p]['label']} · {metas[p]['cohort']['n_labelled']} patients"
                                              f"{' (synthetic demo)' if metas[p]['cohort']['synthetic'] else ''}"
                                              f"{' · recommended' if is_recommended(metas[p]) else ''}")
meta = metas[chosen]
trust = meta["format"] == 1 and left.checkbox(
    "Trust this old model file", key="trust_pickle",
    help="Saved before the safe format: its pipeline.joblib is a pickle, which runs code when loaded. "
         "Tick only for a model from a source you trust; better, train it again.")
try:
    model = cached_model(chosen, meta["created"], trust)
except ModelError as err:
    st.error(str(err))
    st.stop()
uses_images = model.config.uses_images
with right.container(border=True):
    st.markdown("**Model card**")
    st.markdown("  \n".join(f"**{name}:** {value}" for name, value in model_card(model.meta)))
if meta["cohort"]["synthetic"]:
    left.warning("This model was trained on the synthetic demo cohort: its scores mean nothing clinically.")

# --- the patient -------------------------------------------------------------------------
with left:
    patient_id = st.text_input("Patient ID", key=remember("score_patient_id", ""), placeholder="e.g. P184",
                               max_chars=64).strip()
    first, second, third = st.columns(3)
    gender = first.radio("Gender", ("F", "M"), horizontal=True, key=remember("score_gender", "F"))
    born = second.radio("Give", ("Date of birth", "Age at sampling"), horizontal=True,
                        key=remember("score_born", "Date of birth"))
    count = third.number_input("Lymphocyte count (×10⁹/L)", 0.01, MAX_LYMPH_COUNT, key=remember("score_count", 10.0))
    when, age_column = st.columns(2)
    sampling_date = when.date_input("Sampling date", min_value=date(1900, 1, 1), max_value=date.today(),
                                    key=remember("score_sampling_date", date.today()), format="YYYY-MM-DD",
                                    help="The day the smear was taken: the models use the age at sampling.")
    if born == "Date of birth":
        dob = age_column.date_input("Date of birth", min_value=date(1900, 1, 1), max_value=date.today(),
                                    key=remember("score_dob", date(1950, 1, 1)), format="YYYY-MM-DD")
        age = None
    else:
        age = age_column.number_input("Age at sampling (years)", 0.0, MAX_AGE, key=remember("score_age", 70.0),
                                      help="The patient's age on the sampling date, used as it is.")
        dob = None
    label = ("The patient's lymphocyte images (several files, or one zip)" if uses_images
             else "Images (optional: this clinical-only model does not use them)")
    uploads = st.file_uploader(label, type=UPLOAD_SUFFIXES, accept_multiple_files=True, key="score_uploads")
    point = model.meta.get("operating_point") or {}
    stored = float(point.get("threshold", 0.5))
    advanced = st.toggle("Advanced: choose another threshold", key=remember("score_advanced", False),
                         help=f"The preset is the model's stored operating point ({stored:.3f}).")
    threshold = (st.slider("Decision threshold on the probability of malignancy", 0.01, 1.0, stored, 0.01,
                           key=f"score_threshold_{chosen}") if advanced else stored)
    st.caption(f"Decision rule: malignant when the probability is at least {threshold:.3f}"
               + (" (the model's stored operating point)." if not advanced else " (chosen by hand)."))

files = [(f.name, f.getvalue()) for f in uploads or []]
if files:
    previews = cached_thumbnails(tuple(files))
    with left.expander(f"Preview: {len(previews)} of {len(files)} uploaded file(s)", icon=":material/image:"):
        st.image([image for _, image in previews], width=64, caption=[name[-12:] for name, _ in previews])
inputs = {"id": patient_id, "gender": gender, "count": count, "dob": dob, "age": age,
          "sampling_date": sampling_date, "threshold": threshold}
key = result_key(f"{chosen}@{meta['created']}", inputs, files)
if left.button("Score", type="primary"):
    try:
        if not patient_id:
            raise CohortError("give the patient's ID (it titles the report)", field="Patient ID")
        with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
            saved = save_uploads(files, f"{scratch}/patient") if files else []
            patient = make_patient(saved, gender, count, age=age, dob=dob, patient_id=patient_id,
                                   sampling_date=sampling_date, require_images=uses_images)
            with st.spinner(f"Scoring {len(saved)} images…" if uses_images else "Scoring…"):
                result = score_patient(model, patient, cache_dir(), threshold=threshold)
                ranked_cells = instance_scores(model, patient, cache_dir())
            thumbs = [p.read_bytes() for p in saved]
            ranked = [] if ranked_cells is None else [(p.read_bytes(), s) for p, s in
                                                      zip(ranked_cells.path, ranked_cells.score)]
            measure = None if ranked_cells is None else str(ranked_cells.measure.iloc[0])
        st.session_state[RESULT] = {"key": key, "result": result, "ranked": ranked, "thumbs": thumbs,
                                    "used": inputs_used(patient, uses_images), "measure": measure,
                                    "warnings": patient_warnings(patient)}
    except CohortError as err:
        st.error(str(err))
        st.session_state.pop(RESULT, None)

# --- the result: only if it belongs to the inputs and model on screen ----------------------
shown = st.session_state.get(RESULT)
if shown is not None and shown["key"] != key:
    st.session_state.pop(RESULT)
    st.info("The inputs or the model changed: the previous result was cleared. Press **Score** again.")
    shown = None
if shown is not None:
    result = shown["result"]
    malignant = result["prediction"] == 1
    st.divider()
    zone = zone_text(result.get("zone", "n/a"), model.meta)
    if zone:  # the triage zone first: it holds up better than one cut when new patients differ
        show_zone = {"rule-out": st.success, "refer": st.warning, "rule-in": st.error}[result["zone"]]
        show_zone(f"**Triage zone: {zone}**", icon=":material/flag:")
    risk, decision = st.columns([1, 2])
    risk.metric("Probability of malignancy", f"{result['probability']:.1%}",
                f"threshold {result['threshold']:.3f}", delta_color="off", delta_arrow="off")
    with decision:
        if malignant:
            st.error(f"**Malignant pattern: refer for flow cytometry.**  \n{DISCLAIMER_SHORT}",
                     icon=":material/priority_high:")
        else:
            st.success(f"**Reactive pattern: this model does not suggest referral.**  \n{DISCLAIMER_SHORT}",
                       icon=":material/check_circle:")
        promise = promise_text(model.meta.get("operating_point"))
        if promise and not advanced:
            st.caption(f"The model's promise at this threshold (nested cross-validation of its whole training "
                       f"procedure, 95% intervals): {promise}.")
        if model.meta.get("oof") and advanced:
            chosen_point = model.operating_point_estimate(threshold=result["threshold"])
            st.caption("A threshold chosen here has no promise: " + operating_point_text(model.meta, chosen_point))
        elif model.meta.get("oof") and not promise:  # a model saved before promises: its figure, labelled
            st.caption(operating_point_text(model.meta))
    st.markdown("**Inputs as used:** " + " · ".join(f"{name}: {value}" for name, value in shown["used"])
                + f" · Model: {result['model']}")
    for warning in shown["warnings"]:
        st.warning(warning, icon=":material/warning:")
    evidence, similar = evidence_text(result), similar_text(result)
    if evidence:
        st.markdown(f"**Each expert's probability:** {evidence}")
    if similar:
        st.markdown(f"**Patients scored alike:** {similar}",
                    help="A class-weighted model's probability weighs both classes equally; this is how often "
                         "malignancy was found among the training patients whose out-of-fold probability was "
                         "nearest this one.")
    if shown["thumbs"]:
        with st.expander(f"The {len(shown['thumbs'])} uploaded cells"):
            st.image(shown["thumbs"][:120], width=64)
    if shown["ranked"]:
        measure = shown["measure"]
        if measure == "bag-of-one probability":
            st.subheader("Each cell scored on its own")
            st.caption("Not attention or influence: each cell is scored as a bag of one (that cell's features with "
                       "the patient's clinical values). It answers 'what would the model say if every cell looked "
                       "like this one'; the patient's probability above comes from all cells pooled. Highest first.")
        else:
            st.subheader("Cells the model weighed most")
            st.caption(f"Ranked by the model's {measure} for each cell"
                       + (" (the weights sum to 1 over the patient's cells)." if measure == "attention weight"
                          else "."))
        st.image([image for image, _ in shown["ranked"][:24]], width=96,
                 caption=[f"{score:.3f}" for _, score in shown["ranked"][:24]])
    elif not uses_images:
        st.caption("This model uses clinical values only: images do not change its score.")
    st.download_button("Download the one-page report",  # built on click: it embeds the top cells as base64
                       lambda: reports.patient_report_html(result, shown["ranked"][:12], shown["measure"] or ""),
                       f"lympho-report-{re.sub(r'[^A-Za-z0-9_.-]+', '_', result['id'])}.html", "text/html")
    if shown["thumbs"] and cohort is not None:
        cells.score_census(cohort, shown["thumbs"])

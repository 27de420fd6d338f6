"""Overview: what the tool is for, the cohort at a glance, the recommended model against the
published numbers, and the three ways in (explore, score, present)."""

import streamlit as st

from lympho import figures, reference
from lympho.runstore import RunStore
from app_pages.shell import cache_dir

ESTIMATE = reference.RECOMMENDED_ESTIMATE

st.title("Reactive or malignant lymphocytosis?")
st.markdown(
    "**lympho** estimates, for one patient, the probability that a lymphocytosis is **malignant** rather than "
    "**reactive**, from a bag of blood-smear images of the patient's lymphocytes and three clinical values "
    "(gender, age, lymphocyte count). It is a research tool that helps decide who to refer for flow cytometry; "
    "it does not replace it.")

explore, score, present = st.columns(3, border=True)
with explore:
    st.markdown("##### :material/travel_explore: Explore")
    st.caption("The cohort and its images; cross-validate any configuration.")
    st.page_link("app_pages/data.py", label="Data", icon=":material/table:")
    st.page_link("app_pages/experiment.py", label="Experiment", icon=":material/science:")
with score:
    st.markdown("##### :material/person_search: Score")
    st.caption("One patient's images and clinical values: probability, decision, the evidence.")
    st.page_link("app_pages/score.py", label="Score a patient", icon=":material/person_search:")
with present:
    st.markdown("##### :material/slideshow: Present")
    st.caption("The report's Table 2 redone; runs compared, tagged, exported.")
    st.page_link("app_pages/ablation.py", label="Ablation", icon=":material/view_comfy:")
    st.page_link("app_pages/runs.py", label="Runs", icon=":material/history:")

left, right = st.columns([2, 3])
with left:
    st.subheader("The cohort")
    cohort = st.session_state.get("cohort")
    if cohort is None:
        st.info(st.session_state.get("cohort_pending") or "Choose a data directory in the sidebar, or the demo cohort.")
    else:
        frame = cohort.frame()
        labelled = frame[frame.label >= 0]
        first, second = st.columns(2)
        first.metric("Labelled patients", len(labelled))
        second.metric("Images", f"{int(frame.n_images.sum()):,}")
        st.caption(("**Synthetic demo cohort**: generated, not patients. " if cohort.synthetic else "")
                   + f"{(labelled.label == 1).sum()} malignant, {(labelled.label == 0).sum()} reactive; "
                   f"{int((frame.label == -1).sum())} unlabelled (test) patients; "
                   f"{frame.n_images.min()}–{frame.n_images.max()} images per patient.")
with right:
    st.subheader("The recommended model")
    ba, recall, nested = ESTIMATE["balanced_accuracy"], ESTIMATE["recall"], ESTIMATE.get("nested")
    name = figures.config_name(ESTIMATE["label"], ESTIMATE["config"])
    point = ESTIMATE.get("operating_point")
    if point:  # how the tool decides comes first; probability 0.5 is the conventional comparison
        at = {m: f"{point[m]['estimate']:.3f}** ({point[m]['ci_low']:.2f}–{point[m]['ci_high']:.2f})"
              for m in ("balanced_accuracy", "recall", "specificity")}
        st.markdown(f"**{name}**, as it decides, at its stored threshold **{point['threshold']:.3f}** (chosen "
                    f"for {point['target_sensitivity']:.0%} sensitivity): balanced accuracy "
                    f"**{at['balanced_accuracy']}, recall **{at['recall']}, specificity **{at['specificity']}")
        st.caption(f"Threshold and estimate from {point['computed_on']}: each repeat decided at the median "
                   f"threshold of the other repeats, 95% CI by bootstrap over patients.")
    st.markdown(f"{'At probability 0.5 instead' if point else f'**{name}**'}: balanced accuracy "
                f"**{ba['estimate']:.3f}** (95% CI {ba['ci_low']:.2f}–{ba['ci_high']:.2f}; spread across folds "
                f"{ba['mean']:.3f} ± {ba['std']:.3f}), recall {recall['estimate']:.3f} "
                f"({recall['ci_low']:.2f}–{recall['ci_high']:.2f})")
    st.caption(f"Computed on {ESTIMATE['computed_on']}; {ESTIMATE['source']}.")
    if nested:
        figure = nested["balanced_accuracy"]
        st.caption(f"Choosing the best of several models and its threshold on the same patients flatters them: "
                   f"the whole choice, cross-validated (nested), gives **{figure['estimate']:.3f}** (95% CI "
                   f"{figure['ci_low']:.2f}–{figure['ci_high']:.2f}), recall {nested['recall']['estimate']:.3f}; "
                   f"{nested['computed_on']}.")

ours = None
if cohort is not None:
    wanted = ESTIMATE["config"]
    mine = [r for r in RunStore(cache_dir() / "runs").runs()
            if all(r["config"].get(k) == v for k, v in wanted.items()) and r["cohort"]["root"] == str(cohort.root)]
    if mine:
        run = max(mine, key=lambda r: r["summary"]["n_folds"])
        stats = run["summary"]["balanced_accuracy"]
        ours = {"name": f"This tool, on the loaded cohort (run {run['id'][-12:]})", "mean": stats["mean"],
                "std": stats["std"], "note": figures.computed_on(run)}
st.plotly_chart(figures.benchmark_comparison(reference.comparison_rows(ours)), key="benchmarks")
st.caption("Intervals: ours are 95% CIs (bootstrap over patients; a run on the loaded cohort: ± sd across folds); "
           "the report's Table 2 rows show the mean "
           "and the range of its three folds; the test-set figures are single numbers. Different patients and "
           "splits: read the comparison as an order of magnitude, not a ranking.")

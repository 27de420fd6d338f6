"""Overview: what the tool is for, the cohort at a glance, the recommended model against the
published numbers, and the three ways in (explore, score, present)."""

import streamlit as st

from lympho import figures, reference
from lympho.decision import weakest_text, zone_lines
from lympho.experiment import RECOMMENDED
from lympho.reports import subgroup_table
from lympho.runstore import RunStore
from app_pages.shell import cache_dir

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
    stored = reference.recommended_promise()
    if stored is None:
        st.info("No promise measured yet: run `python benchmarks/promise.py`.")
    else:
        point, estimate = stored["operating_point"], stored["operating_point"]["estimate"]
        figures_ = {m: f"**{estimate['metrics'][m]['estimate']:.3f}** ({estimate['metrics'][m]['low']:.2f}–"
                       f"{estimate['metrics'][m]['high']:.2f})" for m in ("balanced_accuracy", "recall", "specificity")}
        st.markdown(f"**What a new patient gets** (the promise): balanced accuracy {figures_['balanced_accuracy']}, "
                    f"sensitivity {figures_['recall']}, specificity {figures_['specificity']}, deciding at "
                    f"threshold {point['threshold']:.3f} ({point['rule']['text']}).")
        design = estimate["design"]
        st.caption(f"95% intervals. Nested cross-validation of the whole training procedure on the "
                   f"{stored['cohort']['n_labelled']} labelled real patients ({design['outer_repeats']} x "
                   f"{design['outer_folds']}-fold outer, {design['inner_repeats']} x {design['inner_folds']}-fold "
                   f"inner): the configuration (one of {len(design['candidates'])})"
                   + (" and the threshold are" if point["rule"]["kind"] != "fixed" else " is")
                   + f" chosen on the training part of every split, and again in each of {estimate['n_bootstrap']} "
                   f"bootstrap draws over patients. "
                   + (f"The threshold ranged {point['threshold_range']['min']:.3f}–"
                      f"{point['threshold_range']['max']:.3f} over the repeats. " if point["rule"]["kind"] != "fixed"
                      else "The fixed threshold is read from no patient. ")
                   + f"Measured {stored['computed']} on {stored['machine']} ({stored['command']}).")
        weakest = weakest_text(stored["subgroups"])
        if weakest:
            st.markdown(f"**Where it is weakest:** {weakest.removeprefix('least reliable in: ')}.")
        with st.expander("By subgroup, triage zones, and the apparent figure", icon=":material/groups:"):
            st.dataframe(subgroup_table(stored["subgroups"]), hide_index=True)
            st.caption("Nested out-of-fold decisions at the stored threshold, by age at sampling, lymphocyte "
                       "count (×10⁹/L) and gender; 95% bootstrap intervals within each band. n/a: the band has "
                       "no patient of the class the metric needs.")
            st.markdown("  \n".join(zone_lines(point)))
            apparent = point["apparent"]["metrics"]
            st.caption("Apparent, measured on the same patients the configuration and threshold were chosen on "
                       "(optimistic, not the promise): balanced accuracy "
                       f"{apparent['balanced_accuracy']['estimate']:.3f}, sensitivity "
                       f"{apparent['recall']['estimate']:.3f}, specificity {apparent['specificity']['estimate']:.3f}.")

ours = None
if cohort is not None:
    wanted = RECOMMENDED.to_dict()
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

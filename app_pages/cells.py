"""The Data page's section on the self-supervised cell encoder: pretraining it as a job (with
its loss curve drawn live), the cells nearest a chosen cell in the learned space, and the cell
census (each cluster as a strip of its most typical cells, with its share among reactive and
malignant patients). Every computation is in ``lympho`` (pretraining, cellspace)."""

from __future__ import annotations

import dataclasses

import streamlit as st

from lympho import figures
from lympho.data import LABEL_NAMES, read_image
from lympho.encoders import WeightsUnavailable
from app_pages.common import finished_job
from app_pages.shell import cache_dir, current_job, job_busy, start_job

PRETRAIN, SPACE = "pretrain", "cellspace"


def show(cohort, cell) -> None:
    """The section, below the Data page's patient browser; ``cell``: the chosen cell's path."""
    st.subheader("Cells that teach themselves: the ssl encoder")
    st.caption("A small ResNet trained by contrastive self-supervision (SimCLR) on every cell image of the "
               "cohort, train and test patients alike; no label is read. CLI: `python -m lympho pretrain`.")
    _pretraining(cohort)
    from lympho.encoders.ssl import find_weights, weights_digest

    try:
        weights = find_weights()
    except WeightsUnavailable as err:
        st.info(str(err))
        return
    st.caption(f"`--encoder ssl` uses `{weights}`.")
    if st.button("Embed every cell of the cohort", disabled=job_busy(SPACE),
                 help="ssl features of every cell, through the feature cache (a minute or two the first time)"):
        from lympho.cellspace import cell_space

        cache = cache_dir()
        start_job(SPACE, "Cell space", lambda progress: cell_space(cohort, cache, progress))
        st.rerun()
    job = finished_job(SPACE, "Embedding the cells failed")
    stale = job is not None and (job.result.patients != list(cohort.patients)
                                 or job.result.weights != weights_digest(weights)[:12])
    if job is None or stale:  # none yet, or of another cohort or other weights: embed again
        return
    _nearest(job.result, cell)
    _census(job.result)


def _pretraining(cohort) -> None:
    busy = job_busy(PRETRAIN)
    minutes = st.number_input("Pretraining budget (minutes)", 1.0, 240.0, 20.0, step=5.0, disabled=busy,
                              help="As many epochs as fit, timed on the first (the device's preset network: a "
                                   "small ResNet at 32 px on a CPU, a ResNet18 at 64 px on a GPU)")
    if st.button("Pretrain the cell encoder", disabled=busy):
        from lympho.encoders.pretraining import default_settings, pretrain, stage_progress
        from lympho.encoders.torchvision import resolve_device_name

        cache, state = cache_dir(), {"losses": [], "epochs": None}
        device = resolve_device_name("auto")
        settings = dataclasses.replace(default_settings(device), minutes=minutes)
        start_job(PRETRAIN, "Pretraining", lambda progress: pretrain(cohort, cache, settings,
                                                                    progress=stage_progress(progress, state)),
                  context=state)
        st.rerun()
    if current_job(PRETRAIN) is not None:
        st.fragment(_loss_curve, run_every=2.0 if busy else None)()
    job = finished_job(PRETRAIN, "Pretraining failed")
    if job is not None:
        record = job.result
        st.success(f"{record['epochs']} epochs on {record['data']['images']} cells in "
                   f"{record['training_seconds']:.0f} s ({record['views_per_second']:.0f} views/s on "
                   f"{record['device_name']}); weights `{record['folder']}`, now used by `--encoder ssl`.")


def _loss_curve() -> None:
    job = current_job(PRETRAIN)
    if job is not None and job.context["losses"]:
        st.plotly_chart(figures.pretraining_loss(job.context["losses"], job.context["epochs"]), key="ssl_loss")


def _nearest(space, cell) -> None:
    from lympho.cellspace import nearest_cells

    st.markdown("**The cells nearest the chosen cell** (above) in the learned space: they should look alike.")
    neighbours = nearest_cells(space, cell, n=8)
    st.image([read_image(cell)] + [read_image(path) for path, _, _ in neighbours], width=96,
             caption=["chosen"] + [f"{similarity:.2f} · {LABEL_NAMES[p.label]}" for _, similarity, p in neighbours])


def _census(space) -> None:
    from lympho.cellspace import cohort_census

    k = st.select_slider("Clusters in the census", (8, 16, 24, 32, 48, 64), value=16, key="data_census_k")
    store = st.session_state.setdefault("_census", {})
    key = (space.weights, len(space.paths), k)
    if key not in store:
        store.clear()
        store[key] = cohort_census(space, k)
    census = store[key]
    st.plotly_chart(figures.census_shares(census.shares), key="census_shares")
    st.caption("k-means on the labelled patients' cells in the learned space (no label read); each bar: the mean "
               "share of that cluster among a patient's cells. The census pooling of a model is fitted inside each "
               "training fold instead.")
    ordered = census.shares.sort_values("difference", key=abs, ascending=False)
    for row in ordered.itertuples():
        st.markdown(f"**C{row.cluster}**: {row.Reactive:.0%} of a reactive patient's cells, "
                    f"{row.Malignant:.0%} of a malignant patient's")
        st.image([read_image(path) for path in census.typical[row.cluster]], width=72)


def score_census(cohort, images: list[bytes]) -> None:
    """The Score page's last section: the scored patient's cell census beside the cohort's."""
    from lympho.encoders.ssl import find_weights

    st.subheader("This patient's cell census")
    try:
        find_weights()
    except WeightsUnavailable as err:
        st.caption(f"Needs the ssl encoder: {err}")
        return
    if st.button("Compare this patient's cells with the cohort's",
                 help="ssl features of the cohort's cells (cached after the first time) and of these cells"):
        from lympho.cellspace import upload_census

        job = current_job(SPACE)  # the Data page's cell space of this cohort, when it was computed
        done = job is not None and not job.running and not job.error
        space = job.result if done and job.result.patients == list(cohort.patients) else None
        with st.spinner("Embedding the cells…"):
            shares = upload_census(cohort, images, cache_dir(), space=space)
        st.plotly_chart(figures.census_shares(shares, patient="This patient"), key="score_census")
        st.caption("Clusters of the labelled patients' cells in the learned space (k = 16, no label read); bars: "
                   "the mean share of each among reactive and malignant patients' cells; diamonds: this patient's. "
                   "The Data page shows each cluster's typical cells.")

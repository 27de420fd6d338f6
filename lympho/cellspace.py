"""The learned cell space, for people: nearest cells, and the cell census of a cohort.

What the Data and Score pages show about the self-supervised encoder
(:mod:`lympho.encoders.ssl`), computed here so that the pages stay thin:

- :func:`cell_space`: every cell of a cohort embedded (through the feature cache);
- :func:`nearest_cells`: the cells most like a chosen one (cosine similarity), a sanity check
  a biologist can make at a glance: near neighbours should look alike;
- :func:`cohort_census`: the cells of the labelled patients clustered (k-means, reading no
  label), each cluster as its most typical cells, with its mean share of the cells of reactive
  and of malignant patients;
- :func:`patient_census`: one patient's share of cells per cluster, beside the cohort's.

The census shown here is fitted on all labelled patients' cells, for display; the census
pooling of a model (:class:`lympho.models.census.CellCensus`) is fitted inside each training
fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from lympho.data import Cohort, Patient

Progress = Callable[[str, int, int], None]
#: The census table's columns of each diagnosis (as the charts name them).
SHARE_COLUMNS = {0: "Reactive", 1: "Malignant"}


@dataclass
class CellSpace:
    """Cells of a cohort in the ssl encoder's space: ``paths`` (n), ``features`` (n, d),
    ``patient`` (n: each cell's patient index) and the ``patients``; ``weights``: the
    encoder's weights digest."""

    paths: list[Path]
    features: np.ndarray
    patient: np.ndarray
    patients: list[Patient]
    weights: str


def cell_space(cohort: Cohort, cache_dir: Path | None, progress: Progress | None = None) -> CellSpace:
    """Every cell of every patient of ``cohort`` through the ssl encoder (cached features)."""
    from lympho.features import FeatureExtractor

    extractor = FeatureExtractor("ssl", cache_dir=cache_dir)
    patients = list(cohort.patients)
    bags = extractor.bags(patients, (lambda d, t: progress("extract", d, t)) if progress else None)
    return CellSpace(paths=[path for p in patients for path in p.images], features=np.vstack(bags),
                     patient=np.repeat(np.arange(len(patients)), [len(b) for b in bags]), patients=patients,
                     weights=extractor.encoder.digest[:12])


def nearest_cells(space: CellSpace, path: Path, n: int = 8) -> list[tuple[Path, float, Patient]]:
    """The ``n`` cells most like ``path`` (itself excluded), by cosine similarity, with
    their similarity and patient."""
    index = space.paths.index(Path(path))
    unit = space.features / np.maximum(np.linalg.norm(space.features, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit[index]
    similarity[index] = -np.inf
    order = np.argsort(-similarity, kind="stable")[:n]
    return [(space.paths[i], float(similarity[i]), space.patients[space.patient[i]]) for i in order]


@dataclass
class Census:
    """A census fitted on the labelled patients' cells: the fitted :class:`CellCensus`,
    ``shares`` (one row per cluster: its share of reactive and of malignant patients' cells,
    the patients' mean fraction, and their difference), and ``typical`` (each cluster's
    most typical cells, nearest its centre first)."""

    model: object
    shares: pd.DataFrame
    typical: dict[int, list[Path]]


def cohort_census(space: CellSpace, k: int = 16, per_cluster: int = 8, seed: int = 0) -> Census:
    """Cluster the labelled patients' cells into ``k`` and describe each cluster."""
    from lympho.models.census import CellCensus

    labelled = [i for i, p in enumerate(space.patients) if p.label in (0, 1)]
    bags = [space.features[space.patient == i] for i in labelled]
    model = CellCensus(n_clusters=k, random_state=seed).fit(bags)
    fractions = model.transform(bags)
    labels = np.array([space.patients[i].label for i in labelled])
    shares = pd.DataFrame({"cluster": np.arange(k),
                           **{name: fractions[labels == label].mean(axis=0) for label, name in SHARE_COLUMNS.items()}})
    shares["difference"] = shares[SHARE_COLUMNS[1]] - shares[SHARE_COLUMNS[0]]
    cells = np.flatnonzero(np.isin(space.patient, labelled))
    assigned, distance = model.assign(space.features[cells]), model.distances(space.features[cells])
    typical = {c: [space.paths[cells[i]] for i in np.flatnonzero(assigned == c)[
        np.argsort(distance[assigned == c], kind="stable")[:per_cluster]]] for c in range(k)}
    return Census(model=model, shares=shares, typical=typical)


def patient_census(census: Census, cells: np.ndarray, name: str = "This patient") -> pd.DataFrame:
    """The census's shares with one more column: ``name``'s fraction of cells per cluster,
    from their ssl features ``cells`` (n, d)."""
    fractions = census.model.transform([np.asarray(cells)])[0]
    return census.shares.assign(**{name: fractions})


def patient_cells(images: Sequence[Path], cache_dir: Path | None) -> np.ndarray:
    """The ssl features of one patient's images (through the feature cache)."""
    from lympho.features import FeatureExtractor

    return FeatureExtractor("ssl", cache_dir=cache_dir).extract(list(images))


def upload_census(cohort: Cohort, images: Sequence[bytes], cache_dir: Path | None, k: int = 16,
                  space: CellSpace | None = None) -> pd.DataFrame:
    """The census of a scored patient's uploaded cells (their files' bytes) beside the
    cohort's (:func:`cohort_census` of ``space``, else of :func:`cell_space` of ``cohort``)."""
    import tempfile

    census = cohort_census(space or cell_space(cohort, cache_dir), k)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        paths = []
        for i, data in enumerate(images):
            paths.append(Path(scratch) / f"{i:05d}.img")
            paths[-1].write_bytes(data)
        return patient_census(census, patient_cells(paths, cache_dir))

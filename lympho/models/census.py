"""The cell census: a pooling a hematologist can read.

The training patients' cells are clustered in an encoder's feature space (k-means on
standardised features), and each patient is described by the fraction of their cells in
each cluster: "32 % of this patient's cells look like cluster 7". A cluster is shown as its
most typical cells (those nearest its centre), so a reader can say what it is (small
mature lymphocytes, cleaved nuclei, large cells with open chromatin ...).

:class:`CellCensus` is a scikit-learn transformer over bags of instance features. It reads
no label, but it is fitted like any other step: on the training patients' cells only, inside
each fold, so the clusters never see a validation patient. Its fitted state is plain arrays
(the safe model format stores it).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from lympho.models.fusion import PatientView
from lympho.pooling import CENSUS_POOLINGS


class CellCensus(TransformerMixin, BaseEstimator):
    """Bags of cell features -> each bag's fraction of cells per cluster, (n_bags, n_clusters).

    ``fit`` standardises the cells of all bags (at most ``max_cells`` of them, drawn with
    ``random_state``) and runs k-means (``n_init`` starts). Fitted state: ``mean_``,
    ``scale_``, ``centres_`` (in standardised units), ``n_features_in_`` (1: one bag per row).
    """

    def __init__(self, n_clusters: int = 32, max_cells: int = 20000, n_init: int = 1, random_state: int = 0):
        self.n_clusters, self.max_cells, self.n_init, self.random_state = n_clusters, max_cells, n_init, random_state

    def fit(self, X, y=None):
        from sklearn.cluster import KMeans

        cells = _cells(X)
        if len(cells) < self.n_clusters:
            raise ValueError(f"{len(cells)} cells cannot fill {self.n_clusters} clusters")
        rng = np.random.default_rng(self.random_state)
        if len(cells) > self.max_cells:
            cells = cells[np.sort(rng.choice(len(cells), self.max_cells, replace=False))]
        self.mean_ = cells.mean(axis=0)
        self.scale_ = np.where(cells.std(axis=0) > 1e-12, cells.std(axis=0), 1.0)
        kmeans = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state)
        self.centres_ = kmeans.fit((cells - self.mean_) / self.scale_).cluster_centers_.copy()
        self.n_features_in_ = 1
        return self

    def assign(self, cells: np.ndarray) -> np.ndarray:
        """The cluster of each cell (n,) of an (n, d) feature array."""
        check_is_fitted(self, "centres_")
        z = (np.asarray(cells, dtype=np.float64) - self.mean_) / self.scale_
        distances = (z ** 2).sum(1)[:, None] - 2 * z @ self.centres_.T + (self.centres_ ** 2).sum(1)[None, :]
        return distances.argmin(axis=1)

    def distances(self, cells: np.ndarray) -> np.ndarray:
        """Each cell's distance to its own cluster's centre (standardised units)."""
        z = (np.asarray(cells, dtype=np.float64) - self.mean_) / self.scale_
        return np.linalg.norm(z - self.centres_[self.assign(cells)], axis=1)

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "centres_")
        return np.stack([np.bincount(self.assign(bag), minlength=self.n_clusters) / len(bag) for bag in X])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"census_{i}" for i in range(self.n_clusters)], dtype=object)


def _cells(X) -> np.ndarray:
    bags = [np.asarray(bag, dtype=np.float64) for bag in X]
    if not bags or any(len(bag) == 0 for bag in bags):
        raise ValueError("the census needs a non-empty sequence of non-empty bags of cell features")
    return np.vstack(bags)


def view_steps(part: str, pooling: str, seed: int = 0) -> list[tuple[str, object]]:
    """The first steps of an expert reading ``part`` of the patient records: the pooled bag
    (a census fitted on the training cells when ``pooling`` is one) or the part as it is."""
    if part == "pooled" and pooling in CENSUS_POOLINGS:
        return [("view", PatientView("bags")), ("census", CellCensus(CENSUS_POOLINGS[pooling], random_state=seed))]
    return [("view", PatientView(part, pooling))]

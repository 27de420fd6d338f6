"""Bag pooling: one fixed-length vector per patient from a variable number of cells.

Labels exist per patient only, so instance features are summarised per bag before a
patient-level classifier sees them. ``mean`` captures the typical cell, ``max`` the most
extreme one (a few abnormal cells can matter), ``meanmax`` both, and ``moments`` keeps the
spread of the population (mean, standard deviation, 10th, 50th and 90th percentiles): a
monoclonal, malignant population is more homogeneous than a reactive one, which a mean
cannot show. Learned pooling (attention, top-k) lives with the models (``lympho.models.mil``),
because it is fitted inside each training fold, and so does the cell census
(``lympho.models.census``: each patient's share of cells per cluster of the training cells).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _moments(bag: np.ndarray) -> np.ndarray:
    # ddof=0: a bag is the whole population of that patient's imaged cells, not a sample
    # whose variance we estimate; a bag of one has spread 0.
    p10, p50, p90 = np.percentile(bag, [10, 50, 90], axis=0)
    return np.concatenate([bag.mean(axis=0), bag.std(axis=0), p10, p50, p90])


#: pooling -> (statistics in output order, function of an (n, d) bag)
POOLINGS = {
    "mean": (("mean",), lambda bag: bag.mean(axis=0)),
    "max": (("max",), lambda bag: bag.max(axis=0)),
    "meanmax": (("mean", "max"), lambda bag: np.concatenate([bag.mean(axis=0), bag.max(axis=0)])),
    "moments": (("mean", "std", "p10", "p50", "p90"), _moments),
}


#: The cell census (``lympho.models.census``): a patient's fraction of cells in each of k
#: clusters of the training patients' cells; fitted inside each training fold, so it is a
#: step of an expert's pipeline (late fusion, or ``image_classifier``), not a fixed pooling.
#: name -> k ("census" is k = 32).
CENSUS_POOLINGS = {"census": 32, **{f"census{k}": k for k in (16, 24, 48, 64)}}
#: Every name ``--pooling`` accepts.
POOLING_NAMES = (*POOLINGS, *CENSUS_POOLINGS)


def pool_bags(bags: Sequence[np.ndarray], method: str = "mean") -> np.ndarray:
    """Stack one pooled vector per bag into an (n_bags, d') matrix."""
    if method in CENSUS_POOLINGS:
        raise ValueError(f"pooling {method!r} is fitted on the training patients' cells, inside each fold: use it "
                         f"in late fusion (--fusion late) or with --image-classifier")
    if method not in POOLINGS:
        raise ValueError(f"unknown pooling {method!r}; choose one of {', '.join(POOLINGS)}")
    if any(len(bag) == 0 for bag in bags):
        raise ValueError("cannot pool an empty bag")
    function = POOLINGS[method][1]
    return np.stack([function(np.asarray(bag, dtype=np.float64)) for bag in bags])


def pooled_names(feature_names: Sequence[str], method: str) -> list[str]:
    """Column names of :func:`pool_bags`' output, e.g. ``p90_nucleus_area``."""
    return [f"{statistic}_{name}" for statistic in POOLINGS[method][0] for name in feature_names]

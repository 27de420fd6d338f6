"""Bag pooling: one fixed-length vector per patient from a variable number of cells.

Labels exist per patient only, so instance features are summarised per bag before a
patient-level classifier sees them. ``mean`` captures the typical cell, ``max`` the most
extreme one (a few abnormal cells can matter), ``meanmax`` both.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

POOLINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda bag: bag.mean(axis=0),
    "max": lambda bag: bag.max(axis=0),
    "meanmax": lambda bag: np.concatenate([bag.mean(axis=0), bag.max(axis=0)]),
}


def pool_bags(bags: Sequence[np.ndarray], method: str = "mean") -> np.ndarray:
    """Stack one pooled vector per bag into an (n_bags, d') matrix."""
    if method not in POOLINGS:
        raise ValueError(f"unknown pooling {method!r}; choose one of {', '.join(POOLINGS)}")
    if any(len(bag) == 0 for bag in bags):
        raise ValueError("cannot pool an empty bag")
    return np.stack([POOLINGS[method](np.asarray(bag, dtype=np.float64)) for bag in bags])

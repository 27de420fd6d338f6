"""Shared fixtures: a tiny synthetic cohort per test, and the real cohort from ../shared."""

import os
import shutil
from pathlib import Path

import pytest

from lympho.synthetic import write_demo_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real cohort; under CI a missing cohort fails the run instead of skipping."""
    path = Path(os.environ.get("LYMPHO_REAL_DATA", REPO.parent / "shared" / "data" / "lymphocytosis"))
    if not (path / "trainset").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real cohort not found at {path} (set LYMPHO_REAL_DATA)")
        pytest.skip(f"real cohort not found at {path}")
    return path


@pytest.fixture(scope="session")
def small_cohort_template(tmp_path_factory) -> Path:
    return write_demo_cohort(tmp_path_factory.mktemp("template") / "cohort", n_train=15, n_test=3,
                             images_per_patient=(4, 6), seed=0)


@pytest.fixture
def small_cohort(tmp_path, small_cohort_template) -> Path:
    """A writable copy of a small synthetic cohort, for tests that break it on purpose."""
    return Path(shutil.copytree(small_cohort_template, tmp_path / "cohort"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """No test reads or writes the user's cache, the user's data setting or the torch hub."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LYMPHO_CACHE", str(cache))
    monkeypatch.delenv("LYMPHO_DATA", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return cache

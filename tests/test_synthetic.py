import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lympho import synthetic
from lympho.synthetic import COHORT_NAME, MARKER, demo_cohort_dir, write_demo_cohort

SMALL = dict(n_train=12, n_test=3, images_per_patient=(4, 6))
COLUMNS = ["ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_demo_cohort(tmp_path_factory.mktemp("demo") / "cohort", seed=0, **SMALL)


def _read(root: Path):
    annotation = pd.read_csv(root / "clinical_annotation.csv", index_col=0, dtype={"DOB": str})
    train = pd.read_csv(root / "trainset" / "trainset_true.csv", dtype={"DOB": str})
    test = pd.read_csv(root / "testset" / "testset_data.csv", dtype={"DOB": str})
    return annotation, train, test


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_csv_formats(cohort):
    assert sorted(p.name for p in cohort.iterdir()) == [
        "clinical_annotation.csv", "testset", "trainset"]
    header = (cohort / "clinical_annotation.csv").read_text().splitlines()[0]
    assert header == ",ID,LABEL,GENDER,DOB,LYMPH_COUNT"
    annotation, train, test = _read(cohort)
    assert list(annotation.columns) == list(train.columns) == list(test.columns) == COLUMNS
    assert list(annotation.index) == list(range(15))
    assert (len(train), len(test)) == (12, 3)
    assert (test["LABEL"] == -1).all()
    assert set(train["LABEL"]) == {0, 1}
    assert round(train["LABEL"].mean(), 1) == 0.7
    # The annotation file is exactly the two splits, interleaved, with test labels hidden.
    assert set(annotation["ID"]) == set(train["ID"]) | set(test["ID"])
    merged = pd.concat([train, test]).set_index("ID").loc[annotation["ID"]].reset_index()
    pd.testing.assert_frame_equal(merged, annotation.reset_index(drop=True))
    assert annotation["ID"].str.fullmatch(r"P\d+").all() and annotation["ID"].is_unique


def test_real_file_quirks(cohort):
    annotation, _, _ = _read(cohort)
    dates = annotation["DOB"]
    slashed = dates.str.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}")
    dashed = dates.str.fullmatch(r"\d{2}-\d{2}-\d{4}")
    assert slashed.any() and dashed.any() and (slashed | dashed).all()
    assert (annotation["GENDER"] == "f").sum() == 1
    assert set(annotation["GENDER"]) <= {"M", "F", "f"}
    assert annotation["LYMPH_COUNT"].between(2.3, 295).all()


def test_every_patient_has_rgb_jpegs(cohort):
    _, train, test = _read(cohort)
    for split, table in (("trainset", train), ("testset", test)):
        folders = [p.name for p in (cohort / split).iterdir() if p.is_dir()]
        assert sorted(folders) == sorted(table["ID"])
        for patient in table["ID"]:
            images = sorted((cohort / split / patient).iterdir())
            assert 4 <= len(images) <= 6
            assert all(re.fullmatch(r"\d{6}\.jpg", p.name) for p in images)
            for path in images:
                with Image.open(path) as image:
                    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (224, 224))


def test_deterministic_per_seed(cohort, tmp_path):
    again = write_demo_cohort(tmp_path / "again", seed=0, **SMALL)
    other = write_demo_cohort(tmp_path / "other", seed=1, **SMALL)
    assert _files(again) == _files(cohort)
    assert _files(other) != _files(cohort)
    annotation = "clinical_annotation.csv"
    assert (other / annotation).read_bytes() != (cohort / annotation).read_bytes()


def test_rejects_degenerate_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_demo_cohort(tmp_path, n_train=1)
    with pytest.raises(ValueError):
        write_demo_cohort(tmp_path, images_per_patient=(5, 4))


def test_planted_image_signal(cohort):
    """Malignant bags hold more dark nucleus pixels (bigger nuclei, thinner cytoplasm)."""
    _, train, _ = _read(cohort)

    def dark_fraction(path: Path) -> float:
        rgb = np.asarray(Image.open(path), dtype=np.int16)
        return float(((rgb[..., 1] < 70) & (rgb[..., 2] > rgb[..., 0])).mean())

    bag_means = {label: [np.mean([dark_fraction(p) for p in (cohort / "trainset" / pid).iterdir()])
                         for pid in train.loc[train["LABEL"] == label, "ID"]]
                 for label in (0, 1)}
    assert np.mean(bag_means[1]) > 1.3 * np.mean(bag_means[0])
    assert np.median(bag_means[1]) > max(bag_means[0])


def test_planted_clinical_signal():
    table = synthetic._clinical_table(n_train=300, n_test=0, rng=np.random.default_rng(0))
    malignant = table["LABEL"] == 1
    counts = table["LYMPH_COUNT"]
    assert counts[malignant].median() > 2 * counts[~malignant].median()
    years = table["DOB"].str.extract(r"(\d{4})$")[0].astype(int)
    assert years[malignant].mean() < years[~malignant].mean() - 10


@pytest.fixture
def small_demo(monkeypatch):
    """Make demo_cohort_dir generate a small cohort, counting generations."""
    calls = []

    def small(root, **_):
        calls.append(root)
        return write_demo_cohort(root, seed=0, n_train=2, n_test=1, images_per_patient=(1, 2))

    monkeypatch.setattr(synthetic, "write_demo_cohort", small)
    return calls


def test_demo_cohort_dir_generates_once(tmp_path, small_demo):
    path = demo_cohort_dir(tmp_path / "cache")
    assert path == tmp_path / "cache" / COHORT_NAME
    assert (path / MARKER).is_file() and (path / "trainset" / "trainset_true.csv").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    assert demo_cohort_dir(tmp_path / "cache") == path
    assert len(small_demo) == 1
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == mtimes
    assert os.listdir(tmp_path / "cache") == [COHORT_NAME]  # no staging leftovers


def test_demo_cohort_dir_replaces_incomplete(tmp_path, small_demo):
    stale = tmp_path / COHORT_NAME
    (stale / "trainset").mkdir(parents=True)
    (stale / "clinical_annotation.csv").write_text("half-written")
    path = demo_cohort_dir(tmp_path)
    assert len(small_demo) == 1 and (path / MARKER).is_file()
    assert (path / "clinical_annotation.csv").read_text().startswith(",ID,LABEL")
    assert os.listdir(tmp_path) == [COHORT_NAME]


def test_demo_cohort_dir_loser_of_race_keeps_winner(tmp_path, monkeypatch):
    def racing(root, **_):
        # Another process finishes first while this one is still generating.
        winner = tmp_path / COHORT_NAME
        winner.mkdir()
        (winner / "winner").touch()
        (winner / MARKER).touch()
        return write_demo_cohort(root, seed=0, n_train=2, n_test=1, images_per_patient=(1, 1))

    monkeypatch.setattr(synthetic, "write_demo_cohort", racing)
    path = demo_cohort_dir(tmp_path)
    assert (path / "winner").exists()
    assert os.listdir(tmp_path) == [COHORT_NAME]


def test_demo_cohort_dir_cleans_up_after_failure(tmp_path, monkeypatch):
    def failing(root, **_):
        (Path(root) / "partial").touch()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_demo_cohort", failing)
    with pytest.raises(KeyboardInterrupt):
        demo_cohort_dir(tmp_path)
    assert os.listdir(tmp_path) == []

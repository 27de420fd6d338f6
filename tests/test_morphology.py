"""The morphology encoder: segmentation on smear-like images, named features, the failure
flag, extraction through the cache in worker processes, and moments pooling."""

import sys

import numpy as np
import pytest
from PIL import Image

from lympho.data import CohortError, load_cohort
from lympho.encoders import cache_key, describe, make_encoder
from lympho.encoders.morphology import FEATURE_NAMES, decode, features, masks
from lympho.features import FeatureExtractor
from lympho.pooling import pool_bags, pooled_names


@pytest.fixture(scope="module")
def demo_images(small_cohort_template):
    return [path for patient in load_cohort(small_cohort_template).patients for path in patient.images]


def test_named_features_with_a_failure_flag():
    assert len(FEATURE_NAMES) == 80 and FEATURE_NAMES[-1] == "segmentation_failed"
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    encoder = make_encoder("morphology")
    assert encoder.feature_names == FEATURE_NAMES and not encoder.batched
    assert describe(encoder)["device"] == "cpu" and cache_key(encoder).startswith("morphology/")


def test_smear_images_segment_a_central_nucleus_inside_its_cell(demo_images):
    found = [masks(path) for path in demo_images[:12]]
    assert sum(m["failed"] for m in found) == 0
    for m in found:
        nucleus, cell = m["nucleus"], m["cell"]
        assert nucleus.any() and (cell | nucleus).sum() == cell.sum()  # the nucleus lies inside the cell
        centre = np.array(nucleus.shape) // 2
        rows, cols = np.nonzero(nucleus)
        assert np.hypot(rows - centre[0], cols - centre[1]).min() < 10
        assert m["nucleus_outline"].sum() < nucleus.sum() and m["image"].shape == (*nucleus.shape, 3)


def test_blank_or_noise_images_are_flagged_not_dropped(tmp_path):
    Image.new("RGB", (224, 224), (240, 230, 225)).save(tmp_path / "blank.jpg")
    Image.new("RGB", (224, 224), (0, 0, 0)).save(tmp_path / "black.png")
    for path in (tmp_path / "blank.jpg", tmp_path / "black.png"):
        row = features(decode(path))
        assert row[-1] == 1 and not row[:-1].any() and np.isfinite(row).all()
        assert masks(path)["failed"]


def test_features_describe_the_planted_signal(small_cohort_template):
    """Malignant-looking demo cells have irregular nuclei and a thin, dark perinuclear rim
    (synthetic.py plants both): every malignant patient's mean exceeds every reactive one's."""
    cohort = load_cohort(small_cohort_template)
    encoder = make_encoder("morphology")
    columns = [FEATURE_NAMES.index(name) for name in ("nucleus_eccentricity", "ring_hema_mean")]
    means = {0: [], 1: []}
    for patient in cohort.labelled():
        means[patient.label].append(encoder.encode([decode(p) for p in patient.images])[:, columns].mean(0))
    assert (np.min(means[1], axis=0) > np.max(means[0], axis=0)).all()


def test_extraction_in_workers_matches_in_process_and_is_cached(demo_images, tmp_path):
    serial = FeatureExtractor("morphology", num_workers=0).extract(demo_images)
    parallel = FeatureExtractor("morphology", cache_dir=tmp_path, num_workers=2)
    np.testing.assert_array_equal(parallel.extract(demo_images), serial)
    again = FeatureExtractor("morphology", cache_dir=tmp_path, num_workers=2)
    np.testing.assert_array_equal(again.extract(demo_images), serial)
    assert again.last_stats["cached"] == len(demo_images) and again.last_stats["extracted"] == 0


def test_an_undecodable_image_names_the_file(demo_images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(demo_images[0].read_bytes()[:300])
    with pytest.raises(CohortError, match="broken.jpg"):
        FeatureExtractor("morphology", num_workers=0).extract([demo_images[1], broken])


def test_morphology_extraction_never_imports_torch(demo_images, tmp_path):
    import subprocess

    code = ("import sys; from lympho.features import FeatureExtractor; "
            f"FeatureExtractor('morphology', num_workers=0).extract([{str(demo_images[0])!r}]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_moments_pooling_keeps_the_spread():
    tight = np.array([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]])
    spread = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])
    pooled = pool_bags([tight, spread], "moments")
    names = pooled_names(["a", "b"], "moments")
    assert pooled.shape == (2, 10) and names[:3] == ["mean_a", "mean_b", "std_a"]
    np.testing.assert_allclose(pooled[:, :2], [[1, 10], [1, 10]])  # the means agree
    assert pooled[0, names.index("std_a")] == 0 and pooled[1, names.index("std_a")] > 0
    np.testing.assert_allclose(pooled[1, [names.index(n) for n in ("p10_a", "p50_a", "p90_a")]], [0.2, 1, 1.8])
    assert pool_bags([spread[:1]], "moments")[0, 2] == 0  # a bag of one has no spread

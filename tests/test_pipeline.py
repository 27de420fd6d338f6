"""The extraction pipeline and the warm path.

The batched path decodes ahead (in worker processes, or reading in threads for the device
decoder), encodes in the calling thread and writes the cache on a writer thread; whichever
way, it must give exactly the features of encoding each batch directly. A run whose every
image is cached must not import torch at all.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lympho.features
from lympho.data import load_cohort
from lympho.encoders import make_encoder
from lympho.features import FeatureExtractor
from lympho.synthetic import write_demo_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """26 images: six batches of four and a short one; the same image twice among them."""
    root = write_demo_cohort(tmp_path_factory.mktemp("pipeline") / "cohort", n_train=5, n_test=0,
                             images_per_patient=(5, 5), seed=7)
    paths = [p for patient in load_cohort(root).patients for p in patient.images]
    twin = root / "twin.jpg"
    shutil.copy(paths[3], twin)
    return [*paths, twin]


def direct(encoder, paths: list[Path], batch_size: int) -> np.ndarray:
    """Each batch loaded and encoded in turn, in this thread: what the pipeline must equal."""
    return np.concatenate([encoder.encode(np.stack([encoder.load(p) for p in paths[i:i + batch_size]]))
                           for i in range(0, len(paths), batch_size)])


@pytest.mark.parametrize("decoder, workers", [("pil", 0), ("pil", 1), ("pil", 2), ("device", 0)])
def test_the_pipeline_gives_the_features_of_encoding_each_batch_directly(images, tmp_path, monkeypatch,
                                                                          decoder, workers):
    monkeypatch.setattr(lympho.features, "PREFETCH_BYTES", 1)  # the smallest window: 2 batches a worker
    encoder = make_encoder("resnet18", "none", "fp32", "cpu", crop=64, decoder=decoder)
    reference = direct(make_encoder("resnet18", "none", "fp32", "cpu", crop=64), images, 4)
    extractor = FeatureExtractor(encoder, batch_size=4, num_workers=workers, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(extractor.extract(images), reference)
    again = FeatureExtractor(encoder, batch_size=4, num_workers=workers, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.extract(images), reference)  # read back, the twin included
    assert again.last_stats["cached"] == len(images)


WARM_RUN = """
import json, sys
from lympho.features import FeatureExtractor
paths = sys.argv[1:]
extractor = FeatureExtractor("resnet18", "none", precision="fp32", device="cpu", cache_dir={cache!r})
features = extractor.extract(paths)
print(json.dumps({{"stats": extractor.last_stats, "sum": float(features.sum()),
                  "heavy": sorted(m for m in ("torch", "torchvision", "sklearn", "pandas") if m in sys.modules)}}))
"""


def test_a_fully_cached_extraction_imports_no_torch(images, tmp_path):
    cold = FeatureExtractor("resnet18", "none", precision="fp32", device="cpu", cache_dir=tmp_path / "cache")
    features = cold.extract(images)
    done = subprocess.run([sys.executable, "-c", WARM_RUN.format(cache=str(tmp_path / "cache")),
                           *map(str, images)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    warm = json.loads(done.stdout)
    assert warm["stats"]["cached"] == len(images) and warm["stats"]["extracted"] == 0
    assert warm["heavy"] == []
    assert warm["sum"] == pytest.approx(float(features.sum()), rel=1e-6)

"""Every encoder's output pinned on three real cells, and its version following its code.

The feature cache trusts an encoder's ``version``: features computed by older code are
reused as long as it is unchanged. The version is therefore a digest of the encoder's
source (:func:`lympho.encoders.source_version`), and these pins catch a change of what an
encoder computes that its source digest would not: a change elsewhere (the image decoder,
a library). When one fails on purpose, regenerate ``tests/encoder_pins.json`` with the new
values and say why in the commit.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import lympho.decoding
import lympho.encoders.morphology as morphology
import lympho.encoders.preprocessing
import lympho.encoders.torchvision as torchvision_kind
from lympho.encoders import cache_key, make_encoder, source_version

PINS = json.loads((Path(__file__).with_name("encoder_pins.json")).read_text())


@pytest.fixture
def cells(real_data) -> list[Path]:
    return [real_data / "trainset" / cell for cell in PINS["cells"]]


def test_morphology_features_of_three_real_cells_are_pinned(cells):
    encoder = make_encoder("morphology")
    features = encoder.encode([encoder.load(path) for path in cells])
    np.testing.assert_allclose(features, PINS["morphology"], rtol=1e-4, atol=1e-5)


def test_resnet18_random_init_features_of_three_real_cells_are_pinned(cells):
    encoder = make_encoder("resnet18", "none", "fp32", "cpu")
    features = encoder.encode(np.stack([encoder.load(path) for path in cells]))
    np.testing.assert_allclose(features[:, :16], PINS["resnet18_none_fp32_first16"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(features.sum(1), PINS["resnet18_none_fp32_sum"], rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), PINS["resnet18_none_fp32_norm"], rtol=1e-4)


def test_an_encoders_version_is_the_digest_of_its_source(tmp_path):
    assert morphology.VERSION == source_version(morphology.__file__)
    assert torchvision_kind.BUILD_VERSION == source_version(
        torchvision_kind.__file__, lympho.encoders.preprocessing.__file__, lympho.decoding.__file__)
    edited = tmp_path / "morphology.py"
    edited.write_bytes(Path(morphology.__file__).read_bytes().replace(b"RING = 2", b"RING = 3"))
    assert source_version(edited) != morphology.VERSION


def test_a_new_version_is_a_new_cache_key(monkeypatch):
    before = cache_key(make_encoder("morphology"))
    monkeypatch.setattr(morphology.MorphologyEncoder, "version", "changed")
    assert cache_key(make_encoder("morphology")) != before

"""Encoders, weights resolution, extraction precision and the feature cache."""

import shutil
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torchvision.models import get_model

from lympho.data import CohortError, load_cohort
from lympho.encoders.torchvision import BACKBONES, WeightsUnavailable, build_encoder, hub_checkpoint_path
from lympho.encoders.preprocessing import Preprocessing
from lympho.features import FeatureExtractor, content_hash, open_feature_cache
from lympho.pooling import pool_bags


@pytest.fixture
def images(small_cohort):
    return [path for patient in load_cohort(small_cohort).patients[:3] for path in patient.images]


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_registry_encoders_give_their_feature_dim(name):
    encoder = build_encoder(name, "none")
    with torch.inference_mode():
        out = encoder(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, BACKBONES[name].feature_dim)


def test_random_init_is_fixed():
    a, b = build_encoder("resnet18", "none"), build_encoder("resnet18", "none")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_imagenet_weights_come_from_the_hub_cache():
    donor = get_model("resnet18", weights=None)
    path = hub_checkpoint_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(donor.state_dict(), path)
    loaded = build_encoder("resnet18", "imagenet")
    assert torch.equal(loaded.conv1.weight, donor.conv1.weight)


def test_missing_weights_offline_name_the_file_and_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable) as caught:
        build_encoder("resnet34", "imagenet")
    message = str(caught.value)
    assert str(hub_checkpoint_path("resnet34")) in message
    assert "--weights none" in message and "TORCH_HOME" in message


def test_bf16_agrees_with_fp32_on_real_images(real_data):
    patients = load_cohort(real_data, verify_images=False).labelled()
    paths = [p.images[0] for p in patients[:24]]
    fp32 = FeatureExtractor("resnet18", "none", precision="fp32", num_workers=0).extract(paths)
    bf16 = FeatureExtractor("resnet18", "none", precision="bf16", num_workers=0).extract(paths)
    assert cosine(fp32, bf16).min() >= 0.99


def test_cache_hits_and_content_addressing(images, tmp_path):
    cache = tmp_path / "c"
    first = FeatureExtractor("resnet18", "none", precision="fp32", cache_dir=cache, num_workers=1)
    features = first.extract(images)
    assert first.last_stats["extracted"] == len(images)
    again = FeatureExtractor("resnet18", "none", precision="fp32", cache_dir=cache, num_workers=0)
    np.testing.assert_array_equal(again.extract(images), features)
    assert again.last_stats == {**again.last_stats, "extracted": 0, "cached": len(images)}
    assert again.encoder._network is None  # a fully cached run never even builds the network
    renamed = tmp_path / "renamed.jpg"
    shutil.copy(images[0], renamed)
    np.testing.assert_array_equal(again.extract([renamed])[0], features[0])
    other = FeatureExtractor("resnet18", "none", precision="fp32", cache_dir=cache,
                             preprocessing=Preprocessing(crop=112), num_workers=0)
    other.extract(images[:2])
    assert other.last_stats["extracted"] == 2  # another preprocessing is another key


def test_corrupted_entry_is_recomputed(images, tmp_path):
    extractor = FeatureExtractor("resnet18", "none", precision="fp32", cache_dir=tmp_path, num_workers=0)
    features = extractor.extract(images[:3])
    key = f"{content_hash(images[1])}/{extractor.key_prefix}"
    extractor.cache.set(key, b"\x00garbage")
    repaired = extractor.extract(images[:3])
    assert extractor.last_stats["extracted"] == 1
    np.testing.assert_allclose(repaired, features, rtol=1e-5, atol=1e-6)


def test_corrupted_cache_file_is_moved_aside_and_rebuilt(images, tmp_path):
    FeatureExtractor("resnet18", "none", precision="fp32", cache_dir=tmp_path, num_workers=0).extract(images[:2])
    (tmp_path / "features" / "cache.db").write_bytes(b"this is not sqlite" * 100)
    extractor = FeatureExtractor("resnet18", "none", precision="fp32", cache_dir=tmp_path, num_workers=0)
    assert extractor.extract(images[:2]).shape == (2, 512)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("features.corrupt-")]
    assert len(aside) == 1 and (aside[0] / "cache.db").read_bytes().startswith(b"this is not sqlite")
    assert open_feature_cache(tmp_path / "features").get("__probe__") is None


def test_undecodable_image_during_extraction_names_the_file(images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(images[0].read_bytes()[:300])  # header survives, pixels do not
    extractor = FeatureExtractor("resnet18", "none", precision="fp32", num_workers=1)
    with pytest.raises(CohortError, match="broken.jpg"):
        extractor.extract([images[1], broken])


def test_any_size_and_mode_is_accepted(tmp_path):
    from PIL import Image

    Image.new("L", (100, 60), 200).save(tmp_path / "grey.png")
    Image.new("RGBA", (400, 400), (1, 2, 3, 4)).save(tmp_path / "big.png")
    assert Preprocessing().load(tmp_path / "grey.png").shape == (224, 224, 3)
    assert Preprocessing(crop=112).load(tmp_path / "big.png").shape == (112, 112, 3)


def test_bags_follow_patients(small_cohort):
    patients = load_cohort(small_cohort).labelled()[:4]
    bags = FeatureExtractor("resnet18", "none", precision="fp32", num_workers=0).bags(patients)
    assert [len(b) for b in bags] == [len(p.images) for p in patients]


def test_pooling():
    bags = [np.array([[1.0, 4.0], [3.0, 0.0]]), np.array([[2.0, 2.0]])]
    np.testing.assert_array_equal(pool_bags(bags, "mean"), [[2, 2], [2, 2]])
    np.testing.assert_array_equal(pool_bags(bags, "max"), [[3, 4], [2, 2]])
    assert pool_bags(bags, "meanmax").shape == (2, 4)
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_bags(bags, "median")


def test_cache_key_follows_the_encoders_identity():
    from lympho.encoders import cache_key, describe, make_encoder

    base = make_encoder("resnet18", "none", "fp32", "cpu")
    record = describe(base)
    assert {"device", "precision", "torch", "torchvision", "random_init_seed", "version"} <= set(record)
    assert record["device"] == "cpu" and record["precision"] == "fp32"
    assert cache_key(make_encoder("resnet18", "none", "fp32", "cpu")) == cache_key(base)
    others = [make_encoder("resnet18", "none", "bf16", "cpu"), make_encoder("resnet18", "imagenet", "fp32", "cpu"),
              make_encoder("resnet18", "none", "fp32", "cpu", crop=112), make_encoder("resnet34", "none", "fp32", "cpu")]
    assert len({cache_key(base), *map(cache_key, others)}) == 5
    changed = make_encoder("resnet18", "none", "fp32", "cpu")
    changed.version = "999"  # a new version of the encoder-building code
    assert cache_key(changed) != cache_key(base)


def test_extraction_from_a_job_thread_forks_no_worker_and_gives_the_same_features(small_cohort, tmp_path,
                                                                                monkeypatch):
    """The dashboard extracts in job threads, where a fork beside other threads can deadlock:
    there the process does the work itself, with the features of the CLI's workers."""
    import threading

    import lympho.features

    paths = [p for patient in load_cohort(small_cohort).patients for p in patient.images]
    assert len(paths) > 32  # more than one chunk: from the main thread, the pool is used
    main = FeatureExtractor("morphology", cache_dir=tmp_path / "main", num_workers=2).extract(paths)
    monkeypatch.setattr(lympho.features, "ProcessPoolExecutor", None)  # any pool would fail
    found = {}

    def job():
        found["features"] = FeatureExtractor("morphology", cache_dir=tmp_path / "job", num_workers=2).extract(paths)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(timeout=300)
    np.testing.assert_array_equal(found["features"], main)

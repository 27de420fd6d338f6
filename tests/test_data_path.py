"""The extraction data path: warm runs import no torch; the CPU path keeps its numbers.

The CPU path (Pillow in workers, hash index, cache) must give bit for bit what a plain
per-image pipeline gives. The device-decoding path (workers read files, the main
process decodes batches on the encoder's device: nvJPEG on CUDA) runs here on the CPU,
where torchvision decodes with libjpeg-turbo exactly as Pillow does, so it must give the
same features too, fallbacks (PNG, greyscale, EXIF-rotated, other sizes) and crop included.
"""

import numpy as np
import pytest
from PIL import Image

from lympho.cli import main
from lympho.data import load_cohort, read_image
from lympho.encoders import make_encoder
from lympho.features import FeatureExtractor
from lympho.synthetic import write_demo_cohort
from tests.test_cli_startup import run_cli


def torch_loaded(*argv: str) -> tuple[str, bool]:
    """The CLI's output for ``argv`` in a fresh process, and whether it imported torch."""
    out, _ = run_cli(*argv)
    return out, "torch" in out.strip().splitlines()[-1].split()[1:]


def test_a_fully_cached_run_imports_no_torch(tmp_path, capsys):
    tiny = write_demo_cohort(tmp_path / "tiny", n_train=8, n_test=0, images_per_patient=(2, 3), seed=1)
    options = ["--data", str(tiny), "--weights", "none", "--cache-dir", str(tmp_path / "cache")]
    assert main(["extract", *options]) == 0 and "0 cached" in capsys.readouterr().out
    warm, torch = torch_loaded("extract", *options)
    assert "0 extracted" in warm and not torch
    evaluate, torch = torch_loaded("evaluate", *options, "--features", "images", "--classifier", "logreg",
                                   "--folds", "2")
    assert "run stored" in evaluate and not torch
    rehash, torch = torch_loaded("extract", *options, "--rehash")
    assert "0 extracted" in rehash and not torch


@pytest.fixture
def odd_images(small_cohort, tmp_path):
    """Real-layout JPEGs plus files the device decoder must leave to Pillow."""
    jpegs = list(load_cohort(small_cohort).patients[0].images)
    source = Image.open(jpegs[0]).convert("RGB")
    source.save(tmp_path / "plain.png")
    source.convert("L").save(tmp_path / "grey.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow applies it, nvJPEG would not
    source.save(tmp_path / "rotated.jpg", exif=exif)
    source.resize((180, 180)).save(tmp_path / "small.jpg")
    return [*jpegs, *(tmp_path / name for name in ("plain.png", "grey.jpg", "rotated.jpg", "small.jpg"))]


def before_issue_10(encoder, paths, crop):
    """The CPU data path as it was: Pillow decode, bicubic resize, PIL crop, one batch."""
    images = []
    for path in paths:
        image = read_image(path)
        if image.size != (224, 224):
            image = image.resize((224, 224), resample=3)
        if crop:
            offset = (224 - crop) // 2
            image = image.crop((offset, offset, offset + crop, offset + crop))
        images.append(np.array(image, dtype=np.uint8))
    return encoder.encode(np.stack(images))


@pytest.mark.parametrize("crop", [None, 112])
def test_the_cpu_data_path_keeps_its_numbers_and_device_decoding_equals_it(odd_images, crop, tmp_path):
    def extractor(decoder):
        encoder = make_encoder("resnet18", "none", "fp32", "cpu", crop=crop, decoder=decoder)
        return FeatureExtractor(encoder, num_workers=1, cache_dir=tmp_path / decoder)

    pil = extractor("pil")
    reference = before_issue_10(pil.encoder, odd_images, crop)
    np.testing.assert_array_equal(pil.extract(odd_images), reference)  # workers, hash index, cache
    np.testing.assert_array_equal(pil.extract(odd_images), reference)  # warm: read back
    np.testing.assert_array_equal(extractor("device").extract(odd_images), reference)


def test_device_decoding_has_its_own_cache_key():
    pil = make_encoder("resnet18", "none", "fp32", "cpu", decoder="pil")
    assert "decoder" not in pil.params()  # Pillow-decoded features keep their keys
    assert make_encoder("resnet18", "none", "fp32", "cpu", decoder="device").params()["decoder"] == "device"


def test_a_jpeg_the_device_refuses_is_cropped_once(odd_images, monkeypatch):
    """The one-by-one fallback: a JPEG the device decoder refuses is decoded by ``load``,
    which crops already; it must not be cropped a second time."""
    import lympho.encoders.torchvision as tv

    encoder = make_encoder("resnet18", "none", "fp32", "cpu", crop=112, decoder="device")
    items = [encoder.read(path) for path in odd_images]
    expected = encoder.decode(items)
    real, refused = tv.decode_batch, []

    def refuse_first(blobs, device):
        if len(blobs) > 1 or len(refused) == 1:  # the batch, then the first file alone
            refused.append(len(blobs))
            raise RuntimeError("refused")
        return real(blobs, device)

    monkeypatch.setattr(tv, "decode_batch", refuse_first)
    assert np.array_equal(encoder.decode(items).numpy(), expected.numpy())
    assert refused == [len([item for item in items if item[0] == "jpeg"]), 1]


def test_a_cold_cli_run_that_skips_teardown_still_flushes_and_stores_everything(tmp_path):
    """`python -m lympho` exits without the interpreter's teardown once torch is loaded:
    piped output must still arrive whole, and the cache must hold every feature."""
    import subprocess
    import sys

    import diskcache

    tiny = write_demo_cohort(tmp_path / "tiny", n_train=6, n_test=0, images_per_patient=(2, 3), seed=2)
    n_images = sum(len(p.images) for p in load_cohort(tiny).patients)
    done = subprocess.run([sys.executable, "-m", "lympho", "extract", "--data", str(tiny), "--weights", "none",
                           "--precision", "fp32", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{n_images} images ({n_images} extracted, 0 cached)" in done.stdout
    with diskcache.Cache(tmp_path / "cache" / "features") as features:
        assert len(features) == n_images


def test_cpu_networks_keep_freed_memory_on_glibc():
    import platform

    from lympho.memory import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory()

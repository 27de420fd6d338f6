"""Extraction workers that die, are killed or run out of room never hang the run.

Each run is a separate process (tests/extract_child.py) with a timeout: before these
fixes, a DataLoader worker that could not write a batch into shared memory (a full
``/dev/shm``; here a file-size limit, as ``RLIMIT_FSIZE`` imposes on it too) left its parent
waiting forever, and a killed worker ended the run with a traceback. Now the run either
completes (batches travel through pipes, not shared memory) or stops with one line naming
the cause; what was cached stays, and the next run completes the cache.
"""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import numpy as np
import pytest

import lympho.features
from lympho.data import load_cohort
from lympho.encoders import make_encoder
from lympho.features import FeatureExtractor
from lympho.synthetic import write_demo_cohort

REPO = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, str(REPO / "tests" / "extract_child.py")]
TIMEOUT = 180  # seconds; a hang fails the test instead of blocking the suite


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Four patients of 12 images: 48 images, two morphology chunks, 12 batches of 4."""
    return write_demo_cohort(tmp_path_factory.mktemp("workers") / "cohort", n_train=4, n_test=0,
                             images_per_patient=(12, 12), seed=5)


def paths(root: Path) -> list[Path]:
    return [p for patient in load_cohort(root).patients for p in patient.images]


def start(cohort: Path, cache: Path, *options: str, limit_bytes: int | None = None) -> subprocess.Popen:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.Popen([*CHILD, str(cohort), str(cache), *options], cwd=REPO, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=limit if limit_bytes else None)


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """The process's output once it ends; killed (and the test failed) if it hangs."""
    try:
        return process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in children(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
        process.communicate()
        pytest.fail(f"the extraction hung for {TIMEOUT} s")


def children(pid: int) -> list[int]:
    """The process's forked children (its workers): same command line, unlike a helper it runs."""
    found, command = [], Path(f"/proc/{pid}/cmdline").read_bytes()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return [child for child in found if _command(child) == command]


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def reference(cohort: Path, encoder: str, crop: int | None) -> np.ndarray:
    return FeatureExtractor(make_encoder(encoder, "none", "fp32", "cpu", crop=crop), batch_size=4,
                            num_workers=0).extract(paths(cohort))


def cached_features(cohort: Path, cache: Path, encoder: str, crop: int | None) -> tuple[np.ndarray, dict]:
    extractor = FeatureExtractor(make_encoder(encoder, "none", "fp32", "cpu", crop=crop), batch_size=4,
                                 cache_dir=cache, num_workers=0)
    return extractor.extract(paths(cohort)), extractor.last_stats


@pytest.mark.parametrize("encoder, workers", [("morphology", "2"), ("resnet18", "1")])
def test_a_killed_worker_stops_the_run_with_one_line_and_the_next_run_completes(cohort, tmp_path, encoder,
                                                                                 workers):
    process = start(cohort, tmp_path / "cache", "--encoder", encoder, "--workers", workers, "--slow", "0.15")
    deadline = time.monotonic() + 60
    while not children(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # mid-chunk: a chunk takes 0.6 s (resnet18) to 4.8 s (morphology) here
    os.kill(children(process.pid)[0], signal.SIGKILL)
    _, err = finish(process)
    assert process.returncode == 2, err[-2000:]
    assert last_line(err).startswith("error: an extraction worker process died (killed by SIGKILL")
    features, stats = cached_features(cohort, tmp_path / "cache", encoder, 64 if encoder == "resnet18" else None)
    np.testing.assert_allclose(features, reference(cohort, encoder, 64 if encoder == "resnet18" else None),
                               rtol=1e-5, atol=1e-6)
    assert stats["images"] == 48


def test_a_file_size_limit_on_shared_memory_does_not_hang_the_workers(cohort, tmp_path):
    """224 px batches of 4 (602 KB) exceed a 512 KiB file-size limit: a shared-memory batch
    could not be written. Batches through pipes are not files, so the run completes."""
    process = start(cohort, tmp_path / "cache", "--workers", "1", "--crop", "0", limit_bytes=512 * 1024)
    _, err = finish(process)
    assert process.returncode == 0, err[-2000:]
    features, stats = cached_features(cohort, tmp_path / "cache", "resnet18", None)
    assert stats["extracted"] == 0
    np.testing.assert_allclose(features, reference(cohort, "resnet18", None), rtol=1e-5, atol=1e-6)


def test_a_cache_that_cannot_grow_while_workers_decode_is_one_line_and_keeps_what_it_holds(cohort, tmp_path):
    cache = tmp_path / "cache"
    FeatureExtractor(make_encoder("resnet18", "none", "fp32", "cpu"), batch_size=4, cache_dir=cache,
                     num_workers=0).extract(paths(cohort)[:4])
    size = sum(f.stat().st_size for f in (cache / "features").iterdir())
    # room to open the cache (its 32 KiB shared-memory index) and a few batches; not for 48 features
    process = start(cohort, cache, "--workers", "1", "--crop", "0", limit_bytes=size + 48 * 1024)
    _, err = finish(process)
    assert process.returncode == 2, err[-2000:]
    line = last_line(err)
    assert line.startswith(f"error: cache directory {cache / 'features'}: cannot be written"), line
    with diskcache.Cache(cache / "features") as stored:
        assert len(stored) >= 4
    features, stats = cached_features(cohort, cache, "resnet18", None)
    assert stats["cached"] >= 4
    np.testing.assert_allclose(features, reference(cohort, "resnet18", None), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoder, workers", [("morphology", 2), ("resnet18", 1)])
def test_workers_that_cannot_start_leave_the_work_to_this_process_with_a_warning(cohort, monkeypatch, encoder,
                                                                                   workers):
    """As with a /dev/shm too full for the pool's semaphores."""
    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    expected = reference(cohort, encoder, 64)
    monkeypatch.setattr(lympho.features, "ProcessPoolExecutor", no_room)
    extractor = FeatureExtractor(make_encoder(encoder, "none", "fp32", "cpu", crop=64), batch_size=4,
                                 num_workers=workers)
    with pytest.warns(UserWarning, match="extraction runs in this process: worker processes could not start"):
        features = extractor.extract(paths(cohort))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)

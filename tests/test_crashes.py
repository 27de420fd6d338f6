"""Crashes, full disks, concurrent writers: what is stored stays usable, the next run resumes
and gives the same features, and every failure is one line naming the cache."""

import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import diskcache
import numpy as np
import pytest

from lympho.cli import main
from lympho.data import load_cohort
from lympho.encoders.preprocessing import Preprocessing
from lympho.features import FeatureExtractor
from lympho.runstore import RunStore
from lympho.synthetic import write_demo_cohort

REPO = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, str(REPO / "tests" / "extract_child.py")]
N_IMAGES = 12


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """Three patients of four images: three batches of four."""
    root = write_demo_cohort(tmp_path_factory.mktemp("crash") / "cohort", n_train=2, n_test=1,
                             images_per_patient=(4, 4), seed=3)
    assert sum(len(p.images) for p in load_cohort(root).patients) == N_IMAGES
    return root


def extractor(cache: Path | None) -> FeatureExtractor:
    """As the child process builds it: small crops keep the encoder cheap."""
    return FeatureExtractor("resnet18", "none", precision="fp32", batch_size=4, cache_dir=cache, num_workers=0,
                            preprocessing=Preprocessing(crop=64))


def paths(root: Path) -> list[Path]:
    return [p for patient in load_cohort(root).patients for p in patient.images]


@pytest.fixture(scope="module")
def reference(cohort_dir) -> np.ndarray:
    """The features of an uninterrupted run without a cache."""
    return extractor(None).extract(paths(cohort_dir))


def child(cohort_dir, cache, *extra, limit_bytes: int | None = None) -> subprocess.Popen:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*CHILD, str(cohort_dir), str(cache), *extra], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if limit_bytes else None)


def stored(cache: Path) -> int:
    with diskcache.Cache(cache / "features") as features:
        return len(features)


def test_kill_9_inside_a_cache_write_loses_nothing_stored_and_the_rerun_matches(cohort_dir, tmp_path, reference):
    process = child(cohort_dir, tmp_path / "cache", "--die-in-batch", "2")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert out.split() == ["0/12", "4/12"]  # one batch was reported stored
    assert stored(tmp_path / "cache") == 4  # it is kept; the half-written second rolled back
    resumed = extractor(tmp_path / "cache")
    features = resumed.extract(paths(cohort_dir))
    assert (resumed.last_stats["cached"], resumed.last_stats["extracted"]) == (4, 8)
    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6)
    assert stored(tmp_path / "cache") == N_IMAGES


def test_two_processes_extracting_into_one_cache_both_finish_consistently(cohort_dir, tmp_path, reference):
    processes = [child(cohort_dir, tmp_path / "cache") for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-2000:]
    assert stored(tmp_path / "cache") == N_IMAGES
    again = extractor(tmp_path / "cache")
    np.testing.assert_allclose(again.extract(paths(cohort_dir)), reference, rtol=1e-5, atol=1e-6)
    assert again.last_stats["extracted"] == 0


def test_a_full_disk_while_caching_is_one_line_and_leaves_the_cache_usable(cohort_dir, tmp_path, reference):
    cache = tmp_path / "cache"
    extractor(cache).extract(paths(cohort_dir)[:4])  # a cache with one batch in it
    size = sum(f.stat().st_size for f in (cache / "features").iterdir())
    process = child(cohort_dir, cache, limit_bytes=size + 4096)  # room for about one more batch
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2  # one line, as the CLI reports it
    last = err.strip().splitlines()[-1]
    assert f"cache directory {cache / 'features'}: cannot be written" in last
    assert "full" in last or "large" in last
    resumed = extractor(cache)
    np.testing.assert_allclose(resumed.extract(paths(cohort_dir)), reference, rtol=1e-5, atol=1e-6)
    assert resumed.last_stats["cached"] >= 4


def test_an_unwritable_cache_directory_is_one_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["evaluate", "--features", "clinical", "--cache-dir", str(blocker / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: cache directory {blocker / 'cache'}: cannot be written")


def test_the_run_store_stores_each_run_once_under_concurrent_saves(tmp_path):
    base = {"created": "2026-01-01T00:00:00", "cohort": {"root": "/x", "n_labelled": 3, "synthetic": True}}
    runs = [{**base, "key": f"k{i % 3}", "config": {"seed": i % 3}} for i in range(12)]
    for trial in range(4):  # without the store's lock, some trials store a run twice
        store = RunStore(tmp_path / f"runs{trial}")
        barrier = threading.Barrier(len(runs))

        def save(run):
            barrier.wait()
            store.save(run)

        threads = [threading.Thread(target=save, args=(run,)) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r["key"] for r in store.runs()) == ["k0", "k1", "k2"]


def test_two_processes_training_into_one_model_directory_both_leave_a_valid_model(small_cohort_template, tmp_path):
    from lympho.scoring import load_model

    command = [sys.executable, "-m", "lympho", "train", "--data", str(small_cohort_template), "--features",
               "clinical", "--classifier", "logreg", "--threshold-repeats", "2", "--outer-repeats", "1", "--out",
               str(tmp_path / "model")]
    env = {**os.environ, "LYMPHO_CACHE": str(tmp_path / "cache")}
    processes = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-2000:]
    assert load_model(tmp_path / "model").config.classifier == "logreg"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model")) == [".model.lock"]

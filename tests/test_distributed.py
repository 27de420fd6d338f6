"""The Ray engine against the single-machine path, on a local Ray instance started here.

One Ray instance for the module (2 CPUs, loopback only, no dashboard): extraction as Ray
Data batch inference must give the very features of a local run and fill the same cache;
an ablation's grid as Ray tasks must give the very folds of a local ablation.
"""

import dataclasses
import os

import numpy as np
import pytest

from lympho.__main__ import main
from lympho.data import CohortError, load_cohort
from lympho.experiment import ExperimentConfig, make_extractor, run_ablation

if os.environ.get("CI") == "true":
    import ray  # the Ray extra is part of `make test`: missing is a failure there
else:
    ray = pytest.importorskip("ray")

from lympho.distributed import RayEngine, runtime_env  # noqa: E402

CONFIG = ExperimentConfig(weights="none", precision="fp32")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", runtime_env=runtime_env(),
             logging_level="warning", configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def patients(small_cohort):
    return load_cohort(small_cohort).patients


def test_ray_extraction_equals_local_and_fills_the_cache(patients, tmp_path):
    local = make_extractor(CONFIG, tmp_path / "local").bags(patients)
    remote = make_extractor(CONFIG, tmp_path / "ray", engine=RayEngine())
    bags = remote.bags(patients)
    assert remote.last_stats["extracted"] == sum(len(p.images) for p in patients)
    for a, b in zip(local, bags):
        np.testing.assert_array_equal(a, b)  # identical, not merely close
    again = make_extractor(CONFIG, tmp_path / "ray")
    cached = again.bags(patients)
    assert again.last_stats["cached"] == remote.last_stats["extracted"]
    for a, b in zip(local, cached):
        np.testing.assert_array_equal(a, b)


def test_a_bad_image_on_a_ray_worker_is_one_clear_error(small_cohort, tmp_path):
    patients = load_cohort(small_cohort).patients
    broken = patients[0].images[0]
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    with pytest.raises(CohortError, match=broken.name):
        make_extractor(CONFIG, tmp_path, engine=RayEngine()).bags(patients[:2])


def test_ray_ablation_grid_equals_local(small_cohort, tmp_path):
    cohort = load_cohort(small_cohort)
    base = dataclasses.replace(CONFIG, repeats=2, imbalance="weights")
    rows = [("clinical", "logreg"), ("both", "mlp")]
    _, local = run_ablation(cohort, base, rows, tmp_path)
    _, remote = run_ablation(cohort, base, rows, tmp_path, engine=RayEngine())
    for a, b in zip(local, remote):
        assert a["folds"] == b["folds"] and a["oof"] == b["oof"] and a["summary"] == b["summary"]


def test_cli_extract_on_ray(small_cohort, tmp_path, capsys):
    argv = ["extract", "--data", str(small_cohort), "--weights", "none", "--precision", "fp32",
            "--cache-dir", str(tmp_path), "--engine", "ray"]
    assert main(argv) == 0
    assert "0 cached" in capsys.readouterr().out
    assert main(argv[:-2]) == 0 and "0 extracted" in capsys.readouterr().out

"""The Ray engine against the single-machine path, on a local Ray instance started here.

One Ray instance for the module (2 CPUs, loopback only, no dashboard): extraction as Ray
Data batch inference must give the very features of a local run and fill the same cache;
an ablation's grid as Ray tasks (configuration x repeat) must give the very folds of a
local ablation.
"""

import dataclasses
import os

import numpy as np
import pytest

from lympho.cli import main
from lympho.data import CohortError, load_cohort
from lympho.experiment import ExperimentConfig, make_extractor, run_ablation
from lympho.synthetic import write_demo_cohort

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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 labelled patients, 2-3 images each: enough for 2 folds, quick to encode."""
    return write_demo_cohort(tmp_path_factory.mktemp("tiny") / "cohort", n_train=8, n_test=0,
                             images_per_patient=(2, 3), seed=1)


def test_cli_extract_on_ray_equals_local_and_fills_the_cache(tiny, tmp_path, capsys):
    patients = load_cohort(tiny).patients
    local = make_extractor(CONFIG, tmp_path / "local").bags(patients)
    argv = ["extract", "--data", str(tiny), "--weights", "none", "--precision", "fp32",
            "--cache-dir", str(tmp_path / "ray"), "--engine", "ray"]
    assert main(argv) == 0 and "0 cached" in capsys.readouterr().out
    again = make_extractor(CONFIG, tmp_path / "ray")
    for a, b in zip(local, again.bags(patients)):
        np.testing.assert_array_equal(a, b)  # identical, not merely close
    assert again.last_stats["extracted"] == 0


def test_a_bad_image_on_a_ray_worker_is_one_clear_error(tiny, tmp_path):
    patients = load_cohort(tiny).patients[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    patients[1] = dataclasses.replace(patients[1], images=(*patients[1].images, broken))
    with pytest.raises(CohortError, match="broken.jpg"):
        make_extractor(CONFIG, tmp_path, engine=RayEngine()).bags(patients)


def test_ray_ablation_grid_equals_local(tiny, tmp_path):
    cohort = load_cohort(tiny)
    base = dataclasses.replace(CONFIG, folds=2, repeats=2, imbalance="weights")
    rows = [("clinical", "logreg"), ("both", "xgboost")]
    _, local = run_ablation(cohort, base, rows, tmp_path)
    _, remote = run_ablation(cohort, base, rows, tmp_path, engine=RayEngine())
    for a, b in zip(local, remote):
        assert a["folds"] == b["folds"] and a["oof"] == b["oof"] and a["summary"] == b["summary"]

"""The self-supervised cell encoder: pretraining, checkpoints, the registry, the census."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lympho.cli import main
from lympho.data import load_cohort
from lympho.encoders import WeightsUnavailable, cache_key, make_encoder
from lympho.encoders import ssl
from lympho.encoders.pretraining import Settings, pretrain, run_folder
from lympho.experiment import ExperimentConfig, run_experiment
from lympho.models.census import CellCensus
from lympho.pooling import POOLING_NAMES, pool_bags

TINY = Settings(size=16, widths=(8, 16), blocks=(1, 1), projection_dim=16, batch_size=32, epochs=4,
                learning_rate=3e-3)


def tiny_weights(folder: Path, seed: int) -> Path:
    """A fixed, untrained tiny network saved as ssl weights."""
    architecture = ssl.Architecture(widths=(4, 8), blocks=(1, 1), size=16, mean=(200.0, 170.0, 180.0),
                                    std=(50.0, 55.0, 25.0))
    torch.manual_seed(seed)
    return ssl.save_weights(ssl.build_network(architecture), architecture, folder)


def test_pretraining_learns_resumes_and_records(small_cohort, tmp_path):
    cohort = load_cohort(small_cohort)
    whole = pretrain(cohort, tmp_path / "a", TINY, device="cpu")
    assert whole["losses"][-1] < whole["losses"][0]
    assert whole["data"]["labels_read"] is False
    assert whole["data"]["images"] == sum(len(p.images) for p in cohort.patients)  # test patients included
    for key in ("method", "settings", "seed", "losses", "device", "device_name", "training_seconds",
                "views_per_second", "weights_sha256", "epochs", "architecture", "created"):
        assert key in whole, key
    assert len(whole["data"]["fingerprint"]) == 32 and whole["settings"]["temperature"] == 0.2
    folder = Path(whole["folder"])
    assert json.loads((folder / "record.json").read_text())["weights_sha256"] == whole["weights_sha256"]
    assert folder.name == f"ssl-{whole['weights_sha256'][:12]}" and not (folder / "checkpoint.safetensors").exists()

    class Killed(Exception):
        pass

    def kill_after_two_epochs(values):
        if values["stage"] == "train" and values.get("epoch") == 2 and values["done"] == 2 * whole["steps_per_epoch"] \
                and len(values["losses"]) == 2:
            raise Killed

    with pytest.raises(Killed):
        pretrain(cohort, tmp_path / "b", TINY, device="cpu", progress=kill_after_two_epochs)
    checkpoint = next((tmp_path / "b" / "encoders").glob("pretrain-*")) / "checkpoint.safetensors"
    assert checkpoint.exists()
    resumed = pretrain(cohort, tmp_path / "b", TINY, device="cpu", resume=True)
    assert resumed["weights_sha256"] == whole["weights_sha256"]  # the same weights as the uninterrupted run
    assert resumed["losses"] == whole["losses"]
    assert run_folder(tmp_path / "b", resumed["data"]["fingerprint"], TINY).name == checkpoint.parent.name


def test_encoder_output_is_pinned(tmp_path):
    encoder = ssl.SSLEncoder(tiny_weights(tmp_path, seed=0), device="cpu")
    cells = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    features = encoder.encode(cells)
    assert features.shape == (2, 8) and encoder.feature_names[:2] == ["ssl_0", "ssl_1"]
    np.testing.assert_allclose(features[:, :4], PINNED, rtol=1e-4, atol=2e-6)


PINNED = np.array([[0.141122, 0.837604, 0.928890, 0.004554], [0.078616, 0.928979, 0.964424, 0.003032]])


def test_registry_and_cache_key_follow_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(ssl.WEIGHTS_ENV, str(tiny_weights(tmp_path / "one", seed=0)))
    first = make_encoder("ssl", device="cpu")
    assert first.name == "ssl" and cache_key(first).startswith("ssl/")
    monkeypatch.setenv(ssl.WEIGHTS_ENV, str(tiny_weights(tmp_path / "two", seed=1).parent))  # a folder works too
    assert cache_key(make_encoder("ssl", device="cpu")) != cache_key(first)


def test_missing_weights_say_how_to_train_them(small_cohort, capsys):
    with pytest.raises(WeightsUnavailable, match="python -m lympho pretrain --data DIR"):
        make_encoder("ssl")
    assert main(["extract", "--data", str(small_cohort), "--encoder", "ssl"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "python -m lympho pretrain" in error[0]


def test_census_fractions(small_cohort):
    rng = np.random.default_rng(0)
    bags = np.empty(5, dtype=object)
    bags[:] = [rng.normal(size=(n, 6)) for n in (3, 8, 5, 12, 7)]
    census = CellCensus(n_clusters=4, random_state=0).fit(bags)
    fractions = census.transform(bags)
    assert fractions.shape == (5, 4)
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    assert list(census.get_feature_names_out()) == [f"census_{i}" for i in range(4)]
    assert {"census", "census16", "census64"} <= set(POOLING_NAMES)
    with pytest.raises(ValueError, match="fitted on the training patients"):
        pool_bags(list(bags), "census")
    from lympho.selection import GRIDS

    grid = GRIDS["cells"]()  # select --grid cells: k chosen among 16, 32, 64 by the nested procedure
    assert len(grid) == 10 and {c.encoder for c in grid} == {"morphology", "ssl"}
    assert {"mean", "meanmax", "census16", "census", "census64"} == {c.pooling for c in grid}


def test_evaluate_with_ssl_census_late_fusion(small_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv(ssl.WEIGHTS_ENV, str(tiny_weights(tmp_path, seed=0)))
    config = ExperimentConfig(features="both", encoder="ssl", pooling="census16", classifier="logreg",
                              fusion="late", combine="logit", image_classifier="logregcv")
    run = run_experiment(load_cohort(small_cohort), config, tmp_path / "cache")
    assert run["encoder"]["name"] == "ssl" and run["encoder"]["weights"] == ssl.weights_digest(
        tmp_path / "model.safetensors")[:16]
    assert 0 <= run["summary"]["roc_auc"]["mean"] <= 1


def test_cli_pretrain_end_to_end(small_cohort, isolated_cache, capsys, monkeypatch):
    monkeypatch.setattr("lympho.encoders.pretraining.CPU_SETTINGS", TINY)  # the CPU preset, shrunk
    assert main(["pretrain", "--data", str(small_cohort), "--epochs", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "labels are not read" in out.err
    assert "--encoder ssl now uses these weights" in out.out
    weights = ssl.find_weights()
    record = json.loads((weights.parent / "record.json").read_text())
    assert record["epochs"] == 2 and record["command"] is None  # argv is pytest's, not a pretrain command
    assert make_encoder("ssl", device="cpu").digest == record["weights_sha256"]


def test_data_page_cell_space_and_census(small_cohort, isolated_cache, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app_pages" / "data.py"), default_timeout=120)
    app.session_state["cohort"] = load_cohort(small_cohort)
    app.session_state["cache_dir"] = str(isolated_cache)
    app.run()
    assert any("python -m lympho pretrain" in str(e.value) for e in app.info)  # no weights yet: how to train them
    assert any(b.label == "Pretrain the cell encoder" for b in app.button)
    monkeypatch.setenv(ssl.WEIGHTS_ENV, str(tiny_weights(tmp_path, seed=0)))
    app.run()
    next(b for b in app.button if b.label == "Embed every cell of the cohort").click().run()
    app.session_state["jobs"]["cellspace"].wait(120)
    app.run()
    app.run()
    assert not app.exception, app.exception
    assert any("nearest the chosen cell" in str(m.value) for m in app.markdown)
    assert "Cell census" in app.get("plotly_chart")[-1].proto.spec
    assert any(str(m.value).startswith("**C") for m in app.markdown)  # a strip of typical cells per cluster
    from lympho.cellspace import upload_census

    cohort = app.session_state["cohort"]
    uploaded = [path.read_bytes() for path in cohort.patients[0].images]
    shares = upload_census(cohort, uploaded, isolated_cache, k=4, space=app.session_state["jobs"]["cellspace"].result)
    assert len(shares) == 4 and shares["This patient"].sum() == pytest.approx(1.0)  # the Score page's census


def test_a_model_scores_only_with_its_own_ssl_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(ssl.WEIGHTS_ENV, str(tiny_weights(tmp_path / "one", seed=0)))
    record = {"name": "ssl", **make_encoder("ssl", device="cpu").params()}
    ssl.check_model_weights(record)  # the same weights: fine
    ssl.check_model_weights({"name": "morphology", "kind": None})  # not ssl: nothing to check
    monkeypatch.setenv(ssl.WEIGHTS_ENV, str(tiny_weights(tmp_path / "two", seed=1)))
    with pytest.raises(WeightsUnavailable, match=f"set {ssl.WEIGHTS_ENV} to the model's weights"):
        ssl.check_model_weights(record)


def test_data_page_pretraining_job_draws_its_loss_curve(small_cohort, isolated_cache, monkeypatch):
    from streamlit.testing.v1 import AppTest

    def fake_pretrain(cohort, cache_dir, settings, progress=None, **_):
        progress({"stage": "train", "done": 2, "total": 4, "epoch": 1, "epochs": 2, "losses": [5.2]})
        progress({"stage": "train", "done": 4, "total": 4, "epoch": 2, "epochs": 2, "losses": [5.2, 4.9]})
        return {"epochs": 2, "data": {"images": 9}, "training_seconds": 1.0, "views_per_second": 18.0,
                "device_name": "test CPU", "folder": "/nowhere/ssl-0123"}

    monkeypatch.setattr("lympho.encoders.pretraining.pretrain", fake_pretrain)
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app_pages" / "data.py"), default_timeout=120)
    app.session_state["cohort"] = load_cohort(small_cohort)
    app.session_state["cache_dir"] = str(isolated_cache)
    app.run()
    next(b for b in app.button if b.label == "Pretrain the cell encoder").click().run()
    job = app.session_state["jobs"]["pretrain"]
    job.wait(60)
    assert job.context["losses"] == [5.2, 4.9] and job.context["epochs"] == 2
    app.run()
    app.run()
    assert not app.exception, app.exception
    assert any("2 epochs on 9 cells" in str(s.value) for s in app.success)
    assert any("contrastive loss" in chart.proto.spec for chart in app.get("plotly_chart"))

"""The CLI contract: every command, its outputs, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lympho.cli import main
from lympho.data import load_cohort
from lympho.evaluation import HEADLINE, format_estimate, oof_estimates, reliability
from lympho.runstore import RunStore

IMAGE_OPTIONS = ["--weights", "none", "--precision", "fp32"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_on_real_clinical_data_writes_the_json_contract(real_data, tmp_path, capsys):
    report = tmp_path / "run.json"
    code, out, _ = run_cli(capsys, "evaluate", "--data", real_data, "--features", "clinical",
                           "--classifier", "svm", "--repeats", "2", "--json", report)
    assert code == 0 and "bal_acc" in out and "mean ± std over folds (sample std, ddof=1)" in out
    run = json.loads(report.read_text())
    # The printed headline figures are exactly what the core computes from the stored run's
    # out-of-fold predictions (the pages call the same functions).
    stored = RunStore(Path(os.environ["LYMPHO_CACHE"]) / "runs").load(out.split("run stored as ")[1].split()[0])
    estimates = oof_estimates(stored["oof"], stored["summary"]["threshold"])
    assert stored["summary"]["headline"] == run["summary"]["headline"] == estimates
    # the promise of a model trained with this configuration comes first: train decides at the fixed 0.5
    assert out.index("promise of a model trained with this configuration") < out.index("balanced_accuracy: ")
    point = stored["summary"]["operating_point"]  # train --sensitivity 0.95: labelled apparent, after
    assert f"decision: malignant when probability >= {point['threshold']:.3f} (chosen for sensitivity 0.95" in out
    assert out.index("promise of a model") < out.index("at 95% sensitivity instead (train --sensitivity 0.95), apparent")
    calibration = reliability(stored["oof"])  # the Experiment page's reliability diagram, in words
    brier = calibration["brier"]
    assert f"Brier score {brier['mean']:.3f} ± {brier['std']:.3f} over 2 repeat(s)" in out
    first = next(calibration["table"].itertuples())
    assert f"{first.mean_probability:.2f} -> {first.malignant}/{first.n} malignant" in out
    for metric in HEADLINE:
        assert f"{metric}: {format_estimate(estimates, metric)}" in out
        assert estimates["metrics"][metric]["low"] < estimates["metrics"][metric]["estimate"] \
            < estimates["metrics"][metric]["high"]
    assert "bootstrap over 110 patients of the out-of-fold predictions, 2 x 3-fold CV" in out
    assert run["config"]["classifier"] == "svm" and run["cohort"]["synthetic"] is False
    assert len(run["folds"]) == 6
    fold = run["folds"][0]
    assert {"repeat", "fold", "balanced_accuracy", "f1", "recall", "specificity", "precision",
            "roc_auc", "confusion_matrix"} <= set(fold)
    (tn, fp), (fn, tp) = fold["confusion_matrix"]
    assert tn + fp + fn + tp in (36, 37)
    assert 0.7 < run["summary"]["balanced_accuracy"]["mean"] <= 1
    again = tmp_path / "again.json"
    run_cli(capsys, "evaluate", "--data", real_data, "--features", "clinical", "--classifier", "svm",
            "--repeats", "2", "--json", again)
    assert json.loads(again.read_text())["folds"] == run["folds"]


def test_demo_cohort_is_used_and_labelled_without_data(capsys, tmp_path):
    report = tmp_path / "demo.json"
    code, _, err = run_cli(capsys, "evaluate", "--features", "clinical", "--json", report)
    assert code == 0 and "SYNTHETIC DEMO COHORT" in err
    assert json.loads(report.read_text())["cohort"]["synthetic"] is True


def test_ablation_writes_table2(small_cohort, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "ablation", "--data", small_cohort, *IMAGE_OPTIONS, "--out", tmp_path / "abl")
    assert code == 0 and "balanced_accuracy" in out and "--repeats 2 or more also shows" in out
    table = pd.read_csv(tmp_path / "abl" / "ablation.csv")
    assert len(table) == 15 and {"fold", "balanced_accuracy", "f1", "recall", "config.classifier", "config.features"} <= set(table.columns)


def test_extract_fills_the_cache(small_cohort, capsys):
    code, out, _ = run_cli(capsys, "extract", "--data", small_cohort, "--backbone", "resnet18", *IMAGE_OPTIONS,
                           "--split", "test")
    assert code == 0 and "img/s" in out and "0 cached" in out
    code, out, _ = run_cli(capsys, "extract", "--data", small_cohort, "--backbone", "resnet18", *IMAGE_OPTIONS,
                           "--split", "test")
    assert " 0 extracted" in out.replace("(", " ")


def test_train_predict_score(small_cohort, tmp_path, capsys):
    model = tmp_path / "model"
    code, out, _ = run_cli(capsys, "train", "--data", small_cohort, "--features", "both", *IMAGE_OPTIONS,
                           "--classifier", "logreg", "--out", model, "--sensitivity", "0.95",
                           "--threshold-repeats", "3", "--outer-repeats", "1", "--inner-repeats", "2")
    assert code == 0 and (model / "model.json").is_file()
    assert "decision: malignant when probability >= " in out and "(threshold for 95% sensitivity; the repeats' " \
        "thresholds ranged" in out and "the outer splits' " in out
    assert out.index("promise (what a new patient gets)") < out.index("apparent, measured on the patients it was")
    assert "the configuration and threshold re-chosen in each of 1000 bootstrap draws" in out
    code, _, _ = run_cli(capsys, "predict", "--model", model, "--data", small_cohort, "--split", "test",
                         "--out", tmp_path / "p.csv")
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns[:4]) == ["id", "probability", "prediction", "zone"] and len(predictions) == 3
    assert list(predictions.columns[4:]) == ["probability: LogReg clinical", "probability: LogRegCV morphology/meanmax"]
    assert set(predictions.zone) <= {"rule-out", "refer", "rule-in"}
    threshold = json.loads((model / "model.json").read_text())["operating_point"]["threshold"]
    assert (predictions["prediction"] == (predictions["probability"] >= threshold)).all()
    code, _, err = run_cli(capsys, "predict", "--model", model, "--data", small_cohort, "--split", "train",
                           "--out", tmp_path / "t.csv")
    assert code == 2 and "in-sample" in err and "--in-sample" in err and not (tmp_path / "t.csv").exists()
    code, out, _ = run_cli(capsys, "predict", "--model", model, "--data", small_cohort, "--split", "train",
                           "--in-sample", "--threshold", "0.3", "--out", tmp_path / "t.csv")
    in_sample = pd.read_csv(tmp_path / "t.csv")
    assert code == 0 and "IN-SAMPLE" in out and (in_sample["prediction"] == (in_sample["probability"] >= 0.3)).all()
    run_cli(capsys, "predict", "--model", model, "--data", small_cohort, "--out", tmp_path / "k.csv", "--kaggle")
    kaggle = pd.read_csv(tmp_path / "k.csv")
    assert list(kaggle.columns) == ["Id", "Predicted"] and set(kaggle.Predicted) <= {0, 1}
    folder = load_cohort(small_cohort).select("test")[0].images[0].parent
    code, out, _ = run_cli(capsys, "score", "--model", model, "--images", folder, "--gender", "M",
                           "--dob", "28-04-1943", "--lymph-count", "25")
    assert code == 0 and "probability of malignancy" in out


def test_train_defaults_to_the_recommended_procedure_and_prints_its_promise_first(small_cohort, tmp_path, capsys):
    # fewer repeats than the defaults: the recommended late fusion's LogRegCV expert is the slow part
    code, out, _ = run_cli(capsys, "train", "--data", small_cohort, "--out", tmp_path / "m", "--threshold-repeats", "2",
                           "--outer-repeats", "1", "--inner-repeats", "2")
    assert code == 0
    from lympho.experiment import RECOMMENDED_GRID
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["config"] in [c.to_dict() for c in RECOMMENDED_GRID]
    assert meta["procedure"]["candidates"] == [f"{c.label()} [{c.imbalance}]" for c in RECOMMENDED_GRID]
    promise = meta["operating_point"]["estimate"]["metrics"]
    lines = out.splitlines()
    assert lines[0].startswith("the recommended procedure chose ") and lines[1].startswith("promise (what a new patient")
    assert f"balanced accuracy {promise['balanced_accuracy']['estimate']:.2f} " in lines[1]
    assert out.index("promise") < out.index("apparent, measured on the patients it was chosen on")
    assert "by subgroup" in out and ("age < 50 y" in out or "age 50-70 y" in out)
    folder = load_cohort(small_cohort).select("test")[0].images[0].parent
    code, out, _ = run_cli(capsys, "score", "--model", tmp_path / "m", "--images", folder, "--gender", "F",
                           "--age", "60", "--lymph-count", "8")
    assert code == 0 and out.startswith("triage zone: ")
    assert "each expert's probability: LogReg clinical " in out and "(mean of log-odds)" in out
    assert "the model's promise at its stored threshold" in out
    assert "training patients scored most like this one (out of fold" in out


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--data", "/no/such/dir"], "/no/such/dir: data directory not found"),
    (["predict", "--model", "/no/model", "--out", "x.csv"], "model directory not found"),
    (["score", "--model", "/no/model", "--images", ".", "--gender", "M", "--age", "5", "--lymph-count", "5"],
     "model directory not found"),
    (["evaluate", "--clinical-weight", "0.6", "--combine", "stacked"], "--clinical-weight applies only to late"),
    (["ablation", "--clinical-weight", "0.6", "--out", "x"], "ablation: --fusion-rows"),
    (["evaluate", "--clinical-weight", "1.2"], "clinical_weight must be between 0 and 1"),
])
def test_errors_are_one_line_exit_2(argv, message, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and err.strip().startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1


def test_bad_csv_from_a_real_process_has_no_traceback(small_cohort):
    csv = small_cohort / "trainset" / "trainset_true.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[2, "DOB"] = "yesterday"
    table.to_csv(csv, index=False)
    done = subprocess.run([sys.executable, "-m", "lympho", "evaluate", "--data", str(small_cohort),
                           "--features", "clinical"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "trainset_true.csv, line 4, field DOB: unparseable date 'yesterday'" in done.stderr


def test_data_summary(real_data, capsys):
    code, out, _ = run_cli(capsys, "data", "--data", real_data)
    assert code == 0 and "120 patients, 9746 images" in out and "malignant" in out


def test_custom_ablation_grid(real_data, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "ablation", "--data", real_data, "--feature-sets", "clinical",
                           "--classifiers", "logreg,xgboost", "--imbalances", "weights,smote", "--repeats", "2",
                           "--out", tmp_path)
    table = pd.read_csv(tmp_path / "ablation.csv")
    assert code == 0 and len(table) == 2 * 2 * 3 * 2
    at_point = out.split("at each configuration's threshold for 95% sensitivity")[1]  # where a model decides
    assert at_point.count("★") >= 1 and at_point.count("–") >= 4 * 3  # 4 configurations x 3 intervals
    assert set(zip(table["config.classifier"], table["config.imbalance"])) == {(c, i) for c in ("logreg", "xgboost")
                                                           for i in ("weights", "smote")}


def test_runs_list_and_export(real_data, tmp_path, capsys):
    for classifier in ("logreg", "svm"):
        run_cli(capsys, "evaluate", "--data", real_data, "--features", "clinical", "--classifier", classifier)
    code, out, _ = run_cli(capsys, "runs", "list")
    assert code == 0 and "LogReg, clinical" in out and "SVM, clinical" in out
    run_id = out.splitlines()[1].split()[0]
    for suffix in ("csv", "json", "html"):
        code, _, _ = run_cli(capsys, "runs", "export", "--ids", run_id, "--out", tmp_path / f"r.{suffix}")
        assert code == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == 1
    assert json.loads((tmp_path / "r.json").read_text())[0]["id"] == run_id
    assert (tmp_path / "r.html").read_text().count("<script") >= 1
    code, _, err = run_cli(capsys, "runs", "export", "--ids", "nope", "--out", tmp_path / "x.csv")
    assert code == 2 and "no stored run(s) nope" in err


def test_score_a_zip_with_report_and_target_sensitivity(small_cohort, tmp_path, capsys):
    import zipfile

    model = tmp_path / "model"
    run_cli(capsys, "train", "--data", small_cohort, "--features", "both", *IMAGE_OPTIONS,
            "--classifier", "logreg", "--out", model, "--threshold-repeats", "3", "--outer-repeats", "1",
            "--inner-repeats", "2")
    images = load_cohort(small_cohort).select("test")[0].images
    archive = tmp_path / "cells.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in images:
            bundle.write(path, f"patient/{path.name}")
    code, out, _ = run_cli(capsys, "score", "--model", model, "--images", archive, "--gender", "F", "--age", "70",
                           "--lymph-count", "12", "--sensitivity", "0.9", "--report", tmp_path / "report.html")
    assert code == 0 and f"({len(images)} images" in out
    report = (tmp_path / "report.html").read_text()
    assert report.count("<img") == min(len(images), 12) and "not a diagnosis" in report.lower()


def test_missing_imagenet_weights_offline_is_one_clear_line(small_cohort, monkeypatch, capsys):
    import torch
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, _, err = run_cli(capsys, "evaluate", "--data", small_cohort, "--features", "images",
                           "--encoder", "resnet18", "--weights", "imagenet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "resnet18-f37072fd.pth" in err and "--weights none" in err


SCORE = ["score", "--model", "m", "--images", ".", "--gender", "M", "--lymph-count", "5"]


@pytest.mark.parametrize("argv, option", [
    (["predict", "--model", "m", "--out", "x.csv", "--threshold", "nan"], "--threshold"),
    (["predict", "--model", "m", "--out", "x.csv", "--threshold", "2"], "--threshold"),
    (["predict", "--model", "m", "--out", "x.csv", "--threshold", "-0.5"], "--threshold"),
    (["predict", "--model", "m", "--out", "x.csv", "--sensitivity", "inf"], "--sensitivity"),
    ([*SCORE, "--age", "60", "--threshold", "0"], "--threshold"),
    ([*SCORE, "--age", "60", "--sensitivity", "1.5"], "--sensitivity"),
    (["train", "--out", "m", "--threshold", "1.5"], "--threshold"),
    (["train", "--out", "m", "--sensitivity", "nan"], "--sensitivity"),
    (["train", "--out", "m", "--threshold-repeats", "0"], "--threshold-repeats"),
    (["evaluate", "--folds", "-3"], "--folds"),
    (["evaluate", "--repeats", "100000000"], "--repeats"),
    (["evaluate", "--seed", "-1"], "--seed"),
    (["select", "--outer-folds", "1"], "--outer-folds"),
    (["select", "--seed", "-4"], "--seed"),
    ([*SCORE, "--age", "60", "--sampling-date", "2999-01-01"], "--sampling-date"),
    ([*SCORE, "--age", "60", "--sampling-date", "yesterday"], "--sampling-date"),
])
def test_options_that_cannot_be_right_are_refused_naming_the_option(argv, option, capsys):
    """Today --threshold nan or 2 calls every patient reactive and -0.5 every one malignant, silently."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: the usage, then one error line
    assert caught.value.code == 2 and f"error: argument {option}: " in error


@pytest.fixture
def clinical_model(small_cohort, tmp_path):
    from lympho.experiment import ExperimentConfig
    from lympho.scoring import save_model, train_model

    config = ExperimentConfig(features="clinical", classifier="logreg")
    return save_model(train_model(load_cohort(small_cohort), config, threshold_repeats=2, outer_repeats=1), tmp_path / "clinical")


def test_score_uses_and_prints_the_age_at_sampling(clinical_model, small_cohort, capsys):
    """Today --age is taken as the age today and scored as that minus the years since 2020-01-01."""
    folder = load_cohort(small_cohort).select("test")[0].images[0].parent
    score = ["score", "--model", clinical_model, "--images", folder, "--gender", "F", "--lymph-count", "8"]
    code, out, err = run_cli(capsys, *score, "--age", "70", "--sampling-date", "2026-01-15")
    assert code == 0 and "age at sampling 70 years (sampled 2026-01-15)" in out and "warning" not in err
    code, by_dob, _ = run_cli(capsys, *score, "--dob", "1956-01-15", "--sampling-date", "2026-01-15")
    assert code == 0 and "age at sampling 70 years (sampled 2026-01-15)" in by_dob
    assert by_dob.split(" -> ")[0] == out.split(" -> ")[0]  # the same probability


@pytest.mark.parametrize("extra, field", [
    (["--dob", "2026-02-01", "--sampling-date", "2026-01-15"], "field DOB: date of birth 2026-02-01 is after"),
    (["--age", "130"], "field age: age must be between 0 and 120"),
    (["--age", "nan"], "field age: age must be between 0 and 120"),
    (["--age", "70", "--lymph-count", "inf"], "field LYMPH_COUNT: lymphocyte count must be a finite number"),
])
def test_score_refuses_patient_values_that_cannot_be_right(clinical_model, small_cohort, capsys, extra, field):
    folder = load_cohort(small_cohort).select("test")[0].images[0].parent
    code, _, err = run_cli(capsys, "score", "--model", clinical_model, "--images", folder, "--gender", "F",
                           "--lymph-count", "8", *extra)
    assert code == 2 and err.startswith("error: ") and field in err and len(err.strip().splitlines()) == 1


def test_score_warns_on_implausible_values_naming_the_field(clinical_model, small_cohort, capsys):
    folder = load_cohort(small_cohort).select("test")[0].images[0].parent
    code, out, err = run_cli(capsys, "score", "--model", clinical_model, "--images", folder, "--gender", "F",
                             "--age", "115", "--lymph-count", "600")
    assert code == 0 and "probability of malignancy" in out
    assert "warning: field age: age 115.0 years is implausible" in err
    assert "warning: field LYMPH_COUNT: lymphocyte count 600 x10^9/L is implausible" in err


def test_a_csv_id_that_leads_out_of_its_split_folder_is_refused(small_cohort, capsys):
    """Today ID ../testset/P.. loads that test patient's images as a training patient."""
    csv = small_cohort / "trainset" / "trainset_true.csv"
    test_id = pd.read_csv(small_cohort / "testset" / "testset_data.csv", dtype=str)["ID"].iloc[0]
    table = pd.read_csv(csv, dtype=str)
    table.loc[2, "ID"] = f"../testset/{test_id}"
    table.to_csv(csv, index=False)
    code, _, err = run_cli(capsys, "data", "--data", small_cohort)
    assert code == 2 and "trainset_true.csv, line 4, field ID: patient ID" in err and "not a plain name" in err
    assert len(err.strip().splitlines()) == 1


def test_the_cohort_loader_warnings_are_printed(small_cohort, capsys):
    csv = small_cohort / "trainset" / "trainset_true.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[2, "LYMPH_COUNT"] = "650"
    table.to_csv(csv, index=False)
    code, _, err = run_cli(capsys, "data", "--data", small_cohort)
    assert code == 0 and "warning: " in err and "line 4, field LYMPH_COUNT: lymphocyte count 650" in err


def test_profile_writes_statistics_despite_the_fast_exit(small_cohort, tmp_path):
    """``python -m cProfile -m lympho`` writes nothing (the fast exit skips its teardown): --profile does."""
    import pstats

    profile = tmp_path / "extract.prof"
    done = subprocess.run([sys.executable, "-m", "lympho", "--profile", str(profile), "extract", "--data",
                           str(small_cohort), "--encoder", "resnet18", "--weights", "none", "--split", "train",
                           "--cache-dir", str(tmp_path / "cache")], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert profile.is_file() and f"profile -> {profile}" in done.stderr
    functions = {name for _, _, name in pstats.Stats(str(profile)).stats}
    assert "cmd_extract" in functions

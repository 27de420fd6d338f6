"""Figures (plotly) and exports (runs table, HTML reports, submission CSV)."""

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from lympho import figures, reports
from lympho.evaluation import HEADLINE, METRICS, cross_validate, format_estimate, oof_estimates, threshold_from_repeats

EVIL = "<script>alert(1)</script>"
CONFIG = {"features": "clinical", "encoder": "resnet18", "weights": "imagenet", "pooling": "mean",
          "classifier": "logreg", "imbalance": "weights", "folds": 3, "repeats": 2, "seed": 0,
          "log_count": True, "precision": "auto", "crop": None}


def make_run(label="LogReg, clinical", synthetic=False, repeats=2, seed=0, key="8db60617ffa2", run_id=None):
    """A run record shaped exactly like ``run_experiment``'s, from a real cross-validation."""
    rng = np.random.default_rng(seed)
    y = np.array([0] * 12 + [1] * 18)
    X = rng.normal(size=(30, 3)) + y[:, None] * 0.8
    result = cross_validate(LogisticRegression(), X, y, [f"P{i}" for i in range(30)],
                            folds=3, repeats=repeats, seed=seed)
    run = {"config": {**CONFIG, "repeats": repeats, "seed": seed}, "key": key, "label": label,
           "cohort": {"name": "synthetic demo (/x)" if synthetic else "/data/cohort", "root": "/x",
                      "synthetic": synthetic, "n_labelled": 30},
           "created": f"2026-01-0{seed + 1}T10:11:12", "folds": result.folds, "summary": result.summary(),
           "oof": result.oof.to_dict(orient="list"), "versions": {"python": "3.11"}}
    if run_id:
        run["id"] = run_id
    return run


@pytest.fixture(scope="module")
def runs():
    return [make_run(run_id="2026-01-01T101112-8db60617ffa2"),
            make_run(label=EVIL, repeats=3, seed=1, key="00d409a98162", run_id="2026-01-02T101112-00d409a98162")]


@pytest.fixture
def frame():
    return pd.DataFrame({
        "id": ["P1", "P2", "P3", "P4", "P5", "P6"],
        "split": ["train"] * 5 + ["test"],
        "label": [0, 1, 1, 1, 0, -1],
        "gender": ["M", "F", "M", "M", "F", "F"],
        "age": [30.0, 70.5, 80.2, 65.0, 25.0, 50.0],
        "lymph_count": [4.0, 30.0, 120.0, 15.0, 3.5, 8.0],
        "n_images": [40, 50, 60, 50, 45, 70],
    })


def png_bytes(color=(200, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- figures


def test_metric_labels():
    assert [figures.metric_label(m) for m in METRICS] == [
        "Balanced accuracy", "F1", "Recall (sensitivity)", "Specificity", "Precision", "ROC AUC"]
    assert figures.metric_label("n_test") == "N test"


def test_gender_by_label_counts_and_colours(frame):
    fig = figures.gender_by_label(frame)
    assert fig.layout.barmode == "group"
    bars = {t.name: t for t in fig.data}
    assert list(bars) == ["Reactive", "Malignant", "Unknown"]
    assert list(bars["Reactive"].x) == ["Female", "Male"]
    assert list(bars["Reactive"].y) == [1, 1]
    assert list(bars["Malignant"].y) == [1, 2]
    assert list(bars["Unknown"].y) == [1, 0]
    assert {n: t.marker.color for n, t in bars.items()} == figures.LABEL_COLORS
    assert fig.layout.yaxis.title.text and fig.layout.xaxis.title.text == "Gender"


def test_age_vs_count_log_axis_and_hover_ids(frame):
    fig = figures.age_vs_count(frame[frame["label"] >= 0])
    assert fig.layout.yaxis.type == "log"
    assert "years" in fig.layout.xaxis.title.text and "10⁹/L" in fig.layout.yaxis.title.text
    malignant = next(t for t in fig.data if t.name == "Malignant")
    assert list(malignant.customdata) == ["P2", "P3", "P4"]
    assert list(malignant.y) == [30.0, 120.0, 15.0]
    assert "%{customdata}" in malignant.hovertemplate
    assert [t.name for t in fig.data] == ["Reactive", "Malignant"]  # no unknown trace without unknowns
    ticks = list(fig.layout.yaxis.tickvals)
    assert ticks == [2, 5, 10, 20, 50, 100, 200] and list(fig.layout.yaxis.ticktext)[-1] == "200"


def test_images_per_patient_shares_bins(frame):
    fig = figures.images_per_patient(frame)
    assert all(t.type == "histogram" for t in fig.data)
    assert len({t.bingroup for t in fig.data}) == 1
    reactive = next(t for t in fig.data if t.name == "Reactive")
    assert sorted(reactive.x) == [40, 45]
    assert fig.layout.barmode == "group"  # side by side: no class hides the other


def test_one_colour_per_configuration():
    config = {"features": "clinical", "classifier": "xgboost", "imbalance": "weights", "seed": 0, "folds": 3,
              "backbone": "resnet18"}
    same = {**config, "seed": 7, "folds": 5, "backbone": "vgg16"}  # evaluation and unused image fields
    colors = {figures.config_color({**config, "classifier": c}) for c in ("svm", "mlp", "xgboost", "logreg")}
    assert figures.config_color(config) == figures.config_color(same) and len(colors) > 1
    late = {**config, "features": "both", "fusion": "late", "combine": "logit"}  # a run stored before the field
    assert figures.config_color(late) == figures.config_color({**late, "clinical_weight": None})
    assert figures.config_name("XGBoost, clinical", config) == "XGBoost, clinical · Class weights"


def test_fold_metrics_error_bars_and_points(runs):
    run = runs[0]
    fig = figures.fold_metrics(run["folds"])
    bar, points = fig.data
    assert bar.type == "bar" and points.type == "scatter"
    for i, metric in enumerate(METRICS):
        assert bar.y[i] == pytest.approx(run["summary"][metric]["mean"])
        assert bar.error_y.array[i] == pytest.approx(run["summary"][metric]["std"])
    assert bar.error_y.visible
    assert len(points.x) == len(METRICS) * len(run["folds"])
    assert sorted(points.y[:6]) == pytest.approx(sorted(f["balanced_accuracy"] for f in run["folds"]))
    assert list(fig.layout.xaxis.ticktext) == [figures.metric_label(m) for m in METRICS]


def test_confusion_matrix_annotations_match_counts():
    fig = figures.confusion_matrix([[60, 8], [25, 127]], "Pooled")
    numbers = [int(re.search(r"\d+", a.text).group()) for a in fig.layout.annotations]
    assert numbers == [60, 8, 25, 127]
    heat = fig.data[0]
    assert [list(r) for r in heat.z] == [[60, 8], [25, 127]]
    assert list(heat.y) == ["Reactive", "Malignant"] and list(heat.x) == ["Reactive", "Malignant"]
    assert fig.layout.yaxis.autorange == "reversed"  # Reactive (tn, fp) on top
    assert fig.layout.xaxis.title.text == "Predicted" and fig.layout.yaxis.title.text == "True"
    with pytest.raises(ValueError):
        figures.confusion_matrix([[1, 2, 3]])
    mean = figures.confusion_matrix([[30.15, 3.85], [5.0, 71.0]], "Mean per repeat")
    assert mean.layout.annotations[0].text.startswith("<b>30.1</b>") or \
        mean.layout.annotations[0].text.startswith("<b>30.2</b>")


def test_roc_curves_one_trace_per_repeat_plus_chance_and_marker(runs):
    run = runs[1]  # 3 repeats
    fig = figures.roc_curves(run["oof"])
    names = [t.name for t in fig.data]
    assert len(fig.data) == 4 and names[-1] == "Chance"
    assert list(fig.data[-1].x) == [0, 1] and list(fig.data[-1].y) == [0, 1]
    oof = pd.DataFrame(run["oof"])
    first = oof[oof["repeat"] == 1]
    assert f"{roc_auc_score(first['y_true'], first['probability']):.3f}" in names[0]
    marked = figures.roc_curves(run["oof"], marker=(0.2, 0.8))
    assert len(marked.data) == 5 and marked.data[-1].name == "Operating point"
    assert (marked.data[-1].x[0], marked.data[-1].y[0]) == (0.2, 0.8)
    assert "sensitivity" in fig.layout.yaxis.title.text.lower()


def test_ablation_bars_mean_and_std_per_configuration(runs):
    # the columns of lympho.experiment.ablation_table
    table = pd.DataFrame([{"configuration": run["label"], **{f"config.{k}": v for k, v in run["config"].items()},
                           "repeat": f["repeat"],
                           "fold": f["fold"], **{m: f[m] for m in METRICS}}
                          for run in runs for f in run["folds"]])
    fig = figures.ablation_bars(table)
    assert len(fig.data) == 2 and fig.layout.barmode == "group"
    assert list(fig.data[0].x) == ["Balanced accuracy", "F1", "Recall (sensitivity)"]
    assert fig.data[0].name == "LogReg, clinical"
    assert fig.data[1].name == "&lt;script&gt;alert(1)&lt;/script&gt;"  # rendered as typed by plotly
    second = table[table["configuration"] == EVIL]
    assert fig.data[1].y[2] == pytest.approx(second["recall"].mean())
    assert fig.data[1].error_y.array[2] == pytest.approx(second["recall"].std(ddof=1))


def test_compare_runs_one_trace_per_run(runs):
    fig = figures.compare_runs(runs)
    assert len(fig.data) == 2
    assert fig.data[0].name.startswith("LogReg, clinical (") and "8db606" in fig.data[0].name
    for trace, run in zip(fig.data, runs):
        assert list(trace.y) == pytest.approx([run["summary"][m]["mean"] for m in METRICS])
        assert list(trace.error_y.array) == pytest.approx([run["summary"][m]["std"] for m in METRICS])
    twice = figures.compare_runs([runs[0], runs[0]])
    assert len({t.name for t in twice.data}) == 2
    assert fig.data[0].marker.color == figures.config_color(runs[0]["config"])


def test_roc_overlay_one_curve_per_run_in_its_colour(runs):
    fig = figures.roc_overlay(runs)
    assert [t.name for t in fig.data][-1] == "Chance" and len(fig.data) == len(runs) + 1
    assert fig.data[0].line.color == figures.config_color(runs[0]["config"]) and "AUC" in fig.data[0].name


def test_cell_segmentation_draws_both_outlines():
    nucleus = np.zeros((20, 20), bool)
    nucleus[8:12, 8:12] = True
    cell = np.zeros((20, 20), bool)
    cell[4:16, 4:16] = True
    masks = {"image": np.full((20, 20, 3), 200, np.uint8), "nucleus_outline": nucleus, "cell_outline": cell,
             "failed": False}
    z = np.asarray(figures.cell_segmentation(masks).data[0].z)
    assert z.shape == (20, 48, 3)  # raw | gap | overlay
    assert tuple(z[0, 0]) == (200, 200, 200) and tuple(z[8, 28 + 8]) == figures.NUCLEUS_OUTLINE
    assert tuple(z[4, 28 + 4]) == figures.CELL_OUTLINE
    assert "FAILED" in figures.cell_segmentation({**masks, "failed": True}).layout.title.text


# --------------------------------------------------------------------------- reports


def test_runs_table_columns_and_values(runs):
    table = reports.runs_table(runs)
    assert len(table) == 2
    assert list(table.columns[:5]) == ["id", "created", "label", "key", "cohort"]
    assert set(CONFIG) <= set(table.columns)
    for metric in METRICS:
        assert table[f"{metric}_mean"].tolist() == pytest.approx([r["summary"][metric]["mean"] for r in runs])
        assert table[f"{metric}_std"].tolist() == pytest.approx([r["summary"][metric]["std"] for r in runs])
    assert table["id"].tolist() == [r["id"] for r in runs]
    assert table["label"].tolist() == ["LogReg, clinical", EVIL]
    assert table["repeats"].tolist() == [2, 3]
    assert table["synthetic"].tolist() == [False, False]
    # Headline estimates with their 95 % intervals, the same numbers as the core computes.
    for run, (_, row) in zip(runs, table.iterrows()):
        estimates = oof_estimates(run["oof"], 0.5)
        assert row["threshold"] == 0.5
        for metric in HEADLINE:
            value = estimates["metrics"][metric]
            assert (row[f"{metric}_estimate"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == \
                pytest.approx((value["estimate"], value["low"], value["high"]))
    unsaved = reports.runs_table([make_run()])
    assert "id" not in unsaved.columns
    assert list(reports.runs_table([]).columns[:4]) == ["created", "label", "key", "cohort"]


def test_runs_report_is_self_contained_and_escaped(runs):
    page = reports.runs_report_html(runs, title="Team <review>")
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the bundle, inline, exactly once
    assert "<script src=" not in page and "<link" not in page  # nothing fetched from the network
    assert page.count('class="plotly-graph-div"') == 1 + 3 * len(runs)  # comparison; per run CM, ROC, reliability
    assert page.count("Do the probabilities mean what they say?") == len(runs)
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Team &lt;review&gt;" in page
    assert "SYNTHETIC DEMO COHORT" not in page
    assert page.count('<tr class="summary">') == len(runs)
    assert "Balanced accuracy" in page and "@media print" in page
    for run in runs:  # every headline figure with its interval, worded as in the CLI
        estimates = oof_estimates(run["oof"], 0.5)
        for metric in HEADLINE:
            assert format_estimate(estimates, metric) in page
    assert "ddof=1" in page and "ddof=0" not in page
    assert "each patient once" in page and "Pooled confusion matrix" not in page


def test_runs_report_banner_iff_synthetic(runs):
    page = reports.runs_report_html([runs[0], make_run(synthetic=True)])
    assert page.count("SYNTHETIC DEMO COHORT") == 1
    empty = reports.runs_report_html([])
    assert "No runs" in empty and "SYNTHETIC" not in empty


def patient_result(**changes):
    return {"id": "P42", "probability": 0.8731, "prediction": 1, "threshold": 0.5, "n_images": 57,
            "model": "XGBoost, clinical", "gender": "F", "age": 71.4, "lymph_count": 23.5, **changes}


def test_patient_report_malignant_with_cells(tmp_path):
    path = tmp_path / "cell.png"
    path.write_bytes(png_bytes((0, 0, 200)))
    cells = [(png_bytes(), 0.9), (path, 0.7), (str(path), 0.5)]
    page = reports.patient_report_html(patient_result(), cells)
    assert "@page { size: A4" in page
    assert "87.3%" in page and "0.873" in page
    assert "Malignant: refer for flow cytometry" in page
    assert "not a diagnosis" in page.lower()
    assert page.count("<img") == 3
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(srcs[0]) == png_bytes() and base64.b64decode(srcs[1]) == path.read_bytes()
    assert "XGBoost, clinical" in page and "P42" in page and "23.5" in page
    assert "Female" in page


def test_patient_report_reactive_cap_and_escaping():
    result = patient_result(id=EVIL, probability=0.3, prediction=0, threshold=0.4, model="<b>m</b>")
    page = reports.patient_report_html(result, [(png_bytes(), 0.1)] * 20)
    assert page.count("<img") == reports.MAX_CELLS == 12
    assert "Reactive" in page and "refer for flow cytometry" not in page
    assert EVIL not in page and "&lt;script&gt;" in page and "&lt;b&gt;m&lt;/b&gt;" in page
    assert reports.patient_report_html(patient_result()).count("<img") == 0
    # the decision follows the stated threshold
    assert "Malignant: refer" in reports.patient_report_html(patient_result(probability=0.3, threshold=0.25))


def test_patient_report_converts_other_formats():
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 10)).save(buffer, format="TIFF")
    uri = reports.image_data_uri(buffer.getvalue())
    assert uri.startswith("data:image/png;base64,")
    with pytest.raises(ValueError):
        reports.image_data_uri(b"not an image")


def test_submission_csv():
    predictions = pd.DataFrame({"id": ["P71", "P16", "P114"], "probability": [0.9, 0.1, 0.6],
                                "prediction": [1, 0, 1]})
    assert reports.submission_csv(predictions) == "Id,Predicted\nP71,1\nP16,0\nP114,1\n"
    with pytest.raises(ValueError):
        reports.submission_csv(predictions.assign(prediction=[1, 2, 0]))
    with pytest.raises(ValueError):
        reports.submission_csv(predictions.assign(id=["P1", "P1", "P2"]))
    with pytest.raises(ValueError):
        reports.submission_csv(predictions.drop(columns="prediction"))


def test_computed_on_names_the_cohort_the_run_recorded():
    from lympho.figures import computed_on

    run = {"config": {"repeats": 20, "folds": 3}, "summary": {"n_folds": 60},
           "cohort": {"name": "lymphocytosis", "synthetic": False, "n_labelled": 110}}
    assert computed_on(run) == "20 x 3-fold CV on lymphocytosis (110 labelled patients), mean ± sd over 60 folds"
    run["cohort"] = {"name": "demo", "synthetic": True, "n_labelled": 48}
    assert "on the synthetic demo cohort (48 labelled patients)" in computed_on(run)


def test_operating_point_table_decides_each_run_at_its_held_out_threshold(runs):
    table = reports.operating_point_table([*runs, make_run(repeats=1)], 0.95)
    assert list(table.columns) == ["Configuration", "Threshold", "Balanced accuracy", "Recall (sensitivity)",
                                   "Specificity"]
    for row, run in zip(table.itertuples(), runs):
        point = threshold_from_repeats(run["oof"], 0.95)  # median of the repeats' thresholds, held out
        value = point["estimate"]["metrics"]["balanced_accuracy"]
        assert row.Threshold == f"{point['threshold']:.3f}"
        assert table.loc[row.Index, "Balanced accuracy"].startswith(f"{value['estimate']:.3f} ({value['low']:.2f}")
    assert table["Balanced accuracy"].iloc[:2].str.endswith("★").sum() >= 1
    assert table["Threshold"].iloc[2] == reports.ONE_REPEAT and pd.isna(table["Balanced accuracy"].iloc[2])

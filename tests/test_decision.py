"""The Score page's core: result keys, inputs as used, the model card, upload previews."""

import io
from datetime import date
from pathlib import Path

from PIL import Image

from lympho.data import Patient
from lympho.decision import inputs_used, model_card, result_key, similar_text, thumbnails


def jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_result_key_changes_with_any_input_file_or_model():
    files = [("a.jpg", jpeg("red"))]
    key = result_key("m1@t", {"count": 10}, files)
    assert key == result_key("m1@t", {"count": 10}, list(files))
    assert len({key, result_key("m2@t", {"count": 10}, files), result_key("m1@t", {"count": 11}, files),
                result_key("m1@t", {"count": 10}, [("a.jpg", jpeg("blue"))])}) == 4


def test_inputs_used_says_the_age_at_sampling_and_how_it_was_derived():
    born = Patient("P-1", "test", -1, "F", 49.63, 12.5, (), dob=date(1970, 5, 14), sampling_date=date(2020, 1, 1))
    used = dict(inputs_used(born, False))
    assert used["Age"] == "age at sampling 49.6 years (sampled 2020-01-01), from date of birth 1970-05-14"
    assert used["Images"] == "none needed" and used["Gender"] == "Female"
    typed = Patient("P-1", "test", -1, "M", 76.0, 5.0, (Path("a.jpg"),), sampling_date=date(2026, 3, 2))
    assert dict(inputs_used(typed, True))["Age"] == "age at sampling 76 years (sampled 2026-03-02), as typed"


def test_model_card_names_cohort_features_operating_point_and_versions():
    meta = {"label": "XGBoost, clinical", "format": 2, "created": "2026-11-29T22:00:00", "sha256": "ab" * 32,
            "config": {"features": "clinical", "imbalance": "weights"},
            "cohort": {"name": "lymphocytosis", "n_labelled": 110, "synthetic": False},
            "versions": {"scikit-learn": "1.9.1", "torch": "2.14.1"},
            "operating_point": {"threshold": 0.31, "target_sensitivity": 0.95, "estimate": {
                "level": 0.95, "repeats": 10, "method": "leave-one-repeat-out",
                "metrics": {"recall": {"estimate": 0.95, "low": 0.9, "high": 0.99},
                            "specificity": {"estimate": 0.7, "low": 0.6, "high": 0.8}}}}}
    card = dict(model_card(meta))
    assert card["Model"] == "XGBoost, clinical · Class weights" and "110 labelled" in card["Trained on"]
    point = card["Operating point"]  # a model saved before promises: its figure is labelled apparent
    assert "threshold 0.310 (threshold for 95% sensitivity)" in point and "apparent" in point
    assert "sensitivity 0.95 (95% CI 0.90–0.99)" in point and "specificity 0.70" in point
    assert "Promise" not in card
    assert "scikit-learn 1.9.1" in card["Version"] and card["Trained"] == "2026-11-29 22:00:00"
    assert "Encoder" not in card  # clinical-only
    meta["encoder"] = {"name": "resnet18", "version": "tv-1", "device": "cpu", "precision": "bf16"}
    assert dict(model_card(meta))["Encoder"] == "resnet18 tv-1, device cpu, precision bf16"
    meta["config"] = {"features": "both", "imbalance": "weights", "encoder": "resnet18", "weights": "none",
                      "pooling": "mean"}
    assert "(resnet18, none weights, mean pooling)" in dict(model_card(meta))["Features"]
    meta["config"].update(encoder="morphology", weights="imagenet", pooling="meanmax")  # the default weights field
    assert "(morphology, meanmax pooling)" in dict(model_card(meta))["Features"]  # no weights: not a network


def test_model_card_shows_the_promise_first_and_where_the_model_is_weakest():
    nested = {"kind": "nested", "level": 0.95, "n_patients": 110, "n_bootstrap": 1000,
              "design": {"outer_repeats": 3, "outer_folds": 3, "inner_repeats": 5, "inner_folds": 3, "candidates": ["a", "b"]},
              "thresholds": {"min": 0.3, "max": 0.5},
              "metrics": {"balanced_accuracy": {"estimate": 0.85, "low": 0.78, "high": 0.91},
                          "recall": {"estimate": 0.9, "low": 0.8, "high": 0.96},
                          "specificity": {"estimate": 0.8, "low": 0.62, "high": 0.93}}}
    band = {"estimate": None, "low": None, "high": None}
    meta = {"label": "late fusion", "format": 2, "created": "2026-12-04T10:00:00",
            "config": {"features": "clinical", "imbalance": "weights"},
            "cohort": {"name": "lymphocytosis", "n_labelled": 110, "synthetic": False}, "versions": {},
            "operating_point": {"threshold": 0.4, "rule": {"kind": "balanced", "value": None,
                                                           "text": "threshold of the highest balanced accuracy"},
                                "threshold_range": {"min": 0.35, "max": 0.45}, "estimate": nested,
                                "apparent": {**nested, "kind": None, "method": "apparent"},
                                "zones": {"rule_out": 0.1, "rule_in": 0.8, "nested": None}},
            "subgroups": [{"group": "age", "band": "> 70 y", "n": 40, "malignant": 30, "reactive": 10,
                           "balanced_accuracy": {"estimate": 0.7, "low": 0.55, "high": 0.85},
                           "recall": band, "specificity": band},
                          {"group": "age", "band": "< 50 y", "n": 20, "malignant": 0, "reactive": 20,
                           "balanced_accuracy": band, "recall": band,
                           "specificity": {"estimate": 0.95, "low": 0.8, "high": 1.0}}]}
    card = model_card(meta)
    names = [name for name, _ in card]
    assert names.index("Promise") < names.index("Operating point") < names.index("Triage zones")
    card = dict(card)
    assert card["Promise"].startswith("balanced accuracy 0.85 (0.78–0.91), sensitivity 0.90 (0.80–0.96), "
                                      "specificity 0.80 (0.62–0.93)")
    assert "the repeats' thresholds ranged 0.350–0.450" in card["Operating point"]
    assert "rule-out (reactive) below 0.100" in card["Triage zones"]
    assert card["Least reliable"].startswith("least reliable in: age > 70 y (balanced accuracy 0.70 (0.55–0.85), 40")


def test_thumbnails_skip_zips_and_broken_files():
    files = [("a.jpg", jpeg("red")), ("b.zip", b"PK"), ("c.jpg", b"not an image"), ("d.jpg", jpeg("blue"))]
    previews = thumbnails(files)
    assert [name for name, _ in previews] == ["a.jpg", "d.jpg"] and max(previews[0][1].size) <= 96


def test_patients_scored_alike_reads_as_counts():
    similar = {"k": 15, "malignant": 1, "fraction": 1 / 15, "low": 0.012, "high": 0.298, "level": 0.95,
               "p_low": 0.0, "p_high": 0.66}
    text = similar_text({"similar": similar})
    assert text == ("Of the 15 training patients scored most like this one (out of fold, 0.00–0.66), 1 was "
                    "malignant (7%; 95% CI 1%–30%).")
    assert "9 were malignant" in similar_text({"similar": similar | {"malignant": 9, "fraction": 0.6}})
    assert similar_text({"similar": None}) is None

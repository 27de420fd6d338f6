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
    point = card["Operating point"]
    assert "threshold 0.310" in point and "95% from 10 CV repeats" in point
    assert "sensitivity 0.95 (95% CI 0.90–0.99)" in point and "specificity 0.70" in point
    assert "scikit-learn 1.9.1" in card["Version"] and card["Trained"] == "2026-11-29 22:00:00"
    assert "Encoder" not in card  # clinical-only
    meta["encoder"] = {"name": "resnet18", "version": "tv-1", "device": "cpu", "precision": "bf16"}
    assert dict(model_card(meta))["Encoder"] == "resnet18 tv-1, device cpu, precision bf16"
    meta["config"] = {"features": "both", "imbalance": "weights", "encoder": "resnet18", "weights": "none",
                      "pooling": "mean"}
    assert "(resnet18, none weights, mean pooling)" in dict(model_card(meta))["Features"]
    meta["config"].update(encoder="morphology", weights="imagenet", pooling="meanmax")  # the default weights field
    assert "(morphology, meanmax pooling)" in dict(model_card(meta))["Features"]  # no weights: not a network


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

"""What the Score page shows beside a decision: the model's card, the inputs as used, and a
key that ties a result to exactly those inputs and that model (so that a result on screen
always belongs to what is shown, or is cleared).
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date
from typing import Mapping, Sequence

from PIL import Image

from lympho.data import Patient, read_image
from lympho.encoders import uses_torchvision_options
from lympho.figures import FEATURE_LABELS, config_name

DISCLAIMER_SHORT = ("Decision support for research use, not a diagnosis: confirm by flow cytometry and "
                    "clinical judgement.")


def result_key(model_id: str, inputs: Mapping, files: Sequence[tuple[str, bytes]]) -> str:
    """A hash of the model (path + creation time), every input and every uploaded file's bytes."""
    digest = hashlib.sha256(model_id.encode())
    digest.update(json.dumps(dict(inputs), sort_keys=True, default=str).encode())
    for name, content in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()[:16]


def evidence_text(result: Mapping) -> str | None:
    """Each expert's own probability and how they were combined, e.g. ``LogReg clinical
    0.214 · LogRegCV morphology/meanmax 0.683 → 0.360 (mean of log-odds, clinical weight
    0.65)``, for a scored late fusion (:func:`lympho.scoring.score_patient`); None for a
    single model."""
    experts = result.get("experts") or []
    if not experts:
        return None
    return (" · ".join(f"{name} {probability:.3f}" for name, probability in experts)
            + f" → {float(result['probability']):.3f} ({result.get('combine') or 'combined'})")


def similar_text(result: Mapping) -> str | None:
    """``Of the 15 training patients scored most like this one (out of fold, 0.28–0.47), 9 were
    malignant (60%; 95% CI 36–80%)``; None when the model kept no out-of-fold predictions."""
    similar = result.get("similar")
    if not similar:
        return None
    return (f"Of the {similar['k']} training patients scored most like this one (out of fold, "
            f"{similar['p_low']:.2f}–{similar['p_high']:.2f}), {similar['malignant']} "
            f"{'was' if similar['malignant'] == 1 else 'were'} malignant "
            f"({similar['fraction']:.0%}; {similar['level']:.0%} CI {similar['low']:.0%}–{similar['high']:.0%}).")


def _interval(estimate: Mapping | None, metric: str) -> str | None:
    """``0.95 (95% CI 0.88-0.99)`` from an estimate record of lympho.evaluation, if it has ``metric``."""
    value = (estimate or {}).get("metrics", {}).get(metric)
    if not value:
        return None
    level = estimate.get("level", 0.95)
    return f"{value['estimate']:.2f} ({level:.0%} CI {value['low']:.2f}–{value['high']:.2f})"


def operating_point_text(meta: Mapping, point: Mapping | None = None) -> str:
    """How the model's stored threshold (or ``point``, another operating point of it) was chosen
    and what it reached out of fold, with intervals."""
    point = point or meta.get("operating_point") or {}
    threshold = float(point.get("threshold", 0.5))
    target = point.get("target_sensitivity")
    estimate = point.get("estimate")
    repeats = f" from {estimate['repeats']} CV repeats" if estimate and estimate.get("repeats") else ""
    how = (f"chosen for a sensitivity of {target:.0%}{repeats} on the training patients' out-of-fold predictions"
           if target else "fixed")
    parts, named = [f"threshold {threshold:.3f}, {how}"], set()
    for metric, name in (("sensitivity", "sensitivity"), ("recall", "sensitivity"), ("specificity", "specificity"),
                         ("balanced_accuracy", "balanced accuracy")):
        text = _interval(estimate, metric)
        if text and name not in named:
            named.add(name)
            parts.append(f"{name} {text}")
    method = f" ({estimate['method']})" if estimate and estimate.get("method") else ""
    return "; ".join(parts) + method


def encoder_text(encoder: Mapping) -> str:
    """Where and how image features were computed (a run's or model's ``encoder`` record)."""
    parts = [f"{encoder.get('name', '?')} {encoder.get('version', '')}".strip()]
    parts += [f"{key} {encoder[key]}" for key in ("device", "precision", "torch") if encoder.get(key)]
    return ", ".join(parts)


def model_card(meta: Mapping) -> list[tuple[str, str]]:
    """The model's card at decision time: what it was trained on, what it uses, how well it did
    in cross-validation (with the interval and what it was computed on), version and date."""
    config, cohort = meta["config"], meta["cohort"]
    features = FEATURE_LABELS.get(config["features"], config["features"])
    if config["features"] != "clinical":
        encoder = config.get("encoder", config.get("backbone"))  # "backbone" in models saved before 2026-11-29
        weights = f"{config['weights']} weights, " if uses_torchvision_options(encoder) else ""  # none for morphology
        features += f" ({encoder}, {weights}{config['pooling']} pooling)"
    trained_on = (f"{'the SYNTHETIC demo cohort' if cohort['synthetic'] else cohort.get('name', '?')}, "
                  f"{cohort['n_labelled']} labelled patients")
    versions = meta.get("versions", {})
    card_encoder = [("Encoder", encoder_text(meta["encoder"]))] if meta.get("encoder") else []
    return [
        ("Model", config_name(meta["label"], config)),
        ("Trained on", trained_on),
        ("Features", features + ("; age at sampling, gender, log lymphocyte count"
                                 if config["features"] != "images" else "")),
        ("Operating point", operating_point_text(meta)),
        *card_encoder,
        ("Version", f"model format {meta.get('format', '?')}, scikit-learn {versions.get('scikit-learn', '?')}, "
                    f"torch {versions.get('torch', '?')}, checksum {str(meta.get('sha256', ''))[:12] or '?'}"),
        ("Trained", str(meta.get("created", "?")).replace("T", " ")),
    ]


def age_text(age: float, sampling_date: date | str) -> str:
    """The model's age input in words: ``age at sampling 70 years (sampled 2026-01-15)``."""
    return f"age at sampling {round(float(age), 1):g} years (sampled {sampling_date})"


def inputs_used(patient: Patient, uses_images: bool) -> list[tuple[str, str]]:
    """Every input of a scored patient (:func:`lympho.scoring.make_patient`) as the model
    used it, with how it was derived: the age is the age at sampling, from the date of birth
    when one was given."""
    how = f"from date of birth {patient.dob}" if patient.dob is not None else "as typed"
    n_images = len(patient.images)
    images = (f"{n_images} images" if uses_images
              else f"not used by this clinical-only model ({n_images} uploaded)" if n_images else "none needed")
    return [("Patient", patient.id), ("Gender", {"F": "Female", "M": "Male"}.get(patient.gender, patient.gender)),
            ("Age", f"{age_text(patient.age, patient.sampling_date)}, {how}"),
            ("Lymphocyte count", f"{patient.lymph_count:g} ×10⁹/L"), ("Images", images)]


def thumbnails(files: Sequence[tuple[str, bytes]], limit: int = 60, side: int = 96) -> list[tuple[str, Image.Image]]:
    """Small previews of uploaded image files, in upload order, at most ``limit``. Zips and
    files that do not decode are skipped here: the upload check names them when scoring."""
    previews = []
    for name, content in files:
        if len(previews) >= limit or name.lower().endswith(".zip"):
            continue
        try:  # decoded as the model sees it: allowed formats, pixel limit first, upright, RGB
            preview = read_image(io.BytesIO(content), draft=side)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # CohortError is a ValueError
            continue
        preview.thumbnail((side, side))
        previews.append((name, preview))
    return previews

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
    """How the model's stored threshold was chosen, its range over the repeats and its apparent
    figures; with ``point`` (another threshold of the same model, e.g. one chosen on the Score
    page), what that threshold reaches on the training patients' out-of-fold predictions. Both
    are apparent: measured on the patients the threshold (or the configuration) was chosen on,
    by the procedure or by the user, so they are labelled so; the promise is
    :func:`promise_text`."""
    stored = point is None
    point = point or meta.get("operating_point") or {}
    how = _rule_text(point) if stored or point.get("target_sensitivity") else "chosen on this page"
    parts = [f"threshold {float(point.get('threshold', 0.5)):.3f} ({how})"]
    spread = point.get("threshold_range") if stored and _read_from_data(point) else None
    if spread:
        parts.append(f"the repeats' thresholds ranged {spread['min']:.3f}–{spread['max']:.3f}")
    estimate = point.get("apparent") or point.get("estimate")
    if estimate and estimate.get("kind") != "nested":
        figures = [f"{name} {_interval(estimate, metric)}" for metric, name in
                   (("recall", "sensitivity"), ("specificity", "specificity"), ("balanced_accuracy",
                                                                              "balanced accuracy"))
                   if _interval(estimate, metric)]
        parts.append("apparent, on the training patients' out-of-fold predictions: " + ", ".join(figures)
                     + (f" ({estimate['method']})" if estimate.get("method") else ""))
    return "; ".join(parts)


def _rule_text(point: Mapping) -> str:
    """How a stored threshold was chosen: the rule's text, or for a model saved before rules,
    from its target sensitivity (``fixed threshold`` without one)."""
    target = point.get("target_sensitivity")
    return (point.get("rule") or {}).get("text") or (f"threshold for {target:.0%} sensitivity" if target
                                                      else "fixed threshold")


def _read_from_data(point: Mapping) -> bool:
    """Whether the threshold was read from the training patients (so it has a range and is
    re-chosen in the promise), rather than fixed."""
    return (point.get("rule") or {}).get("kind", "sensitivity" if point.get("target_sensitivity") else "fixed") \
        != "fixed"


def figure_text(value: Mapping | None, digits: int = 2) -> str:
    """``0.85 (0.78–0.91)`` from an ``estimate, low, high`` record; ``n/a`` where undefined."""
    if not value or value.get("estimate") is None:
        return "n/a"
    if value.get("low") is None or value["low"] != value["low"]:
        return f"{value['estimate']:.{digits}f}"
    return f"{value['estimate']:.{digits}f} ({value['low']:.{digits}f}–{value['high']:.{digits}f})"


PROMISE_METRICS = (("balanced_accuracy", "balanced accuracy"), ("recall", "sensitivity"),
                   ("specificity", "specificity"))


def promise_text(point: Mapping | None) -> str | None:
    """The model's promise in one line, e.g. ``balanced accuracy 0.85 (0.78–0.91), sensitivity
    0.93 (0.87–0.98), specificity 0.77 (0.62–0.90)``, with the 95 % intervals; None for a
    model saved without one (older models, or too few patients for the nested design)."""
    estimate = (point or {}).get("estimate")
    if not estimate or estimate.get("kind") != "nested":
        return None
    return ", ".join(f"{name} {figure_text(estimate['metrics'][metric])}" for metric, name in PROMISE_METRICS)


def promise_lines(point: Mapping) -> list[str]:
    """The promise first, how it was measured, the threshold and its range, then the apparent
    figure labelled as such: what ``train`` prints and the model card condenses."""
    estimate, how, chosen = point.get("estimate"), _rule_text(point), _read_from_data(point)
    spread = point.get("threshold_range") if chosen else None
    lines = []
    if promise_text(point):
        design = estimate["design"]
        rechosen = "the configuration and threshold" if chosen else "the configuration"
        lines += [f"promise (what a new patient gets): {promise_text(point)}",
                  f"  {estimate['level']:.0%} intervals; nested cross-validation of the whole training procedure on "
                  f"{estimate['n_patients']} patients ({design['outer_repeats']} x {design['outer_folds']}-fold "
                  f"outer, {design['inner_repeats']} x {design['inner_folds']}-fold inner; "
                  f"{len(design['candidates'])} candidate(s)), {rechosen} re-chosen in each "
                  f"of {estimate['n_bootstrap']} bootstrap draws over patients"]
    lines.append(f"decision: malignant when probability >= {float(point.get('threshold', 0.5)):.3f} ({how}"
                 + (f"; the repeats' thresholds ranged {spread['min']:.3f}-{spread['max']:.3f}" if spread else "")
                 + (f", the outer splits' {estimate['thresholds']['min']:.3f}-{estimate['thresholds']['max']:.3f}"
                    if chosen and estimate and estimate.get("thresholds") else "") + ")")
    apparent = point.get("apparent") if estimate and estimate.get("kind") == "nested" else point.get("estimate")
    if apparent:
        label = "apparent, measured on the patients it was chosen on (optimistic)" \
            if point.get("apparent") is apparent else f"out of fold ({apparent.get('method', '')})"
        lines.append(f"  {label}: " + ", ".join(f"{name} {figure_text(apparent['metrics'][metric])}"
                                                for metric, name in PROMISE_METRICS))
    return lines + zone_lines(point)


def zone_lines(point: Mapping) -> list[str]:
    """The triage zones: thresholds, and each zone's nested share of patients with the error rate
    of rule-out (malignant patients ruled out) and rule-in (reactive patients ruled in)."""
    zones = point.get("zones") or {}
    nested = zones.get("nested")
    if zones.get("rule_out") is None:
        return []
    rule_out, rule_in = zones["rule_out"], zones["rule_in"]
    lines = [f"triage zones: rule-out (reactive) below {rule_out:.3f} (threshold for 98% sensitivity), "
             f"rule-in (malignant) at or above {rule_in:.3f} (threshold for 95% specificity), indeterminate: "
             f"refer between"]
    if nested:
        lines.append("  nested: rule-out " + figure_text(nested["rule-out"]["fraction"]) + " of patients, "
                     + figure_text(nested["rule-out"]["error_rate"]) + " of them malignant (sensitivity "
                     + figure_text(nested["rule-out"]["sensitivity"]) + "); refer "
                     + figure_text(nested["refer"]["fraction"]) + "; rule-in "
                     + figure_text(nested["rule-in"]["fraction"])
                     + ", " + figure_text(nested["rule-in"]["error_rate"]) + " of them reactive (specificity "
                     + figure_text(nested["rule-in"]["specificity"]) + ")")
    return lines


def zone_text(zone: str, meta: Mapping) -> str | None:
    """A scored patient's triage zone in words with the model's zone thresholds, e.g.
    ``indeterminate: refer (rule-out below 0.121, rule-in from 0.702)``; None for a model
    saved without zones."""
    from lympho.promise import ZONE_TEXT

    zones = (meta.get("operating_point") or {}).get("zones") or {}
    if zone not in ZONE_TEXT or zones.get("rule_out") is None:
        return None
    return f"{ZONE_TEXT[zone]} (rule-out below {zones['rule_out']:.3f}, rule-in from {zones['rule_in']:.3f})"


def subgroup_lines(rows: Sequence[Mapping]) -> list[str]:
    """One line per clinical subgroup: patients, and balanced accuracy, sensitivity, specificity."""
    return [f"{row['group']} {row['band']}: {row['n']} patients ({row['malignant']} malignant, {row['reactive']} "
            f"reactive); " + ", ".join(f"{name} {figure_text(row[metric])}" for metric, name in PROMISE_METRICS)
            for row in rows]


def weakest_text(rows: Sequence[Mapping]) -> str | None:
    """Where the model is least reliable, in words: the two subgroups with the lowest nested
    balanced accuracy (or, where only one class is present, the lowest sensitivity or specificity)."""
    scored = []
    for row in rows:
        for metric, name in PROMISE_METRICS:
            value = row[metric]["estimate"]
            if value is not None:
                scored.append((value, f"{row['group']} {row['band']} ({name} {figure_text(row[metric])}, "
                                      f"{row['n']} patients)"))
                break
    if not scored:
        return None
    return "least reliable in: " + "; ".join(text for _, text in sorted(scored)[:2])


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
        *([("Promise", promise_text(meta.get("operating_point"))
                   + " (what a new patient gets: nested cross-validation of the whole training procedure, "
                     "95% intervals)")] if promise_text(meta.get("operating_point")) else []),
        ("Operating point", operating_point_text(meta)),
        *([("Triage zones", " ".join(zone_lines(meta["operating_point"])))]
          if zone_lines(meta.get("operating_point") or {}) else []),
        *([("Least reliable", weakest_text(meta["subgroups"]))] if meta.get("subgroups")
          and weakest_text(meta["subgroups"]) else []),
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

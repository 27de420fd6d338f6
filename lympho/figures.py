"""Every chart of the dashboard and of the HTML reports, built with plotly only.

One template (:data:`TEMPLATE`), one colour map for the diagnosis
(:data:`LABEL_COLORS`: reactive blue, malignant magenta-red, unknown grey) and
one set of metric names (:func:`metric_label`), so a figure looks the same in
the app, in an exported report and on a slide. Every function returns a
:class:`plotly.graph_objects.Figure` and leaves the global plotly defaults alone.

Text that comes from users (run labels, configuration names, titles) is
HTML-escaped before it reaches plotly: plotly renders a subset of HTML in
labels and decodes ``&lt;``/``&gt;``/``&amp;``, so a label shows as typed and
cannot inject markup.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lympho.evaluation import METRICS, roc_points

#: Display name of each metric, as in the report's tables.
METRIC_LABELS = {
    "balanced_accuracy": "Balanced accuracy",
    "f1": "F1",
    "recall": "Recall (sensitivity)",
    "sensitivity": "Recall (sensitivity)",
    "specificity": "Specificity",
    "precision": "Precision",
    "roc_auc": "ROC AUC",
}
#: The metrics of the report's ablation (Table 2).
ABLATION_METRICS = ("balanced_accuracy", "f1", "recall")

LABEL_NAMES = {0: "Reactive", 1: "Malignant", -1: "Unknown"}
LABEL_COLORS = {"Reactive": "#2C7BB6", "Malignant": "#C51B7D", "Unknown": "#9E9E9E"}
GENDER_NAMES = {"F": "Female", "M": "Male"}
#: Colours for configurations and runs (colour-blind safe, Okabe-Ito based).
SERIES_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
                 "#7F7F7F", "#F0E442", "#000000")
#: Colours for configurations: each configuration always gets the same one (:func:`config_color`).
CONFIG_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7F3C8D", "#8C6D31",
                  "#999933", "#882255", "#44AA99", "#332288")
#: Fields that do not change which model a configuration is (only how it was evaluated).
_NOT_IDENTITY = ("folds", "repeats", "seed", "precision")
_IMAGE_FIELDS = ("encoder", "backbone", "weights", "pooling", "crop",  # backbone: runs before 2026-11-29
                 "image_model", "fusion", "combine", "image_classifier", "clinical_weight")
IMBALANCE_LABELS = {"none": "No class balancing", "weights": "Class weights", "smote": "SMOTE"}
FEATURE_LABELS = {"clinical": "Clinical only", "images": "Images only", "both": "Clinical + images"}
NEUTRAL = "#5B6B8C"
INK = "#1F2937"
FONT = "Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif"

COUNT_UNIT = "Lymphocyte count (×10⁹/L)"
#: Labelled ticks of a log count axis: every tick says its full value (no bare "2…9").
LOG_TICKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
AGE_UNIT = "Age (years)"

TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family=FONT, size=14, color=INK),
        title=dict(font=dict(size=18), x=0.0, xanchor="left", xref="paper"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=list(SERIES_COLORS),
        margin=dict(l=70, r=30, t=70, b=60),
        legend=dict(bgcolor="rgba(255,255,255,0.8)", font=dict(size=13)),
        hoverlabel=dict(font=dict(family=FONT, size=13)),
        xaxis=dict(showgrid=False, showline=True, linecolor="#9CA3AF", ticks="outside",
                   tickcolor="#9CA3AF", zeroline=False, title=dict(font=dict(size=14)), automargin=True),
        yaxis=dict(showgrid=True, gridcolor="#E5E7EB", showline=True, linecolor="#9CA3AF",
                   ticks="outside", tickcolor="#9CA3AF", zeroline=False,
                   title=dict(font=dict(size=14)), automargin=True),
        bargap=0.2,
        bargroupgap=0.05,
    )
)


#: Column names of tables shown to users, with their units (ages are at lympho.data.REFERENCE_DATE).
COLUMN_LABELS = {
    "split": "Split", "label": "Diagnosis", "patients": "Patients", "images": "Images",
    "min_images": "Fewest images per patient", "max_images": "Most images per patient",
    "median_age": "Median age (years, at 2020-01-01)", "median_count": "Median lymphocyte count (×10⁹/L)",
}


def column_label(name: str) -> str:
    """A table column's display name with its unit; metrics as :func:`metric_label`."""
    return COLUMN_LABELS.get(name) or metric_label(name)


def metric_label(name: str) -> str:
    """``"balanced_accuracy"`` -> ``"Balanced accuracy"``; unknown names are prettified."""
    return METRIC_LABELS.get(name, str(name).replace("_", " ").capitalize())


def _identity(config: Mapping) -> dict:
    # A field at None is left out, so a run stored before the field existed (e.g. clinical_weight)
    # keeps the colour of the same model stored after.
    identity = {k: v for k, v in config.items() if k not in _NOT_IDENTITY and v is not None}
    if identity.get("features") == "clinical":
        identity = {k: v for k, v in identity.items() if k not in _IMAGE_FIELDS}
    return identity


def config_color(config: Mapping) -> str:
    """The one colour of a configuration on every page and in every report: a hash of the
    fields that define the model (not folds, repeats, seed or precision), so the same
    configuration keeps its colour across runs, pages and sessions."""
    digest = hashlib.sha1(json.dumps(_identity(config), sort_keys=True, default=str).encode()).digest()
    return CONFIG_PALETTE[digest[0] % len(CONFIG_PALETTE)]


def config_name(label: str, config: Mapping) -> str:
    """The one display name of a configuration: ``XGBoost, clinical · Class weights``."""
    imbalance = config.get("imbalance")
    return f"{label} · {IMBALANCE_LABELS.get(imbalance, imbalance)}" if imbalance else str(label)


def label_name(label) -> str:
    """0 / 1 / -1 (or their names) -> ``Reactive`` / ``Malignant`` / ``Unknown``."""
    if isinstance(label, str) and label.capitalize() in LABEL_COLORS:
        return label.capitalize()
    return LABEL_NAMES.get(int(label), "Unknown")


def short_id(run: Mapping) -> str:
    """A short, human-readable handle of a run: ``MM-DD HH:MM · key[:6]``.

    Stored runs with a collision suffix (``...-1``) keep it, so two runs of the
    same configuration saved in the same second still differ.
    """
    created = str(run.get("created", ""))
    when = created[5:16].replace("T", " ") if len(created) >= 16 else created
    key = str(run.get("key", ""))[:6]
    text = " · ".join(part for part in (when, key) if part)
    run_id = str(run.get("id", ""))
    tail = run_id.rsplit("-", 1)[-1] if run_id.count("-") >= 4 else ""
    if tail.isdigit():
        text += f" #{tail}"
    return text or run_id or "run"


def computed_on(run: Mapping) -> str:
    """What a run's figures were computed on, e.g. ``20 x 3-fold CV on lymphocytosis (110 labelled
    patients), mean ± sd over 60 folds``: the cohort named as the run recorded it."""
    config, cohort = run["config"], run["cohort"]
    where = "the synthetic demo cohort" if cohort["synthetic"] else cohort["name"]
    return (f"{config['repeats']} x {config['folds']}-fold CV on {where} ({cohort['n_labelled']} labelled "
            f"patients), mean ± sd over {run['summary']['n_folds']} folds")


def run_name(run: Mapping) -> str:
    """Legend name of a run: its label plus :func:`short_id` (plain text, not escaped)."""
    return f"{run.get('label', 'run')} ({short_id(run)})"


def _text(value) -> str:
    return html.escape(str(value), quote=False)


def _styled(fig: go.Figure, title: str | None, height: int = 420, **layout) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, **layout)
    if title:
        fig.update_layout(title_text=_text(title))
    return fig


def _labels_present(frame: pd.DataFrame) -> list[str]:
    present = {label_name(v) for v in frame["label"]}
    return [name for name in LABEL_COLORS if name in present]


def _label_column(frame: pd.DataFrame) -> pd.Series:
    return frame["label"].map(label_name)


# --------------------------------------------------------------------------- cohort


def gender_by_label(frame: pd.DataFrame, title: str = "Patients by gender and diagnosis") -> go.Figure:
    """Grouped bars: patient counts per gender (x), one bar per diagnosis (colour)."""
    frame = frame.assign(diagnosis=_label_column(frame),
                         gender_name=frame["gender"].map(lambda g: GENDER_NAMES.get(str(g).upper(), str(g))))
    genders = [g for g in ("Female", "Male") if g in set(frame["gender_name"])]
    genders += sorted(set(frame["gender_name"]) - set(genders))
    counts = frame.groupby(["diagnosis", "gender_name"]).size()
    fig = go.Figure()
    for name in _labels_present(frame):
        values = [int(counts.get((name, g), 0)) for g in genders]
        fig.add_trace(go.Bar(x=genders, y=values, name=name, marker_color=LABEL_COLORS[name],
                             text=values, textposition="outside", cliponaxis=False,
                             hovertemplate=f"{name}<br>%{{x}}: %{{y}} patients<extra></extra>"))
    return _styled(fig, title, barmode="group", xaxis_title="Gender", yaxis_title="Patients (count)",
                   legend_title_text="Diagnosis")


def age_vs_count(frame: pd.DataFrame, title: str = "Age and lymphocyte count") -> go.Figure:
    """Scatter of age against lymphocyte count (log axis), coloured by diagnosis."""
    frame = frame.assign(diagnosis=_label_column(frame))
    fig = go.Figure()
    for name in _labels_present(frame):
        part = frame[frame["diagnosis"] == name]
        fig.add_trace(go.Scatter(
            x=part["age"].astype(float).tolist(), y=part["lymph_count"].astype(float).tolist(),
            mode="markers", name=name, customdata=[_text(i) for i in part["id"]],
            marker=dict(color=LABEL_COLORS[name], size=9, opacity=0.85, line=dict(width=0.5, color="white")),
            hovertemplate=(f"<b>%{{customdata}}</b> ({name})<br>Age: %{{x:.1f}} years"
                           "<br>Lymphocytes: %{y:.1f} ×10⁹/L<extra></extra>")))
    _styled(fig, title, xaxis_title=AGE_UNIT, yaxis_title=COUNT_UNIT, legend_title_text="Diagnosis")
    counts = frame["lymph_count"].astype(float)
    ticks = [t for t in LOG_TICKS if counts.min() / 2 <= t <= counts.max() * 2] or list(LOG_TICKS)
    fig.update_yaxes(type="log", tickmode="array", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                     minor=dict(showgrid=False, ticks=""))
    return fig


def images_per_patient(frame: pd.DataFrame, title: str = "Images per patient") -> go.Figure:
    """Histograms of the number of images per patient, one bar per diagnosis side by side in
    shared bins, so that neither class hides the other."""
    frame = frame.assign(diagnosis=_label_column(frame))
    fig = go.Figure()
    for name in _labels_present(frame):
        part = frame[frame["diagnosis"] == name]
        fig.add_trace(go.Histogram(
            x=part["n_images"].astype(int).tolist(), name=name, bingroup="images",
            marker=dict(color=LABEL_COLORS[name], line=dict(width=0.5, color="white")),
            hovertemplate=f"{name}<br>%{{x}} images: %{{y}} patients<extra></extra>"))
    return _styled(fig, title, barmode="group", xaxis_title="Images per patient (count)",
                   yaxis_title="Patients (count)", legend_title_text="Diagnosis")


# --------------------------------------------------------------------------- results


def _folds_frame(folds) -> pd.DataFrame:
    return folds.copy() if isinstance(folds, pd.DataFrame) else pd.DataFrame(list(folds))


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1, as in ``CVResult.summary``), ignoring NaN."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float("nan")


def fold_metrics(folds, metrics: Sequence[str] = METRICS,
                 title: str = "Cross-validation metrics (mean ± std over folds)") -> go.Figure:
    """Per metric: the mean as a bar with ± std error bars, and every fold as a point.

    ``folds`` is a run's ``folds`` list (or a frame of it). The x axis is numeric
    with the metric names as tick labels, so fold points are spread sideways
    and stay visible. Std is the sample std (ddof=1), as in the run summary.
    """
    table = _folds_frame(folds)
    metrics = [m for m in metrics if m in table.columns]
    names = [metric_label(m) for m in metrics]
    stats = [_mean_std(table[m]) for m in metrics]
    means, stds = [s[0] for s in stats], [s[1] for s in stats]
    fig = go.Figure(go.Bar(
        x=list(range(len(metrics))), y=means, name="Mean ± std", width=0.6,
        marker=dict(color=NEUTRAL, opacity=0.55),
        error_y=dict(type="data", array=stds, visible=True, thickness=1.5, width=8, color=INK),
        customdata=[[n, s] for n, s in zip(names, stds)],
        hovertemplate="%{customdata[0]}<br>mean %{y:.3f} ± %{customdata[1]:.3f}<extra></extra>"))
    n = len(table)
    offsets = np.linspace(-0.2, 0.2, n) if n > 1 else np.zeros(n)
    xs, ys, info = [], [], []
    repeats = table["repeat"].tolist() if "repeat" in table else [1] * n
    fold_ids = table["fold"].tolist() if "fold" in table else list(range(1, n + 1))
    for i, (metric, name) in enumerate(zip(metrics, names)):
        for offset, value, r, f in zip(offsets, table[metric].astype(float), repeats, fold_ids):
            if np.isnan(value):
                continue
            xs.append(i + float(offset))
            ys.append(float(value))
            info.append([name, int(r), int(f)])
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", name="Fold", customdata=info,
        marker=dict(color=INK, size=7, opacity=0.8, line=dict(width=0.5, color="white")),
        hovertemplate="%{customdata[0]}<br>repeat %{customdata[1]}, fold %{customdata[2]}: %{y:.3f}"
                      "<extra></extra>"))
    _styled(fig, title, yaxis_title="Score (0–1)", xaxis_title="Metric", showlegend=True,
            legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(metrics))), ticktext=names,
                     range=[-0.6, len(metrics) - 0.4])
    fig.update_yaxes(range=[0, 1.05])
    return fig


def _count(value: float) -> str:
    """A whole count as ``12``, a mean over repeats as ``30.2``."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def confusion_matrix(matrix, title: str = "Confusion matrix") -> go.Figure:
    """Annotated heatmap of a 2 x 2 matrix ``[[tn, fp], [fn, tp]]``.

    Rows are the true class (Reactive on top, then Malignant), columns the
    predicted class. Each cell's annotation is its count and, below it, its
    share of the row (so the diagonal reads as specificity and sensitivity).
    """
    z = np.asarray(matrix, dtype=float)
    if z.shape != (2, 2):
        raise ValueError(f"expected a 2 x 2 confusion matrix, got shape {z.shape}")
    classes = ["Reactive", "Malignant"]
    rows = z.sum(axis=1, keepdims=True)
    share = np.divide(z, rows, out=np.zeros_like(z), where=rows > 0)
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=classes, y=classes, colorscale="Blues", showscale=False, zmin=0,
        zmax=max(float(z.max()), 1.0), xgap=2, ygap=2, customdata=share.tolist(),
        hovertemplate="True %{y}, predicted %{x}: %{z:.4~g} (%{customdata:.0%} of true %{y})<extra></extra>"))
    peak = max(float(z.max()), 1.0)
    for i, true in enumerate(classes):
        for j, predicted in enumerate(classes):
            fig.add_annotation(
                x=predicted, y=true, showarrow=False,
                text=f"<b>{_count(z[i, j])}</b><br><span style='font-size:12px'>{share[i, j]:.0%}</span>",
                font=dict(size=20, color="white" if z[i, j] > 0.55 * peak else INK))
    _styled(fig, title, height=380, xaxis_title="Predicted", yaxis_title="True",
            margin=dict(l=90, r=20, t=70, b=60))
    fig.update_xaxes(side="bottom", showline=False, ticks="", showgrid=False)
    fig.update_yaxes(autorange="reversed", showline=False, ticks="", showgrid=False,
                     scaleanchor="x", constrain="domain")
    return fig


def _oof_frame(oof) -> pd.DataFrame:
    frame = oof.copy() if isinstance(oof, pd.DataFrame) else pd.DataFrame(dict(oof))
    if "repeat" not in frame:
        frame["repeat"] = 1
    return frame


def _auc(fpr, tpr) -> float:
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def roc_curves(oof, marker: tuple[float, float] | None = None,
               title: str = "ROC curve (pooled out-of-fold)") -> go.Figure:
    """One pooled out-of-fold ROC curve per repeat, the chance diagonal, and an optional
    operating point ``marker=(fpr, tpr)``.

    ``oof`` is a run's ``oof`` dict of lists (or a frame of it). A repeat whose
    patients all share one class has no ROC curve and is left out.
    """
    frame = _oof_frame(oof)
    repeats = sorted(frame["repeat"].unique())
    fig = go.Figure()
    aucs = []
    for index, repeat in enumerate(repeats):
        part = frame[frame["repeat"] == repeat]
        if part["y_true"].nunique() < 2:
            continue
        points = roc_points(part["y_true"].astype(int), part["probability"].astype(float))
        auc = _auc(points["fpr"], points["tpr"])
        aucs.append(auc)
        thresholds = [min(t, 1.0) for t in points["thresholds"]]
        name = f"Repeat {int(repeat)} (AUC {auc:.3f})" if len(repeats) > 1 else f"AUC {auc:.3f}"
        fig.add_trace(go.Scatter(
            x=points["fpr"], y=points["tpr"], mode="lines", name=name, customdata=thresholds,
            line=dict(width=1.5 if len(repeats) > 1 else 2.5, shape="hv",
                      color=SERIES_COLORS[index % len(SERIES_COLORS)]),
            opacity=0.8 if len(repeats) > 1 else 1.0,
            hovertemplate="FPR %{x:.2f}, TPR %{y:.2f}<br>threshold %{customdata:.3f}<extra>"
                          + _text(name) + "</extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Chance",
                             line=dict(dash="dash", color="#9CA3AF", width=1.2), hoverinfo="skip"))
    if marker is not None:
        fpr, tpr = (float(v) for v in marker)
        fig.add_trace(go.Scatter(
            x=[fpr], y=[tpr], mode="markers", name="Operating point",
            marker=dict(symbol="x", size=14, color=LABEL_COLORS["Malignant"], line=dict(width=2)),
            hovertemplate="Operating point<br>FPR %{x:.2f}, sensitivity %{y:.2f}<extra></extra>"))
    if aucs and len(aucs) > 1:
        title = f"{title} — AUC {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f} over {len(aucs)} repeats"
    _styled(fig, title, height=460, xaxis_title="False positive rate (1 − specificity)",
            yaxis_title="True positive rate (sensitivity)",
            legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom", font=dict(size=12)))
    fig.update_xaxes(range=[-0.01, 1.01], constrain="domain", showgrid=True, gridcolor="#E5E7EB")
    fig.update_yaxes(range=[-0.01, 1.01], scaleanchor="x", constrain="domain")
    return fig


def reliability_diagram(reliability: Mapping, title: str = "Do the probabilities mean what they say?") -> go.Figure:
    """:func:`lympho.evaluation.reliability` drawn: per group of patients, the fraction that
    were malignant (with its interval) against their mean out-of-fold probability; on the
    diagonal, a probability would be the frequency of malignancy."""
    table, brier = reliability["table"], reliability["brier"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Calibrated",
                             line=dict(dash="dash", color="#9CA3AF", width=1.2), hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=table["mean_probability"], y=table["fraction"], mode="markers+lines", name="Patients, grouped",
        marker=dict(size=10, color=LABEL_COLORS["Malignant"]), line=dict(width=1, color=LABEL_COLORS["Malignant"]),
        error_y=dict(type="data", symmetric=False, array=table["high"] - table["fraction"],
                     arrayminus=table["fraction"] - table["low"], thickness=1.2),
        customdata=np.column_stack([table["malignant"], table["n"], table["low"], table["high"]]),
        hovertemplate="mean probability %{x:.2f}<br>%{customdata[0]} of %{customdata[1]} malignant (%{y:.0%}; "
                      "CI %{customdata[2]:.0%}–%{customdata[3]:.0%})<extra></extra>"))
    title = (f"{title} — Brier score {brier['mean']:.3f} ± {brier['std']:.3f} over {brier['repeats']} repeat(s)"
             if brier["repeats"] > 1 else f"{title} — Brier score {brier['mean']:.3f}")
    _styled(fig, title, height=420, xaxis_title="Out-of-fold probability of malignancy (mean of the group)",
            yaxis_title="Fraction malignant", showlegend=False)
    fig.update_xaxes(range=[-0.01, 1.01], showgrid=True, gridcolor="#E5E7EB")
    fig.update_yaxes(range=[-0.01, 1.01], tickformat=".0%")
    return fig


def _grouped_bars(groups: list[tuple[str, str, dict[str, tuple[float, float]]]], metrics: Sequence[str],
                  title: str, legend_title: str) -> go.Figure:
    """``groups``: (name, colour, {metric: (mean, std)}) per bar group."""
    names = [metric_label(m) for m in metrics]
    fig = go.Figure()
    for name, color, stats in groups:
        means = [stats[m][0] for m in metrics]
        stds = [stats[m][1] for m in metrics]
        fig.add_trace(go.Bar(
            x=names, y=means, name=_text(name), marker_color=color,
            error_y=dict(type="data", array=stds, visible=True, thickness=1.3, width=5, color=INK),
            customdata=stds,
            hovertemplate="%{x}: %{y:.3f} ± %{customdata:.3f}<extra>" + _text(name) + "</extra>"))
    _styled(fig, title, height=460 + 22 * max(0, len(groups) - 3), barmode="group", xaxis_title="Metric",
            yaxis_title="Score (0–1), mean ± std", legend_title_text=_text(legend_title),
            legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left"))
    fig.update_yaxes(range=[0, 1.05])
    return fig


def _table_configs(table: pd.DataFrame) -> dict[str, dict]:
    """Configuration name -> its config fields (the ``config.*`` columns of an ablation table)."""
    fields = [c for c in table.columns if c.startswith("config.")]
    first = table.drop_duplicates("configuration")
    return {row["configuration"]: {f[len("config."):]: row[f] for f in fields} for _, row in first.iterrows()}


def ablation_bars(table: pd.DataFrame, metrics: Sequence[str] = ABLATION_METRICS,
                  title: str = "Ablation (mean ± std over folds)") -> go.Figure:
    """Grouped bars from :func:`lympho.experiment.ablation_table`: x = metric, colour =
    the configuration's own colour, height = mean over folds, error bar = std over folds (ddof=1)."""
    configs = _table_configs(table)
    groups = []
    for name in pd.unique(table["configuration"]):
        part = table[table["configuration"] == name]
        groups.append((str(name), config_color(configs.get(name, {"name": name})),
                       {m: _mean_std(part[m]) for m in metrics}))
    return _grouped_bars(groups, metrics, title, "Configuration")


def compare_runs(runs: Sequence[Mapping], metrics: Sequence[str] = METRICS,
                 title: str = "Runs compared (mean ± sd over folds)") -> go.Figure:
    """Grouped bars of each metric's mean ± std per run, from the runs' summaries, each in
    its configuration's colour. Legend names are :func:`run_name` (label + short id), made
    unique if needed."""
    groups, seen = [], {}
    for run in runs:
        name = run_name(run)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} [{seen[name]}]"
        summary = run["summary"]
        groups.append((name, config_color(run.get("config", {})),
                       {m: (float(summary[m]["mean"]), float(summary[m]["std"])) for m in metrics}))
    return _grouped_bars(groups, metrics, title, "Run")


def roc_overlay(runs: Sequence[Mapping], title: str = "ROC, out-of-fold (repeats pooled)"
                ) -> go.Figure:
    """One out-of-fold ROC curve per run (its repeats pooled), in its configuration's colour,
    AUC in the legend; runs of one configuration differ by dash."""
    fig = go.Figure()
    dashes, used = ("solid", "dash", "dot", "dashdot"), {}
    for run in runs:
        frame = _oof_frame(run["oof"])
        if frame["y_true"].nunique() < 2:
            continue
        points = roc_points(frame["y_true"].astype(int), frame["probability"].astype(float))
        color = config_color(run.get("config", {}))
        used[color] = used.get(color, -1) + 1
        name = f"{run_name(run)} · AUC {_auc(points['fpr'], points['tpr']):.3f}"
        fig.add_trace(go.Scatter(
            x=points["fpr"], y=points["tpr"], mode="lines", name=_text(name),
            line=dict(width=2.2, shape="hv", color=color, dash=dashes[used[color] % len(dashes)]),
            hovertemplate="FPR %{x:.2f}, TPR %{y:.2f}<extra>" + _text(run_name(run)) + "</extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Chance",
                             line=dict(dash="dash", color="#9CA3AF", width=1.2), hoverinfo="skip"))
    _styled(fig, title, height=480, xaxis_title="False positive rate (1 − specificity)",
            yaxis_title="True positive rate (sensitivity)",
            legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, xanchor="left", font=dict(size=12)))
    fig.update_xaxes(range=[-0.01, 1.01], constrain="domain", showgrid=True, gridcolor="#E5E7EB")
    fig.update_yaxes(range=[-0.01, 1.01], scaleanchor="x", constrain="domain")
    return fig


def benchmark_comparison(rows: Sequence[Mapping], title: str = "Balanced accuracy against published results"
                         ) -> go.Figure:
    """A dot per result with its interval as a bar: ``rows`` of ``name, value, low, high,
    note, ours`` (low/high may be None). Ours are drawn in ink, published ones in grey."""
    fig = go.Figure()
    for ours in (False, True):
        part = [r for r in rows if bool(r.get("ours")) == ours]
        if not part:
            continue
        low = [r["value"] - r["low"] if r.get("low") is not None else 0 for r in part]
        high = [r["high"] - r["value"] if r.get("high") is not None else 0 for r in part]
        fig.add_trace(go.Scatter(
            x=[r["value"] for r in part], y=[_text(r["name"]) for r in part], mode="markers+text",
            name="This tool" if ours else "Published", text=[f"{r['value']:.3f}" for r in part],
            textposition="top center", customdata=[_text(r.get("note", "")) for r in part],
            marker=dict(size=13, color=INK if ours else "#9CA3AF", symbol="diamond" if ours else "circle"),
            error_x=dict(type="data", symmetric=False, array=high, arrayminus=low, thickness=2, width=6,
                         color=INK if ours else "#9CA3AF"),
            hovertemplate="%{y}: %{x:.3f}<br>%{customdata}<extra></extra>"))
    _styled(fig, title, height=120 + 44 * len(rows), xaxis_title="Balanced accuracy",
            margin=dict(l=20, r=30, t=60, b=50), legend=dict(orientation="h", y=1.02, x=1, xanchor="right",
                                                            yanchor="bottom"))
    fig.update_xaxes(range=[0.5, 1.0], showgrid=True, gridcolor="#E5E7EB")
    fig.update_yaxes(autorange="reversed", showgrid=False)
    return fig


# --------------------------------------------------------------------------- cells

#: Outline colours of the segmentation overlay (RGB).
NUCLEUS_OUTLINE = (230, 0, 126)
CELL_OUTLINE = (0, 200, 255)


def cell_segmentation(masks: Mapping, title: str = "Segmentation used by the morphology encoder") -> go.Figure:
    """The cell crop beside the same crop with its nucleus (magenta) and cell (cyan) outlines,
    from :func:`lympho.encoders.morphology.masks`, so a user can judge the segmentation."""
    image = np.asarray(masks["image"], dtype=np.uint8)
    overlay = image.copy()
    for name, color in (("cell_outline", CELL_OUTLINE), ("nucleus_outline", NUCLEUS_OUTLINE)):
        outline = np.asarray(masks[name], dtype=bool)
        thick = outline | np.roll(outline, 1, 0) | np.roll(outline, 1, 1)  # 2 px, visible when scaled
        overlay[thick] = color
    fig = go.Figure()
    fig.add_trace(go.Image(z=np.concatenate([image, np.full((image.shape[0], 8, 3), 255, np.uint8), overlay],
                                            axis=1), hoverinfo="skip"))
    note = "segmentation FAILED: the encoder flags this cell" if masks.get("failed") else \
        "magenta: nucleus, cyan: cell"
    _styled(fig, f"{title} ({note})", height=360, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(visible=False, showline=False)
    fig.update_yaxes(visible=False, showline=False, scaleanchor="x")
    return fig


# --------------------------------------------------------------------------- the ssl encoder

def pretraining_loss(losses: Sequence[float], epochs: int | None = None,
                     title: str = "Self-supervised pretraining: contrastive loss per epoch") -> go.Figure:
    """The mean SimCLR loss of each epoch so far (lower: the two views of a cell are told
    apart from the other cells more easily); the x axis spans ``epochs`` when known."""
    fig = go.Figure(go.Scatter(x=np.arange(1, len(losses) + 1), y=list(losses), mode="lines+markers",
                               line=dict(color=NEUTRAL), hovertemplate="epoch %{x}: loss %{y:.3f}<extra></extra>"))
    _styled(fig, title, height=320, margin=dict(l=60, r=20, t=50, b=50))
    fig.update_xaxes(title_text="Epoch", range=[0.5, max(epochs or 0, len(losses), 1) + 0.5])
    fig.update_yaxes(title_text="NT-Xent loss")
    return fig


def census_shares(shares: pd.DataFrame, patient: str | None = None,
                  title: str = "Cell census: share of each cluster among a patient's cells") -> go.Figure:
    """Per cluster, the mean share of reactive and of malignant patients' cells (bars), and
    with ``patient`` (a column of ``shares``) that patient's own share (black markers)."""
    clusters = [f"C{c}" for c in shares["cluster"]]
    fig = go.Figure()
    for name in ("Reactive", "Malignant"):
        fig.add_trace(go.Bar(x=clusters, y=shares[name], name=f"{name} patients (mean)",
                             marker_color=LABEL_COLORS[name],
                             hovertemplate=f"%{{x}}: %{{y:.1%}} of a {name.lower()} patient's cells<extra></extra>"))
    if patient is not None:
        fig.add_trace(go.Scatter(x=clusters, y=shares[patient], name=_text(patient), mode="markers",
                                 marker=dict(color=INK, size=11, symbol="diamond"),
                                 hovertemplate="%{x}: %{y:.1%} of this patient's cells<extra></extra>"))
    _styled(fig, title, height=380, barmode="group", margin=dict(l=60, r=20, t=50, b=50))
    fig.update_xaxes(title_text="Cluster of cells (learned space)")
    fig.update_yaxes(title_text="Share of the patient's cells", tickformat=".0%")
    return fig

"""Text from CSVs, folder names and uploads is shown as text: in HTML reports, on pages, and
in CSV exports (no cell that a spreadsheet would run as a formula)."""

import ast
import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from lympho import reports

HOSTILE = "<img src=x onerror=alert(1)>"
REPO = Path(__file__).resolve().parents[1]


class Elements(HTMLParser):
    """Every element's tag and attributes, and all the text, of an HTML document."""

    def __init__(self, document: str):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(document)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_shown_as_text(document: str) -> None:
    parsed = Elements(document)
    assert not [a for tag, a in parsed.tags if "onerror" in a], "an injected element was parsed as HTML"
    assert not [a for tag, a in parsed.tags if tag == "img" and a.get("src") == "x"]
    assert any(HOSTILE in text for text in parsed.text), "the hostile text is not shown as text"
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", document, flags=re.S)
    assert not any("</script" in body.lower() or HOSTILE in body for body in scripts)


def hostile_run(run_id: str) -> dict:
    metrics = {m: {"mean": 0.8, "std": 0.1} for m in reports.METRICS}
    folds = [{"repeat": 1, "fold": f, **{m: 0.8 for m in reports.METRICS}, "confusion_matrix": [[3, 1], [1, 5]],
              "n_train": 7, "n_test": 10} for f in (1, 2)]
    return {"id": run_id, "label": f"MLP, clinical {HOSTILE}", "key": "abc", "created": "2026-01-01T00:00:00",
            "cohort": {"name": f"/data/{HOSTILE}</script><script>alert(2)</script>", "synthetic": False,
                       "n_labelled": 20},
            "config": {"features": "clinical", "note": HOSTILE}, "folds": folds,
            "summary": {**metrics, "n_folds": 2, "confusion_matrix_pooled": [[6, 2], [2, 10]]},
            "oof": {"y_true": [0, 1, 1, 0], "probability": [0.2, 0.9, 0.6, 0.4], "id": [HOSTILE, "b", "c", "d"]}}


def test_runs_report_shows_hostile_text_as_text():
    assert_shown_as_text(reports.runs_report_html([hostile_run(HOSTILE), hostile_run("r2")], title=HOSTILE))


def test_patient_report_shows_hostile_text_as_text():
    result = {"id": HOSTILE, "probability": 0.7, "threshold": 0.5, "n_images": 3, "model": HOSTILE,
              "gender": HOSTILE, "age": 70, "lymph_count": 12.0}
    assert_shown_as_text(reports.patient_report_html(result))


#: Values a page may interpolate into HTML that Streamlit does not escape, besides variables
#: assigned from ``html.escape``: each returns text of a fixed form (checked below).
SAFE_IN_HTML = {"config_color"}


def escaped_names(tree: ast.AST) -> set[str]:
    """Variables assigned from ``html.escape(...)``: safe to interpolate."""
    return {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "attr", None) == "escape"
            for target in node.targets if isinstance(target, ast.Name)}


def raw_html_calls(source: Path):
    """(line, names interpolated but not escaped) of every call with ``unsafe_allow_html=True``
    or ``st.html``, and whether its arguments are literal strings or f-strings."""
    tree = ast.parse(source.read_text())
    safe = SAFE_IN_HTML | escaped_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        unsafe = any(k.arg == "unsafe_allow_html" and getattr(k.value, "value", False) is True for k in node.keywords)
        html_call = isinstance(node.func, ast.Attribute) and node.func.attr == "html"
        if unsafe or html_call:
            values = [v.value for a in node.args for v in ast.walk(a) if isinstance(v, ast.FormattedValue)]
            names = {getattr(v.func, "attr", getattr(v.func, "id", "?")) if isinstance(v, ast.Call) else ast.unparse(v)
                     for v in values}
            yield node.lineno, names - safe, all(isinstance(a, (ast.Constant, ast.JoinedStr)) for a in node.args)


def test_pages_put_no_user_text_into_raw_html():
    """Streamlit escapes HTML in markdown unless told otherwise; where a page tells it
    otherwise, only values of a fixed form may be interpolated."""
    for source in [REPO / "app.py", *sorted((REPO / "app_pages").glob("*.py"))]:
        for line, names, literal in raw_html_calls(source):
            assert literal and not names, f"{source.name}:{line} puts {names} into raw HTML unescaped"


def test_configuration_colours_are_fixed_form_even_for_hostile_configs():
    from lympho import figures

    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", figures.config_color({"classifier": HOSTILE, "features": HOSTILE}))


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_csv_exports_neutralise_formulas_but_keep_numbers():
    frame = pd.DataFrame({"id": ["=HYPERLINK(\"http://x\")", "+1+1", "@SUM(A1)", "-2+3", "\t=1", "007", "-1.5",
                                 "plain"],
                          "value": [1.0, -2.0, 3.0, 4.0, 5.0, 6.0, -7.5, 8.0]})
    rows = cells(reports.csv_text(frame))
    assert rows[0] == ["id", "value"]
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"http://x\")", "'+1+1", "'@SUM(A1)", "'-2+3", "'\t=1", "007",
                                        "-1.5", "plain"]
    assert [r[1] for r in rows[1:3]] == ["1.0", "-2.0"]  # negative numbers stay numbers
    assert cells(reports.csv_text(pd.DataFrame({"=cmd": [1]})))[0] == ["'=cmd"]


def test_submission_and_runs_csv_are_neutralised():
    predictions = pd.DataFrame({"id": ["=1+2", "007"], "probability": [0.9, 0.1], "prediction": [1, 0]})
    assert cells(reports.submission_csv(predictions))[1:] == [["'=1+2", "1"], ["007", "0"]]
    table = reports.runs_table([hostile_run("=evil()")])
    assert cells(reports.csv_text(table))[1][0] == "'=evil()"

"""The dashboard shell: it starts on the demo cohort and on a real one, and reports bad input."""

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lympho.reference import recommended_promise

REPO = Path(__file__).resolve().parents[1]


def start(monkeypatch, data=None) -> AppTest:
    if data is not None:
        monkeypatch.setenv("LYMPHO_DATA", str(data))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    app.run()
    deadline = time.time() + 120
    while app.session_state["cohort"] is None and "cohort_pending" in app.session_state and time.time() < deadline:
        time.sleep(0.3)  # the demo cohort is generated in the background on first use
        app.run()
    assert not app.exception
    return app


def test_demo_cohort_is_the_default_and_marked(monkeypatch):
    first = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    first.run()  # the overview opens at once, before the demo cohort exists
    assert not first.exception and "Reactive or malignant lymphocytosis?" in first.title[0].value
    assert "being generated" in first.info[0].value
    app = start(monkeypatch)
    assert any("SYNTHETIC DEMO COHORT" in w.value for w in app.sidebar.warning)
    assert app.metric[0].value == "48"  # labelled patients, on the overview
    promise = recommended_promise()["operating_point"]["estimate"]["metrics"]["balanced_accuracy"]
    shown = " ".join(m.value for m in app.markdown)
    figure = f"**{promise['estimate']:.3f}** ({promise['low']:.2f}–{promise['high']:.2f})"
    assert shown.count(figure) == 1  # the promise, once, first, and named as such
    assert shown.index("**What a new patient gets** (the promise)") < shown.index(figure)
    assert "Where it is weakest" in shown


def test_real_cohort_from_lympho_data(monkeypatch, real_data):
    app = start(monkeypatch, real_data)
    assert [m.value for m in app.metric] == ["110", "9,746"]
    assert not app.sidebar.warning


def test_bad_directory_is_a_clear_message(monkeypatch, tmp_path):
    app = start(monkeypatch, tmp_path / "missing")
    assert "data directory not found" in app.sidebar.error[0].value
    assert any("Choose a data directory" in i.value for i in app.info)


def test_typed_directory_is_loaded_and_remembered(monkeypatch, real_data, isolated_cache):
    from lympho.data import remembered_data_dirs

    app = start(monkeypatch)
    app.selectbox(key="cohort_choice").set_value("Another directory…").run()
    app.text_input(key="data_dir").input(str(real_data)).run()
    assert not app.exception
    assert [m.value for m in app.metric] == ["110", "9,746"]
    assert remembered_data_dirs(isolated_cache) == [str(real_data)]
    again = start(monkeypatch)  # a new session offers it
    assert str(real_data) in again.selectbox(key="cohort_choice").options

"""The dashboard shell: it starts on the demo cohort and on a real one, and reports bad input."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]


def start(monkeypatch, data=None) -> AppTest:
    if data is not None:
        monkeypatch.setenv("LYMPHO_DATA", str(data))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    app.run()
    assert not app.exception
    return app


def test_demo_cohort_is_the_default_and_marked(monkeypatch):
    app = start(monkeypatch)
    assert any("SYNTHETIC DEMO COHORT" in w.value for w in app.sidebar.warning)
    assert app.metric[0].value == "56"


def test_real_cohort_from_lympho_data(monkeypatch, real_data):
    app = start(monkeypatch, real_data)
    assert [m.value for m in app.metric] == ["120", "76 / 34", "10", "9746"]
    assert not app.sidebar.warning


def test_bad_directory_is_a_clear_message(monkeypatch, tmp_path):
    app = start(monkeypatch, tmp_path / "missing")
    assert "data directory not found" in app.sidebar.error[0].value
    assert any("Choose a data directory" in i.value for i in app.info)

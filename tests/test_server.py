"""A team on one server: localhost by default, a login when authentication is configured,
and a cache that cannot be written is one clear line."""

import tomllib
from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "lympho", "client_secret": "secret",
        "server_metadata_url": "https://login.example.org/.well-known/openid-configuration"}


def test_the_dashboard_listens_on_localhost_by_default():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"


def test_with_authentication_configured_nothing_shows_before_login():
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    app.secrets["auth"] = AUTH
    app.run()
    assert not app.exception
    assert [b.label for b in app.button] == ["Log in"]
    assert "log in to continue" in app.info[0].value
    assert not app.sidebar.selectbox and not app.metric  # no cohort picker, no patient data


def test_without_authentication_the_local_dashboard_opens():
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception and "Log in" not in [b.label for b in app.button]
    assert app.sidebar.selectbox[0].label == "Cohort"


def test_an_unwritable_cache_is_one_line_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LYMPHO_CACHE", str(blocker / "cache"))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception
    assert app.sidebar.error[0].value.startswith(f"cache directory {blocker / 'cache'}: cannot be written")

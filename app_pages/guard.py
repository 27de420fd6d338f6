"""Who may use the dashboard, and where it may write: checked before any page runs.

The dashboard shows patient data. It listens on 127.0.0.1 unless told otherwise
(``.streamlit/config.toml``); served to a network (``make serve``), it must sit behind a
login: with an ``[auth]`` section in ``.streamlit/secrets.toml`` (an OpenID Connect
provider, see the README), every session must log in with ``st.login`` before it sees
anything.
"""

from pathlib import Path

import streamlit as st

from lympho.data import CacheError, default_cache_dir, usable_cache_dir


def auth_configured() -> bool:
    """An ``[auth]`` section in the secrets (a file, or set programmatically by tests)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: Streamlit raises its own error type
        return False


def require_login() -> None:
    """With authentication configured: stop here until the session has logged in; then
    show who is logged in, with a way out. Without it: nothing (a localhost dashboard)."""
    if not auth_configured():
        return
    if not st.user.get("is_logged_in"):
        st.title("lympho")
        st.info("This dashboard shows patient data: log in to continue.")
        st.button("Log in", type="primary", on_click=st.login)
        st.stop()
    with st.sidebar:
        st.caption(f"Logged in as {st.user.get('email') or st.user.get('name') or 'user'}")
        st.button("Log out", on_click=st.logout)


def usable_cache_or_stop() -> Path:
    """The cache directory, created and writable; else one line naming it, and stop."""
    try:
        return usable_cache_dir(default_cache_dir())
    except CacheError as err:
        st.error(str(err))
        st.stop()

# `make run` starts the dashboard, `make test` runs the tests; both (re)build .venv
# from requirements.txt first when it is missing or older than requirements.txt.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-requirements

.PHONY: run serve test bench

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m streamlit run app.py

# The dashboard for a team: every network interface (ADDRESS, PORT), and only behind a login
# (an [auth] section in .streamlit/secrets.toml; see .streamlit/secrets.toml.example and the README).
ADDRESS ?= 0.0.0.0
PORT ?= 8501
serve: $(STAMP)
	@grep -qs '^\[auth\]' .streamlit/secrets.toml || { echo "make serve: no [auth] section in .streamlit/secrets.toml: the dashboard shows patient data and is served to a network only behind a login (see the README, Limits and security). For this machine only: make run" >&2; exit 2; }
	$(VENV)/bin/python -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/extraction.py
	$(VENV)/bin/python benchmarks/evaluation.py
	$(VENV)/bin/python benchmarks/dashboard.py

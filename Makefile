# `make run` starts the dashboard, `make test` runs the tests; both (re)build .venv
# from requirements.txt first when it is missing or older than requirements.txt.
# `make test` also installs the optional Ray engine (requirements-ray.txt), which it tests.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-requirements
RAY_STAMP := $(VENV)/.installed-requirements-ray

.PHONY: run serve test bench

$(STAMP): requirements.txt
	@echo "== Installing the Python environment into $(VENV) from requirements.txt: once (and again when"
	@echo "== requirements.txt changes), several GB (torch, scikit-learn, XGBoost, Streamlit), a few minutes."
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	touch $(STAMP)

$(RAY_STAMP): requirements-ray.txt $(STAMP)
	@echo "== Installing the optional Ray engine (requirements-ray.txt) into $(VENV), once."
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-ray.txt
	touch $(RAY_STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m streamlit run app.py

# The dashboard for a team: every network interface (ADDRESS, PORT), and only behind a login
# (an [auth] section in .streamlit/secrets.toml; see .streamlit/secrets.toml.example and the README).
ADDRESS ?= 0.0.0.0
PORT ?= 8501
serve: $(STAMP)
	@grep -qs '^\[auth\]' .streamlit/secrets.toml || { echo "make serve: no [auth] section in .streamlit/secrets.toml: the dashboard shows patient data and is served to a network only behind a login (see the README, Limits and security). For this machine only: make run" >&2; exit 2; }
	$(VENV)/bin/python -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: $(STAMP) $(RAY_STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/extraction.py
	$(VENV)/bin/python benchmarks/evaluation.py
	$(VENV)/bin/python benchmarks/dashboard.py

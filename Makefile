# `make run` starts the dashboard, `make test` runs the tests; both (re)build .venv
# from requirements.txt first when it is missing or older than requirements.txt.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-requirements

.PHONY: run test bench

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m streamlit run app.py

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/extraction.py
	$(VENV)/bin/python benchmarks/evaluation.py
	$(VENV)/bin/python benchmarks/dashboard.py

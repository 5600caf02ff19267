# Two commands do all set-up (see README.md):
#   make demo   install if needed, then run the whole pipeline on built-in synthetic data
#   make test   install if needed, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hemwsl-installed
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-slow

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m hemwsl demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

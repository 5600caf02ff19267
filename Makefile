# Two commands do all set-up (see README.md):
#   make demo   install if needed, then run the whole pipeline on built-in synthetic data
#   make test   install if needed, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hemwsl-installed
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-deploy

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The demo's figures depend on the CPU kernels (AVX-512 or AVX2) and the thread count: tiny data and a few epochs
# amplify the last bits of a sum. Pinned here, they are the same on every x86-64 machine with AVX2 (docs/reliability.md)
DEMO_ENV ?= ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

demo: $(STAMP)
	$(DEMO_ENV) $(PY) -m hemwsl demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

# The MONAI Deploy application needs the App SDK (about 560 MB with holoscan): a venv of its own
DEPLOY_VENV ?= .venv-deploy
$(DEPLOY_VENV)/.hemwsl-installed: requirements.txt deploy/requirements.txt pyproject.toml
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r deploy/requirements.txt
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

test-deploy: $(DEPLOY_VENV)/.hemwsl-installed
	$(DEPLOY_VENV)/bin/python -m pytest tests/test_deploy.py tests/test_predict.py $(PYTEST_ARGS)

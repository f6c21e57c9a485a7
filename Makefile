# skillgraft — `make demo` runs the retraining loop on the embedded defaults; `make test` runs the test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skillgraft-installed

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW := ignore
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

# Versions known to resolve together on a CPU-only Python 3.11 machine (pyproject.toml keeps the ranges open).
PINS := prefect==3.8.8 fastapi==0.150.0 "sqlalchemy<2.1" boto3==1.43.117 s3fs==2026.9.0 prefect-aws==0.7.12

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the CPU build of 2.13.0 when no torch is present (an open range would fetch a CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,gguf,s3,lm-eval]" $(PINS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/skillgraft demo

# The step after `make demo`: a local Prefect server (UI at http://127.0.0.1:4200) serving the retrain and watch
# deployments of the demo model; Ctrl-C stops both. See docs/OPERATIONS.md.
.PHONY: server
server: $(STAMP)
	$(VENV)/bin/skillgraft server

# Two workers: most tests run torch on one thread or wait on a subprocess, so the second core would idle. Each module
# stays on one worker (tests/conftest.py); `make test PYTEST_WORKERS=0` runs everything in this process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS))

# ruff's linter and formatter (configured in pyproject.toml); .ci/run runs this before the tests. `make format` fixes.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: format
format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/recipes_demo.py

clean:
	rm -rf .skillgraft .prefect

# Entry points for a fresh machine: `make run`, `make test`, `make lint` (and `make format` to fix what it can).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

# stage commands in dvc.yaml call `python`: make it the project's interpreter
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW := ignore

.PHONY: run test lint format claims install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP) $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

## run: set up, then regenerate every result of the default configuration with DVC, then run the promotion
## gate (registers each loss's model; the first becomes champion; a rerun of an unchanged model registers nothing)
run: $(STAMP)
	$(BIN)/dvc config core.analytics false --local
	$(BIN)/dvc repro
	$(BIN)/nhl promote

## claims: set up, then run the claims experiment of params/claims.yaml -> reports/claims.md (hours;
## finished cells are reused). CLAIMS_ARGS passes options, e.g. CLAIMS_ARGS=--quick or CLAIMS_ARGS=--dry-run
claims: $(STAMP)
	$(BIN)/dvc config core.analytics false --local
	$(BIN)/python pipelines/claims.py --params params/claims.yaml $(CLAIMS_ARGS)

## test: set up with the dev extra, then run the test suite with line and branch coverage of nhl/ and
## pipelines/ (stages run in subprocesses included); fails under the floor (fail_under in pyproject.toml).
## TEST_WORKERS pytest-xdist processes (one torch thread each, tests/conftest.py); each test file runs
## whole on one worker, so a module's fixtures are built once
TEST_WORKERS ?= 2
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --cov --cov-report=term

## lint: ruff's checks, ruff's format check and mypy (rules in pyproject.toml); changes nothing
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## format: apply ruff's safe autofixes (imports, pyupgrade, ...) then ruff's formatter, in place
format: $(DEV_STAMP)
	$(BIN)/ruff check --fix-only --exit-zero .
	$(BIN)/ruff format .

clean:
	rm -rf data models metrics dvc_plots mlruns.db mlartifacts .prefect .coverage .coverage.*

# The two commands of the README:
#   make run    the demo: the three services in one process on the embedded bus and SQLite, with
#               simulated HubSpot and Salesforce traffic and the live funnel
#   make test   everything CI runs: lint, types, and the whole suite against real Kafka,
#               PostgreSQL and Prometheus (installed and started as needed)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test lint schemas

$(BIN)/python:
	@echo "==> creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar off -q --upgrade pip

# strict editable mode links the files into a package tree, so mypy sees onefunnel.* as installed
install: $(BIN)/python
	@echo "==> installing onefunnel into $(VENV)"
	$(BIN)/pip install --progress-bar off -e . --config-settings editable_mode=strict

install-test: $(BIN)/python
	@echo "==> installing onefunnel and its test tools into $(VENV)"
	$(BIN)/pip install --progress-bar off -e '.[test]' --config-settings editable_mode=strict

run: install
	$(BIN)/onefunnel demo

lint:
	@echo "==> ruff and mypy"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install-test
	bash deploy/test-env/setup.sh
	$(MAKE) --no-print-directory lint
	@echo "==> pytest (starts Kafka, PostgreSQL and Prometheus itself)"
	$(BIN)/pytest $(PYTEST_ARGS)

schemas: install
	$(BIN)/onefunnel schemas

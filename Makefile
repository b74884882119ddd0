# Guangmang — the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test unit contract integration e2e lint generate bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## make run: the whole system in one process (SQLite, in-memory bus), gateway on http://127.0.0.1:8000
run: install
	$(BIN)/python -m system.embedded

## make test: import contracts, generated files, then unit, contract, integration and e2e tests
test: lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check shared services system tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m shared.asyncapi --check
	$(BIN)/python -m system.rabbitmq_definitions --check

unit: install
	$(BIN)/pytest tests/unit

contract: install
	$(BIN)/pytest tests/contract

integration: install
	$(BIN)/pytest tests/integration

e2e: install
	$(BIN)/pytest tests/e2e

## make generate: rewrite docs/asyncapi.json and deploy/rabbitmq/definitions.json from the code
generate: install
	$(BIN)/python -m shared.asyncapi
	$(BIN)/python -m system.rabbitmq_definitions

## make bench: events/s through the whole pipeline vs raw kombu and raw PostgreSQL baselines
bench: install
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.pipeline --producers 2

clean:
	rm -rf var .pytest_cache

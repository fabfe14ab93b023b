# The two commands: `make up` starts the whole system locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Loads docker-compose.yml as Docker Compose does, offline (Go modules from the Go proxy).
COMPOSE_CHECK := .local/tools/compose-check

.PHONY: up down clean status test lint typecheck bench install

$(STAMP): pyproject.toml
	deploy/system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(COMPOSE_CHECK): deploy/compose-check/main.go deploy/compose-check/go.mod deploy/compose-check/go.sum
	cd deploy/compose-check && go build -o $(abspath $(COMPOSE_CHECK)) .

up: $(STAMP)
	$(BIN)/python deploy/stack.py up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python deploy/stack.py down; else $(PYTHON) deploy/stack.py down; fi

clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python deploy/stack.py clean; else $(PYTHON) deploy/stack.py clean; fi

status: $(STAMP)
	$(BIN)/python deploy/stack.py status

# The suite starts its own PostgreSQL and Kafka on free ports, so it runs beside `make up`.
test: $(STAMP) $(COMPOSE_CHECK)
	deploy/system-packages --tests
	$(BIN)/python -c "import deploy.stack as s; s.ensure_kafka_jars()"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint deploy/Dockerfile
	LEDGER_COMPOSE_CHECK=$(COMPOSE_CHECK) $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

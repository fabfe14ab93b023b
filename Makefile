# The two commands: `make up` starts the whole system locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up down clean status test lint typecheck bench install

$(STAMP): pyproject.toml
	deploy/system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/python deploy/stack.py up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python deploy/stack.py down; else $(PYTHON) deploy/stack.py down; fi

clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python deploy/stack.py clean; else $(PYTHON) deploy/stack.py clean; fi

status: $(STAMP)
	$(BIN)/python deploy/stack.py status

# The suite starts its own PostgreSQL and Kafka on free ports, so it runs beside `make up`.
test: $(STAMP)
	deploy/system-packages --tests
	$(BIN)/python -c "import deploy.stack as s; s.ensure_kafka_jars()"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

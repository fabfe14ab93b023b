# The two commands: `make up` starts the whole system locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK_VENV := .local/lock-venv
# Loads docker-compose.yml as Docker Compose does, offline (Go modules from the Go proxy).
COMPOSE_CHECK := .local/tools/compose-check
# Validates each service's /asyncapi.json (npm, pinned by deploy/asyncapi/package-lock.json).
ASYNCAPI_TOOLS := .local/tools/asyncapi
ASYNCAPI_CLI := $(ASYNCAPI_TOOLS)/node_modules/.bin/asyncapi
# The OpenID Provider the suite signs in with (oidc-provider from npm, pinned by
# deploy/oidc/package-lock.json), beside its node_modules so that node finds them.
OIDC_TOOLS := .local/tools/oidc
OIDC_PROVIDER := $(OIDC_TOOLS)/provider.mjs
# Two client generators the suite runs the whole flow with: openapi-python-client (PyPI,
# pinned by deploy/openapi-clients/requirements.txt) and openapi-generator (Maven Central).
CLIENT_TOOLS := .local/tools/clients
CLIENT_PYTHON := $(CLIENT_TOOLS)/bin/python
OPENAPI_GENERATOR_VERSION := 7.25.0
OPENAPI_GENERATOR_SHA1 := 56a9bb79e3bb565f477eddca2c6daa288a9c6f35
OPENAPI_GENERATOR := .local/tools/openapi-generator-cli-$(OPENAPI_GENERATOR_VERSION).jar

.PHONY: up down clean status test compose-test wheelhouse soak faults lint typecheck bench install lock

$(STAMP): pyproject.toml constraints.txt
	deploy/system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

$(COMPOSE_CHECK): deploy/compose-check/main.go deploy/compose-check/go.mod deploy/compose-check/go.sum
	cd deploy/compose-check && go build -o $(abspath $(COMPOSE_CHECK)) .

$(ASYNCAPI_CLI): deploy/asyncapi/package.json deploy/asyncapi/package-lock.json
	mkdir -p $(ASYNCAPI_TOOLS)
	cp deploy/asyncapi/package.json deploy/asyncapi/package-lock.json $(ASYNCAPI_TOOLS)/
	cd $(ASYNCAPI_TOOLS) && npm ci --silent --no-audit --no-fund
	touch $(ASYNCAPI_CLI)

$(OIDC_PROVIDER): deploy/oidc/package.json deploy/oidc/package-lock.json deploy/oidc/provider.mjs
	mkdir -p $(OIDC_TOOLS)
	cp deploy/oidc/package.json deploy/oidc/package-lock.json $(OIDC_TOOLS)/
	cd $(OIDC_TOOLS) && npm ci --silent --no-audit --no-fund
	cp deploy/oidc/provider.mjs $(OIDC_PROVIDER)

$(CLIENT_PYTHON): deploy/openapi-clients/requirements.txt
	$(PYTHON) -m venv $(CLIENT_TOOLS)
	$(CLIENT_TOOLS)/bin/pip install --quiet --requirement deploy/openapi-clients/requirements.txt
	touch $(CLIENT_PYTHON)

$(OPENAPI_GENERATOR):
	mkdir -p $(dir $@)
	curl -fsSL -o $@.part https://repo1.maven.org/maven2/org/openapitools/openapi-generator-cli/$(OPENAPI_GENERATOR_VERSION)/openapi-generator-cli-$(OPENAPI_GENERATOR_VERSION).jar
	echo "$(OPENAPI_GENERATOR_SHA1)  $@.part" | sha1sum --check --quiet
	mv $@.part $@

up: $(STAMP)
	$(BIN)/python deploy/stack.py up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python deploy/stack.py down; else $(PYTHON) deploy/stack.py down; fi

clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python deploy/stack.py clean; else $(PYTHON) deploy/stack.py clean; fi

status: $(STAMP)
	$(BIN)/python deploy/stack.py status

# The suite starts its own PostgreSQL and Kafka on free ports, so it runs beside `make up`.
# Two workers, each with its own PostgreSQL and Kafka: most tests wait on I/O, so two
# share the two cores well (measured in the README's Development section).
test: $(STAMP)
	deploy/system-packages --tests
	$(MAKE) $(COMPOSE_CHECK) $(ASYNCAPI_CLI) $(OIDC_PROVIDER) $(CLIENT_PYTHON) $(OPENAPI_GENERATOR)
	$(BIN)/python -c "import deploy.stack as s; s.ensure_kafka_jars()"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/lint-imports
	LEDGER_COMPOSE_CHECK=$(COMPOSE_CHECK) LEDGER_ASYNCAPI_CLI=$(ASYNCAPI_CLI) \
		LEDGER_OIDC_PROVIDER=$(OIDC_PROVIDER) LEDGER_CLIENT_PYTHON=$(CLIENT_PYTHON) \
		LEDGER_OPENAPI_GENERATOR=$(OPENAPI_GENERATOR) \
		$(BIN)/pytest -n 2 --dist worksteal --durations=15 --ignore=tests/compose --ignore=tests/faults

# docker-compose.yml for real: a Docker engine of the project's own (.local/engine; Debian's
# docker.io), Compose v2 built from its Go module, the base images made locally where no
# registry serves them, then docs/operations.md's compose instructions as a test
# (tests/compose). The engine is stopped, and the host's network put back, however it ends.
compose-test: $(STAMP)
	deploy/system-packages --compose
	status=0; $(BIN)/python deploy/engine.py start && $(BIN)/pytest tests/compose \
		|| status=$$?; $(BIN)/python deploy/engine.py stop; exit $$status

# Every wheel the image needs, made here, so that an image build needs no network
# (deploy/build/README.md).
wheelhouse: $(STAMP)
	$(BIN)/python -c "import deploy.engine as e, sys, pathlib; e.ensure_wheelhouse(pathlib.Path(sys.executable).parent / 'pip')"

# The model-based interleavings test at length: SOAK_SEEDS seeds, SOAK_COMMANDS commands
# each (minutes; each run's answers are counted in .local/artefacts/interleavings-<seed>.json).
SOAK_SEEDS ?= 1,2,3,4,5
SOAK_COMMANDS ?= 3000
soak: $(STAMP)
	deploy/system-packages --tests
	$(BIN)/python -c "import deploy.stack as s; s.ensure_kafka_jars()"
	LEDGER_INTERLEAVINGS_SEEDS=$(SOAK_SEEDS) LEDGER_INTERLEAVINGS_COMMANDS=$(SOAK_COMMANDS) \
		$(BIN)/pytest -n 2 tests/e2e/test_interleavings.py

# The fault suite (tests/faults; about half an hour; root, for a small filesystem and network
# namespaces): each scenario loads the ledger, breaks something, repairs it and reconciles
# the clients' book against every store, topic and view; the report goes to
# .local/artefacts/faults/. One scenario: make faults FAULTS=-k\ kafka_killed
FAULTS ?=
faults: $(STAMP)
	deploy/system-packages --faults
	$(BIN)/python -c "import deploy.stack as s; s.ensure_kafka_jars()"
	$(BIN)/pytest tests/faults $(FAULTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The goals of the performance issue, each against floors and a peer taken in the same run;
# wrk (Debian) drives HTTP, and the eventsourcing library (the bench extra, installed with
# the rest) is the peer.
bench: $(STAMP)
	deploy/system-packages --bench
	$(BIN)/python -m bench

# Re-pin constraints.txt at the newest versions pyproject.toml allows (then run make test,
# which checks that each pin installs on the oldest Python pyproject.toml allows, Debian
# bookworm's 3.11.2 among them; pin back any that does not).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e ".[dev,bench]"
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf $(LOCK_VENV)

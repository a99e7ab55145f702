# The README's two commands: `make serve` and `make test`. Each creates or reuses .venv and
# installs what it needs; a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tabserve-installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install models serve test lint typecheck bench loadtest clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("tabserve needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[export,loadtest,dev]"
	@touch $(STAMP)

## install: create .venv and install tabserve with its export, load-test and dev extras
install: $(STAMP)

## models: build the bundled models into models/ when none are there (idempotent)
models: $(STAMP)
	$(BIN)/tabserve export build --if-missing

## serve: start the server with the bundled models and the embedded in-process cache
serve: models
	$(BIN)/tabserve serve --host $(HOST) --port $(PORT)

## test: the whole test suite (starts its own Redis-protocol server and HTTP servers)
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check server export loadtests tests
	$(BIN)/ruff format --check server export loadtests tests

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: the serving benchmark (server and load generator pinned to different cores)
bench: models
	$(BIN)/tabserve bench

## loadtest: the quick accuracy-versus-speed sweep and its report
loadtest: models
	$(BIN)/tabserve loadtest sweep --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The README's two commands: `make serve` and `make test`. Each creates or reuses .venv and
# installs what it needs; a fresh machine needs only Python 3.11+. `make serve` installs only the
# server and the model-building extras; `make test` (and lint, typecheck, bench, loadtest) add
# the load-test and development extras.
#
# Server settings come from the TABSERVE_* environment (TABSERVE_PORT, TABSERVE_HOST,
# TABSERVE_MODELS_DIR, TABSERVE_ADMIN_TOKEN, ...), read by `tabserve serve` itself. A make
# variable on the command line wins over the environment:
#   make serve PORT=8001 HOST=0.0.0.0 WORKERS=2 MODELS_DIR=/srv/models
#   make serve ADMIN_TOKEN_FILE=path/to/token     (a file holding the admin bearer token)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# --no-compile: Python compiles a module when it is first imported, instead of pip compiling
# every module of every package up front (half of the install time here, most never imported).
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile
SERVE_STAMP := $(VENV)/.tabserve-serve-installed
ALL_STAMP   := $(VENV)/.tabserve-installed

# --flag VALUE when the make variable was given on the command line (or with `override`),
# nothing otherwise, so that the TABSERVE_* environment applies.
empty :=
space := $(empty) $(empty)
given = $(filter command_line override,$(subst $(space),_,$(origin $(1))))
flag = $(if $(call given,$(1)),--$(2) $($(1)))
SERVE_FLAGS  := $(call flag,HOST,host) $(call flag,PORT,port) $(call flag,WORKERS,workers) \
                $(call flag,MODELS_DIR,models-dir) \
                $(if $(ADMIN_TOKEN_FILE),--admin-token-file $(ADMIN_TOKEN_FILE))
MODELS_FLAGS := $(call flag,MODELS_DIR,models-dir)

# Where the server will listen, for the lines `make serve` prints first.
SHOWN_HOST := $(or $(if $(call given,HOST),$(HOST)),$(TABSERVE_HOST),127.0.0.1)
URL := http://$(if $(filter 0.0.0.0 ::,$(SHOWN_HOST)),127.0.0.1,$(SHOWN_HOST)):$(or $(if $(call given,PORT),$(PORT)),$(TABSERVE_PORT),8000)
ifneq ($(ADMIN_TOKEN_FILE),)
ADMIN_HINT := admin routes on: curl -X POST -H "Authorization: Bearer $$(cat $(ADMIN_TOKEN_FILE))" $(URL)/admin/reload
else ifneq ($(TABSERVE_ADMIN_TOKEN),)
ADMIN_HINT := admin routes on: curl -X POST -H "Authorization: Bearer $$TABSERVE_ADMIN_TOKEN" $(URL)/admin/reload
else
ADMIN_HINT := admin routes off: start with make serve ADMIN_TOKEN_FILE=<file holding a token> (or set TABSERVE_ADMIN_TOKEN) to enable /admin/reload and /admin/cache/flush
endif

.PHONY: install models serve test lint typecheck bench loadtest loop stress fuzz soak scaletest imagetest proto clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("tabserve needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@echo "creating $(VENV)"
	@$(PYTHON) -m venv $(VENV)

# (A full install, when current, already holds the serving and model-building extras.)
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	@if [ ! $(ALL_STAMP) -nt pyproject.toml ]; then \
	  echo "installing tabserve with the model-building extras into $(VENV) (about 30 s the first time)"; \
	  $(PIP) -e ".[export]"; \
	fi
	@touch $@

$(ALL_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing tabserve with the export, load-test and development extras into $(VENV)"
	@$(PIP) -e ".[export,loadtest,dev]"
	@touch $@ $(SERVE_STAMP)

## install: create .venv and install tabserve with its export, load-test and dev extras
install: $(ALL_STAMP)

## models: build the bundled models when the repository holds none (idempotent)
models: $(SERVE_STAMP)
	@$(strip $(BIN)/tabserve export build --if-missing $(MODELS_FLAGS))

## serve: start the server with the bundled models and the embedded in-process cache
serve: models
	@echo "serving on $(URL) (tabserve is $(BIN)/tabserve; Ctrl-C stops)"
	@echo '$(ADMIN_HINT)'
	$(strip $(BIN)/tabserve serve $(SERVE_FLAGS))

## test: the whole test suite (starts its own Redis-protocol server and HTTP servers)
test: $(ALL_STAMP)
	$(BIN)/python -m pytest

lint: $(ALL_STAMP)
	$(BIN)/ruff check server export loadtests tests
	$(BIN)/ruff format --check server export loadtests tests

typecheck: $(ALL_STAMP)
	$(BIN)/mypy

## bench: the serving benchmark (server and load generator pinned to different cores)
bench: $(ALL_STAMP) models
	$(BIN)/tabserve bench

## loadtest: the quick accuracy-versus-speed sweep and its report
loadtest: $(ALL_STAMP) models
	$(strip $(BIN)/tabserve loadtest sweep --quick $(MODELS_FLAGS))

## loop: the closed loop on a real server: drift, retrain, shadow, promotion (about 3 minutes)
loop: $(ALL_STAMP) models
	$(strip $(BIN)/tabserve loadtest loop $(MODELS_FLAGS))

## stress: goodput past capacity, then the stall beside each hostile request (about 5 minutes)
stress: $(ALL_STAMP) models
	$(strip $(BIN)/python -m loadtests.stress.overload --repeat 3 $(MODELS_FLAGS))
	$(strip $(BIN)/python -m loadtests.stress.stall --cpus 0 --rounds 5 $(MODELS_FLAGS))

## fuzz: Schemathesis from the OpenAPI document against a real server, 2 minutes
fuzz: $(ALL_STAMP) models
	$(strip $(BIN)/python -m loadtests.stress.fuzz --max-time 120 $(MODELS_FLAGS))

## soak: 30 minutes of never-repeating rows; RSS and every bounded structure sampled
soak: $(ALL_STAMP) models
	$(strip $(BIN)/python -m loadtests.stress.soak --minutes 30 $(MODELS_FLAGS))

## scaletest: replicas behind HAProxy, one Redis, distributed Locust: shared cache, rolling update, SIGKILL, scale-out (needs haproxy)
scaletest: $(ALL_STAMP) models
	$(strip $(BIN)/python -m loadtests.scale $(MODELS_FLAGS))

## imagetest: build deploy/Dockerfile and serve the test models from it (minutes; podman or docker)
imagetest: $(ALL_STAMP)
	TABSERVE_IMAGE_TESTS=1 $(BIN)/python -m pytest -q tests/deploy/test_image.py

## proto: regenerate server/oip's gRPC modules from server/oip/grpc_predict_v2.proto
proto: $(ALL_STAMP)
	$(BIN)/python -m server.oip.regenerate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

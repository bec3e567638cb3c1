# The two commands of the README: `make serve` and `make test`. Everything they need is
# installed into .venv/ here; nothing outside the repository is cached or assumed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/sam-triton
STAMP := $(VENV)/.installed

# MODEL: any `sam-triton export --model-type` (vit_b|vit_l|vit_h, sam2.1_hiera_tiny|small|base_plus|large,
# sam2_hiera_*). NAME=...: export it under that name beside the repository's other models
# (clients choose it with model=NAME / --model NAME; docs/serving/models.md).
MODEL ?= vit_b
NAME ?=
CHECKPOINT ?=
SEED ?= 0
REPOSITORY ?= model_repository
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
# Who may connect (docs/operating/security.md): this machine only unless HOST says otherwise; another
# HOST needs TLS_CERT + TLS_KEY and API_KEY (or ALLOW_INSECURE=1, with a warning).
HOST ?= 127.0.0.1
TLS_CERT ?=
TLS_KEY ?=
TLS_CLIENT_CA ?=
API_KEY ?=
ALLOW_INSECURE ?=
EXIT_TIMEOUT ?= 30
# REPLICAS=N (N > 1): N tritonserver replicas behind a local Envoy on GRPC_PORT (deploy/README.md).
REPLICAS ?= 1
PYTEST_ARGS ?=

WEIGHTS := $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),--random-weights --seed $(SEED))
SECURITY := $(if $(TLS_CERT),--tls-cert $(TLS_CERT)) $(if $(TLS_KEY),--tls-key $(TLS_KEY)) \
	$(if $(TLS_CLIENT_CA),--tls-client-ca $(TLS_CLIENT_CA)) $(if $(ALLOW_INSECURE),--allow-insecure)

.PHONY: venv serve test lint typecheck proto docs clean

# Reinstalled only when the project's dependency list changes, so a second run is fast.
# No pip cache: the export extra's CUDA torch build is ~5.5 GB in the venv, and a cached copy
# of its wheels would take as much again on the disk (a CI install once ran out of space).
# sam2 (SAM 2's model code) is a source distribution that builds against the installed torch:
# a second step, hash-pinned, with no build isolation and without its CUDA extension
# (export/requirements-sam2.txt says why and what was checked).
$(STAMP): pyproject.toml export/requirements-sam2.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -e '.[dev]'
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-cache-dir --no-build-isolation --no-deps \
		--require-hashes -r export/requirements-sam2.txt
	@touch $@

venv: $(STAMP)

# Export (only when the repository does not already hold this model and these weights),
# then run Triton in the foreground until Ctrl-C (the serve line is not echoed: it may hold the API key).
serve: venv
	$(CLI) export --model-type $(MODEL) $(WEIGHTS) --repository $(REPOSITORY) $(if $(NAME),--name $(NAME)) --if-changed
	@$(if $(API_KEY),SAM_TRITON_API_KEY='$(API_KEY)') exec $(CLI) serve --repository $(REPOSITORY) --replicas $(REPLICAS) \
		--grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT) \
		--host $(HOST) --exit-timeout $(EXIT_TIMEOUT) $(SECURITY)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv typecheck
	$(VENV)/bin/ruff check client common bench export server tests proto docs

# The SDK is the typed public surface; the server and export packages are held to the same bar.
typecheck: venv
	$(VENV)/bin/mypy --strict --ignore-missing-imports -p sam_triton -p sam_triton_common -p sam_triton_bench -p sam_triton_server -p sam_triton_export

proto: venv
	$(PY) proto/generate.py

# The documentation site (docs/, mkdocs.yml) into site/: open site/index.html. --strict as in
# tests/test_docs.py: a broken link, a missing reference or a docstring problem fails it.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache site

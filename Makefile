# Modelplane developer entry points. The two README commands are `make run` and `make test`.
#
# VENV may point elsewhere (CI keeps it under ~/.cache, keyed by the dependency set); the venv is
# (re)installed only when pyproject.toml, the Python version or the checkout's path change.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAGE := .ci/stage
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: venv
venv: ## Create or update the virtualenv with the package and its dev extras
	@$(STAGE) venv .ci/ensure-venv "$(PYTHON)" "$(VENV)"

.PHONY: system-deps
system-deps: ## Install what the tests need beyond Python (PostgreSQL server, ...)
	@$(STAGE) system-deps .ci/install-system-deps

.PHONY: run
run: venv ## README command 1: start the platform on this machine
	$(BIN)/modelplane up

.PHONY: lint
lint: venv ## ruff (lint and format check), mypy and the import contracts
	@$(STAGE) ruff-lint $(BIN)/ruff check .
	@$(STAGE) ruff-format $(BIN)/ruff format --check .
	@$(STAGE) mypy $(BIN)/mypy
	@$(STAGE) import-contracts $(BIN)/lint-imports --no-cache

.PHONY: format
format: venv ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test-fast
test-fast: venv ## Unit tests only
	@$(STAGE) unit-tests $(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: cluster-bins
cluster-bins: venv ## Build (first time) and cache the dev cluster's binaries: etcd, Kubernetes, Helm, kwok
	@$(STAGE) cluster-bins $(BIN)/modelplane dev-cluster build --all

.PHONY: test
test: system-deps venv lint cluster-bins ## README command 2: install, lint, type check and run the whole test suite
	@$(STAGE) tests $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## Run the benchmarks (side by side; see benchmarks/README.md)
	@$(STAGE) bench $(BIN)/python -m benchmarks

.PHONY: clean
clean: ## Remove build outputs (keeps the venv)
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache src/*.egg-info

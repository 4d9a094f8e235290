# finpipe: `make demo` runs the main job, `make test` runs every test. Both install what they
# need first (system tools, the venv, Kafka jars) and start the local Kafka and PostgreSQL.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help system-deps venv up down status lint test demo clean

help:
	@echo "make demo    install, start Kafka + PostgreSQL, run the main job"
	@echo "make test    install, start Kafka + PostgreSQL, run ruff and the tests"
	@echo "make dev     the stack, one agent and one processor, and the Dagster UI (dagster dev)"
	@echo "make up | down | status    the local stack alone"

system-deps:
	@scripts/ensure-system-deps.sh

$(INSTALLED): pyproject.toml constraints.txt | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(INSTALLED)

up: venv
	$(BIN)/finpipe up

down:
	@if [ -x $(BIN)/finpipe ]; then $(BIN)/finpipe down; else echo "nothing to stop (no venv)"; fi

status: venv
	$(BIN)/finpipe status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: up lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The UI on http://127.0.0.1:3000 (FINPIPE_DAGSTER_PORT to change); `make down` stops it all.
.PHONY: dev
dev: up
	$(BIN)/finpipe dev

# `finpipe demo` starts the stack itself: no separate `finpipe up` (one CLI start, ~5 s, less).
demo: venv
	$(BIN)/finpipe demo

clean: down
	rm -rf .state

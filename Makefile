# Cairn: `make run` sets up and serves the embedded default; `make test` sets up and runs all tests.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# pytest-xdist workers for `make test` (one per core; `make test TEST_WORKERS=0` runs serially).
TEST_WORKERS ?= auto
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint types migrate bench setup setup-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

run: setup
	$(BIN)/cairn serve

test: setup-dev lint types
	$(BIN)/python -m pytest -q -ra --durations=20 -n $(TEST_WORKERS) --maxprocesses=4 --dist loadgroup

lint: setup-dev
	$(BIN)/ruff format --check app ingest tests migrations/env.py
	$(BIN)/ruff check app ingest tests migrations/env.py

types: setup-dev
	$(BIN)/mypy

migrate: setup
	$(BIN)/cairn migrate

bench: setup-dev
	$(BIN)/cairn bench all   # quick ingest + search benches (a few minutes), into bench-results.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

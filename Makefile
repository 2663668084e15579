# Storeroom: `make run` serves the API on SQLite, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CODEGEN_VENV ?= .venv-codegen
HOST ?= 127.0.0.1
PORT ?= 8000
export STOREROOM_DATA_DIR ?= ./data

.PHONY: run test install install-dev install-codegen lint typecheck pytest lock bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# openapi-python-client (tests/test_generated_client.py) in a virtualenv of its own: every
# release pins typer below the version the storeroom command needs.
$(CODEGEN_VENV)/.installed: constraints-codegen.txt
	$(PYTHON) -m venv $(CODEGEN_VENV)
	$(CODEGEN_VENV)/bin/pip install --quiet -c constraints-codegen.txt openapi-python-client
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-codegen: $(CODEGEN_VENV)/.installed

run: install
	$(BIN)/storeroom migrate
	$(BIN)/storeroom serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev install-codegen
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install-dev
	$(BIN)/python -m bench $(BENCH_ARGS)

# Re-pin every dependency after changing pyproject.toml (commit constraints.txt and
# constraints-codegen.txt).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^storeroom' > constraints.txt
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet openapi-python-client
	head -n 2 constraints-codegen.txt > .lock-codegen && .lock-venv/bin/pip freeze >> .lock-codegen
	mv .lock-codegen constraints-codegen.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(CODEGEN_VENV) .pytest_cache .mypy_cache .ruff_cache

# On a fresh machine with python3 and make: `make demo` and `make test` set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,record]'
	touch $@ $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/moe-netsim demo --out runs/demo --overwrite

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python -m experiments bench

lint: $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check --select F,B .
	$(BIN)/mypy placement simulator traces

clean:
	rm -rf $(VENV) runs .pytest_cache

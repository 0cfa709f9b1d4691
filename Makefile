# On a fresh machine with python3 and make: `make demo` and `make test` set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean bench lint docs

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

# The suite runs after lint, so CI (`make test`) fails on lint errors too.
test: lint
	$(BIN)/python -m pytest -n 2 -q

# The speed and memory benchmarks of docs/benchmarks.md (several minutes in all).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_traces.py
	$(BIN)/python benchmarks/bench_trace_encoding.py
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/moe-netsim topology bench
	$(BIN)/python benchmarks/bench_placement.py --strategies round-robin,greedy,eplb,ilp,ilp-load,ilp-origin,ilp-bytes
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_flow.py
	$(BIN)/python benchmarks/bench_calibration.py
	$(BIN)/python benchmarks/bench_engine_import.py
	$(BIN)/python benchmarks/bench_dedup.py
	$(BIN)/python benchmarks/bench_scale.py --plot docs/img/des-cost-per-hop.png

# The generated reference pages: the error catalogue (from tests/badinput.py), the commands
# (from the argparse parsers) and the tables of defaults in docs/ (from the dataclasses and the
# topology families).  tests/test_docs*.py fail when they are out of date.
docs: $(TEST_STAMP)
	$(BIN)/python -m tests.error_catalogue > docs/reference/errors.md.tmp
	mv docs/reference/errors.md.tmp docs/reference/errors.md
	$(BIN)/python -m tests.commands_reference > docs/reference/commands.md.tmp
	mv docs/reference/commands.md.tmp docs/reference/commands.md
	$(BIN)/python -m tests.docs_tables

# ruff with the rules pyproject.toml selects; mypy on the four packages.
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy traces placement simulator experiments

clean:
	rm -rf $(VENV) runs .pytest_cache

# The README's two commands: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GITSWEEP_HOME ?= $(CURDIR)/gitsweep-runs

.PHONY: install demo test test-fast bench lint clean

# Reinstalls only when pyproject.toml changed; the project itself is an editable install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/gitsweep run demo

test: install
	$(BIN)/python -m pytest -q --durations=25 tests

# The edit-run loop: everything but the end-to-end tests (marked slow). pytest exits 5 when it collects
# nothing, and make fails on that as on any other non-zero exit.
test-fast: install
	$(BIN)/python -m pytest -q --durations=10 -m "not slow" tests

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check gitlib sweeps tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) gitsweep-runs

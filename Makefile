# `make demo` and `make test` are the two entry points; both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: install install-test install-bench demo lint test clean

# The runtime dependencies only: what `make demo` and a user's runs need.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

# Adds the test extra: pytest, torch + transformers (the export is loaded back), the GCS
# emulator and client (the gs:// end-to-end test).
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The peers the benchmarks compare against (datatrove); not needed for demo or tests.
install-bench: install-test
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'

demo: install
	bash scripts/demo.sh $(DEMO_DIR)

# ruff: the lint rules and the formatter configured in pyproject.toml.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install-test
	$(BIN)/python -m pytest -q --durations=25 tests

clean:
	rm -rf $(VENV) runs

# `make demo` and `make test` are the two entry points; both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install install-bench demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The peers the benchmarks compare against (datatrove); not needed for demo or tests.
install-bench: install
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'

demo: install
	bash scripts/demo.sh $(DEMO_DIR)

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs

# Quick start: `make demo` runs the example with a failure; `make test` runs the whole suite.
# Both create the virtual environment (.venv) and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nfvha demo

# The core (pure state machines) is type-checked strictly.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src/nfvha/core

# pytest exits 5 when it collects no tests; make stops on any non-zero exit, so that fails too.
test: lint
	$(BIN)/python -m pytest

# All benchmarks (about 10 minutes), then the README's tables regenerated from their results.
bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scenarios.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/manager.py
	$(BIN)/python bench/tables.py --write

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

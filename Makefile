# Quick start: `make demo` runs the example with a failure; `make test` runs the whole suite.
# Both create the virtual environment (.venv) and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint bench clean etcd

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# etcd for the etcd state-store tests: Debian's etcd-server, installed when missing (as root).
# Its package enables a system etcd on port 2379 (and starts it where services may start): that
# one is stopped and disabled, so that only the tests' own clusters, on free ports, run.
etcd:
	@command -v etcd >/dev/null || { \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "etcd is missing: as root, apt-get install etcd-server (its tests are skipped)"; \
	  else \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server || exit 1; \
	    systemctl disable etcd >/dev/null 2>&1; systemctl stop etcd >/dev/null 2>&1; \
	    service etcd stop >/dev/null 2>&1; update-rc.d etcd disable >/dev/null 2>&1; true; \
	  fi; }

demo: $(STAMP)
	$(BIN)/nfvha demo

# The core (pure state machines) is type-checked strictly.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src/nfvha/core

# pytest exits 5 when it collects no tests; make stops on any non-zero exit, so that fails too.
test: lint etcd
	$(BIN)/python -m pytest

# All benchmarks (about 10 minutes), then the README's tables regenerated from their results.
bench: $(STAMP) etcd
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scenarios.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/manager.py
	$(BIN)/python bench/tables.py --write

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

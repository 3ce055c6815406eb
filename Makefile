# Quick start: `make demo` runs the example with a failure; `make test` runs the whole suite.
# Both create the virtual environment (.venv) and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint bench clean etcd daemons

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

# dnsmasq, HAProxy and keepalived for the real-daemon tests and benchmarks: Debian's packages,
# installed when missing (as root). They enable (and where services may start, start) a system
# instance (dnsmasq on port 53, HAProxy on 80, keepalived's VRRP): those are stopped and disabled,
# so only the tests' own instances, on free ports or in their own namespaces, run.
daemons:
	@PATH="$$PATH:/usr/sbin:/sbin"; command -v dnsmasq >/dev/null && command -v haproxy >/dev/null && command -v keepalived >/dev/null && command -v ip >/dev/null || { \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "dnsmasq, haproxy, keepalived or ip is missing: as root, apt-get install dnsmasq haproxy keepalived iproute2 (their tests are skipped)"; \
	  else \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y dnsmasq haproxy keepalived iproute2 || exit 1; \
	    for s in dnsmasq haproxy keepalived; do \
	      systemctl disable $$s >/dev/null 2>&1; systemctl stop $$s >/dev/null 2>&1; \
	      service $$s stop >/dev/null 2>&1; update-rc.d $$s disable >/dev/null 2>&1; \
	    done; true; \
	  fi; }

demo: $(STAMP)
	$(BIN)/nfvha demo

# The core (pure state machines) is type-checked strictly.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src/nfvha/core

# pytest exits 5 when it collects no tests; make stops on any non-zero exit, so that fails too.
test: lint etcd daemons
	$(BIN)/python -m pytest

# All benchmarks (about 35 minutes), then the README's tables regenerated from their results.
bench: $(STAMP) etcd daemons
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scenarios.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/manager.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/daemons.py
	$(BIN)/python bench/vip.py
	$(BIN)/python bench/etcd_scale.py
	$(BIN)/python bench/coordination.py
	$(BIN)/python bench/tables.py --write

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Sluice developer entry points. `make test` works on a fresh Debian 12 machine as root:
# it installs the Debian packages the suite needs, builds .venv, lints and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The Debian packages the suite needs; under CI a missing one fails the tests that need it
# instead of skipping them (tests/support.py, `require`).
DEB_PACKAGES := openvswitch-switch openvswitch-common iproute2 ethtool tcpdump iperf3 \
	containernetworking-plugins python3-venv python3-dev gcc make procps iputils-ping \
	ncat kmod util-linux podman runc busybox-static
# Every Python folder: `make lint` runs `mypy --strict` over them.
MYPY_STRICT := flows cni controller ovsagent lab bench tests/agent tests/apiserver tests/cni \
	tests/controller tests/unit tests/integration tests/e2e tests/conftest.py tests/support.py

.PHONY: test deps venv lint unit pytest docs clean lab lab-down

test: deps venv lint pytest

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict $(MYPY_STRICT)

pytest: venv
	$(BIN)/python -m pytest tests

unit: venv
	$(BIN)/python -m pytest tests/unit

# The first command of the README: a 2-node lab (namespaces, real OVS, agents, controller, the
# API-server stand-in) with 2 pods per node, then every pod pings every other pod.
# LAB_FLAGS adds `sluice lab up` options (the e2e smoke test gives its own --prefix; the state
# directory comes from $SLUICE_LAB_STATE, default /run/sluice-lab).
LAB_FLAGS ?=
lab: deps venv
	$(BIN)/sluice lab up --nodes 2 --pods-per-node 2 $(LAB_FLAGS)
	$(BIN)/sluice lab ping

lab-down: venv
	$(BIN)/sluice lab down

docs: venv
	$(BIN)/sluice docs pipeline --write docs/pipeline.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# tokenscale: make demo | make test | make lint
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard operator tests benchmarks)

.PHONY: demo test lint crd venv prometheus clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

prometheus:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus is missing and cannot be installed (not root, no sudo): apt-get install prometheus" >&2; exit 1; fi; }

demo: venv prometheus
	$(VENV)/bin/tokenscale demo $(ARGS)

test: venv prometheus
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider --durations=12

lint: venv
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m mypy

crd: venv
	$(VENV)/bin/tokenscale crd > crds/tokenbudgets.tokenscale.dev.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

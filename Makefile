# tokenscale: make demo | make test | make lint
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard operator tests benchmarks)

.PHONY: demo test test-clock lint crd venv prometheus clean

# Suites whose outcome could depend on the calendar: they run again on a test clock that
# starts each test at a chosen instant (tests/testclock.py). `make test` keeps one instant.
# The core's period tests (tests/unit/test_core_budget.py, test_core_accounting.py,
# test_core_planner.py) pin their own instants (first and last minutes, DST days) and read
# no clock, so they run once, in the main suite.
CLOCK_SUITES := tests/faults tests/e2e/test_operator_e2e.py \
	tests/integration/test_operator_reconcile.py
CLOCK_SMOKE := tests/faults/test_restart.py tests/faults/test_peering.py \
	tests/e2e/test_operator_e2e.py::test_operator_restart_mid_period_keeps_spend
CLOCK_INSTANTS ?= month-start month-end week-start dst-spring dst-autumn

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
	$(PY) -m pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=12
	TOKENSCALE_TEST_CLOCK=month-end $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile $(CLOCK_SMOKE)

test-clock: venv prometheus
	@for instant in $(CLOCK_INSTANTS); do \
	  echo "== TOKENSCALE_TEST_CLOCK=$$instant"; \
	  TOKENSCALE_TEST_CLOCK=$$instant $(PY) -m pytest -q -p no:cacheprovider -n 3 --dist loadfile $(CLOCK_SUITES) \
	    || exit 1; \
	done

lint: venv
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m mypy

crd: venv
	$(VENV)/bin/tokenscale crd > crds/tokenbudgets.tokenscale.dev.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

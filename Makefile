# The two entry points: `make demo` and `make test`; both set everything up first.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench ci clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/talkflow demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

ci:
	@bash .ci/run

bench: setup
	$(PY) bench/cache_overhead.py

clean:
	-$(VENV)/bin/talkflow server stop
	rm -rf .talkflow

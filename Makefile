# The two entry points: `make demo` and `make test`; both set everything up first.
# `make test-docker` runs the Docker work-pool test (builds the CPU worker image; starts a Docker
# engine as root when none runs), which `make test` leaves out; `make image-cpu` / `image-gpu`
# build the worker image.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# two pytest workers (pytest-xdist), each test file on one of them (its module fixtures made once):
# the slow files wait on servers and workers much of the time; PYTEST_WORKERS=0 runs in one process
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: setup demo test test-fast test-docker image-cpu image-gpu lint bench ci clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/talkflow demo

test: setup
	$(PY) -m pytest $(XDIST) --ignore=tests/test_docker_pool.py $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow" --ignore=tests/test_docker_pool.py $(PYTEST_ARGS)

test-docker: setup
	$(PY) -m pytest tests/test_docker_pool.py -s $(PYTEST_ARGS)

image-cpu:
	bash scripts/docker-build.sh cpu

image-gpu:
	bash scripts/docker-build.sh gpu

lint: setup
	$(VENV)/bin/ruff check .

ci:
	@bash .ci/run

bench: setup
	$(PY) bench/cache_overhead.py

clean:
	-$(VENV)/bin/talkflow server stop
	rm -rf .talkflow

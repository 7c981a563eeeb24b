# Every target sets itself up from a fresh clone: a virtual environment in .venv with loadgen installed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: all demo test test-fast lint fmt bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: the built-in target, two agents, a ~30 s ramp/hold/spike showcase; results in demo-results/
demo: $(STAMP)
	$(BIN)/loadgen demo --out demo-results

## test: the whole suite (unit and real-process integration tests)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## test-fast: unit tests only
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

## lint: ruff (lint and format check) and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: benchmark suite (~30 min; BENCH_QUICK=1 for ~5 min): nginx, wrk, Locust vs our engines; writes docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info demo-results .pytest_cache .mypy_cache .ruff_cache

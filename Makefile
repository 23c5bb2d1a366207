# Two commands on a fresh machine: `make book` and `make test`. Every target creates .venv on
# first use; installs are idempotent (re-run only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= cpu
# This machine ships these builds on disk; installing them first keeps pip from resolving a
# newer torch for the package's `torch>=` requirement.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PYTEST_BOOK := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	--nbval-sanitize-with book/sanitize.cfg

.PHONY: install data book test test-lib test-book lab bench lint format regen-book clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[book,dev]'
	touch $@

## data: the real Fashion-MNIST (Debian's package as root with apt, else torchvision's download
## into data/); instant when it is there
data: install
	@bash scripts/get_fashion_mnist.sh $(BIN)/python

## book: run every notebook headless with papermill at SCALE (smoke|cpu|full) into runs/book-SCALE/
book: data
	$(BIN)/dfpt book --scale $(SCALE)

## test: lint, the library tests and the notebook regression tests (nbval)
test: data lint test-lib test-book

# Tests that need the real data fail (not skip) when it is absent: DFPT_REQUIRE_DATA=1. One
# pytest worker per core (pytest-xdist); each test runs torch on one thread (tests/conftest.py).
test-lib: data
	DFPT_REQUIRE_DATA=1 $(BIN)/python -m pytest tests -n auto

test-book: data
	DFPT_HEADLESS=1 $(BIN)/python -m pytest book $(PYTEST_BOOK)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check dfpt_core tests bench scripts

format: install
	$(BIN)/ruff format dfpt_core tests bench scripts
	$(BIN)/ruff check --fix .

## regen-book: re-execute the committed notebooks in place at smoke scale (their stored outputs)
regen-book: data
	$(BIN)/dfpt book --scale smoke --in-place

## lab: JupyterLab on the book
lab: install
	$(BIN)/jupyter lab book/

## bench: speed and memory benchmarks into runs/bench/bench.json (BENCH_ARGS=--quick: smoke run)
bench: install
	$(BIN)/python bench/runner.py $(BENCH_ARGS)

clean:
	rm -rf runs .pytest_cache .ruff_cache

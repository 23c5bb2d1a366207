# Two commands on a fresh machine: `make book` and `make test`. Every target creates .venv on
# first use; installs are idempotent (re-run only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= cpu
JOBS ?= 2
# This machine ships these builds on disk; installing them first keeps pip from resolving a
# newer torch for the package's `torch>=` requirement.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PYTEST_BOOK := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	--nbval-sanitize-with book/sanitize.cfg

.PHONY: install chromium data book test test-lib test-book test-browser lab bench lint \
	format regen-book ship-runs clean

install: $(STAMP) chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[book,dev]'
	touch $@

## chromium: Debian's Chromium, in which kaleido draws the static PNG of every figure and the
## browser test drives JupyterLab; apt-get as root, instant when it is there. Never fails the
## install: without it figures carry no PNG (one warning) and the browser test skips (fails in CI)
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium fonts-liberation >/dev/null; } \
	  || echo "warning: apt-get could not install chromium: figures carry no static PNG," \
	    "the browser test skips (fails under CI)"; \
	else \
	  echo "note: no Chromium, and no root apt-get to install it (as root: apt-get install" \
	    "chromium): figures carry no static PNG, the browser test skips"; \
	fi

## data: the real Fashion-MNIST (Debian's package as root with apt, else torchvision's download
## into data/); instant when it is there
data: install
	@bash scripts/get_fashion_mnist.sh $(BIN)/python

## book: run every notebook headless with papermill at SCALE (smoke|cpu|full) into runs/book-SCALE/
book: data
	$(BIN)/dfpt book --scale $(SCALE)

## test: lint, the library tests, the notebook regression tests (nbval) and the live book
## in a browser (test-browser)
test: data lint test-lib test-book test-browser

# Tests that need the real data fail (not skip) when it is absent: DFPT_REQUIRE_DATA=1. One
# pytest worker per core (pytest-xdist); each test runs torch on one thread (tests/conftest.py).
test-lib: data
	DFPT_REQUIRE_DATA=1 $(BIN)/python -m pytest tests -n auto -m "not browser"

# The committed notebooks: those at cpu scale replay their shipped runs (data/runs/cpu/; a
# missing or stale run fails at once, naming it and the command that regenerates it, never a
# silent retrain), the others (if any) run at smoke scale; then the cpu notebooks' training
# code runs at smoke scale through papermill (into runs/book-smoke/).
CPU_BOOK = $(shell grep -l 'scale = \\"cpu\\"' book/[0-9]*.ipynb)
SMOKE_BOOK = $(filter-out $(CPU_BOOK),$(wildcard book/[0-9]*.ipynb))
test-book: data
	DFPT_HEADLESS=1 DFPT_REPLAY_ONLY=1 $(BIN)/python -m pytest $(CPU_BOOK) $(PYTEST_BOOK)
	$(if $(SMOKE_BOOK),DFPT_HEADLESS=1 $(BIN)/python -m pytest $(SMOKE_BOOK) $(PYTEST_BOOK))
	$(BIN)/dfpt book --scale smoke --only $(patsubst book/%.ipynb,%,$(CPU_BOOK))

## test-browser: notebooks 02 and 06 run live in JupyterLab, driven in Chromium by Playwright
## (tests/test_live_book.py, about two minutes; alone, not beside other pytest workers)
test-browser: data
	DFPT_REQUIRE_DATA=1 $(BIN)/python -m pytest tests/test_live_book.py -m browser -n 0

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check dfpt_core tests bench scripts

format: install
	$(BIN)/ruff format dfpt_core tests bench scripts
	$(BIN)/ruff check --fix .

## regen-book: re-execute the committed notebooks in place (their stored outputs): the cpu ones
## replayed from the shipped runs, the others at smoke scale
regen-book: data
	$(BIN)/dfpt book --scale cpu --in-place
	$(if $(SMOKE_BOOK),$(BIN)/dfpt book --scale smoke --in-place)

## ship-runs: retrain every run of the cpu book, ship them in data/runs/cpu/ and regenerate the
## cpu notebooks (hours on 2 cores; resumable)
ship-runs: data
	$(BIN)/python scripts/ship_cpu_runs.py --jobs $(JOBS)

## lab: JupyterLab on the book
lab: install
	$(BIN)/jupyter lab book/

## bench: speed and memory benchmarks into runs/bench/bench.json (BENCH_ARGS=--quick: smoke run)
bench: install
	$(BIN)/python bench/runner.py $(BENCH_ARGS)

clean:
	rm -rf runs .pytest_cache .ruff_cache

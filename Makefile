# Two commands a newcomer needs: `make demo` and `make test`. Each creates or refreshes
# the local virtual environment in .venv first (idempotent: reinstalls only when
# pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hyvl-installed
DOCS_STAMP := $(VENV)/.hyvl-docs-installed

.PHONY: venv demo test lint dupes bench gpu-check-dry docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hyvl demo --out runs/demo --model all --json runs/demo/results.json

# Two workers (one per core here), whole files per worker so module fixtures are built once,
# one torch thread each: 2 workers x 2 threads on 2 cores ran slower than one worker. Files go
# out in collection order, longest first (tests/conftest.py), not xdist's most-tests-first.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check hyvl tests tools && $(BIN)/ruff format --check hyvl tests tools

# Copied blocks of 12 or more lines (comments, docstrings and imports aside) across hyvl, tools
# and tests: pylint's duplicate-code check alone (settings in pyproject.toml).
dupes: $(STAMP)
	$(BIN)/pylint --disable=all --enable=duplicate-code --score=n hyvl tools tests

bench: $(STAMP)
	$(BIN)/python tools/bench.py --quick

# The documentation site (mkdocs, Material theme): into site/, failing on any warning (a broken
# link or anchor, an API reference that does not resolve). The CLI and config-key references
# are generated from the code by tools/docs_reference.py (a mkdocs hook).
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# tools/gpu_check.py (the GPU path proved and measured) on the CPU with tiny sizes, so every
# check's code runs in CI; the figures mean nothing. On a GPU: python tools/gpu_check.py
gpu-check-dry: $(STAMP)
	mkdir -p runs
	$(BIN)/python tools/gpu_check.py --dry-run --json runs/gpu_check_dry.json --markdown runs/gpu_check_dry.md

clean:
	rm -rf $(VENV) runs site

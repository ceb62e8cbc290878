# Two commands a newcomer needs: `make demo` and `make test`. Each creates or refreshes
# the local virtual environment in .venv first (idempotent: reinstalls only when
# pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hyvl-installed

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hyvl demo --out runs/demo --model all --json runs/demo/results.json

# Two workers (one per core here), whole files per worker so module fixtures are built once,
# one torch thread each: 2 workers x 2 threads on 2 cores ran slower than one worker.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check hyvl tests tools && $(BIN)/ruff format --check hyvl tests tools

bench: $(STAMP)
	$(BIN)/python tools/bench.py --quick

clean:
	rm -rf $(VENV) runs

# Two commands on a fresh machine (Python 3.11+, pip, make): `make demo` and `make test`.
# Each creates the virtual environment from pyproject.toml when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest js-deps bench bench-quick sample-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tdevlab demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff format --check tdevlab tests benchmarks
	$(BIN)/ruff check tdevlab tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) js-deps
	$(BIN)/python -m pytest

# The API document's JavaScript client is tested in Node with the npm package ws.
js-deps:
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix tests/js --no-audit --no-fund --silent; \
	else echo "npm not found: the JavaScript client test will be skipped"; fi

# Every benchmark, each table printed as Markdown too (about 20 minutes on 2 cores; see
# docs/benchmarks.md); bench-quick runs their smoke modes (seconds each, as `make test` does).
BENCHMARKS := engine_vs_peers strategies_vs_peers frames distributed fanout stalled_reader \
	churn_soak abuse

bench: $(STAMP)
	@for name in $(BENCHMARKS); do \
		echo "== python benchmarks/$$name.py --markdown"; \
		$(BIN)/python benchmarks/$$name.py --markdown || exit 1; \
	done

bench-quick: $(STAMP)
	@for name in $(BENCHMARKS); do \
		echo "== python benchmarks/$$name.py --quick"; \
		$(BIN)/python benchmarks/$$name.py --quick || exit 1; \
	done

# The shipped sample dataset; data/README.md documents it.
sample-data: $(STAMP)
	rm -rf data/sample-run build/sample.db && mkdir -p build
	$(BIN)/tdevlab run --problem agent_design --generations 40 --population-size 60 \
		--mutation-rate 0.15 --seed 7 --db build/sample.db --quiet
	$(BIN)/tdevlab rollback --db build/sample.db --run 1 --generation 25
	$(BIN)/tdevlab run --db build/sample.db --resume 1 --generations 20 --mutation-rate 0.05 \
		--quiet --export data/sample-run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

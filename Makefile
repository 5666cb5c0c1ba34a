# Two commands on a fresh machine (Python 3.11+, pip, make): `make demo` and `make test`.
# Each creates the virtual environment from pyproject.toml when it is missing or stale:
# `make demo` with the runtime dependencies only, `make test` adds the extras below.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The extras `make test` (and docs, bench) install on top of the runtime: one word each.
TEST_EXTRAS := dev dask bench docs cma optuna nevergrad lineage
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: demo test test-fast lint typecheck pytest docs js-deps bench bench-quick sample-data clean

# The demo's install is lean: the venv's own pip (any Python 3.11 has one that installs this
# project), and no byte-compiling ahead (modules compile when first imported).
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e .
	touch $@

$(DEV): $(RUNTIME) pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(subst $(space),$(comma),$(TEST_EXTRAS))]'
	touch $@

demo: $(RUNTIME)
	$(BIN)/tdevlab demo

test: lint typecheck pytest docs

lint: $(DEV)
	$(BIN)/ruff format --check tdevlab tests benchmarks
	$(BIN)/ruff check tdevlab tests benchmarks

typecheck: $(DEV)
	$(BIN)/mypy

# Both cores: tests that share one browser, one Dask cluster or one set of executed notebooks
# stay on one worker each (their xdist_group); the rest are spread test by test.
XDIST := -n auto --dist loadgroup

pytest: $(DEV) js-deps
	$(BIN)/python -m pytest $(XDIST)

# The edit-test loop (under a minute on 2 cores): no browser, no Dask, no notebooks, nothing
# marked slow. `make test` runs them all.
test-fast: $(DEV)
	$(BIN)/python -m pytest $(XDIST) -m "not browser and not dask and not notebook and not slow"

# The documentation site (mkdocs.yml): docs/*.md, the API reference from the docstrings and
# the notebooks executed at build time, into site/ (open site/index.html); warnings are errors.
docs: $(DEV)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The API document's JavaScript client is tested in Node with the npm package ws.
js-deps:
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix tests/js --no-audit --no-fund --silent; \
	else echo "npm not found: the JavaScript client test will be skipped"; fi

# Every benchmark, each table printed as Markdown too (about 20 minutes on 2 cores; see
# docs/benchmarks.md); bench-quick runs their smoke modes (seconds each, as `make test` does).
BENCHMARKS := engine_vs_peers strategies_vs_peers adapters frames distributed fanout stalled_reader \
	churn_soak abuse lineage

bench: $(DEV)
	@for name in $(BENCHMARKS); do \
		echo "== python benchmarks/$$name.py --markdown"; \
		$(BIN)/python benchmarks/$$name.py --markdown || exit 1; \
	done

bench-quick: $(DEV)
	@for name in $(BENCHMARKS); do \
		echo "== python benchmarks/$$name.py --quick"; \
		$(BIN)/python benchmarks/$$name.py --quick || exit 1; \
	done

# The shipped sample dataset; data/README.md documents it.
sample-data: $(RUNTIME)
	rm -rf data/sample-run build/sample.db && mkdir -p build
	$(BIN)/tdevlab run --problem agent_design --generations 40 --population-size 60 \
		--mutation-rate 0.15 --seed 7 --db build/sample.db --quiet
	$(BIN)/tdevlab rollback --db build/sample.db --run 1 --generation 25
	$(BIN)/tdevlab run --db build/sample.db --resume 1 --generations 20 --mutation-rate 0.05 \
		--quiet --export data/sample-run

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NODE_DEPS := tests/fhir_server/node_modules/.installed

.PHONY: demo server test test-spark test-browser screenshots bench bench-runon bench-report bench-text lint fixtures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@

# The demo needs the package alone (no pytest, Spark or Playwright: seconds, not minutes).
# Its own stamp in the same venv; the full install of `make test` satisfies it too. With
# a pip of 22.3 or later beside $(PYTHON), the venv is made without a pip of its own
# (ensurepip is a third of the time) and that pip installs into it; `make test` adds one.
DEMO_STAMP := $(VENV)/.installed-base
PIP_FAST   := --quiet --no-compile --disable-pip-version-check
$(DEMO_STAMP): pyproject.toml
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then :; \
	elif [ ! -e $(VENV) ] && $(PYTHON) -m pip --python "$$(command -v $(PYTHON))" --version \
	    >/dev/null 2>&1; then \
	  $(PYTHON) -m venv --without-pip $(VENV) && \
	  $(PYTHON) -m pip --python $(BIN)/python install $(PIP_FAST) -e . ; \
	else \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install $(PIP_FAST) -e . ; fi
	@touch $@

## Evaluate the bundled fixtures and print the findings table (exit 0 whatever it found).
demo: $(DEMO_STAMP)
	@$(BIN)/fhir-adapter evaluate fixtures/cases --out out/bundles; rc=$$?; \
	  if [ $$rc -le 1 ]; then echo "(transaction Bundles written to out/bundles)"; exit 0; else exit $$rc; fi

# The real FHIR server of the integration tests (Medplum, with its own Node 22 from npm).
$(NODE_DEPS): tests/fhir_server/package.json tests/fhir_server/package-lock.json
	cd tests/fhir_server && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## The test FHIR server (Medplum) on 127.0.0.1:$(SERVER_PORT) with the fixtures loaded; prints
## the `run` command to use and keeps running until Ctrl-C.
SERVER_PORT ?= 8090
server: $(DEMO_STAMP) $(NODE_DEPS)
	@$(BIN)/python tools/test_server.py --port $(SERVER_PORT)

# Debian's Chromium for the HTML report's browser tests (Playwright drives it; Playwright's own
# browser download is never used). The file itself is the stamp: nothing to do once it exists.
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
$(CHROMIUM):
	@if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-liberation fonts-dejavu-core

## Run the whole test suite (Spark and browser tests included), a test file per worker
## process at a time (each worker starts its own test server and Spark session when it
## needs them; a file's tests run in their order), the files that run Spark first
## (tests/conftest.py). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(NODE_DEPS) $(CHROMIUM)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## Only the HTML report's browser tests.
test-browser: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -m browser

## The HTML report at 10,000 cases: render time, page size, first page, paging, filtering.
bench-report: $(STAMP) $(CHROMIUM)
	$(BIN)/python benchmarks/bench_report.py --cases 10000

## Re-take the README's screenshots of the HTML report (docs/report-*.png).
screenshots: $(STAMP) $(CHROMIUM)
	REPORT_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_report_html.py -k screenshots

## Only the Spark engine's tests.
test-spark: $(STAMP)
	$(BIN)/python -m pytest -m spark

## Benchmarks: 1k, 10k and 100k generated patients, the test server, Spark local[1] and
## local[2] against the local engine on 100k, run-on notes of 5 KB to 1 MB, a slow server
## without batch or _include at --concurrency 1 and 8; writes
## benchmarks/README.md.
bench: $(STAMP) $(NODE_DEPS)
	$(BIN)/python benchmarks/bench.py --sizes 1000,10000,100000 --dense 4000
	$(BIN)/python benchmarks/bench_spark.py --patients 100000
	$(BIN)/python benchmarks/bench_runon.py
	$(BIN)/python benchmarks/bench_ehr.py --patients 500

## Run-on notes only (5 KB to 1 MB): cost per KB, against the same notes split into sentences.
bench-runon: $(STAMP)
	$(BIN)/python benchmarks/bench_runon.py

## The text engine against medspaCy (installs the nlp-compare extra): corpus accuracy, cost per case.
bench-text: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[nlp-compare]'
	$(BIN)/python benchmarks/bench_text.py --patients 4000

lint: $(STAMP)
	$(BIN)/ruff check fhir_adapter tests tools benchmarks
	$(BIN)/ruff format --check fhir_adapter tests tools benchmarks
	$(BIN)/mypy

## Regenerate fixtures/cases from tools/make_fixtures.py.
fixtures: $(STAMP)
	$(BIN)/python tools/make_fixtures.py

clean:
	rm -rf $(VENV) out tests/fhir_server/node_modules

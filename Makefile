# make demo | make test | make bench | make lint — each creates .venv when missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.r3nb-installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-fast lint js js-check js-test bench soak screenshots clean check-supply-chain system-deps postgresql

# Real parts the suite drives: JupyterHub's proxy from npm (not the PyPI port, which
# buffers whole responses and breaks streaming) and Debian's Chromium for Playwright.
HUB_PROXY := tests/.hub-node/node_modules/.bin/configurable-http-proxy
CHROMIUM := /usr/bin/chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# uv installs the same pinned set in ~35 s where pip takes ~3 min (measured on a fresh
# clone: most of pip's time is serial downloads and bytecode compiling); pip is the
# fallback wherever uv cannot be installed or cannot reach the index.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@if $(BIN)/pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python \
		--compile-bytecode -c constraints.txt -e ".[test,dev]"; then :; else \
		echo "uv failed: installing with pip"; \
		$(BIN)/pip install -q -c constraints.txt -e ".[test,dev]"; fi
	@touch $(STAMP)

install: $(STAMP)

# The widget bundle is committed; rebuild it when js/ changes (needs node + npm).
js: js/node_modules/.package-lock.json
	cd js && npm run build
js/node_modules/.package-lock.json: js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund

# r3nb's JupyterLab 4 / Notebook 7 extension (Code → cell): labextension/ built into
# r3nb/labextension, which is committed like the widget bundle, so neither `pip install`
# nor `make test` needs node or the builder (its node_modules are ~430 MB). Rebuild it
# when labextension/ changes, and commit the result.
.PHONY: labextension
labextension: $(STAMP) labextension/node_modules/.package-lock.json
	rm -rf r3nb/labextension
	$(BIN)/jupyter-builder build labextension
labextension/node_modules/.package-lock.json: labextension/package.json labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund

# The widget's lint and type check, and proof that the committed bundle is what the
# sources build to (seconds); js-test adds its unit tests (sanitizer corpus, SSE parser,
# incremental renderer, session: ~30 s), which `make test` runs inside pytest
# (tests/test_js_suite.py) so that they share the two workers with the Python tests.
js-check: js/node_modules/.package-lock.json
	cd js && npm run lint && npm run check && npm run verify

js-test: js-check
	cd js && npm test

check-supply-chain: $(STAMP)
	@$(BIN)/python tests/check_supply_chain.py

$(HUB_PROXY):
	npm install --prefix tests/.hub-node --no-audit --no-fund configurable-http-proxy@5.3.0

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-dejavu-core >/dev/null; \
	else \
		echo "browser tests need Debian's chromium: sudo apt-get install chromium fonts-dejavu-core"; \
		exit 1; \
	fi

# PostgreSQL for the hub store's tests (tests/pg.py runs initdb/pg_ctl itself, in the
# run's folder): only the binaries. Debian's own cluster service is not started (a
# policy-rc.d refusing starts, unless one is already there, as in Docker images) and is
# disabled where systemd manages it.
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgresql:
	@if [ -n "$(PG_INITDB)" ]; then :; elif [ "$$(id -u)" = 0 ]; then \
		own=; if [ ! -e /usr/sbin/policy-rc.d ]; then own=1; \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			postgresql >/dev/null; status=$$?; \
		if [ -n "$$own" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
		if command -v systemctl >/dev/null; then systemctl disable postgresql >/dev/null 2>&1; fi; \
		exit $$status; \
	else \
		echo "the PostgreSQL store's tests need Debian's postgresql: sudo apt-get install postgresql"; \
		exit 1; \
	fi

system-deps: $(HUB_PROXY) $(CHROMIUM) postgresql

# Both tiers, on two workers: each test file stays on one worker (a module's JupyterLab,
# hub or server is shared by its tests) and the browser files share one (tests/conftest.py).
# Three workers measured no faster on two cores, and made browser timings flaky.
PYTEST_WORKERS ?= 2
# r3nb and the tests are compiled once first: PYTHONDONTWRITEBYTECODE (above) leaves every
# process to compile them again otherwise, ~0.2 s of CPU in each of the ~100 servers,
# kernels and workers a run starts (site-packages were compiled by the install).
test: $(STAMP) check-supply-chain system-deps js-check
	@mkdir -p .ci/out
	@$(BIN)/python -m compileall -q r3nb tests
	$(BIN)/python -m pytest -q -p no:cacheprovider --basetemp=.ci/out/pytest \
		-n $(PYTEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

# The fast tier: tests that start no server, kernel, browser or subprocess (< 1 min).
test-fast: $(STAMP)
	@mkdir -p .ci/out
	$(BIN)/python -m pytest -q -p no:cacheprovider --basetemp=.ci/out/pytest-fast -m fast $(PYTEST_ARGS)

lint: $(STAMP) js/node_modules/.package-lock.json
	$(BIN)/ruff check r3nb tests bench
	$(BIN)/ruff format --check r3nb tests bench
	$(BIN)/mypy
	cd js && npm run lint && npm run check

# Root (containers, CI machines) needs JupyterLab's explicit consent.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--ServerApp.allow_root=True)

demo: $(STAMP)
	$(BIN)/jupyter lab notebooks/demo.ipynb --ServerApp.ip=127.0.0.1 $(ALLOW_ROOT) \
		--LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Hub mode at scale (README "Hub mode"): a real hub, the r3nb service and PostgreSQL
# with N simulated users' relays; BENCH_HUB_ARGS="--users 100,300,1000".
bench-hub: $(STAMP) system-deps
	$(BIN)/python bench/hub_scale.py $(BENCH_HUB_ARGS)

# Refresh the README's screenshots (real JupyterLab, headless Chromium, light and dark),
# then those of the notebook actions (a script: tests/screenshots_notebook.py).
screenshots: $(STAMP) system-deps
	R3NB_SCREENSHOTS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_browser.py -k screenshots
	$(BIN)/python -m tests.screenshots_notebook docs/screenshots

# A steady mix of streams, observers, cancels, faults and sweeps; SOAK_ARGS="--minutes 5".
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .ci/out js/node_modules tests/.hub-node

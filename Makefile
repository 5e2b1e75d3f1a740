PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
NPM    ?= npm
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The dashboard's chart library (uPlot, pinned in package-lock.json) lands here, git-ignored.
DASHBOARD_VENDOR := functions/dashboard/static/vendor
DASHBOARD_ASSETS := $(DASHBOARD_VENDOR)/.installed

.PHONY: serve test lint validate build bench clean dashboard-assets browser screenshots

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[local,dev]"
	touch $(STAMP)

# uPlot and its license from the npm registry (exact version and integrity from package-lock.json),
# copied into the dashboard function's CodeUri so the local runner and `sam build` ship it.
$(DASHBOARD_ASSETS): package.json package-lock.json
	command -v $(NPM) >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	$(NPM) ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(DASHBOARD_VENDOR)
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css $(DASHBOARD_VENDOR)/
	cp node_modules/uplot/LICENSE $(DASHBOARD_VENDOR)/uPlot.LICENSE.txt
	touch $@

dashboard-assets: $(DASHBOARD_ASSETS)

# Headless Chromium and ChromeDriver from Debian's packages, for tests/browser (CI runs as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

serve: $(STAMP) $(DASHBOARD_ASSETS)
	$(VENV)/bin/metering-local serve $(ARGS)

test: $(STAMP) $(DASHBOARD_ASSETS) browser
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

validate: $(STAMP)
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam validate --lint

build: $(STAMP) $(DASHBOARD_ASSETS)
	scripts/sam_build.sh $(ARGS)

# Browser tests that also write the dashboard's screenshots into docs/screenshots/.
screenshots: $(STAMP) $(DASHBOARD_ASSETS) browser
	DASHBOARD_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/browser

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .hypothesis node_modules $(DASHBOARD_VENDOR)

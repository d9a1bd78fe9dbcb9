# Two commands from a fresh clone: `make demo` and `make test`. Everything else bootstraps .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install demo test check bench fuzz kill9 clean wheel wheel-check

WEB_STAMP := web/node_modules/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Private deconfliction's PSI without its over-tight protobuf pin (see pyproject.toml).
	$(BIN)/pip install --quiet --no-deps 'openmined-psi==2.0.6'
	touch $(STAMP)

# The map's front-end libraries come from the npm registry at install time, never at run time.
$(WEB_STAMP): $(wildcard web/package-lock.json)
	if [ -f web/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
		cd web && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the map's assets are not installed (the hub and its API still work)"; fi
	mkdir -p web/node_modules && touch $(WEB_STAMP)

install: $(STAMP) $(WEB_STAMP)

demo: install
	$(BIN)/commonsky demo $(ARGS)

test: install
	$(BIN)/pytest -q -p no:cacheprovider

check: install
	$(BIN)/ruff check commonsky tests
	$(BIN)/ruff format --check commonsky tests
	$(BIN)/mypy

bench: install
	$(BIN)/commonsky bench relay

# Not part of `make test`: a million mutated messages take the better part of an hour.
CORPUS ?= tests/corpus/data
fuzz: install
	$(BIN)/commonsky bench fuzz $(if $(wildcard $(CORPUS)/*.xml),--corpus $(CORPUS)) $(ARGS)

kill9: install
	$(BIN)/commonsky bench kill9 $(ARGS)

# A wheel with the live map inside (built from npm's files by web/build.py), in dist/.
wheel: install
	$(BIN)/pip wheel --no-deps -q -w dist .

# The wheel installed in a fresh venv without extras: --help, serve, a short demo.
wheel-check: install
	$(BIN)/python .ci/wheel_check.py

clean:
	rm -rf $(VENV) var dist build commonsky/web/static

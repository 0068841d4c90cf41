# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make run    the whole stack on http://127.0.0.1:8080 (Ctrl-C stops it)
#   make test   the full suite against a real Redis and a real Kafka broker (Tansu)
# Both install what is missing first: redis-server and promtool (apt), .venv and the Python
# packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint typecheck check deps clean promtool constraints

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,local]'
	@touch $@

# promtool (Debian's prometheus package): the tests check and unit-test the alerting rules.
# Checked on every run, so a .venv made before it was needed gets it too.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (apt: prometheus)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus >/dev/null; }

deps: $(STAMP) promtool

run: $(STAMP)
	$(BIN)/mastery dev

test: $(STAMP) promtool
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

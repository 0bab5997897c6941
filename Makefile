# Two entry points (see README): `make demo` and `make test`. Each creates or refreshes the
# local virtual environment .venv from pyproject.toml before running.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JAX2ONNX := jax2onnx==0.17.1

.PHONY: demo test test-fast lint format clean export-deps browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps '$(JAX2ONNX)'
	touch $(STAMP)

# ONNX export (chromagan_jax/export.py) for a venv made without `make`: jax2onnx without its
# declared dependencies (they would downgrade orbax-checkpoint; see pyproject's `export`).
export-deps:
	$(PY) -m pip install -q -e '.[export]'
	$(PY) -m pip install -q --no-deps '$(JAX2ONNX)'

demo: $(STAMP)
	$(PY) -m chromagan_jax.demo --workdir demo_out

# The web app's browser test (tests/app_test.py) drives Debian's chromium through
# chromium-driver; installed here when missing and we are root with apt-get. Without them the
# test is skipped with its reason, and fails under CI=true.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; \
	else echo "warning: chromium/chromedriver missing and not root: tests/app_test.py" \
	  "will be skipped (and fail under CI=true)"; fi

# `make test` (and CI) run every test, slow ones included; `make test-fast` leaves out those
# marked `slow` (each > ~30 s of CPU: training runs, subprocesses, optimised compiles).
test: $(STAMP) browser
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q -rs tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -rs -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) demo_out

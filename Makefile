# Two entry points (see README): `make demo` and `make test`. Each creates or refreshes the
# local virtual environment .venv from pyproject.toml before running.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JAX2ONNX := jax2onnx==0.17.1

VENV312 ?= .venv312

.PHONY: demo test test-fast lint format clean export-deps openvino-deps browser jax012

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps '$(JAX2ONNX)'
	touch $(STAMP)

# ONNX export (chromagan_jax/inference/exporter.py) for a venv made without `make`: jax2onnx without its
# declared dependencies (they would downgrade orbax-checkpoint; see pyproject's `export`).
export-deps:
	$(PY) -m pip install -q -e '.[export]'
	$(PY) -m pip install -q --no-deps '$(JAX2ONNX)'

# The int8 CPU path (export --format openvino-int8, colorize --network) likewise.
openvino-deps:
	$(PY) -m pip install -q -e '.[openvino]'
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

# Python 3.12 gets jaxlib 0.12, whose XLA:CPU differs (YNNPACK fusions): tests/xla_defaults_test.py
# runs the models/cpu_conv numerics there too, with XLA's default flags, in $(VENV312) (the
# 'demo' extra: Keras comes with TensorFlow, and the tests' photos with scikit-image). Its
# Python is python3.12 on the PATH or pyenv's newest 3.12; without one the test is skipped
# with its reason, and fails under CI=true.
jax012:
	@if [ -f $(VENV312)/.installed ] && [ $(VENV312)/.installed -nt pyproject.toml ]; then :; \
	else py=python3.12; \
	  if command -v pyenv >/dev/null && v=$$(pyenv versions --bare | grep -E '^3\.12(\.[0-9]+)?$$' | tail -1) \
	    && [ -n "$$v" ]; then py="env PYENV_VERSION=$$v python3.12"; fi; \
	  if $$py --version >/dev/null 2>&1; then \
	    (test -x $(VENV312)/bin/python || $$py -m venv $(VENV312)) \
	    && $(VENV312)/bin/python -m pip install -q --upgrade pip \
	    && $(VENV312)/bin/python -m pip install -q -e '.[demo]' 'pytest>=8' \
	    && touch $(VENV312)/.installed; \
	  else echo "warning: no Python 3.12: tests/xla_defaults_test.py's jaxlib 0.12 run" \
	    "will be skipped (and fail under CI=true)"; fi; fi

# `make test` (and CI) run every test, slow ones included; `make test-fast` leaves out those
# marked `slow` (each > ~30 s of CPU: training runs, subprocesses, optimised compiles).
test: $(STAMP) browser jax012
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q -rs tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -rs -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) $(VENV312) demo_out

"""Shared pytest setup: repo root importable (the entry scripts, e.g. ``colorize``),
``bench/`` importable (its ``keras_reference``, the Keras builds the model and converter
tests compare with), quiet TensorFlow, Keras on TF. Helpers shared by test modules live in
``tests/helpers.py``."""

import importlib.metadata
import os
import sys

# Must be set before TensorFlow/Keras are imported by any test module.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The root goes first even when `python -m pytest` already put it on the path: bench/ has
# scripts named like root modules (bench/colorize.py), which must not shadow colorize.py.
for _path in (os.path.join(_ROOT, "bench"), _ROOT):
  while _path in sys.path:
    sys.path.remove(_path)
  sys.path.insert(0, _path)

# Tests run with XLA's optimisations off (compiles cost more than they save on these small
# programs) and, on jaxlib 0.12, the YNNPACK fusions off. CHROMAGAN_TEST_XLA_DEFAULTS=1 keeps
# XLA's defaults instead, the float32 path users run: xla_defaults_test runs the numerics
# tests of models and cpu_conv that way once.
XLA_DEFAULTS = os.environ.get("CHROMAGAN_TEST_XLA_DEFAULTS") == "1"
# jaxlib 0.12's XLA:CPU YNNPACK fusions compute the bfloat16 VGG trunk wrongly (see
# models.CPU_BFLOAT16_FLAG): the bf16 tests, which stand in for accelerators, turn them off.
YNN_FUSIONS_OFF = "--xla_cpu_experimental_ynn_fusion_type="
if importlib.metadata.version("jaxlib").startswith("0.12.") and not XLA_DEFAULTS:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + YNN_FUSIONS_OFF).strip()

# Eight fake CPU devices so multi-device paths (data-parallel mesh) are tested on one CPU;
# single-device code uses device 0. A persistent compilation cache lets the subprocesses and
# repeated jits of the same step reuse compiled executables within a test session.
import tempfile  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_disable_most_optimizations", not XLA_DEFAULTS)
_CACHE = os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "chromagan_jax_test_cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

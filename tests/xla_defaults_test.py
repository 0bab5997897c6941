"""The numerics tests of models and cpu_conv once more with XLA's default flags, on this jaxlib
and on jaxlib 0.12.

conftest.py turns XLA's optimisations off (and, on jaxlib 0.12, the YNNPACK fusions) for every
test, for compile speed; users run float32 with the defaults, where fusions and algebraic
rewrites could change numerics. This runs the whole-network comparisons (cpu_conv's networks
against XLA's convolutions, each network one jitted program as colorize compiles it; the Flax
generator and critic against their Keras builds) in a pytest subprocess with
``CHROMAGAN_TEST_XLA_DEFAULTS=1`` (optimised compiles are slow: a few tests only).

The suite's own Python is 3.11 with jaxlib 0.10, where the YNNPACK fusions that differ on 0.12
cannot run; so the same tests run a second time under the Python 3.12 environment
``.venv312`` that ``make test`` builds (jaxlib 0.12: the path users of Python >= 3.12 get).
Without it the second run is skipped with the reason, and fails under CI (``CI=true``).

What differs (README "Design", bf16 paragraph): on jaxlib 0.12 the YNNPACK fusions compute the
bfloat16 VGG trunk wrongly, which the library reports (``models.cpu_bfloat16_problem``); the
bfloat16 test checks that report is made wherever the numbers would be wrong (breakage tried:
the report removed -> the jaxlib 0.12 run fails on garbage bf16 output, the other runs pass).
No breakage of the float32 path was found that these runs catch and the regular one does not
(tried: XLA:CPU fast math with every honor_* off, every YNN fusion type on, bfloat16 round
trips of the Winograd products); they guard what users' default flags compute against jaxlib
changes.
"""

import os
import subprocess
import sys

import pytest
from helpers import skip_or_fail_under_ci

from chromagan_jax.model.networks import CPU_BFLOAT16_FLAG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Whole networks in float32, what users run on CPU: Winograd/im2col against XLA's convolutions,
# the Flax generator and critic against Keras.
NUMERICS_TESTS = [
  "tests/cpu_conv_test.py::test_networks_with_cpu_conv_match_xla",
  "tests/models_test.py::test_generator_matches_keras_inference",
  "tests/models_test.py::test_critic_matches_keras",
  # Right numbers, or the library's report that this jaxlib computes bfloat16 wrongly.
  "tests/models_test.py::test_bfloat16_compute_path",
]
# The Python 3.12 environment with jaxlib 0.12 that `make test` builds (Makefile: jax012).
JAX012_PYTHON = os.environ.get(
  "CHROMAGAN_TEST_JAX012_PYTHON", os.path.join(ROOT, ".venv312", "bin", "python")
)


def _jaxlib_version(python: str) -> str:
  out = subprocess.run(
    [python, "-c", "import importlib.metadata as m; print(m.version('jaxlib'))"],
    capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip()


def _python(which: str) -> str:
  if which == "this":
    return sys.executable
  if os.access(JAX012_PYTHON, os.X_OK):
    return JAX012_PYTHON
  message = (
    f"{JAX012_PYTHON} (Python 3.12 with jaxlib 0.12, made by `make test`) is missing: the "
    "float32 numerics on jaxlib 0.12 are not tested"
  )
  skip_or_fail_under_ci(message)


@pytest.mark.slow  # Optimised compiles of three whole networks: ~1 min on 2 quiet cores.
@pytest.mark.parametrize("which", ["this", "jaxlib012"])
def test_numerics_hold_with_default_xla_flags(which):
  python = _python(which)
  version = _jaxlib_version(python)
  if which == "jaxlib012":
    assert version.split(".")[:2] == ["0", "12"], f"{python} has jaxlib {version}"
  env = dict(os.environ, CHROMAGAN_TEST_XLA_DEFAULTS="1")
  flags = [f for f in env.get("XLA_FLAGS", "").split() if f != CPU_BFLOAT16_FLAG]  # conftest's
  env["XLA_FLAGS"] = " ".join(flags)
  # The subprocess must not share this session's cache of executables compiled without
  # optimisations (the cache key holds the options, but keep the runs apart all the same).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  proc = subprocess.run(
    [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *NUMERICS_TESTS],
    capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
  )  # fmt: skip
  report = f"jaxlib {version}:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
  assert proc.returncode == 0, report
  assert f"{len(NUMERICS_TESTS)} passed" in proc.stdout, report

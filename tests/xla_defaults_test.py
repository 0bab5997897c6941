"""The numerics tests of models and cpu_conv once more with XLA's default flags.

conftest.py turns XLA's optimisations off (and, on jaxlib 0.12, the YNNPACK fusions) for every
test, for compile speed; users run float32 with the defaults, where fusions and algebraic
rewrites could change numerics. This runs the whole-network comparisons (cpu_conv's networks
against XLA's convolutions, each network one jitted program as colorize compiles it; the Flax
generator and critic against their Keras builds) in a pytest subprocess with
``CHROMAGAN_TEST_XLA_DEFAULTS=1`` (optimised compiles are slow: three tests).

What differs (README "Design", bf16 paragraph): on jaxlib 0.12 the YNNPACK dot fusions, which
conftest turns off; on jaxlib 0.10 they are on in both runs, and only LLVM's optimisation
level differs. No breakage of the float32 path was found that this run catches and the
regular one does not (tried: XLA:CPU fast math with every honor_* off, every YNN fusion type
on, bfloat16 round trips of the Winograd products); it guards what users' default flags
compute against future jaxlib changes.
"""

import os
import subprocess
import sys

import pytest

from chromagan_jax.models import CPU_BFLOAT16_FLAG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Whole networks in float32 (bfloat16 stands in for accelerators, tested with the fusions off):
# Winograd/im2col against XLA's convolutions, the Flax generator and critic against Keras.
NUMERICS_TESTS = [
  "tests/cpu_conv_test.py::test_networks_with_cpu_conv_match_xla",
  "tests/models_test.py::test_generator_matches_keras_inference",
  "tests/models_test.py::test_critic_matches_keras",
]


@pytest.mark.slow  # Optimised compiles of three whole networks: ~1 min on 2 quiet cores.
def test_numerics_hold_with_default_xla_flags():
  env = dict(os.environ, CHROMAGAN_TEST_XLA_DEFAULTS="1")
  flags = [f for f in env.get("XLA_FLAGS", "").split() if f != CPU_BFLOAT16_FLAG]  # conftest's
  env["XLA_FLAGS"] = " ".join(flags)
  # The subprocess must not share this session's cache of executables compiled without
  # optimisations (the cache key holds the options, but keep the runs apart all the same).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  proc = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *NUMERICS_TESTS],
    capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]

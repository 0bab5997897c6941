"""cpu_kernels.conv: same values and gradients as XLA's own convolution (its VJP)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chromagan_jax import cpu_kernels


@pytest.mark.parametrize("stride,kernel", [(1, 3), (2, 4), (1, 1)])
def test_matches_xla_conv_and_gradients(stride, kernel):
  make = lambda fn: nn.Conv(  # noqa: E731
    5, (kernel, kernel), strides=(stride, stride), padding="SAME", conv_general_dilated=fn
  )
  ref, fast = make(None), make(cpu_kernels.conv)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 3), np.float32))
  params = ref.init(jax.random.key(0), x)

  def loss(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

  np.testing.assert_allclose(fast.apply(params, x), ref.apply(params, x), rtol=1e-6, atol=1e-6)
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(params, x)
  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unsupported_cases_fall_back_to_xla():
  x = jnp.ones((1, 6, 6, 4))
  w = jnp.ones((3, 3, 2, 4))  # Grouped convolution: not handled by the TF path.
  y = cpu_kernels.conv(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                       feature_group_count=2)  # fmt: skip
  assert y.shape == (1, 6, 6, 4)
  assert float(y[0, 3, 3, 0]) == pytest.approx(9 * 2)

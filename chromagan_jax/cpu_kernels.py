"""CPU-only speed-up: convolutions whose weight gradient runs in TensorFlow's oneDNN kernel.

XLA:CPU's convolution weight gradients are slow (bench/RESULTS.md: a 3x3 64->64 conv's VJP
at 112x112 ran ~5x faster with the weight gradient handed to TensorFlow). :func:`conv` is a
drop-in ``conv_general_dilated`` for ``flax.linen.Conv(conv_general_dilated=...)``: the
forward pass and the input gradient stay in XLA; the weight gradient is computed on the host
by ``tf.raw_ops.Conv2DBackpropFilter`` through ``jax.pure_callback``. Unsupported cases
(dilation, groups, non-NHWC layouts, explicit padding, non-float32) fall back to
``lax.conv_general_dilated`` unchanged. Use it only on CPU (a callback would copy device
buffers to the host on an accelerator); TensorFlow is imported on the first backward pass.
Only first-order gradients: a ``pure_callback`` cannot be differentiated again, so it must not
be used in the critic, whose gradient penalty differentiates the critic's input gradient.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.cache
def _tf():
  import tensorflow as tf  # noqa: PLC0415 (only when a weight gradient is computed)

  return tf


def _xla_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_tf_filter_grad(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding), (x, w)


def _bwd(strides, padding, res, g):
  x, w = res
  dx = jax.vjp(lambda x: _xla_conv(x, w, strides, padding), x)[1](g)[0]

  def filter_grad(x, g):
    tf = _tf()
    return tf.raw_ops.Conv2DBackpropFilter(
      input=x, filter_sizes=w.shape, out_backprop=g, strides=[1, *strides, 1], padding=padding
    ).numpy()

  dw = jax.pure_callback(filter_grad, jax.ShapeDtypeStruct(w.shape, w.dtype), x, g)
  return dx, dw


_conv_tf_filter_grad.defvjp(_fwd, _bwd)


def _is_nhwc(x, w, dimension_numbers) -> bool:
  if dimension_numbers is None or x.ndim != 4:
    return False
  want = lax.conv_dimension_numbers(x.shape, w.shape, _NHWC)
  got = lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers)
  return got == want


def conv(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """``lax.conv_general_dilated`` with a TensorFlow weight gradient for plain 2-D NHWC convs."""
  plain = (
    isinstance(padding, str)
    and padding in ("SAME", "VALID")
    and all(d == 1 for d in (lhs_dilation or (1, 1)))
    and all(d == 1 for d in (rhs_dilation or (1, 1)))
    and feature_group_count == 1
    and batch_group_count == 1
    and preferred_element_type is None
    and lhs.dtype == jnp.float32
    and rhs.dtype == jnp.float32
    and _is_nhwc(lhs, rhs, dimension_numbers)
  )
  if not plain:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )
  return _conv_tf_filter_grad(lhs, rhs, tuple(int(s) for s in window_strides), padding)

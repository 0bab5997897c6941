"""sRGB <-> CIE Lab (D65, 2 degree observer) in jax.numpy, and ChromaGAN's value scalings.

One implementation used by training, inference and evaluation. Everything is jit-able and
differentiable (the cube root and the sRGB gamma are evaluated on clamped arguments so that
their unused branch never produces NaN gradients).

Precision: every conversion computes in float32 with its two 3x3 colour matrices multiplied at
``jax.lax.Precision.HIGHEST``, whatever the model's compute dtype and whatever
``jax_default_matmul_precision`` says. A TF32 (GPU) or one-pass bfloat16 (TPU) product keeps
only 10 or 8 mantissa bits of each operand, which moves L and ab by tenths of a Lab unit (more
than the 0.05 units this module matches scikit-image to): the ab targets of training would
depend on the accelerator. ``tests/color_test.py`` checks this under bfloat16 matmul settings.

Value ranges:
  * ``rgb``: float in [0, 1] (``uint8`` inputs are divided by 255).
  * ``lab``: L in [0, 100], a and b roughly in [-128, 127] (out-of-gamut colours may exceed).
  * 8-bit encoding of the reference (OpenCV ``COLOR_BGR2Lab`` on uint8):
    ``L8 = L * 255 / 100``, ``a8 = a + 128``, ``b8 = b + 128``.
  * network values (the reference divides the 8-bit encoding by 255):
    ``L_net = L8 / 255 = L / 100`` and ``ab_net = (ab + 128) / 255``, all in [0, 1].
"""

import jax
import jax.numpy as jnp
import numpy as np

# Constants are NumPy (not jax) arrays: importing this module must not start a JAX backend
# (``jax.distributed.initialize`` has to run before any JAX computation) nor warn about
# float64 being unavailable.
# sRGB (linear) -> XYZ, D65; the matrix used by scikit-image and IEC 61966-2-1.
_RGB_TO_XYZ_64 = np.array(
  [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
  ],
  dtype=np.float64,
)
_RGB_TO_XYZ = _RGB_TO_XYZ_64.astype(np.float32)
# Inverse computed in float64 so that the round trip is exact up to float32 rounding.
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ_64).astype(np.float32)
# Reference white D65, 2 degree observer (scikit-image's value).
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)

_DELTA = 6.0 / 29.0
# Full float32 products for the colour matrices (see the module docstring).
_PRECISION = jax.lax.Precision.HIGHEST


def _as_float(x):
  """uint8 images become float32 in [0, 1]; float images become at least float32."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.float32) / 255.0
  return _at_least_f32(x)


def _at_least_f32(x):
  """Float values in float32 (bfloat16/float16 are widened; float64 is kept)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _matmul(x, matrix):
  """``x @ matrix`` at full precision (no TF32 / one-pass bf16) in ``x``'s float dtype."""
  return jnp.matmul(x, jnp.asarray(matrix, x.dtype), precision=_PRECISION)


def srgb_to_linear(rgb):
  """Inverse sRGB companding; ``rgb`` in [0, 1]."""
  return jnp.where(
    rgb <= 0.04045,
    rgb / 12.92,
    ((jnp.maximum(rgb, 0.04045) + 0.055) / 1.055) ** 2.4,
  )


def linear_to_srgb(lin):
  """sRGB companding; ``lin`` in [0, 1]."""
  return jnp.where(
    lin <= 0.0031308,
    lin * 12.92,
    1.055 * jnp.maximum(lin, 0.0031308) ** (1.0 / 2.4) - 0.055,
  )


def _f(t):
  return jnp.where(
    t > _DELTA**3,
    jnp.cbrt(jnp.maximum(t, _DELTA**3)),
    t / (3 * _DELTA**2) + 4.0 / 29.0,
  )


def _f_inv(t):
  return jnp.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb):
  """sRGB (..., 3), uint8 or float in [0, 1] -> Lab (..., 3) float32."""
  rgb = _as_float(rgb)
  xyz = _matmul(srgb_to_linear(rgb), _RGB_TO_XYZ.T)
  fx, fy, fz = jnp.moveaxis(_f(xyz / _WHITE_D65.astype(rgb.dtype)), -1, 0)
  lightness = 116.0 * fy - 16.0
  a = 500.0 * (fx - fy)
  b = 200.0 * (fy - fz)
  return jnp.stack([lightness, a, b], axis=-1)


def lab_to_rgb(lab, clip=True):
  """Lab (..., 3) -> sRGB float (..., 3) in [0, 1].

  Out-of-gamut colours are clipped per channel in linear RGB (as scikit-image and OpenCV do)
  when ``clip`` is true. Like OpenCV's ``COLOR_Lab2RGB`` (which the reference uses) and unlike
  scikit-image, ``fz = fy - b/200`` is not clamped at 0, which only changes dark, strongly
  yellow colours that lie outside the sRGB gamut.
  """
  # Lab values are never rescaled (an integer Lab array holds Lab units, not 8-bit codes).
  lightness, a, b = jnp.moveaxis(jnp.asarray(lab).astype(jnp.float32), -1, 0)
  fy = (lightness + 16.0) / 116.0
  fx = fy + a / 500.0
  fz = fy - b / 200.0
  xyz = _f_inv(jnp.stack([fx, fy, fz], axis=-1)) * _WHITE_D65
  lin = _matmul(xyz, _XYZ_TO_RGB.T)
  if clip:
    lin = jnp.clip(lin, 0.0, 1.0)
  rgb = linear_to_srgb(lin)
  return jnp.clip(rgb, 0.0, 1.0) if clip else rgb


# The 8-bit Lab encoding (OpenCV's, the reference's) stores a8 = a + 128, b8 = b + 128.
AB8_OFFSET = 128.0
# A neutral grey (a = b = 0) in network values: a8 = b8 = 128, over 255. The grey baseline.
GREY_AB_NET = AB8_OFFSET / 255.0


def lab_to_lab8(lab):
  """Lab -> the reference's 8-bit encoding (float, not rounded): L*255/100, a+128, b+128."""
  lab = _at_least_f32(lab)
  return jnp.concatenate([lab[..., :1] * (255.0 / 100.0), lab[..., 1:] + AB8_OFFSET], axis=-1)


def lab8_to_lab(lab8):
  """Inverse of :func:`lab_to_lab8`."""
  lab8 = jnp.asarray(lab8, jnp.float32)
  return jnp.concatenate([lab8[..., :1] * (100.0 / 255.0), lab8[..., 1:] - AB8_OFFSET], axis=-1)


def lab_to_net(lab):
  """Lab (..., 3) -> (L (..., 1), ab (..., 2)) network values in [0, 1] (ab clipped)."""
  lab8 = lab_to_lab8(lab)
  return lab8[..., :1] / 255.0, jnp.clip(lab8[..., 1:] / 255.0, 0.0, 1.0)


def net_to_lab(lightness, ab):
  """Network values L (..., 1) and ab (..., 2) in [0, 1] -> Lab (..., 3).

  ``ab`` is clipped to [0, 1] first, i.e. to the 8-bit range a, b in [-128, 127], as the
  reference does with ``clip(ab * 255, 0, 255)``.
  """
  lightness, ab = _at_least_f32(lightness), jnp.clip(_at_least_f32(ab), 0.0, 1.0)
  return lab8_to_lab(jnp.concatenate([lightness * 255.0, ab * 255.0], axis=-1))


def rgb_to_net(rgb):
  """uint8/float RGB (..., 3) -> (L (..., 1), ab (..., 2)) in [0, 1]; the training input."""
  return lab_to_net(rgb_to_lab(rgb))


def net_to_rgb(lightness, ab):
  """(L, ab) network values -> sRGB float in [0, 1]."""
  return lab_to_rgb(net_to_lab(lightness, ab))


def gray_to_l3(lightness):
  """L (..., 1) in [0, 1] -> the VGG input: the grey channel tiled to 3 channels."""
  return jnp.concatenate([lightness] * 3, axis=-1)


def to_uint8(x):
  """Float image in [0, 1] -> uint8 with rounding."""
  return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)

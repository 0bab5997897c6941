"""Colorization metrics, batched on device: PSNR, SSIM (two windows), colourfulness, chroma speckle.

Inputs are uint8 (or 0-255 float) RGB of shape (N, H, W, 3); each metric returns (N,).
"""

import jax
import jax.numpy as jnp
import numpy as np

from chromagan_jax.data import decode_workers
from chromagan_jax.ops import color

DATA_RANGE = 255.0


# SSIM as tf.image.ssim (the reference's): an 11x11 Gaussian window of std 1.5 ...
SSIM_WIN = 11


SSIM_SIGMA = 1.5


SSIM_K1 = 0.01


SSIM_K2 = 0.03


# ... and as scikit-image's structural_similarity defaults: a uniform 7x7 window.
SKIMAGE_SSIM_WIN = 7


# Hasler & Suesstrunk's weight of the mean term: the one value, shared with the workers'
# near-grey test (input_workers imports NumPy and Pillow only).
COLORFULNESS_MEAN_WEIGHT = decode_workers.COLORFULNESS_MEAN_WEIGHT


# The speckle measure's window (chroma_high_frequency).
CHROMA_HF_WIN = 3


METRICS = ("psnr", "ssim", "ssim_skimage", "colorfulness", "chroma_hf")


def psnr(pred, truth):
  """Per-image PSNR in dB, data range 255; +inf for identical images. -> (N,)."""
  diff = pred.astype(jnp.float32) - truth.astype(jnp.float32)
  mse = jnp.mean(diff * diff, axis=(1, 2, 3))
  return 10.0 * jnp.log10(DATA_RANGE**2 / mse)


def _box_mean(x):
  """Mean over every SKIMAGE_SSIM_WIN^2 window fully inside the image ('valid')."""
  win = SKIMAGE_SSIM_WIN
  window = (1, win, win, 1)
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), "VALID") / (win * win)


def _gaussian_window() -> np.ndarray:
  """tf.image.ssim's window: a normalised SSIM_WIN^2 Gaussian of std SSIM_SIGMA."""
  coords = np.arange(SSIM_WIN) - (SSIM_WIN - 1) / 2
  g = np.exp(-0.5 * (coords / SSIM_SIGMA) ** 2)
  window = np.outer(g, g)
  return window / window.sum()


def _gaussian_mean(x):
  """Gaussian-weighted mean over every SSIM_WIN^2 window fully inside the image ('valid')."""
  channels = x.shape[-1]
  kernel = jnp.asarray(np.tile(_gaussian_window()[:, :, None, None], (1, 1, 1, channels)))
  return jax.lax.conv_general_dilated(
    x,
    kernel.astype(x.dtype),
    (1, 1),
    "VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
    precision=jax.lax.Precision.HIGHEST,
  )


def _ssim(pred, truth, local_mean, cov_norm: float):
  """Mean SSIM per image over the windows of ``local_mean`` and the channels. -> (N,).

  ``cov_norm`` scales the local (co)variances: 1 for population statistics, n / (n - 1) for
  sample ones. Second moments are taken about the mid-grey 127.5 to keep float32
  cancellation small.
  """
  x = pred.astype(jnp.float32) - DATA_RANGE / 2
  y = truth.astype(jnp.float32) - DATA_RANGE / 2
  ux, uy = local_mean(x), local_mean(y)
  vx = cov_norm * (local_mean(x * x) - ux * ux)
  vy = cov_norm * (local_mean(y * y) - uy * uy)
  vxy = cov_norm * (local_mean(x * y) - ux * uy)
  # Back to absolute means for the luminance term.
  ux, uy = ux + DATA_RANGE / 2, uy + DATA_RANGE / 2
  c1 = (SSIM_K1 * DATA_RANGE) ** 2
  c2 = (SSIM_K2 * DATA_RANGE) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


def ssim(pred, truth):
  """Per-image SSIM as the reference computes it: ``tf.image.ssim(pred, truth, max_val=255)``.

  11x11 Gaussian windows of std 1.5, K1 = 0.01, K2 = 0.03, population (co)variances
  (TensorFlow's ``compensation=1``), mean over the windows fully inside the image and over
  the channels. Images must be at least 11x11. -> (N,).
  """
  return _ssim(pred, truth, _gaussian_mean, 1.0)


def ssim_skimage(pred, truth):
  """Per-image SSIM as scikit-image's ``structural_similarity(..., channel_axis=-1,
  data_range=255)``: uniform 7x7 windows, sample covariance, mean over the interior
  (scikit-image crops the 3-pixel border the windows do not cover) and the channels. -> (N,).
  """
  n = SKIMAGE_SSIM_WIN * SKIMAGE_SSIM_WIN
  return _ssim(pred, truth, _box_mean, n / (n - 1.0))


def colorfulness(rgb):
  """Hasler & Suesstrunk (2003) colourfulness of 0-255 RGB, population statistics. -> (N,)."""
  r, g, b = jnp.moveaxis(rgb.astype(jnp.float32), -1, 0)
  rg = r - g
  yb = 0.5 * (r + g) - b
  axes = (1, 2)
  std = jnp.sqrt(jnp.var(rg, axis=axes) + jnp.var(yb, axis=axes))
  mean = jnp.sqrt(jnp.mean(rg, axis=axes) ** 2 + jnp.mean(yb, axis=axes) ** 2)
  return std + COLORFULNESS_MEAN_WEIGHT * mean


def chroma_high_frequency(rgb):
  """Speckle: mean squared (a, b) minus its CHROMA_HF_WIN^2 box mean, Lab units^2. -> (N,).

  Only windows fully inside the image count. Smooth colour scores near 0 whatever its
  saturation; pixel-scale chroma noise (the rainbow speckle of an undertrained GAN in grass or
  fur) scores high. Compare with the ground truth's own texture (``truth_chroma_hf``).
  """
  ab = color.rgb_to_lab(rgb.astype(jnp.float32) / 255.0)[..., 1:]
  win = CHROMA_HF_WIN
  mean = jax.lax.reduce_window(ab, 0.0, jax.lax.add, (1, win, win, 1), (1,) * 4, "VALID")
  inner = ab[:, win // 2 : ab.shape[1] - win // 2, win // 2 : ab.shape[2] - win // 2]
  return jnp.mean((inner - mean / (win * win)) ** 2, axis=(1, 2, 3))


@jax.jit
def score_batch(grey, colour, truth):
  """Scores a colorized batch and the grey baseline against the ground truth.

  Args:
    grey, colour, truth: uint8 RGB (N, S, S, 3): the input's L alone, the colorized result
      and the colour photo.

  Returns:
    A dict of (N,) arrays: ``{colorized,baseline}_{psnr,ssim,ssim_skimage,colorfulness,
    chroma_hf}``, ``truth_colorfulness`` and ``truth_chroma_hf``.
  """
  out = {"truth_colorfulness": colorfulness(truth), "truth_chroma_hf": chroma_high_frequency(truth)}
  for name, image in (("colorized", colour), ("baseline", grey)):
    out[f"{name}_psnr"] = psnr(image, truth)
    out[f"{name}_ssim"] = ssim(image, truth)
    out[f"{name}_ssim_skimage"] = ssim_skimage(image, truth)
    out[f"{name}_colorfulness"] = colorfulness(image)
    out[f"{name}_chroma_hf"] = chroma_high_frequency(image)
  return out

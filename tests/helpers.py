"""Helpers shared by several test modules (test modules never import each other).

Real photos (scikit-image ships them inside its wheel), a tree assertion, random Keras
weights, torchvision's VGG16 layout, and generator weights whose colours vary across the
picture; test images (a smooth random photo, a PNG header with no pixels); the app's colorizer
without a server. Keras is imported only by the helper that needs it, so importing this
stays cheap.
"""

import os
import struct
import zlib

import jax
import numpy as np
import pytest
import skimage.data
import skimage.transform

from chromagan_jax.configs import default
from chromagan_jax.model import networks

# torchvision's VGG16 layout: conv indices in `features`, Linear indices in `classifier`.
TORCH_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TORCH_LINEARS = (0, 3, 6)


def parse_config_flags(*args):
  """The config as train.py's flags build it (lock_config=True, command-line overrides)."""
  from absl import flags
  from ml_collections import config_flags

  argv = ["train.py", *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
  )
  values(argv)
  return values.config


def skip_or_fail_under_ci(message: str):
  """Skips the test with ``message``; under CI (``CI=true``) fails it instead: what CI must
  have (a browser, Python 3.12) is never silently left out."""
  if os.environ.get("CI", "").lower() == "true":
    pytest.fail(f"CI: {message}", pytrace=False)
  pytest.skip(message)


def photo_batch(n=8, size=64):
  """``{'rgb': uint8 (n, size, size, 3)}`` of real photos, with flips and crops for variety."""
  photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
  out = []
  for i in range(n):
    img = photos[i % len(photos)]
    if i >= len(photos):
      img = img[:, ::-1] if i % 2 else img[i * 7 :, i * 5 :]
    out.append(skimage.transform.resize(img, (size, size), preserve_range=True))
  return {"rgb": np.stack(out).round().astype(np.uint8)}


def assert_trees_equal(got, want):
  """Same keys, and every array bit-identical."""
  flat_got = dict(jax.tree_util.tree_leaves_with_path(got))
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
  assert sorted(map(str, flat_got)) == sorted(map(str, flat_want))
  for path, value in flat_want.items():
    np.testing.assert_array_equal(flat_got[path], value, err_msg=jax.tree_util.keystr(path))


def randomize(model, seed):
  """Random weights for a Keras model: LeCun-normal kernels, small biases, batch norm with
  non-trivial gamma/beta/mean/variance."""
  import keras  # Here, so that only the Keras tests pay for importing TensorFlow.

  rng = np.random.default_rng(seed)
  for layer in model._flatten_layers(include_self=False, recursive=True):
    if not layer.weights or isinstance(layer, keras.Model):
      continue
    values = []
    for v in layer.weights:
      shape, name = tuple(v.shape), v.name
      if name == "kernel":
        fan_in = int(np.prod(shape[:-1]))
        values.append(rng.normal(0, 1 / np.sqrt(fan_in), shape))
      elif name in ("gamma", "moving_variance"):
        values.append(rng.uniform(0.5, 1.5, shape))
      elif name == "moving_mean":
        values.append(rng.normal(0, 0.5, shape))
      else:  # bias, beta
        values.append(rng.normal(0, 0.1, shape))
    layer.set_weights([x.astype(np.float32) for x in values])


def small_config():
  """The paper's config shrunk for tests: 64x64, width 1/8."""
  config = default.get_config()
  config.model.image_size = 64
  config.model.width = 1 / 8
  return config


def _numpy_generator_variables(config, seed, kernel, dec_bias=None):
  """Generator variables of ``config``'s shapes made with NumPy (no compile).

  ``kernel(rng, shape, fan_in, is_last)`` draws each conv/dense kernel; batch-norm scales and
  variances are ones, other arrays zeros except the last conv's bias (``dec_bias``).
  """
  gen = networks.models_from_config(config.model)[0]
  size = config.model.image_size
  shapes = jax.eval_shape(gen.init, jax.random.key(0), np.zeros((1, size, size, 3), np.float32))
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    names = [getattr(p, "key", "") for p in path]
    last = "dec_conv6" in names
    if names[-1] == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return kernel(rng, leaf.shape, fan_in, last).astype(np.float32)
    if names[-1] in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    if names[-1] == "bias" and last and dec_bias is not None:
      return np.asarray(dec_bias, np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(init, shapes)


def random_generator_variables(config, seed=0):
  """Random generator variables with a mild, nearly uniform tint (a8 ~ 137, b8 ~ 118).

  Kernels ~ N(0, 1/fan_in); the last conv is scaled down so that ab stays near grey: strong
  random colours would leave the sRGB gamut and clipping changes L (tests that check L).
  """

  def kernel(rng, shape, fan_in, last):
    return rng.standard_normal(shape) * (0.05 if last else 1.0) / np.sqrt(fan_in)

  return _numpy_generator_variables(config, seed, kernel, dec_bias=[0.15, -0.15])


def colourful_generator_variables(config, seed=0, strength=4.0):
  """Generator variables whose ab varies strongly across the image (spatial std ~15-20 Lab).

  He-scaled kernels keep the activations' magnitude through the ReLU layers (so the output
  depends on the input); the last conv's kernels, ``strength`` x larger, have zero spatial
  mean per input channel, so ab follows the image's structure around a ~neutral mean instead
  of one tint. A batch pairing, rotation or wrong network input then shows in every output.
  ``strength=1`` keeps most pixels of most photos inside the sRGB gamut (tests of L).
  """

  def kernel(rng, shape, fan_in, last):
    k = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return strength * (k - k.mean(axis=(0, 1), keepdims=True)) if last else k

  return _numpy_generator_variables(config, seed, kernel)


def ab_input_sensitivity(variables, config) -> float:
  """max |ab(photos) - ab(black)| (network units: ab in [0, 1]) of generator ``variables``.

  How far the generator's output moves with its input: a fixture that compares colours
  asserts it is far above its tolerance, so that a wrong network input (``L / 100``, another
  photo's L, a black frame) cannot pass as the right one. The photos' L is scikit-image's.
  """
  import skimage.color

  size = config.model.image_size
  lightness = skimage.color.rgb2lab(photo_batch(3, size)["rgb"])[..., :1] / 100.0
  l3 = np.repeat(lightness, 3, axis=-1).astype(np.float32)
  gen = networks.models_from_config(config.model)[0].clone(with_class_head=False)
  apply = jax.jit(lambda v, x: gen.apply(v, x, train=False)[0])
  variables = networks.without_class_head(variables)
  ab = np.asarray(apply(variables, l3))
  ab_black = np.asarray(apply(variables, np.zeros_like(l3)))
  return float(np.abs(ab - ab_black).max())


def resize_antialiased(image, shape):
  """scikit-image's bilinear resize of (H, W, C) ``image`` to ``shape`` (h, w), float64, with
  the antialiasing that bilinear resampling with a widened tent filter (Pillow's, and
  ``jax.image``'s ``antialias=True``) applies when shrinking.

  A tent of half-width f (the shrink factor) has variance f^2 / 6, plain bilinear
  interpolation's 1 / 6: the Gaussian prefilter makes up the difference, sigma =
  sqrt((f^2 - 1) / 6) per shrunk axis (scikit-image's default, (f - 1) / 2, blurs much less
  than a tent for mild shrinks). Axes that grow are not filtered.
  """
  factors = np.asarray(image.shape[:2], np.float64) / np.asarray(shape)
  sigma = np.sqrt(np.maximum(factors**2 - 1.0, 0.0) / 6.0)
  return skimage.transform.resize(
    image.astype(np.float64),
    shape,
    order=1,
    mode="edge",
    anti_aliasing=bool(sigma.any()),
    anti_aliasing_sigma=(*sigma, 0.0)[: image.ndim],
  )


def smooth_rgb(h, w, seed=0):
  """A smooth random uint8 (h, w, 3) image (JPEG-friendly)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  phases = rng.uniform(0, 2 * np.pi, (3, 2))
  chans = [127.5 + 120 * np.sin(3 * x + p0) * np.cos(2 * y + p1) for p0, p1 in phases]
  return np.stack(chans, -1).round().astype(np.uint8)


def png_header_only(width, height):
  """A PNG signature, an IHDR claiming width x height 8-bit RGB, and IEND: no pixel data."""

  def chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def app_colorizers(monkeypatch) -> list:
  """Makes ``app.main`` return once its server is set up, without serving: returns the list
  that receives the colorizer the app would serve."""
  from chromagan_jax.inference import webapp

  served = []
  monkeypatch.setattr(webapp, "create_app", lambda colorizer, *a, **k: served.append(colorizer))

  class _Server:  # Bound, never serving.
    def run(self):
      pass

    def close(self):
      pass

  monkeypatch.setattr(webapp, "make_server", lambda *a, **k: _Server())
  return served

"""Colorize photos with a ChromaGAN generator: image files in, colour image files out.

The procedure is the reference's inference (see ``/work/shared/spec/chromagan.md``):

1. the input's lightness ``L`` (colour inputs keep only their Lab ``L``; grey inputs are read
   as sRGB grey) is computed at the input's own resolution;
2. for the network the image is resized to ``image_size`` x ``image_size`` (bilinear, no crop,
   no antialiasing, rounded to uint8, as the training data is), its ``L`` tiled to 3 channels;
3. the generator predicts ``ab`` in [0, 1]; ``ab8 = clip(ab * 255, 0, 255)`` (the 8-bit
   encoding, a8 = a + 128) is resized (bilinear) to the ORIGINAL resolution and joined with the
   original-resolution ``L``; Lab -> sRGB with :mod:`chromagan_jax.ops.color`.

Step 2's resize runs on the host (NumPy, :func:`chromagan_jax.data.images.resize`, the training
data's resize); the rest runs on device. Images of different sizes are edge-padded to a few
bucket shapes (the true height and width are traced scalars of the ab resize), so a folder
of photos of many sizes compiles a handful of programs, not one per size; the generator runs
on a fixed batch shape (the last batch is padded).

Decoding is :mod:`chromagan_jax.data.images`, as for training and evaluation (EXIF orientation;
grey, grey+alpha, RGB, RGBA, palette, 16/32-bit grey, CMYK); the alpha channel is kept and
passed through to the output. Files in, files out (names, formats, saving) is
:mod:`chromagan_jax.inference.folders`; the command line is ``colorize.py``.
"""

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from chromagan_jax.data import images as image_files
from chromagan_jax.data.images import Photo
from chromagan_jax.model import networks, predict
from chromagan_jax.ops import color
from chromagan_jax.ops.conv_policy import ConvPolicy
from chromagan_jax.runtime import machine

DEFAULT_BATCH_SIZE = 8
# ab8 upsampling to the original size; antialiasing only matters when shrinking (inputs
# smaller than the network size).
AB_RESIZE_ANTIALIAS = True


# --------------------------------------------------------------------------------------------
# Device computations.


def bucket(n: int) -> int:
  """Rounds a side length up to one of few values (steps of 1/8 to 1/16 of it, >= 32).

  Padding images to bucket shapes bounds the number of compiled programs while wasting at
  most ~12% of the work.
  """
  step = max(32, 2 ** max(0, n.bit_length() - 4))
  return -(-n // step) * step


def pad_to_bucket(rgb: np.ndarray) -> np.ndarray:
  """(H, W, C) -> (bucket(H), bucket(W), C) with edge replication."""
  h, w = rgb.shape[:2]
  return np.pad(rgb, ((0, bucket(h) - h), (0, bucket(w) - w), (0, 0)), mode="edge")


def _resize_padded(image, height, width, shape, antialias, target=None):
  """Bilinear resize of the top-left ``height`` x ``width`` of ``image`` to ``target``.

  ``image`` (Hp, Wp, C) may be edge-padded beyond (height, width): without antialiasing the
  bilinear kernel reaches at most one pixel past the edge, which then holds the edge value,
  so the result equals ``jax.image.resize`` of the unpadded image. The output has the static
  ``shape`` (Ho, Wo); ``target`` (<= shape, may be traced, default ``shape``) is the size the
  image is scaled to, the rest of the output being padding.
  """
  target = shape if target is None else target
  scale = jnp.stack([target[0] / height, target[1] / width]).astype(jnp.float32)
  return jax.image.scale_and_translate(
    image.astype(jnp.float32),
    (*shape[:2], image.shape[-1]),
    (0, 1),
    scale,
    jnp.zeros(2, jnp.float32),
    method="linear",
    antialias=antialias,
  )


@functools.partial(jax.jit, static_argnames="with_grey")
def compose(rgb_padded, ab_net, height, width, with_grey: bool = False):
  """Joins the original-resolution L with the predicted ab upsampled to that resolution.

  Args:
    rgb_padded: uint8 (Hp, Wp, 3), the input edge-padded beyond its true (height, width).
    ab_net: (S, S, 2) network output in [0, 1].
    height, width: the input's true size (int scalars, traced).
    with_grey: also return the input's L rendered as grey (a = b = 0).

  Returns:
    uint8 (Hp, Wp, 3) colour image, valid in [:height, :width]; and the grey one if asked.
  """
  s = ab_net.shape[0]
  # The reference's 8-bit encoding a8 = a + 128, kept in float (no second rounding).
  ab8 = jnp.clip(ab_net.astype(jnp.float32) * 255.0, 0.0, 255.0)
  # Resized from the unpadded (S, S) ab8 straight into the padded output shape: rows and
  # columns below (height, width) are exactly jax.image.resize(ab8, (height, width)).
  ab8 = _resize_padded(ab8, s, s, rgb_padded.shape[:2], AB_RESIZE_ANTIALIAS, (height, width))
  lightness = color.rgb_to_lab(rgb_padded)[..., :1]
  lab = jnp.concatenate([lightness, ab8 - color.AB8_OFFSET], axis=-1)
  out = color.to_uint8(color.lab_to_rgb(lab))
  if not with_grey:
    return out
  grey = color.lab_to_rgb(jnp.concatenate([lightness, jnp.zeros_like(ab8)], axis=-1))
  return out, color.to_uint8(grey)


# Exact linear value of each uint8 sRGB code, and the Y row of sRGB -> XYZ.
_LINEAR_OF_CODE = np.asarray(color.srgb_to_linear(np.arange(256) / np.float32(255.0)), np.float32)
_Y_ROW = np.asarray(color._RGB_TO_XYZ[1:2], np.float32)
_DELTA = 6.0 / 29.0
# Pixels per strip of compose_host's per-pixel work (3 MB per float32 Lab temporary).
_COMPOSE_STRIP_PIXELS = 1 << 18


def _host_lightness(rgb: np.ndarray) -> np.ndarray:
  """uint8 sRGB (H, W, 3) -> Lab L (H, W) float32 in [0, 100], to float32 precision.

  OpenCV's own float RGB -> Lab is off by up to 0.18 L (its gamma table), about half a uint8
  level of the result; this is exact per code (a 256-entry table) and as fast.
  """
  y = cv2.transform(cv2.LUT(rgb, _LINEAR_OF_CODE), _Y_ROW)
  f = cv2.pow(y, 1.0 / 3.0)
  dark = y <= np.float32(_DELTA**3)
  if dark.any():
    f[dark] = y[dark] / np.float32(3 * _DELTA**2) + np.float32(4.0 / 29.0)
  f *= np.float32(116.0)  # In place: no second full-resolution plane.
  f -= np.float32(16.0)
  return f


def compose_host(rgb, ab_net, with_grey: bool = False):
  """:func:`compose` on the host with OpenCV, for photos at least as large as the network input.

  The same procedure and formulas: ab8 upsampled bilinearly (half-pixel centres, edge
  clamping, which for enlarging equals :func:`compose`'s antialiased resize), joined with the
  photo's full-resolution L (:func:`_host_lightness`), Lab -> sRGB by OpenCV (the reference's
  converter: D65, the same matrix, clipping in linear RGB; within 0.02 uint8 levels of
  scikit-image in gamut), rounded to uint8. Several times less CPU than :func:`compose` in
  XLA at 12 MP (bench/colorize_e2e.py), and no padding or compile per size.

  Args:
    rgb: uint8 (H, W, 3) photo with H, W >= the network size.
    ab_net: (S, S, 2) network output in [0, 1].
    with_grey: also return the photo's L rendered as grey (a = b = 0).

  Returns:
    uint8 (H, W, 3) colour image; and the grey one if asked.
  """
  h, w = rgb.shape[:2]
  # Resizing is linear, so ab8 - 128 (= a, b) is resized directly.
  ab8 = np.clip(np.asarray(ab_net, np.float32) * 255.0, 0.0, 255.0) - 128.0
  ab = cv2.resize(ab8, (w, h), interpolation=cv2.INTER_LINEAR)
  colour = np.empty((h, w, 3), np.uint8)
  grey = np.empty((h, w, 3), np.uint8) if with_grey else None
  # The rest is per pixel: done in strips of rows, its float temporaries stay a few MB (not
  # a dozen full-resolution planes, each faulted in afresh in a worker thread's malloc arena).
  rows = max(1, _COMPOSE_STRIP_PIXELS // w)
  zero = np.zeros((min(rows, h), w, 2), np.float32) if with_grey else None
  for top in range(0, h, rows):
    strip = slice(top, min(h, top + rows))
    lightness = _host_lightness(rgb[strip])
    _lab_to_uint8_rgb(lightness, ab[strip], colour[strip])
    if with_grey:
      _lab_to_uint8_rgb(lightness, zero[: len(lightness)], grey[strip])
  return (colour, grey) if with_grey else colour


def _lab_to_uint8_rgb(lightness: np.ndarray, ab: np.ndarray, out: np.ndarray):
  """float32 L (h, W) and a, b (h, W, 2) -> ``out`` uint8 (h, W, 3) sRGB, rounded (OpenCV)."""
  # L and ab merged in one pass: no per-channel planes.
  rgb = cv2.cvtColor(cv2.merge([lightness, ab]), cv2.COLOR_Lab2RGB)
  cv2.convertScaleAbs(rgb, dst=out, alpha=255.0)  # round, saturate to uint8


# --------------------------------------------------------------------------------------------
# Batched colorization.


@functools.cache
def _jitted(fn, compiler_options: tuple):
  return jax.jit(fn, static_argnums=0, compiler_options=dict(compiler_options))


def inference_program(fn, model):
  """``fn(model, ...)`` jitted (``model`` static) with the compiler options of inference programs
  that ``model``'s convolution policy carries (``ConvPolicy.compiler_options``). Options can
  only be given to a top-level jit: programs that call ``fn`` inside their own jit (the train
  loop's sample grids) pass the options themselves."""
  return _jitted(fn, model.conv.compiler_options)


def predict_ab(model, variables, rgb, filters=None):
  """:func:`predict.predict_ab_fn`, jitted as :func:`inference_program`."""
  return inference_program(predict.predict_ab_fn, model)(model, variables, rgb, filters)


def colorize_small(model, variables, rgb, filters=None):
  """:func:`predict.colorize_small_fn`, jitted as :func:`inference_program`."""
  return inference_program(predict.colorize_small_fn, model)(model, variables, rgb, filters)


def conv_impl_of(config) -> str | None:
  """The ``conv_impl`` a checkpoint's ``config`` (full, its ``model`` section, a dict, or None)
  names; None when it names none (converted checkpoints): "auto" then."""
  if config is None or isinstance(config, nn.Module):
    return None
  model = config.get("model", config) if hasattr(config, "get") else config
  return model.get("conv_impl") if hasattr(model, "get") else None


class Colorizer:
  """Runs the generator on a stream of :class:`Photo` in fixed-shape batches.

  Args:
    variables: generator variables ``{'params', 'batch_stats'}``, with or without the class
      head (:func:`checkpoint.load_generator` ``with_class_head=False``); it is not used;
      None with ``network``, which holds its own weights.
    config: see :func:`predict.generator_from`.
    batch_size: images per generator call (the last batch is padded with zeros).
    conv_impl: overrides the convolution algorithm of ``config`` (``conv_policy.IMPLS``); None
      keeps the checkpoint's, and "auto" (the fastest measured on CPU) for a checkpoint that
      names none. Winograd layers get their filters transformed once, at the first batch
      (:func:`predict.inference_filters`).
    conv: the policy itself, when the caller built one (overrides ``conv_impl``); else it is
      built here from ``conv_impl`` and this machine (``runtime.machine.conv_policy``).
    network: the network stage, uint8 RGB (batch_size, S, S, 3) -> (L (batch_size, S, S),
      ab (batch_size, S, S, 2)), both in [0, 1] (e.g. ``openvino_network.load_network``);
      None runs the generator in JAX (:meth:`jax_network`). The rest (resizing, composing)
      is the same either way.
  """

  def __init__(
    self,
    variables,
    config=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    conv_impl: str | None = None,
    conv: ConvPolicy | None = None,
    network: Callable[[np.ndarray], tuple] | None = None,
  ):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if conv is None:
      conv = machine.conv_policy(conv_impl or conv_impl_of(config))
    self.model = predict.generator_from(config, conv)
    if isinstance(config, nn.Module) and conv_impl is not None:
      self.model = self.model.clone(conv=conv.resolve(objective="fwd"))
    if variables is None and network is None:
      raise ValueError("the JAX network needs the generator's variables")
    self.variables = None if variables is None else networks.without_class_head(variables)
    self.filters = None  # Winograd filters, transformed once at the first batch.
    self.batch_size = batch_size
    self.image_size = self.model.image_size
    self.network = self.jax_network if network is None else network

  def jax_network(self, smalls: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """The default network stage: the generator in JAX on uint8 RGB (batch_size, S, S, 3) ->
    (L (batch_size, S, S), ab (batch_size, S, S, 2)) in [0, 1], on device."""
    if self.filters is None:
      self.filters = predict.inference_filters(self.model, self.variables, smalls)
    lightness, ab = predict_ab(self.model, self.variables, smalls, self.filters)
    return lightness[..., 0], ab

  def predict_network(self, rgbs: Sequence[np.ndarray]) -> tuple[jax.Array, jax.Array]:
    """The generator on up to ``batch_size`` uint8 RGB images (H, W, 3), any sizes.

    Returns:
      (lightness, ab) at the network size S, padded to ``batch_size`` (on device for the JAX
      network, NumPy for another):
      lightness (batch_size, S, S) is the network input's L / 100 in [0, 1]; ab
      (batch_size, S, S, 2) is the prediction in [0, 1] (rows past ``len(rgbs)`` are padding).
      :meth:`compose_full` turns ab (smoothed over time or not) into a full-resolution image.
    """
    if not 1 <= len(rgbs) <= self.batch_size:
      raise ValueError(f"expected 1..{self.batch_size} images, got {len(rgbs)}")
    # The network input is resized exactly as the training data is (images.resize: bilinear,
    # no antialiasing, uint8). On the host in NumPy it reads only the rows and columns it
    # needs: 12 ms for a 12 MP photo, against 0.6 s CPU for a jax.image resize of it.
    smalls = np.stack([image_files.resize(x, self.image_size) for x in rgbs])
    if len(rgbs) < self.batch_size:  # Black images fill the batch: one compiled shape.
      smalls = np.pad(smalls, ((0, self.batch_size - len(rgbs)), (0, 0), (0, 0), (0, 0)))
    return self.network(smalls)

  @staticmethod
  def compose_full(rgb: np.ndarray, ab_net, with_grey: bool = False):
    """Input uint8 (H, W, 3) + network ab (S, S, 2) in [0, 1] -> uint8 (H, W, 3) colour image
    (its L is the input's, at full resolution), and the grey rendering if ``with_grey``."""
    h, w = rgb.shape[:2]
    if min(h, w) >= ab_net.shape[0]:  # Enlarging ab: OpenCV on the host, several times faster.
      return compose_host(rgb, np.asarray(ab_net), with_grey=with_grey)
    # Shrinking ab (a photo smaller than the network input): the XLA compose's antialiasing.
    out = compose(pad_to_bucket(rgb), ab_net, h, w, with_grey=with_grey)
    if not with_grey:
      return np.asarray(out)[:h, :w]
    return np.asarray(out[0])[:h, :w], np.asarray(out[1])[:h, :w]

  @classmethod
  def compose_photo(cls, photo: Photo, ab_net, with_grey: bool = False):
    """:meth:`compose_full` of ``photo`` with its alpha (if any) attached: (colour,
    grey-or-None), uint8 (H, W, 3) or (H, W, 4), as :meth:`stream` yields them."""
    out = cls.compose_full(photo.rgb, ab_net, with_grey=with_grey)
    colour, grey = out if with_grey else (out, None)
    colour = _attach_alpha(colour, photo.alpha)
    if grey is not None:
      grey = _attach_alpha(grey, photo.alpha)
    return colour, grey

  def _colorize_batch(self, photos: Sequence[Photo], with_grey: bool):
    _, ab = self.predict_network([p.rgb for p in photos])
    for i, photo in enumerate(photos):
      yield photo, *self.compose_photo(photo, ab[i], with_grey=with_grey)

  def stream(
    self, photos: Iterable[Photo], with_grey: bool = False
  ) -> Iterator[tuple[Photo, np.ndarray, np.ndarray | None]]:
    """Yields (photo, colour, grey-or-None) per input, consuming ``batch_size`` at a time.

    ``colour`` (and ``grey``, the input's L rendered grey) are uint8 (H, W, 3), or (H, W, 4)
    with the input's alpha when it has one.
    """
    batch = []
    for photo in photos:
      batch.append(photo)
      if len(batch) == self.batch_size:
        yield from self._colorize_batch(batch, with_grey)
        batch = []
    if batch:
      yield from self._colorize_batch(batch, with_grey)


def _attach_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
  return rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)


def colorize(
  images: Iterable[np.ndarray],
  variables,
  config=None,
  batch_size: int = DEFAULT_BATCH_SIZE,
  progress: bool = False,
) -> list[np.ndarray]:
  """Colorizes uint8 images.

  Args:
    images: uint8 arrays (H, W), (H, W, 1) (grey), (H, W, 3) (RGB, only its L is used) or
      (H, W, 4) (RGBA; alpha is passed through), any sizes.
    variables: generator variables ``{'params', 'batch_stats'}``.
    config: full config, ``config.model``, a :class:`networks.Generator` or None (see
      :func:`predict.generator_from`).
    batch_size: generator batch; capped at the number of images.
    progress: show a tqdm progress bar.

  Returns:
    One uint8 array per input, same height and width: (H, W, 3) RGB, or (H, W, 4) RGBA for
    RGBA inputs.
  """
  photos = [image_files.array_to_photo(im, source=i) for i, im in enumerate(images)]
  if not photos:
    return []
  colorizer = Colorizer(variables, config, batch_size=min(batch_size, len(photos)))
  bar = tqdm.tqdm(total=len(photos), unit="img", disable=not progress)
  out = []
  for _, colour, _ in colorizer.stream(photos):
    out.append(colour)
    bar.update()
  bar.close()
  return out

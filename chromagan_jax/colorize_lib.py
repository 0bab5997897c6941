"""Colorize photos with a ChromaGAN generator: image files in, colour image files out.

The procedure is the reference's inference (see ``/work/shared/spec/chromagan.md``):

1. the input's lightness ``L`` (colour inputs keep only their Lab ``L``; grey inputs are read
   as sRGB grey) is computed at the input's own resolution;
2. for the network the image is resized to ``image_size`` x ``image_size`` (bilinear, no crop,
   no antialiasing, rounded to uint8, as the training data is), its ``L`` tiled to 3 channels;
3. the generator predicts ``ab`` in [0, 1]; ``ab8 = clip(ab * 255, 0, 255)`` (the 8-bit
   encoding, a8 = a + 128) is resized (bilinear) to the ORIGINAL resolution and joined with the
   original-resolution ``L``; Lab -> sRGB with :mod:`chromagan_jax.color`.

Steps 1-3 run on device. Images of different sizes are edge-padded to a few bucket shapes (the
true height and width are traced scalars of the resize), so a folder of photos of many sizes
compiles a handful of programs, not one per size; the generator runs on a fixed batch shape
(the last batch is padded).

Files: EXIF orientation is applied; grey, grey+alpha, RGB, RGBA (alpha is passed through),
palette (with or without transparency), 16-bit grey, CMYK and other Pillow modes are read.
JPEG inputs give JPEG outputs (quality 95, no chroma subsampling), everything else PNG.
Input files are never overwritten. Unreadable files are reported and skipped.
"""

import argparse
import dataclasses
import functools
import glob
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from PIL import Image, ImageOps, UnidentifiedImageError

from chromagan_jax import checkpoint, color, compile_cache, models

# 50 megapixels: larger than most camera photos; a header claiming more is rejected before any
# pixel is decoded (decompression-bomb guard). Raise it with --max_pixels.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_BATCH_SIZE = 8
JPEG_QUALITY = 95
# Extensions picked up when a folder is given (explicit files and globs are always tried).
IMAGE_EXTENSIONS = frozenset(
  (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
  + (".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".ico")
)
_JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
# The name suffix used when the natural output name is taken (by an input or an earlier file).
COLLISION_SUFFIX = "_colorized"
COMPARE_SUFFIX = "_compare"
# Training resizes with plain bilinear interpolation (OpenCV/TF default: no antialiasing);
# the network input is resized the same way so that it sees the statistics it was trained on.
NETWORK_RESIZE_ANTIALIAS = False
# ab8 upsampling to the original size; antialiasing only matters when shrinking (inputs
# smaller than the network size).
AB_RESIZE_ANTIALIAS = True


class ImageError(ValueError):
  """A file that cannot be colorized; the message names the file and the problem."""


@dataclasses.dataclass
class Photo:
  """A decoded input image.

  Attributes:
    rgb: (H, W, 3) uint8 sRGB, already in display orientation (grey inputs tiled).
    alpha: (H, W) uint8 alpha channel, or None.
    format: Pillow's name of the file format ('JPEG', 'PNG', ...), None for arrays.
    source: where it came from (a path, or an index for arrays).
  """

  rgb: np.ndarray
  alpha: np.ndarray | None = None
  format: str | None = None
  source: Any = None


# --------------------------------------------------------------------------------------------
# Decoding.


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
  return np.repeat(grey[..., None], 3, axis=-1)


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
  """16-bit grey (0..65535) -> uint8 with rounding (65535 / 255 = 257)."""
  return np.clip(np.round(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def pil_to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
  """A Pillow image of any common mode -> ((H, W, 3) uint8 RGB, (H, W) uint8 alpha or None).

  Grey modes ('1', 'L', 16-bit 'I;16*', 32-bit 'I' read as 16-bit, float 'F' read as [0, 1])
  are tiled; palette images become RGB or RGBA (with transparency); CMYK, YCbCr, ... are
  converted by Pillow (no colour management: embedded ICC profiles are ignored).
  """
  mode = im.mode
  if mode in ("P", "PA"):
    im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
  elif mode in ("L", "RGB") and "transparency" in im.info:
    im = im.convert("RGBA")
  elif mode in ("La", "RGBa", "RGBX"):
    im = im.convert({"La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}[mode])
  mode = im.mode
  if mode in ("1", "L"):
    return _grey_to_rgb(np.asarray(im.convert("L"))), None
  if mode == "LA":
    arr = np.asarray(im)
    return _grey_to_rgb(arr[..., 0]), arr[..., 1].copy()
  if mode.startswith("I;16") or mode == "I":
    return _grey_to_rgb(_sixteen_bit_to_uint8(np.asarray(im))), None
  if mode == "F":
    arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
    return _grey_to_rgb(np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)), None
  if mode == "RGBA":
    arr = np.asarray(im)
    return np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy()
  return np.asarray(im.convert("RGB")).copy(), None


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
  """Decodes an image file, applying its EXIF orientation.

  The size in the header is checked against ``max_pixels`` before any pixel is decoded.

  Raises:
    ImageError: unreadable, empty, truncated, not an image, or over the pixel limit; the
      message names the file.
  """
  path = os.fspath(path)
  try:
    if os.path.getsize(path) == 0:
      raise ImageError(f"{path}: empty file (0 bytes)")
  except OSError as e:
    raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
  # Pillow's own bomb check would fire (or only warn) at its fixed limit; ours replaces it.
  saved_limit = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None
  try:
    with Image.open(path) as im:
      width, height = im.size
      if width * height > max_pixels:
        raise ImageError(
          f"{path}: {width}x{height} image ({width * height:,} pixels) exceeds the limit of "
          f"{max_pixels:,} pixels; not decoded (raise --max_pixels to allow it)"
        )
      fmt = im.format
      im.load()
      rgb, alpha = pil_to_arrays(ImageOps.exif_transpose(im))
  except ImageError:
    raise
  except UnidentifiedImageError:
    raise ImageError(f"{path}: not an image file Pillow can read") from None
  except Exception as e:  # noqa: BLE001 - any decoder failure is a per-file error.
    raise ImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
  finally:
    Image.MAX_IMAGE_PIXELS = saved_limit
  return Photo(rgb=rgb, alpha=alpha, format=fmt, source=path)


def array_to_photo(image, source=None) -> Photo:
  """uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> :class:`Photo`."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"image {source}: expected uint8, got {image.dtype}")
  if image.ndim == 2:
    return Photo(_grey_to_rgb(image), source=source)
  if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and min(image.shape[:2]) > 0:
    if image.shape[-1] == 1:
      return Photo(_grey_to_rgb(image[..., 0]), source=source)
    if image.shape[-1] == 3:
      return Photo(image, source=source)
    return Photo(np.ascontiguousarray(image[..., :3]), image[..., 3].copy(), source=source)
  raise ValueError(f"image {source}: expected shape (H, W), (H, W, 1|3|4), got {image.shape}")


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


@functools.partial(jax.jit, static_argnames="size")
def resize_for_network(rgb_padded, height, width, size: int):
  """Edge-padded uint8 (Hp, Wp, 3) whose true size is (height, width) -> uint8 (size, size, 3).

  Bilinear, no crop, no antialiasing, rounded to uint8: the training data's resize.
  """
  small = _resize_padded(
    rgb_padded, height, width, (size, size), antialias=NETWORK_RESIZE_ANTIALIAS
  )
  return jnp.clip(jnp.round(small), 0, 255).astype(jnp.uint8)


@jax.jit
def network_input(rgb_small):
  """uint8 RGB (..., S, S, 3) -> l3 (..., S, S, 3) in [0, 1]: its L / 100 tiled."""
  lightness, _ = color.rgb_to_net(rgb_small)
  return color.gray_to_l3(lightness)


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
  out = color.to_uint8(color.lab_to_rgb(jnp.concatenate([lightness, ab8 - 128.0], axis=-1)))
  if not with_grey:
    return out
  grey = color.lab_to_rgb(jnp.concatenate([lightness, jnp.zeros_like(ab8)], axis=-1))
  return out, color.to_uint8(grey)


# --------------------------------------------------------------------------------------------
# Batched colorization.


def generator_from(config) -> nn.Module:
  """The generator for ``config``: a full config, its ``model`` section, a dict of either,
  a ready :class:`models.Generator`, or None (the paper's 224x224, width-1 network)."""
  if config is None:
    return models.Generator()
  if isinstance(config, nn.Module):
    return config
  if not isinstance(config, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(config)
  model_config = config.model if "model" in config else config
  return models.models_from_config(model_config)[0]


@functools.partial(jax.jit, static_argnums=0)
def predict_ab(model, variables, l3):
  """Generator ``model`` (static, hashable) on l3 (N, S, S, 3) -> ab (N, S, S, 2) in [0, 1]."""
  return model.apply(variables, l3, train=False)[0]


class Colorizer:
  """Runs the generator on a stream of :class:`Photo` in fixed-shape batches.

  Args:
    variables: generator variables ``{'params', 'batch_stats'}``.
    config: see :func:`generator_from`.
    batch_size: images per generator call (the last batch is padded with zeros).
    conv_impl: overrides the convolution algorithm of ``config`` (``models.CONV_IMPLS`` or
      "auto"); None keeps the checkpoint's. On CPU "winograd" runs 1.3-1.8x faster but
      compiles in ~10-20 s instead of ~1 s (bench/RESULTS.md): "xla" wins for a few photos.
  """

  def __init__(self, variables, config=None, batch_size: int = DEFAULT_BATCH_SIZE, conv_impl=None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.model = generator_from(config)
    if conv_impl is not None:
      self.model = self.model.clone(conv_impl=models.resolve_conv_impl(conv_impl))
    self.variables = variables
    self.batch_size = batch_size
    self.image_size = self.model.image_size

  def _colorize_batch(self, photos: Sequence[Photo], with_grey: bool):
    padded = [pad_to_bucket(p.rgb) for p in photos]
    sizes = [p.rgb.shape[:2] for p in photos]
    smalls = [
      resize_for_network(x, h, w, self.image_size) for x, (h, w) in zip(padded, sizes, strict=True)
    ]
    l3 = network_input(jnp.stack(smalls))
    if len(photos) < self.batch_size:
      l3 = jnp.pad(l3, ((0, self.batch_size - len(photos)), (0, 0), (0, 0), (0, 0)))
    ab = predict_ab(self.model, self.variables, l3)
    outs = [
      compose(x, ab[i], h, w, with_grey=with_grey)
      for i, (x, (h, w)) in enumerate(zip(padded, sizes, strict=True))
    ]
    for photo, out, (h, w) in zip(photos, outs, sizes, strict=True):
      colour, grey = out if with_grey else (out, None)
      colour = _attach_alpha(np.asarray(colour)[:h, :w], photo.alpha)
      if grey is not None:
        grey = _attach_alpha(np.asarray(grey)[:h, :w], photo.alpha)
      yield photo, colour, grey

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
    config: full config, ``config.model``, a :class:`models.Generator` or None (see
      :func:`generator_from`).
    batch_size: generator batch; capped at the number of images.
    progress: show a tqdm progress bar.

  Returns:
    One uint8 array per input, same height and width: (H, W, 3) RGB, or (H, W, 4) RGBA for
    RGBA inputs.
  """
  photos = [array_to_photo(im, source=i) for i, im in enumerate(images)]
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


# --------------------------------------------------------------------------------------------
# Files: inputs, output names, saving.


@dataclasses.dataclass(frozen=True)
class InputFile:
  """An input path and its output path relative to the output directory (minus extension)."""

  path: str
  relative: str


def collect_inputs(args: Sequence[str], exclude_dir=None) -> tuple[list[InputFile], list[str]]:
  """Expands files, folders (recursive, image extensions only) and globs.

  Files under ``exclude_dir`` (the output directory) are left out of folder walks so that a
  rerun does not colorize its own outputs (unless it is the very folder given). The same file
  named twice is taken once.

  Returns:
    (inputs, errors): errors are one-line messages for arguments that matched nothing.
  """
  exclude = os.path.realpath(exclude_dir) if exclude_dir else None
  inputs, errors, seen = [], [], set()

  def add(path, relative):
    real = os.path.realpath(path)
    if real not in seen:
      seen.add(real)
      inputs.append(InputFile(path, os.path.splitext(relative)[0]))

  def excluded(folder):
    real = os.path.realpath(folder)
    return exclude is not None and (real == exclude or real.startswith(exclude + os.sep))

  for arg in args:
    if os.path.isdir(arg):
      found = False
      for root, dirs, files in os.walk(arg):
        dirs.sort()
        # The output folder is skipped inside a walk, unless it is the walked folder itself.
        if excluded(root) and os.path.realpath(root) != os.path.realpath(arg):
          dirs.clear()
          continue
        for name in sorted(files):
          if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            found = True
            path = os.path.join(root, name)
            add(path, os.path.relpath(path, arg))
      if not found:
        errors.append(f"{arg}: folder has no image files")
    elif os.path.isfile(arg):
      add(arg, os.path.basename(arg))
    elif glob.has_magic(arg):
      matches = [m for m in sorted(glob.glob(arg, recursive=True)) if os.path.isfile(m)]
      if not matches:
        errors.append(f"{arg}: no files match this pattern")
      for m in matches:
        add(m, os.path.basename(m))
    else:
      errors.append(f"{arg}: no such file or folder")
  return inputs, errors


def output_format(photo: Photo, path: str) -> tuple[str, str]:
  """(Pillow format, extension) of the output: JPEG for JPEG inputs (their own extension),
  PNG otherwise (and for anything with alpha)."""
  if photo.format in ("JPEG", "MPO") and photo.alpha is None:
    ext = os.path.splitext(path)[1]
    return "JPEG", ext if ext.lower() in _JPEG_EXTENSIONS else ".jpg"
  return "PNG", ".png"


class OutputNamer:
  """Chooses output paths that never clobber an input (nor, unless asked, an existing file).

  The natural name is ``<output>/<relative>.<ext>``; when that is an input file, was already
  written in this run, or exists (without ``overwrite``), ``_colorized``, ``_colorized_2``, ...
  is appended to the stem.
  """

  def __init__(self, output_dir: str, input_paths: Iterable[str], overwrite: bool = False):
    self.output_dir = output_dir
    self.inputs = {os.path.realpath(p) for p in input_paths}
    self.overwrite = overwrite
    self.taken = set()

  def _free(self, path: str) -> bool:
    real = os.path.realpath(path)
    if real in self.inputs or real in self.taken:
      return False
    return self.overwrite or not os.path.lexists(path)

  def name(self, relative: str, ext: str, suffix: str = "") -> str:
    base = os.path.join(self.output_dir, relative + suffix)
    candidates = [base + ext, base + COLLISION_SUFFIX + ext]
    for path in candidates:
      if self._free(path):
        break
    else:
      n = 2
      while not self._free(path := f"{base}{COLLISION_SUFFIX}_{n}{ext}"):
        n += 1
    self.taken.add(os.path.realpath(path))
    return path


def save_image(image: np.ndarray, path: str, fmt: str, jpeg_quality: int = JPEG_QUALITY):
  """Writes uint8 (H, W, 3|4) ``image`` to ``path`` atomically (temp file + rename)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  pil = Image.fromarray(image)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    if fmt == "JPEG":
      pil.save(tmp, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
      pil.save(tmp, format="PNG")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


# --------------------------------------------------------------------------------------------
# Command line.

_DESCRIPTION = """\
Colorize photos with a ChromaGAN generator checkpoint.

  python colorize.py --ckpt DIR --output OUT INPUT...

INPUT: image files, folders (searched recursively for image extensions) or glob patterns
(quote them; ** is recursive). Grey, grey+alpha, RGB, RGBA, palette, 16-bit grey and CMYK
images are read; EXIF orientation is applied. Colour inputs are colorized from their
lightness alone (their own colours are discarded).

Outputs keep each input's size and name (folder inputs keep their sub-folders):
JPEG inputs are written as JPEG (quality 95, no chroma subsampling) with the input's
extension; every other format (PNG, TIFF, BMP, GIF, WebP, ...) is written as PNG. RGBA and
palette-with-transparency inputs keep their alpha channel (PNG output). Input files are never
overwritten: if a name is taken by an input (e.g. --output is the input folder) or by an
existing file, "_colorized" (then "_colorized_2", ...) is added to the name.

Unreadable files (not images, empty, truncated, over --max_pixels) are reported and skipped;
the exit status is 0 when at least one image was written and 1 when none was.
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="colorize.py",
    description=_DESCRIPTION,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
  parser.add_argument(
    "--ckpt",
    required=True,
    help="Orbax checkpoint: a training workdir, its checkpoints/ folder or a converter output",
  )
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--output", required=True, help="output folder (created if needed)")
  parser.add_argument(
    "--batch_size", "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="%(default)s"
  )
  parser.add_argument(
    "--max_pixels",
    "--max-pixels",
    type=int,
    default=DEFAULT_MAX_PIXELS,
    help="reject images with more pixels, before decoding them (default %(default)s)",
  )
  parser.add_argument(
    "--compare",
    action="store_true",
    help="also write <name>_compare.<ext>: the grey input | the colorized result side by side",
  )
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="replace existing files in --output (input files are never replaced)",
  )
  parser.add_argument(
    "--jpeg_quality", "--jpeg-quality", type=int, default=JPEG_QUALITY, help="%(default)s"
  )
  parser.add_argument(
    "--conv_impl",
    "--conv-impl",
    default=None,
    choices=["auto", *models.CONV_IMPLS],
    help="convolution algorithm (default: the checkpoint's). On CPU, 'winograd' (what 'auto' "
    "picks there) is 1.3-2x faster per image but compiles in ~10-20 s instead of ~1 s (once "
    "per machine with --compilation_cache): 'xla' is quicker for a handful of photos on a "
    "cold cache",
  )
  parser.add_argument(
    "--compilation_cache",
    "--compilation-cache",
    default=compile_cache.DEFAULT_DIR,
    metavar="DIR",
    help="keep compiled programs here so that later runs skip the compile; '' turns it off "
    "(default %(default)s; JAX_COMPILATION_CACHE_DIR, if set, wins)",
  )
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  return parser


def _read_all(
  inputs: Sequence[InputFile], max_pixels: int, report: Callable[[str], None]
) -> Iterator[Photo]:
  for item in inputs:
    try:
      photo = read_image(item.path, max_pixels)
    except ImageError as e:
      report(f"skipped {e}")
      continue
    photo.source = item
    yield photo


def run(args: argparse.Namespace, log: Callable[[str], None] = None) -> int:
  """Colorizes ``args.inputs`` into ``args.output``; returns the exit status."""
  log = log or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
  if args.batch_size < 1 or args.max_pixels < 1:
    log("error: --batch_size and --max_pixels must be positive")
    return 1
  inputs, errors = collect_inputs(args.inputs, exclude_dir=args.output)
  for msg in errors:
    log(f"skipped {msg}")
  if not inputs:
    log("error: no input files")
    return 1
  compile_cache.enable(args.compilation_cache, warn=log)
  try:
    variables, config = checkpoint.load_generator(args.ckpt, args.step)
    colorizer = Colorizer(
      variables, config, batch_size=min(args.batch_size, len(inputs)), conv_impl=args.conv_impl
    )
  except (checkpoint.CheckpointError, OSError, ValueError, KeyError) as e:
    log(f"error: cannot load checkpoint {args.ckpt}: {e}")
    return 1
  try:
    os.makedirs(args.output, exist_ok=True)
  except OSError as e:
    log(f"error: cannot create output folder {args.output}: {e.strerror or e}")
    return 1

  namer = OutputNamer(args.output, [i.path for i in inputs], overwrite=args.overwrite)
  bar = tqdm.tqdm(total=len(inputs), unit="img", disable=args.no_progress, file=sys.stderr)
  failed = [len(errors)]

  def report_failure(msg):
    log(msg)
    failed[0] += 1
    bar.update()

  written = 0
  photos = _read_all(inputs, args.max_pixels, report_failure)
  for photo, colour, grey in colorizer.stream(photos, with_grey=args.compare):
    item = photo.source
    try:
      fmt, ext = output_format(photo, item.path)
      path = namer.name(item.relative, ext)
      save_image(colour, path, fmt, args.jpeg_quality)
      if grey is not None:
        side = np.concatenate([grey, colour], axis=1)
        save_image(side, namer.name(item.relative, ext, COMPARE_SUFFIX), fmt, args.jpeg_quality)
    except Exception as e:  # noqa: BLE001 - an unwritable output is a per-file error.
      report_failure(f"skipped {item.path}: cannot write output ({type(e).__name__}: {e})")
      continue
    if path != os.path.join(args.output, item.relative + ext):
      log(f"note: {item.path} -> {path} (the plain name is taken; nothing was overwritten)")
    written += 1
    bar.update()
  bar.close()
  log(f"colorized {written} image(s) into {args.output}; {failed[0]} input(s) skipped")
  return 0 if written else 1


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry: parses ``argv`` (default ``sys.argv[1:]``) and runs."""
  return run(build_parser().parse_args(argv))

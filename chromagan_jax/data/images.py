"""Image files in, uint8 RGB out: the one decoder, extension list and folder walk.

Training (``input_pipeline``), ``colorize`` and ``evaluate`` all read images through this
module, so they see the same files and the same pixels. NumPy and Pillow only (no TensorFlow,
no JAX): worker processes of the input pipeline import it cheaply.

Decoding (:func:`read`, :func:`decode`) gives uint8 RGB (H, W, 3) plus, when the file has one,
its uint8 alpha (H, W), in display orientation (the EXIF orientation is applied, as
``cv2.imread`` does). One rule per Pillow mode:

* ``'1'``, ``'L'``: grey, replicated to 3 channels.
* ``'LA'`` / ``'La'``, ``'RGBA'`` / ``'RGBa'`` (premultiplied, un-premultiplied by Pillow),
  ``'P'`` / ``'PA'`` (palette) and ``'L'`` / ``'RGB'`` / ``'P'`` with a ``transparency`` entry:
  colour (or grey) plus alpha.
* Integer grey deeper than 8 bits (``'I;16*'``, 32-bit ``'I'``): read as 16-bit data. Values
  are clipped to [0, 65535] and scaled by 255 / 65535 (``round(v / 257)``), whatever the
  image's own maximum: the scale never depends on the content (a dark 16-bit photo stays
  dark).
* 32-bit float grey (``'F'``): read as [0, 1], scaled by 255 and clipped; NaN -> 0.
* ``'CMYK'``, ``'YCbCr'``, ``'LAB'``, ``'HSV'``, ``'RGBX'``: Pillow's conversion to RGB, with
  no colour management (embedded ICC profiles are ignored); for CMYK that is
  ``RGB = (255 - CMY) * (255 - K) / 255``.
* Multi-frame files (GIF, TIFF, MPO): the first frame.

Consumers that need RGB without alpha (training, evaluation) call :func:`composite_on_white`:
transparent areas then look as a viewer shows them on a white page, not as whatever colour is
stored under alpha = 0. ``colorize`` keeps the alpha and writes it back out.

A header claiming more than ``max_pixels`` pixels is refused before any pixel is decoded
(decompression-bomb guard). Every failure raises :class:`ImageError` with one line that starts
with the file's name.
"""

import dataclasses
import glob
import io
import os
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from chromagan_jax import errors

# File name extensions of images (lower case). Folder walks and globs keep only these; a file
# named explicitly is always tried, whatever its name.
IMAGE_EXTENSIONS = (
  ".jpg",
  ".jpeg",
  ".jpe",
  ".jfif",
  ".png",
  ".webp",
  ".bmp",
  ".gif",
  ".tif",
  ".tiff",
) + (".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".ico")
# 50 megapixels: more than most camera photos; a header claiming more is rejected before any
# pixel is decoded. Callers may raise it (colorize's --max_pixels).
DEFAULT_MAX_PIXELS = 50_000_000
# Integer grey deeper than 8 bits is read as 16-bit: 65535 / 255.
SIXTEEN_BIT_SCALE = 257.0
UINT8_MAX = 255

# Pillow's own bomb check (a warning above Image.MAX_IMAGE_PIXELS, an error above twice that)
# is switched off while a header is read, so that only our limit, with our message, applies.
# The lock keeps concurrent readers from restoring each other's saved value.
_pillow_limit_lock = threading.Lock()


ImageError = errors.ImageError  # One line naming the file; a UserError the entry scripts catch.


@dataclasses.dataclass
class Photo:
  """A decoded image.

  Attributes:
    rgb: uint8 (H, W, 3) sRGB in display orientation (grey inputs replicated); may be
      read-only (copy it to modify it in place).
    alpha: uint8 (H, W) alpha channel (255 = opaque), or None.
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


def _deep_grey_to_uint8(values: np.ndarray) -> np.ndarray:
  """Integer grey of any depth, read as 16-bit (0..65535) -> uint8, rounded."""
  values = np.clip(values.astype(np.float64), 0, 65535)
  return np.round(values / SIXTEEN_BIT_SCALE).astype(np.uint8)


def _float_grey_to_uint8(values: np.ndarray) -> np.ndarray:
  """Float grey in [0, 1] -> uint8, rounded; NaN -> 0, out-of-range values clipped."""
  values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
  return np.clip(np.round(values * UINT8_MAX), 0, UINT8_MAX).astype(np.uint8)


def pil_to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
  """A Pillow image of any mode -> (uint8 RGB (H, W, 3), uint8 alpha (H, W) or None).

  The rules per mode are in the module docstring. Orientation is NOT applied here (see
  :func:`decode`).
  """
  mode = im.mode
  if mode in ("P", "PA"):
    im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
  elif mode in ("L", "RGB") and "transparency" in im.info:
    im = im.convert("LA" if mode == "L" else "RGBA")
  elif mode in ("La", "RGBa", "RGBX"):
    im = im.convert({"La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}[mode])
  mode = im.mode
  if mode in ("1", "L"):
    return _grey_to_rgb(np.asarray(im.convert("L"))), None
  if mode == "LA":
    arr = np.asarray(im)
    return _grey_to_rgb(arr[..., 0]), arr[..., 1].copy()
  if mode.startswith("I"):
    return _grey_to_rgb(_deep_grey_to_uint8(np.asarray(im))), None
  if mode == "F":
    return _grey_to_rgb(_float_grey_to_uint8(np.asarray(im))), None
  if mode == "RGBA":
    arr = np.asarray(im)
    return np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy()
  # No convert() (a full copy) when the pixels already are RGB: decoding big photos is
  # memory-bound enough that each copy shows in images/s.
  return np.asarray(im if mode == "RGB" else im.convert("RGB")), None


def _one_line(e: Exception) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def decode(source, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
  """Decodes an image file or encoded bytes, applying its EXIF orientation.

  Args:
    source: a path (str or os.PathLike) or the encoded bytes (e.g. a TFDS record's image).
    name: how messages name it (default: the path, or '<bytes>').
    max_pixels: a header claiming more pixels is refused before decoding.

  Returns:
    A :class:`Photo` (rgb uint8 (H, W, 3), alpha uint8 (H, W) or None, format, source=name).

  Raises:
    ImageError: unreadable, empty, truncated, not an image, no pixels or over the pixel limit;
      one line starting with ``name``.
  """
  if isinstance(source, bytes | bytearray | memoryview):
    name = name or "<bytes>"
    data = bytes(source)
  else:
    name = name or os.fspath(source)
    try:
      with open(source, "rb") as f:
        data = f.read()
    except OSError as e:
      raise ImageError(f"{name}: cannot read ({e.strerror or _one_line(e)})") from None
  if not data:
    raise ImageError(f"{name}: empty file (0 bytes)")
  try:
    with _pillow_limit_lock:
      saved_limit = Image.MAX_IMAGE_PIXELS
      Image.MAX_IMAGE_PIXELS = None
      try:
        im = Image.open(io.BytesIO(data))
      finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    with im:
      width, height = im.size
      if width * height > max_pixels:
        raise ImageError(
          f"{name}: {width}x{height} image ({width * height:,} pixels) exceeds the limit of "
          f"{max_pixels:,} pixels; not decoded"
        )
      fmt = im.format
      im.load()
      ImageOps.exif_transpose(im, in_place=True)  # In place: no copy when upright.
      rgb, alpha = pil_to_arrays(im)
  except ImageError:
    raise
  except UnidentifiedImageError:
    raise ImageError(f"{name}: not an image file Pillow can read") from None
  except Exception as e:  # noqa: BLE001 - any decoder failure is a per-file error.
    raise ImageError(f"{name}: cannot decode image ({_one_line(e)})") from None
  if rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise ImageError(f"{name}: image has no pixels ({rgb.shape[1]}x{rgb.shape[0]})")
  return Photo(rgb=rgb, alpha=alpha, format=fmt, source=name)


def read(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
  """Reads an image file: :func:`decode` of a path."""
  return decode(os.fspath(path), max_pixels=max_pixels)


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
  """uint8 RGB (H, W, 3) over a white background through uint8 alpha (H, W).

  ``round((rgb * alpha + 255 * (255 - alpha)) / 255)``, exactly, in integers. None: ``rgb``.
  """
  if alpha is None:
    return rgb
  a = alpha[..., None].astype(np.int32)
  mixed = rgb.astype(np.int32) * a + UINT8_MAX * (UINT8_MAX - a)
  return ((mixed + UINT8_MAX // 2) // UINT8_MAX).astype(np.uint8)


def read_rgb(source, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> np.ndarray:
  """A file or encoded bytes -> uint8 RGB (H, W, 3), alpha composited on white.

  What training and evaluation see of a file. Raises :class:`ImageError`.
  """
  photo = decode(source, name=name, max_pixels=max_pixels)
  return composite_on_white(photo.rgb, photo.alpha)


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
# Resizing: the training data's resize.


def _resize_weights(in_size: int, out_size: int):
  """Half-pixel-centre bilinear taps and weights along one axis (float32, TF's arithmetic)."""
  scale = np.float32(in_size) / np.float32(out_size)
  pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  floor = np.floor(pos)
  lower = np.maximum(floor, 0).astype(np.intp)
  upper = np.minimum(np.ceil(pos), in_size - 1).astype(np.intp)
  return lower, upper, (pos - floor).astype(np.float32)


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, C) -> uint8 (size, size, C): bilinear, no crop, aspect ratio not kept.

  The reference resizes with ``cv2.resize(INTER_LINEAR)``: half-pixel centres, edge clamping,
  no filtering when shrinking. This is that resize in float32 with TensorFlow's arithmetic
  (``tf.image.resize(..., 'bilinear', antialias=False)``, which it matches bit for bit; the
  tests check it), rounded to the nearest integer as OpenCV's saturate_cast does. OpenCV's
  11-bit fixed-point weights can differ from it by 1 level.
  """
  h, w = rgb.shape[:2]
  ly, uy, fy = _resize_weights(h, size)
  lx, ux, fx = _resize_weights(w, size)
  fx = fx[None, :, None]
  rows = []
  for taps in (ly, uy):
    row = rgb[taps].astype(np.float32)
    left, right = row[:, lx], row[:, ux]
    rows.append(left + (right - left) * fx)
  top, bottom = rows
  out = top + (bottom - top) * fy[:, None, None]
  return np.clip(np.round(out), 0, UINT8_MAX).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Finding image files.


def is_image_name(path: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
  """A visible file name (not starting with '.') with one of ``extensions`` (lower case;
  colorize also passes video extensions)."""
  name = os.path.basename(os.fspath(path).rstrip("/"))
  return not name.startswith(".") and name.lower().endswith(tuple(extensions))


def _is_hidden(path: str, below: str = "") -> bool:
  """Any component of ``path`` after the prefix ``below`` starts with '.'."""
  rel = os.path.relpath(path, below) if below else path
  return any(part.startswith(".") and part not in (".", "..") for part in rel.split(os.sep))


def walk(
  folder: str, exclude: str | None = None, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> list[str]:
  """Image files under ``folder``, recursively, sorted by path.

  Hidden files and folders (names starting with '.', e.g. macOS '._x.jpg' or '.git') are
  skipped, and so is the folder ``exclude`` (e.g. an output folder inside the input folder)
  unless it is ``folder`` itself.
  """
  exclude = os.path.realpath(exclude) if exclude else None
  root_real = os.path.realpath(folder)
  files = []
  for root, dirs, names in os.walk(folder):
    keep = []
    for d in dirs:
      real = os.path.realpath(os.path.join(root, d))
      if d.startswith(".") or (exclude and real == exclude and real != root_real):
        continue
      keep.append(d)
    dirs[:] = keep
    files.extend(os.path.join(root, n) for n in names if is_image_name(n, extensions))
  return sorted(files)


def find(
  path: str, exclude: str | None = None, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> list[str]:
  """Image files named by ``path``: a folder (walked), a glob (``**`` recursive) or one file.

  Folders and globs keep visible files with one of ``extensions`` (default
  :data:`IMAGE_EXTENSIONS`);
  a file named explicitly is always returned (the decoder decides whether it is an image).

  Returns:
    Sorted paths, never empty.

  Raises:
    ImageError: nothing to read; one line saying why (no such path, no match, no images).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    files = walk(path, exclude, extensions)
    if not files:
      raise ImageError(
        f"{path}: folder has no image files ({' '.join(extensions)}; searched "
        "recursively, hidden files skipped)"
      )
    return files
  if os.path.isfile(path):
    return [path]
  if glob.has_magic(path):
    matches = [m for m in glob.glob(path, recursive=True) if os.path.isfile(m)]
    if not matches:
      raise ImageError(f"{path}: no files match this pattern")
    files = sorted(
      m for m in matches if is_image_name(m, extensions) and not _is_hidden(m, _stem(path))
    )
    if not files:
      raise ImageError(
        f"{path}: {len(matches)} files match this pattern but none is an image "
        f"({' '.join(extensions)}; hidden files skipped)"
      )
    return files
  raise ImageError(f"{path}: no such file or folder")


def _stem(pattern: str) -> str:
  """The folder part of a glob before its first wildcard component ('' if it starts there)."""
  parts = []
  for part in pattern.split(os.sep):
    if glob.has_magic(part):
      break
    parts.append(part)
  return os.sep.join(parts)

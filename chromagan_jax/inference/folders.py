"""Colorizing image files into a folder: input collection, output names, atomic saves.

What ``colorize.py`` does after parsing its flags, as a function: :func:`colorize_files`
expands files, folders and globs, reads each image (:func:`images.read`),
colorizes them in batches (:class:`engine.Colorizer`) and writes each result under the
output folder with the input's relative name. Names never clobber an input (nor, without
``overwrite``, an existing file): ``_colorized``, ``_colorized_2``, ... is added instead.
JPEG inputs give JPEG outputs (quality 95, no chroma subsampling), everything else PNG.
Unreadable files are reported one line each and skipped.
"""

import dataclasses
import functools
import io
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import tqdm
from PIL import Image

from chromagan_jax.data import images, video_files
from chromagan_jax.errors import ImageError, UserError, VideoError
from chromagan_jax.inference import engine, openvino_network, photo_pipeline, video
from chromagan_jax.weights import checkpoint

JPEG_QUALITY = 95
# PNG's deflate strategy: run-length matches only. On colorized photos its files are slightly
# larger than with Pillow's default (level 6, filtered strategy) and several times faster to
# write (figures: bench/README.md, docs/performance.md).
PNG_ZLIB_STRATEGY = zlib.Z_RLE
_JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
# The name suffix used when the natural output name is taken (by an input or an earlier file).
COLLISION_SUFFIX = "_colorized"
COMPARE_SUFFIX = "_compare"


@dataclasses.dataclass(frozen=True)
class InputFile:
  """An input path and its output path relative to the output directory (minus extension)."""

  path: str
  relative: str


def collect_inputs(
  args: Sequence[str], exclude_dir=None, extensions: tuple[str, ...] = images.IMAGE_EXTENSIONS
) -> tuple[list[InputFile], list[str]]:
  """Expands files, folders and globs with ``images.find`` (one walk for every consumer).

  Folders are walked recursively and globs expanded, keeping visible image files; a file named
  explicitly is always tried. ``exclude_dir`` (the output directory) is left out of folder
  walks so that a rerun does not colorize its own outputs (unless it is the very folder
  given). The same file named twice is taken once. ``extensions``: what folder walks and globs
  keep (colorize adds :data:`video_files.VIDEO_EXTENSIONS`).

  Returns:
    (inputs, errors): errors are one-line messages for arguments that matched nothing.
  """
  inputs, errors, seen = [], [], set()
  for arg in args:
    try:
      found = images.find(arg, exclude=exclude_dir, extensions=extensions)
    except ImageError as e:
      errors.append(str(e))
      continue
    folder = os.path.isdir(arg)
    for path in found:
      real = os.path.realpath(path)
      if real not in seen:
        seen.add(real)
        relative = os.path.relpath(path, arg) if folder else os.path.basename(path)
        inputs.append(InputFile(path, os.path.splitext(relative)[0]))
  return inputs, errors


def output_format(photo: images.Photo, path: str) -> tuple[str, str]:
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


def _pillow_save(image: np.ndarray, target, fmt: str, jpeg_quality: int):
  pil = Image.fromarray(image)
  if fmt == "JPEG":
    pil.save(target, format="JPEG", quality=jpeg_quality, subsampling=0)
  else:
    pil.save(target, format="PNG", compress_type=PNG_ZLIB_STRATEGY)


def _write_atomically(path: str, write: Callable[[str], None]):
  """``write(tmp)`` then renames ``tmp`` to ``path``: never a partial file under ``path``."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save_image(image: np.ndarray, path: str, fmt: str, jpeg_quality: int = JPEG_QUALITY):
  """Writes uint8 (H, W, 3|4) ``image`` to ``path`` atomically (temp file + rename)."""
  _write_atomically(path, lambda tmp: _pillow_save(image, tmp, fmt, jpeg_quality))


def encode_image(image: np.ndarray, fmt: str, jpeg_quality: int = JPEG_QUALITY) -> bytes:
  """uint8 (H, W, 3|4) ``image`` -> the bytes :func:`save_image` writes (encoded in memory,
  so that encoding runs in a worker thread and only the write is in input order)."""
  buf = io.BytesIO()
  _pillow_save(image, buf, fmt, jpeg_quality)
  return buf.getvalue()


def save_bytes(data: bytes, path: str):
  """Writes ``data`` to ``path`` atomically (temp file + rename)."""

  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)

  _write_atomically(path, write)


@dataclasses.dataclass
class _Encoded:
  """A photo's output files encoded in a worker: format, extension, the colour file and the
  side-by-side one (or None); an exception in place of bytes is what encoding raised, raised
  again when that file is written (a per-file write failure, as in the sequential path)."""

  fmt: str
  ext: str
  colour: bytes | Exception
  side: bytes | Exception | None


def _try_encode(image: np.ndarray, fmt: str, jpeg_quality: int) -> bytes | Exception:
  try:
    return encode_image(image, fmt, jpeg_quality)
  except Exception as e:  # noqa: BLE001 - raised again by _save_encoded, in input order.
    return e


def _save_array(image: np.ndarray, fmt: str, jpeg_quality: int, path: str):
  save_image(image, path, fmt, jpeg_quality)


def _save_encoded(data: bytes | Exception, path: str):
  if isinstance(data, Exception):
    raise data
  save_bytes(data, path)


def _read_all(
  inputs: Sequence[InputFile], max_pixels: int, report: Callable[[str], None]
) -> Iterator[images.Photo]:
  for item in inputs:
    try:
      photo = images.read(item.path, max_pixels)
    except ImageError as e:
      report(f"skipped {e}")
      continue
    photo.source = item
    yield photo


def load_colorizer(
  ckpt,
  step: int | None,
  batch_size: int,
  conv_impl: str | None = None,
  network: str | None = None,
  command: str = "--network",
) -> engine.Colorizer:
  """The :class:`engine.Colorizer` of a checkpoint, its network stage in JAX, or in OpenVINO
  on the IR ``network`` (:func:`openvino_network.load_network`; the checkpoint then gives
  only the config, whose image size the IR's must match).

  Raises:
    UserError: an unusable checkpoint or IR, one line each.
    MissingExtraError: ``network`` given without the 'openvino' extra (``command`` names
      what asked for it).
  """
  if network is not None:
    openvino_network.require_openvino(command)
  try:
    if network is None:
      variables, config = checkpoint.load_generator(ckpt, step, with_class_head=False)
    else:  # The IR holds the weights: the checkpoint gives only the config.
      variables, (_, config) = None, checkpoint.load_config(ckpt, step)
    image_size = int(config.model.image_size)
  except (checkpoint.CheckpointError, OSError, ValueError, KeyError) as e:
    raise UserError(f"cannot load checkpoint {ckpt}: {e}") from None
  # Apart from the checkpoint's: the IR's own one-line UserErrors must not be relabelled.
  runner = (
    None if network is None else openvino_network.load_network(network, image_size, batch_size)
  )
  try:
    return engine.Colorizer(
      variables, config, batch_size=batch_size, conv_impl=conv_impl, network=runner
    )
  except (checkpoint.CheckpointError, OSError, ValueError, KeyError) as e:
    raise UserError(f"cannot load checkpoint {ckpt}: {e}") from None


def colorize_files(
  inputs: Sequence[str],
  output: str,
  ckpt,
  *,
  step: int | None = None,
  batch_size: int = engine.DEFAULT_BATCH_SIZE,
  max_pixels: int = images.DEFAULT_MAX_PIXELS,
  compare: bool = False,
  overwrite: bool = False,
  jpeg_quality: int = JPEG_QUALITY,
  conv_impl: str | None = None,
  video_options: video.VideoOptions | None = None,
  progress: bool = True,
  log: Callable[[str], None] | None = None,
  workers: int = photo_pipeline.DEFAULT_WORKERS,
  network: str | None = None,
) -> int:
  """Colorizes the images and videos of ``inputs`` (files, folders, globs) into ``output``.

  Args:
    inputs: files, folders (searched recursively for image and video extensions) or globs.
      Videos (:func:`video_files.is_video`: video extensions, animated GIFs) go through
      :func:`video.colorize_video`, after the photos.
    output: output folder (created if needed); files keep the inputs' relative names.
    ckpt, step: the generator checkpoint (see :func:`checkpoint.load_generator`).
    compare: also write ``<name>_compare.<ext>``: the grey input | the result side by side.
    overwrite: replace existing files in ``output`` (input files are never replaced).
    conv_impl: see :class:`engine.Colorizer`.
    video_options: encoding and temporal smoothing of videos (default ``VideoOptions()``).
    log: where the one-line reports go (default: stderr, above the progress bar).
    workers: photos are decoded in this many threads, and composed and encoded in as many,
      while the network runs in one more (:mod:`photo_pipeline`); 0 runs every stage in turn
      in the calling thread. The files written, their names and the messages are the same.
    network: an OpenVINO IR (``.xml`` or ``export --format openvino*`` folder) run as the
      network stage (:func:`openvino_network.load_network`) instead of JAX; ``ckpt`` still
      gives the config, whose image size the IR's must match.

  Returns:
    The number of images and videos written. Skipped inputs are reported through ``log``.

  Raises:
    UserError: bad arguments, no input file at all, an unusable checkpoint or output folder.
    MissingExtraError: a video among the inputs and PyAV (the 'video' extra) not installed.
  """
  log = log or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
  if batch_size < 1 or max_pixels < 1:
    raise UserError("--batch_size and --max_pixels must be positive")
  if workers < 0:
    raise UserError("--workers must be >= 0")
  video_options = video_options or video.VideoOptions()
  extensions = tuple(images.IMAGE_EXTENSIONS) + tuple(sorted(video_files.VIDEO_EXTENSIONS))
  found, errors = collect_inputs(inputs, exclude_dir=output, extensions=extensions)
  for msg in errors:
    log(f"skipped {msg}")
  if not found:
    raise UserError("no input files")
  clips = [item for item in found if video_files.is_video(item.path)]
  found = [item for item in found if item not in clips]
  if clips:
    video_files.require_av()  # Before any work: one line naming the extra, not a skip per video.
  # A video fills whole batches; photos alone need no bigger batch than their number.
  size = batch_size if clips else min(batch_size, len(found))
  colorizer = load_colorizer(ckpt, step, size, conv_impl, network, "colorize --network")
  try:
    os.makedirs(output, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create output folder {output}: {e.strerror or e}") from None

  namer = OutputNamer(output, [i.path for i in found + clips], overwrite=overwrite)
  bar = tqdm.tqdm(total=len(found), unit="img", disable=not progress or not found, file=sys.stderr)
  failed = [len(errors)]

  def report_failure(msg):
    log(msg)
    failed[0] += 1
    bar.update()

  def write(item, fmt, ext, save_colour, save_side) -> bool:
    """Names and writes one photo's outputs, in input order; False (reported) on failure."""
    try:
      path = namer.name(item.relative, ext)
      save_colour(path)
      if save_side is not None:
        save_side(namer.name(item.relative, ext, COMPARE_SUFFIX))
    except Exception as e:  # noqa: BLE001 - an unwritable output is a per-file error.
      report_failure(f"skipped {item.path}: cannot write output ({type(e).__name__}: {e})")
      return False
    if path != os.path.join(output, item.relative + ext):
      log(f"note: {item.path} -> {path} (the plain name is taken; nothing was overwritten)")
    bar.update()
    return True

  written = 0
  if workers == 0:
    photos = _read_all(found, max_pixels, report_failure)
    for photo, colour, grey in colorizer.stream(photos, with_grey=compare):
      item = photo.source
      fmt, ext = output_format(photo, item.path)
      side = None if grey is None else np.concatenate([grey, colour], axis=1)
      saves = [None if x is None else functools.partial(_save_array, x, fmt, jpeg_quality)
               for x in (colour, side)]  # fmt: skip
      written += write(item, fmt, ext, *saves)
  else:

    def read(item):
      photo = images.read(item.path, max_pixels)
      photo.source = item
      return photo

    def encode(photo, colour, grey) -> _Encoded:
      fmt, ext = output_format(photo, photo.source.path)
      side = None if grey is None else np.concatenate([grey, colour], axis=1)
      return _Encoded(fmt, ext, _try_encode(colour, fmt, jpeg_quality),
                      None if side is None else _try_encode(side, fmt, jpeg_quality))  # fmt: skip

    results = photo_pipeline.colorize_overlapped(
      colorizer, found, read, encode, with_grey=compare, workers=workers
    )
    for result in results:
      if result.error is not None:
        report_failure(f"skipped {result.error}")
        continue
      enc = result.value
      saves = [None if x is None else functools.partial(_save_encoded, x)
               for x in (enc.colour, enc.side)]  # fmt: skip
      written += write(result.source, enc.fmt, enc.ext, *saves)
  bar.close()
  videos = 0
  for item in clips:
    path = namer.name(item.relative, video.output_extension(item.path, video_options))
    try:
      result = video.colorize_video(item.path, path, colorizer, video_options, progress=progress)
    except VideoError as e:
      log(f"skipped {e}")
      failed[0] += 1
      continue
    except OSError as e:  # an unwritable output folder or full disk: this file only.
      log(f"skipped {item.path}: cannot write {path} ({e.strerror or e})")
      failed[0] += 1
      continue
    audio = "; audio: " + ", ".join(result.audio) if result.audio else "; no audio"
    log(
      f"{item.path} -> {path}: {result.frames} frames, {result.cuts} cut(s), "
      f"{video.frames_per_second(result):.2f} frames/s{audio}"
    )
    videos += 1
  if clips:
    log(
      f"colorized {written} image(s) and {videos} video(s) into {output}; "
      f"{failed[0]} input(s) skipped"
    )
  else:
    log(f"colorized {written} image(s) into {output}; {failed[0]} input(s) skipped")
  return written + videos

"""Colorize photos with a ChromaGAN checkpoint; see ``python colorize.py --help``.

  python colorize.py --ckpt /tmp/chromagan --output colorized/ photos/ more/*.jpg

The flags live here; the work is :func:`chromagan_jax.colorize_files.colorize_files`.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

import tqdm

from chromagan_jax import colorize_files, colorize_lib, compile_cache, images, models
from chromagan_jax.errors import UserError

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
    "--batch_size",
    "--batch-size",
    type=int,
    default=colorize_lib.DEFAULT_BATCH_SIZE,
    help="%(default)s",
  )
  parser.add_argument(
    "--max_pixels",
    "--max-pixels",
    type=int,
    default=images.DEFAULT_MAX_PIXELS,
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
    "--jpeg_quality",
    "--jpeg-quality",
    type=int,
    default=colorize_files.JPEG_QUALITY,
    help="%(default)s",
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


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> int:
  """Parses ``argv`` (default ``sys.argv[1:]``), colorizes; returns the exit status.

  ``log`` receives every one-line report (default: stderr).
  """
  args = build_parser().parse_args(argv)
  log = log or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
  compile_cache.enable(args.compilation_cache, warn=log)
  try:
    written = colorize_files.colorize_files(
      args.inputs,
      args.output,
      args.ckpt,
      step=args.step,
      batch_size=args.batch_size,
      max_pixels=args.max_pixels,
      compare=args.compare,
      overwrite=args.overwrite,
      jpeg_quality=args.jpeg_quality,
      conv_impl=args.conv_impl,
      progress=not args.no_progress,
      log=log,
    )
  except UserError as e:
    log(f"error: {e}")
    return 1
  return 0 if written else 1


if __name__ == "__main__":
  sys.exit(main())

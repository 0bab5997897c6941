"""Colorize photos and videos with a ChromaGAN checkpoint; see ``python colorize.py --help``.

  python colorize.py --ckpt /tmp/chromagan --output colorized/ photos/ more/*.jpg film.mp4

The flags live here; the work is :func:`chromagan_jax.inference.folders.colorize_files`.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

import tqdm

from chromagan_jax.data import images, video_files
from chromagan_jax.errors import UserError
from chromagan_jax.inference import engine, folders, photo_pipeline, temporal, video
from chromagan_jax.ops import conv_policy
from chromagan_jax.runtime import allocator, compile_cache, runner

_DESCRIPTION = """\
Colorize photos and videos with a ChromaGAN generator checkpoint.

  python colorize.py --ckpt DIR --output OUT INPUT...

INPUT: image or video files, folders (searched recursively for image and video extensions)
or glob patterns (quote them; ** is recursive). Grey, grey+alpha, RGB, RGBA, palette, 16-bit
grey and CMYK images are read; EXIF orientation is applied. Colour inputs are colorized from
their lightness alone (their own colours are discarded).

Outputs keep each input's size and name (folder inputs keep their sub-folders):
JPEG inputs are written as JPEG (quality 95, no chroma subsampling) with the input's
extension; every other format (PNG, TIFF, BMP, GIF, WebP, ...) is written as PNG. RGBA and
palette-with-transparency inputs keep their alpha channel (PNG output). Input files are never
overwritten: if a name is taken by an input (e.g. --output is the input folder) or by an
existing file, "_colorized" (then "_colorized_2", ...) is added to the name.

Videos (mp4, m4v, mov, mkv, webm, avi, mpg, ts, wmv, flv, ogv, 3gp, animated GIF) are
streamed: decoded, colorized in batches of --batch_size frames and encoded, so memory does not
grow with their length. The output keeps the size, the frame timestamps (frame rate, variable
ones included) and the audio (copied when the container takes its codec, else re-encoded to
AAC, or Opus in webm). mp4/m4v/mov/mkv stay so, with H.264 (yuv420p, CRF 18); webm gets VP9
(CRF 32); GIF stays GIF; other containers become mp4. Colours are smoothed over time within a
shot (--smoothing; shot cuts restart it); L is always the frame's own. Each video is written
to a hidden temporary file and renamed when complete: Ctrl-C or an error leaves nothing
under its name.

Unreadable files (not images or videos, empty, truncated, corrupt, no video stream,
unsupported codec, over --max_pixels) are reported one line each and skipped; the exit status
is 0 when at least one output was written and 1 when none was.
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
    default=engine.DEFAULT_BATCH_SIZE,
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
    default=folders.JPEG_QUALITY,
    help="%(default)s",
  )
  parser.add_argument(
    "--conv_impl",
    "--conv-impl",
    default=None,
    choices=conv_policy.IMPLS,
    help="convolution algorithm (default: the checkpoint's; 'auto' for a checkpoint that names "
    "none, e.g. a converted one; meanings in chromagan_jax/ops/conv_policy.py). On CPU 'auto' "
    "(Winograd) is the fastest per image but compiles longer than 'xla' (once per machine with "
    "--compilation_cache): 'xla' can be quicker for a handful of photos on a cold cache",
  )
  parser.add_argument(
    "--network",
    default=None,
    metavar="IR",
    help="run the network stage with OpenVINO on this IR (chromagan.xml, or the folder "
    "`python -m chromagan_jax.export --format openvino-int8` wrote) instead of JAX; --ckpt "
    "still gives the config. int8 is faster on CPUs with VNNI and changes ab slightly "
    "(docs/performance.md 'Reduced precision'); needs the 'openvino' extra",
  )
  parser.add_argument(
    "--compilation_cache",
    "--compilation-cache",
    default=compile_cache.DEFAULT_DIR,
    metavar="DIR",
    help="keep compiled programs here so that later runs skip the compile; '' turns it off "
    "(default %(default)s; JAX_COMPILATION_CACHE_DIR, if set, wins)",
  )
  parser.add_argument(
    "--workers",
    type=int,
    default=photo_pipeline.DEFAULT_WORKERS,
    help="threads decoding photos, and as many composing and encoding them, while the network "
    "runs: the stages overlap so that every core works (default %(default)s; 0 runs them one "
    "after another; the outputs are the same)",
  )
  group = parser.add_argument_group("videos")
  group.add_argument(
    "--smoothing",
    type=float,
    default=temporal.DEFAULT_SMOOTHING,
    help="temporal smoothing strength of the colours in [0, 1): the weight of the past in an "
    "exponential moving average of ab within a shot, less where the picture moves "
    "(default %(default)s; 0 = off)",
  )
  group.add_argument(
    "--no_smoothing", "--no-smoothing", action="store_true", help="same as --smoothing 0"
  )
  group.add_argument(
    "--cut_threshold",
    "--cut-threshold",
    type=float,
    default=temporal.CUT_THRESHOLD,
    help="shot-cut score (L histogram distance + block difference) above which smoothing "
    "restarts (default %(default)s)",
  )
  group.add_argument(
    "--video_codec",
    "--video-codec",
    default=None,
    help="FFmpeg video encoder, e.g. libx264, libx265, libvpx-vp9, libsvtav1 (default: "
    "libx264; libvpx-vp9 for webm; gif for GIF)",
  )
  group.add_argument(
    "--crf",
    type=int,
    default=None,
    help="constant rate factor, lower is better and bigger (default: 18 for libx264, "
    "32 for libvpx-vp9)",
  )
  group.add_argument(
    "--preset",
    default=video_files.DEFAULT_PRESET,
    help="x264/x265 speed preset, ultrafast ... veryslow (default %(default)s)",
  )
  group.add_argument(
    "--video_format",
    "--video-format",
    default=None,
    choices=sorted(video_files.MUXERS),
    help="output container for every video (default: the input's; others become .mp4)",
  )
  group.add_argument("--no_audio", "--no-audio", action="store_true", help="drop the audio")
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  return parser


def video_options(args: argparse.Namespace) -> video.VideoOptions:
  """The video flags as :class:`video.VideoOptions`; ValueError for bad values."""
  return video.VideoOptions(
    codec=args.video_codec,
    crf=args.crf,
    preset=args.preset,
    extension=args.video_format,
    smoothing=0.0 if args.no_smoothing else args.smoothing,
    cut_threshold=args.cut_threshold,
    audio=not args.no_audio,
  )


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> int:
  """Parses ``argv`` (default ``sys.argv[1:]``), colorizes; returns the exit status.

  ``log`` receives every one-line report (default: stderr).
  """
  args = build_parser().parse_args(argv)
  log = log or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
  try:
    options = video_options(args)
  except ValueError as e:
    log(f"error: {e}")
    return 1
  compile_cache.enable(args.compilation_cache, warn=log)
  allocator.keep_freed_memory()  # Full-resolution photos: no page faults per photo.
  try:
    written = folders.colorize_files(
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
      video_options=options,
      progress=not args.no_progress,
      log=log,
      workers=args.workers,
      network=args.network,
    )
  except UserError as e:
    log(f"error: {e}")
    return 1
  return 0 if written else 1


if __name__ == "__main__":
  runner.run(main)

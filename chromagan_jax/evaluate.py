"""Evaluates a colorizer: PSNR, SSIM and colourfulness against colour ground truth.

  python -m chromagan_jax.evaluate --ckpt DIR --data PHOTOS_DIR_OR_GLOB --output OUT
  python -m chromagan_jax.evaluate --ckpt DIR --data tfds:imagenet2012:validation --output OUT
  python -m chromagan_jax.evaluate --ckpt DIR --data bundled --output OUT
  python -m chromagan_jax.evaluate --ckpt DIR --data colour_film.mp4 --output OUT

A video file is colorized from its L with and without temporal smoothing and scored for
flicker (see FlickerMeter) and PSNR against its own colours (see evaluate_video).

Each colour photo is resized to the network size (bilinear, no crop, as in training; the paper
evaluates at 224x224), its Lab L is fed to the generator and the colorized RGB result (uint8)
is compared with the resized photo. Metrics, per image:
  * PSNR on uint8 RGB, data range 255 (the paper's metric);
  * ``ssim``: SSIM on uint8 RGB as the reference's code computes it (``tf.image.ssim``:
    11x11 Gaussian window of std 1.5, K1=0.01, K2=0.03, population covariance, mean over
    the three channels), data range 255; ``ssim_skimage``: the same with scikit-image's
    defaults (7x7 uniform window, sample covariance), for comparison with other papers;
  * colourfulness (Hasler & Suesstrunk 2003): ``M = sqrt(std_rg^2 + std_yb^2) +
    0.3 * sqrt(mean_rg^2 + mean_yb^2)``, ``rg = R - G``, ``yb = (R + G) / 2 - B`` on 0-255
    values, for the result, the ground truth and the baseline;
  * ``chroma_hf``: high-frequency energy of the chroma, the speckle measure: the mean squared
    difference between Lab (a, b) and its 3x3 box mean (Lab units^2), for the result, the
    baseline (~0) and the ground truth; a result far above the truth's has rainbow speckle.
The baseline is the grey image itself (a = b = 0, i.e. ``color.GREY_AB_NET``).
The library call takes a predict function (big_vision's evaluator habit) and never builds a
model: :func:`evaluate`; :func:`evaluate_checkpoint` (the command line) loads a checkpoint's
generator and passes ``engine.colorize_small`` on it.
FID is NOT implemented (it needs Inception weights, which are not bundled).

Outputs in ``--output``: ``per_image.csv``, ``summary.json``; the summary is printed.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence

from chromagan_jax.data import images
from chromagan_jax.errors import UserError
from chromagan_jax.evaluation import evaluator, video_flicker
from chromagan_jax.inference import engine
from chromagan_jax.runtime import runner
from chromagan_jax.weights import checkpoint


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m chromagan_jax.evaluate",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
    "--ckpt", required=True, help="checkpoint (workdir, checkpoints/ or converted)"
  )
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument(
    "--no_ema",
    action="store_true",
    help="evaluate the trained generator, not its moving average (when training kept one)",
  )
  parser.add_argument(
    "--data",
    required=True,
    help="folder/glob/file of colour photos; tfds[:NAME[:SPLIT]] (default: the checkpoint "
    "config's tfds_name and eval_split, e.g. tfds:imagenet2012:validation); or 'bundled' (the "
    "held-out photos shipped with scikit-image). The last two use chromagan_jax.data.pipeline",
  )
  parser.add_argument("--output", required=True, help="folder for per_image.csv, summary.json")
  parser.add_argument("--batch_size", "--batch-size", type=int, default=8)
  parser.add_argument("--max_images", "--max-images", type=int, default=None)
  parser.add_argument("--max_pixels", "--max-pixels", type=int, default=images.DEFAULT_MAX_PIXELS)
  parser.add_argument(
    "--smoothing",
    type=float,
    default=None,
    help="video data only: temporal smoothing strength compared with none (default: colorize's)",
  )
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  return parser


def _is_video_file(data: str) -> bool:
  from chromagan_jax.data import video_files

  return os.path.isfile(data) and video_files.is_video(data)


def video_main(args) -> int:
  """``--data`` is a video: flicker and PSNR with and without smoothing, to summary.json."""
  try:
    from chromagan_jax.data import video_files

    video_files.require_av()  # Before the checkpoint loads.
    variables, config = checkpoint.load_generator(
      args.ckpt, args.step, with_class_head=False, ema=False if args.no_ema else None
    )
    colorizer = engine.Colorizer(variables, config, batch_size=args.batch_size)
    result = video_flicker.evaluate_video(
      args.data, colorizer, smoothing=args.smoothing, progress=not args.no_progress
    )
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  os.makedirs(args.output, exist_ok=True)
  with open(os.path.join(args.output, "summary.json"), "w") as f:
    json.dump(result, f, indent=2, allow_nan=False)
  print(video_flicker.format_video_table(result))
  print(f"wrote {os.path.join(args.output, 'summary.json')}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if _is_video_file(args.data):
    return video_main(args)
  try:
    summary = evaluator.evaluate_checkpoint(
      args.ckpt,
      args.data,
      args.output,
      step=args.step,
      ema=False if args.no_ema else None,
      batch_size=args.batch_size,
      max_images=args.max_images,
      max_pixels=args.max_pixels,
      progress=not args.no_progress,
    )
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(evaluator.format_table(summary))
  print(f"wrote {os.path.join(args.output, 'per_image.csv')} and summary.json")
  return 0


if __name__ == "__main__":
  runner.run(main)
